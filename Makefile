# Common commands. Each target sets up .venv first (skipped when it is up to date).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEEDS ?=
ARGS ?=
NPROC ?= 1
RUN := $(PY) -m gal.train --multirun trainer.if_exists=skip trainer.progress=false
# torchrun when NPROC > 1 (DDP: NCCL on GPUs, gloo on CPU)
TRAIN := $(if $(filter-out 1,$(NPROC)),$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m gal.train,$(PY) -m gal.train)
REGRESSION_SEEDS := $(if $(SEEDS),$(SEEDS),0,1,2,3,4)
IMAGE_SEEDS := $(if $(SEEDS),$(SEEDS),0,1,2)

# Offline copies of the data sets, when this checkout sits beside them (see README, "Data").
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/sklearn),)
export SCIKIT_LEARN_DATA ?= $(SHARED_DATA)/sklearn
endif
ifneq ($(wildcard $(SHARED_DATA)/boston/boston_house_prices.csv),)
export GAL_BOSTON_CSV ?= $(SHARED_DATA)/boston/boston_house_prices.csv
endif

.PHONY: venv test test-slow lint format reproduce-regression reproduce-digits table1 table2 table3 table4 table5 digits \
	bench bench-throughput fig4 figures ablations reproduce-ablations adarem notebook clean-venv

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

lint: venv
	$(PY) -m ruff check src scripts tests
	$(PY) -m ruff format --check src scripts tests

format: venv
	$(PY) -m ruff format src scripts tests
	$(PY) -m ruff check --fix src scripts tests

# Table V: 3 data sets x {baseline, GAL} x 5 seeds, then alpha in {0.01, 0.1, 0.5} for GAL,
# then the tables. A data set that cannot be loaded is reported, and its rows are marked missing.
# One target per data set: `make -j3 reproduce-regression` runs them side by side, one thread each.
TABLE5_DATASETS := boston diabetes california
table5-runs/%: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(RUN) experiment=table5_$* gal=off,on seed=$(REGRESSION_SEEDS) $(ARGS) \
	  || echo "table5_$* did not finish (see above)"
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(RUN) experiment=table5_$* gal=on gal.alpha=0.01,0.1,0.5 \
	  'name=table5_alpha$${gal.alpha}' seed=$(REGRESSION_SEEDS) $(ARGS) || echo "table5_alpha on $* did not finish (see above)"

reproduce-regression: $(addprefix table5-runs/,$(TABLE5_DATASETS))
	$(PY) scripts/make_tables.py table5 table5_alpha

table5: venv
	$(PY) scripts/make_tables.py table5 table5_alpha

reproduce-digits: venv
	$(RUN) experiment=digits gal=off,on seed=$(REGRESSION_SEEDS) $(ARGS)
	$(PY) scripts/make_tables.py digits

# Tables I-IV: one target per paper row and arm, e.g. `make cifar100-sgd-gal NPROC=4 SEEDS=0`.
# Each is a thin alias for an experiment config (configs/experiment/); ARGS="..." adds overrides.
PAPER_ROWS := \
	cifar10-sgd:table1_cifar10_sgd cifar10-lookahead:table1_cifar10_lookahead cifar10-adabound:table1_cifar10_adabound \
	cifar100-sgd:table2_cifar100_sgd cifar100-lookahead:table2_cifar100_lookahead cifar100-adabound:table2_cifar100_adabound \
	imagenet-resnet50-rmsprop:table3_imagenet_resnet50 imagenet-effnet-b2-rmsprop:table3_imagenet_effnet_b2 \
	coco-detr-r50:table4_coco_detr_r50 coco-detr-r101:table4_coco_detr_r101
define paper_row
.PHONY: $(1) $(1)-gal
$(1): venv
	$$(TRAIN) --multirun experiment=$(2) gal=off seed=$$(IMAGE_SEEDS) trainer.if_exists=skip $$(ARGS)
$(1)-gal: venv
	$$(TRAIN) --multirun experiment=$(2) gal=on seed=$$(IMAGE_SEEDS) trainer.if_exists=skip $$(ARGS)
endef
$(foreach row,$(PAPER_ROWS),$(eval $(call paper_row,$(word 1,$(subst :, ,$(row))),$(word 2,$(subst :, ,$(row))))))

table1 table2 table3 table4 digits: venv
	$(PY) scripts/make_tables.py $@

# Ablations (configs/ablation/*.yaml, Hydra sweeps over GAL settings): `make ablation-policy` runs
# on the paper's setting (CIFAR-100, EfficientNet-B1, SGD); EXP=<experiment> runs it on any other.
EXP ?= table2_cifar100_sgd
ABLATIONS := policy random alpha beta arch
ABLATION_EXPS := table5_boston table5_diabetes table5_california digits
$(addprefix ablation-,$(ABLATIONS)): ablation-%: venv
	$(TRAIN) --multirun experiment=$(EXP) ablation=$* gal=on seed=$(IMAGE_SEEDS) trainer.if_exists=skip $(ARGS)

# On this machine: every ablation on the regression and digits experiments, 5 seeds, t-tests
# against the paper-setting GAL runs of `make reproduce-regression reproduce-digits`. Each
# sweep/<ablation>/<experiment> is its own target, so `make -j2 ablations` runs two at a time.
# One thread per run (unless OMP_NUM_THREADS is set): these models are tiny, and two one-thread
# runs side by side went ~5x faster on a 2-core CPU than two-thread runs one after the other.
sweep_targets = $(foreach ablation,$(1),$(foreach exp,$(2),sweep/$(ablation)/$(exp)))
sweep/%: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(RUN) ablation=$(word 1,$(subst /, ,$*)) experiment=$(word 2,$(subst /, ,$*)) \
	  $(if $(filter adarem,$(word 1,$(subst /, ,$*))),,gal=on) seed=$(REGRESSION_SEEDS) $(ARGS) \
	  || echo "sweep $* did not finish"

ablations: $(call sweep_targets,$(ABLATIONS),$(ABLATION_EXPS))
	$(PY) scripts/make_tables.py $(addprefix ablation_,$(ABLATIONS))

reproduce-ablations: ablations

# AdaRem vs SGD-M vs Adam (no GAL) over one lr grid on regression and digits (5 seeds), and on the toy
# problem; results/tables/adarem.md. ADAREM_EXPS="table2_cifar100_sgd" runs the same sweep on other experiments.
ADAREM_EXPS ?= $(ABLATION_EXPS)
adarem: $(call sweep_targets,adarem,$(ADAREM_EXPS))
	$(PY) scripts/toy_adarem.py
	$(PY) scripts/make_tables.py adarem

# Fig. 4: the 3D toy problem, standard vs GAL for five optimizers (seconds on a CPU)
fig4: venv
	$(PY) scripts/toy3d.py --seeds 0 1 2 3 4

# Figs. 5, 6, 8b (curves from the runs' log.jsonl) and Table VII (from results/bench/*.json)
figures: venv
	$(PY) scripts/make_figures.py

# notebooks/analysis.ipynb on the committed results/, executed into notebooks/analysis_executed.ipynb
notebook: venv
	$(VENV)/bin/jupyter execute --timeout=120 notebooks/analysis.ipynb --output=analysis_executed

bench: venv
	$(PY) scripts/bench_gal_overhead.py

bench-throughput: venv
	$(PY) scripts/bench_throughput.py

clean-venv:
	rm -rf $(VENV)
