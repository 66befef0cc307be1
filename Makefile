# Common commands (`make help` lists them). Each target sets up .venv first (skipped when it is up to date).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEEDS ?=
ARGS ?=
NPROC ?= 1            # processes (GPUs) per node
NNODES ?= 1           # nodes; with NNODES > 1 run the same command on every node, with RDZV=<node 0 host>:<port>
RDZV ?=
RDZV_ID ?= gal        # one id per job sharing a rendezvous endpoint
JOBS ?= $(shell nproc 2>/dev/null || echo 2)  # parallel one-thread runs in the CPU sweeps below
RUN := $(PY) -m gal --multirun trainer.if_exists=skip trainer.progress=false
ifneq ($(strip $(NNODES)),1)
ifeq ($(strip $(RDZV)),)
$(error NNODES=$(strip $(NNODES)) needs RDZV=<host of node 0>:<free port>, the same on every node)
endif
endif
# torchrun when NPROC > 1 or NNODES > 1 (DDP: NCCL on GPUs, gloo on CPU); one node: --standalone,
# several: a c10d rendezvous at RDZV (node ranks are assigned as the nodes join).
RENDEZVOUS := $(if $(filter-out 1,$(strip $(NNODES))),--nnodes=$(strip $(NNODES)) --rdzv-backend=c10d \
  --rdzv-endpoint=$(strip $(RDZV)) --rdzv-id=$(strip $(RDZV_ID)),--standalone)
TRAIN := $(if $(filter-out 1,$(strip $(NPROC)) $(strip $(NNODES))),$(VENV)/bin/torchrun $(RENDEZVOUS) \
  --nproc_per_node=$(strip $(NPROC)) -m gal,$(PY) -m gal)
REGRESSION_SEEDS := $(if $(SEEDS),$(SEEDS),0,1,2,3,4)
IMAGE_SEEDS := $(if $(SEEDS),$(SEEDS),0,1,2)
# One thread per run in the CPU sweeps: these models are tiny, and two one-thread runs side by side
# went ~5x faster on a 2-core CPU than two-thread runs one after the other.
ONE_THREAD := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}

# Offline copies of the data sets, when this checkout sits beside them (see docs/data.md).
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/sklearn),)
export SCIKIT_LEARN_DATA ?= $(SHARED_DATA)/sklearn
endif
ifneq ($(wildcard $(SHARED_DATA)/boston/boston_house_prices.csv),)
export GAL_BOSTON_CSV ?= $(SHARED_DATA)/boston/boston_house_prices.csv
endif

.PHONY: help venv test test-slow lint format quickstart synthetic-cifar cifar100-smoke reproduce-regression reproduce-digits table1 table2 table3 table4 table5 paper-files \
	digits table5-readings tuned eq7 where-to-inject where-to-inject-confirm where-to-inject-cifar100 confirm bench bench-startup bench-throughput gpu-check device-bundle fig4 figures ablations reproduce-ablations adarem notebook \
	clean-runs clean-venv

help:  ## this list
	@grep -hE '^[a-zA-Z0-9_%/ -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]+):.*## (.*)/  \1\t\2/' | expand -t 34
	@echo "  ablation-<name>                  an ablation ($(ABLATIONS)) on the paper's setting, or EXP=<experiment>"
	@echo "  <row>[-gal]                     a paper row of Tables I-V, baseline or GAL (rows: $(PAPER_ROW_NAMES))"
	@echo "  Variables: NPROC=<GPUs per node> NNODES=<n> RDZV=<host:port> SEEDS=0,1 ARGS=\"<hydra overrides>\" JOBS=<n>"

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed  ## the virtual env (.venv) from requirements.txt

# Two pytest workers, each running whole files (a file's module fixtures run once); the tests that time
# themselves against a deadline (marker `serial`) then run alone.
TEST_WORKERS ?= 2
test: venv  ## the test suite (what CI runs, with lint)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not serial"
	$(PY) -m pytest -q -m "serial and not slow"

test-slow: venv  ## the @slow tests (minutes)
	$(PY) -m pytest -q -m slow

lint: venv  ## ruff check + format check
	$(PY) -m ruff check src scripts tests examples
	$(PY) -m ruff format --check src scripts tests examples

format: venv  ## ruff format + fixes
	$(PY) -m ruff format src scripts tests examples
	$(PY) -m ruff check --fix src scripts tests examples

# The first minute: one Table V row, baseline and GAL at the paper's settings, 5 seeds in one process (the sweep's
# summary prints mean +- std per arm); then the image path on a tiny synthetic CIFAR-100 in its real on-disk format.
quickstart: venv  ## Table V's diabetes row, baseline and GAL, 5 seeds (~30 s on 2 CPU cores)
	$(RUN) experiment=table5_diabetes gal=off,on seed=0,1,2,3,4 $(ARGS)

SMOKE_CIFAR := data/cifar100_toy
$(SMOKE_CIFAR)/cifar-100-python/meta: | venv
	$(PY) scripts/make_synthetic_data.py cifar100 --root $(SMOKE_CIFAR) --images 64
synthetic-cifar: $(SMOKE_CIFAR)/cifar-100-python/meta  ## a 64-image CIFAR-100 in its real on-disk format (data/cifar100_toy)

cifar100-smoke: venv synthetic-cifar  ## Table II's CIFAR-100 row through the trainer on the CPU: timm's test EfficientNet, 32 px, 2 epochs
	$(PY) -m gal --multirun experiment=table2_cifar100_sgd gal=off,on name=smoke task.root=$(SMOKE_CIFAR) \
	  task.download=false task.verify=false task.model.name=test_efficientnet task.model.pretrained=false \
	  task.image_size=32 task.global_batch_size=16 task.num_workers=0 trainer.epochs=2 trainer.if_exists=skip $(ARGS)

# Table V: 3 data sets x {baseline, GAL} x 5 seeds, then alpha in {0.01, 0.1, 0.5} for GAL,
# then the tables. A data set that cannot be loaded is reported, and its rows are marked missing.
# One target per data set and arm (and alpha), run $(JOBS) at a time, one thread each.
TABLE5_DATASETS := boston diabetes california
table5-runs/%: venv
	$(ONE_THREAD) $(RUN) experiment=table5_$(word 1,$(subst /, ,$*)) gal=$(word 2,$(subst /, ,$*)) \
	  seed=$(REGRESSION_SEEDS) $(ARGS) || echo "table5 $* did not finish (see above)"
table5-alpha-runs/%: venv
	$(ONE_THREAD) $(RUN) experiment=table5_$(word 1,$(subst /, ,$*)) gal=on gal.alpha=$(word 2,$(subst /, ,$*)) \
	  'name=table5_alpha$${gal.alpha}' seed=$(REGRESSION_SEEDS) $(ARGS) || echo "table5_alpha $* did not finish (see above)"

reproduce-regression: venv  ## Table V + its alpha sweep from real runs (5 seeds), then the tables
	$(MAKE) --no-print-directory -j$(JOBS) $(foreach d,$(TABLE5_DATASETS),table5-runs/$(d)/off table5-runs/$(d)/on \
	  $(foreach a,0.01 0.1 0.5,table5-alpha-runs/$(d)/$(a)))
	$(PY) scripts/make_tables.py table5 table5_alpha

table5: venv  ## Table V's tables from the runs there are
	$(PY) scripts/make_tables.py table5 table5_alpha

# Table V's readings: the paper gives no preprocessing, epochs or lr, so the baseline and GAL (alpha = beta = 0.001)
# train over a grid of readings of its recipe: feature scaling x target scaling x epochs (a third of the recipe's,
# the recipe's, three times it) x Adam's lr, 54 per data set, 5 seeds per arm; one target per data set, arm and lr
# (a --multirun in one process, one thread), $(JOBS) at a time. Then the three readings closest to the paper's
# baseline run seeds 0-19, with the fixed split and with per-seed splits, and the table and the figure.
READINGS_EPOCHS_boston := 33,100,300
READINGS_EPOCHS_diabetes := 10,30,90
READINGS_EPOCHS_california := 10,30,90
READINGS_LRS := 0.01 0.001 0.0001
READING_NAME := x_$${task.feature_scaling}-y_$${task.target_scaling}-e$${trainer.epochs}-lr$${optimizer.lr}
READINGS_RUN = $(ONE_THREAD) $(RUN) trainer.checkpoint=false trainer.on_nonfinite=record
readings-runs/%: venv
	$(READINGS_RUN) experiment=table5_$(word 1,$(subst /, ,$*)) gal=$(word 2,$(subst /, ,$*)) \
	  optimizer.lr=$(word 3,$(subst /, ,$*)) task.feature_scaling=standard,minmax,none task.target_scaling=standard,none \
	  trainer.epochs=$(READINGS_EPOCHS_$(word 1,$(subst /, ,$*))) 'name=table5_readings/$(READING_NAME)' \
	  seed=$(REGRESSION_SEEDS) $(ARGS) || echo "readings $* did not finish (see above)"
# readings-confirm/<set>/<feature scaling>/<target scaling>/<epochs>/<lr>/<fixed|per_seed>: one reading, both arms,
# seeds 0-19 (per_seed: in table5_readings_per_seed/, each seed its own split)
readings-confirm/%: venv
	$(READINGS_RUN) experiment=table5_$(word 1,$(subst /, ,$*)) gal=off,on task.feature_scaling=$(word 2,$(subst /, ,$*)) \
	  task.target_scaling=$(word 3,$(subst /, ,$*)) trainer.epochs=$(word 4,$(subst /, ,$*)) \
	  optimizer.lr=$(word 5,$(subst /, ,$*)) task.split=$(word 6,$(subst /, ,$*)) \
	  'name=table5_readings$(if $(filter per_seed,$(word 6,$(subst /, ,$*))),_per_seed)/$(READING_NAME)' \
	  seed=$(CONFIRM_SEEDS) $(ARGS) || echo "readings confirm $* did not finish (see above)"
READINGS_RUNS := $(foreach d,california boston diabetes,$(foreach a,on off,$(foreach lr,$(READINGS_LRS),readings-runs/$(d)/$(a)/$(lr))))

table5-readings: venv  ## Table V over 54 readings of its unstated recipe (5 seeds), the 3 nearest the paper's baseline with 20 (~2 h)
	$(MAKE) --no-print-directory -j$(JOBS) $(READINGS_RUNS)
	cells=$$($(PY) scripts/make_tables.py --readings-confirm-targets) && $(CELLS_MAKE) -j$(JOBS) $$cells
	$(PY) scripts/make_tables.py table5_readings
	$(PY) scripts/make_figures.py --only table5_readings

# Equal-budget tuning on a validation split: for each of Table V's sets and digits, the baseline and GAL each get an
# Optuna TPE search of TUNE_TRIALS trials (the same sampler seed; GAL searches alpha and beta besides), every trial
# scored on task.val_size = 0.2 of the training rows; each arm's best trial then runs seeds 0-19, scored on the
# test split (configs/hparams_search/tune_*.yaml). tune-search/<set>/<off|on>, tune-final/<set>/<off|on>.
TUNE_SETS := california boston diabetes digits
TUNE_TRIALS ?= 30
tune_experiment = $(if $(filter digits,$(1)),digits,table5_$(1))
tune_arm = $(if $(filter on,$(1)),gal,baseline)
# each set's ranges beyond tune_baseline.yaml's: epochs a third to three times the recipe's; California's batch
# around its recipe's 128; digits' SGD lr
TUNE_SPACE_boston := 'trainer.epochs=int(interval(33, 300))'
TUNE_SPACE_diabetes := 'trainer.epochs=int(interval(10, 90))'
TUNE_SPACE_california := 'trainer.epochs=int(interval(10, 90))' 'task.global_batch_size=choice(64, 128, 256, 512)'
TUNE_SPACE_digits := 'trainer.epochs=int(interval(7, 60))' 'optimizer.lr=tag(log, interval(1e-3, 0.5))'
tune-search/%: venv
	$(ONE_THREAD) $(PY) -m gal hparams_search=tune_$(call tune_arm,$(word 2,$(subst /, ,$*))) \
	  experiment=$(call tune_experiment,$(word 1,$(subst /, ,$*))) trainer.if_exists=skip trainer.progress=false \
	  hydra.sweeper.n_trials=$(TUNE_TRIALS) $(TUNE_SPACE_$(word 1,$(subst /, ,$*))) $(ARGS) \
	  || echo "tuning search $* did not finish (see above)"
tune-final/%: venv
	$(CELLS_MAKE) tune-search/$*
	overrides="$$($(PY) scripts/make_tables.py --tuned-overrides $(word 1,$(subst /, ,$*)) $(word 2,$(subst /, ,$*)))" \
	  && $(ONE_THREAD) $(RUN) experiment=$(call tune_experiment,$(word 1,$(subst /, ,$*))) gal=$(word 2,$(subst /, ,$*)) \
	  task.val_size=0.2 trainer.checkpoint=false trainer.on_nonfinite=record $$overrides name=tuned/final \
	  seed=$(CONFIRM_SEEDS) $(ARGS) || echo "tuned runs $* did not finish (see above)"

tuned: venv  ## equal-budget tuning of both arms on validation (Table V sets, digits), best trial x 20 seeds (~1 h)
	$(MAKE) --no-print-directory -j$(JOBS) $(foreach s,$(TUNE_SETS),$(foreach a,off on,tune-final/$(s)/$(a)))
	$(PY) scripts/make_tables.py tuned

# digits: one target per arm (a --multirun over the seeds, one process: start-up is paid once), side by side
digits-runs/%: venv
	$(ONE_THREAD) $(RUN) experiment=digits gal=$* seed=$(REGRESSION_SEEDS) $(ARGS) || echo "digits $* did not finish (see above)"

reproduce-digits: venv  ## digits (small CNN, real data) baseline vs GAL, 5 seeds, then its table
	$(MAKE) --no-print-directory -j$(JOBS) digits-runs/off digits-runs/on
	$(PY) scripts/make_tables.py digits

# Where to inject (gal.at): GAL at the classifier's input and at the first hidden layer (module:1: the MLPs' first
# ReLU, the digits CNN's first conv block), beside the logits' runs (Table V's, digits'), 5 seeds each, then the
# table and the figure. where-runs/<experiment>/<point>, point = pre_logits | first_hidden.
WHERE_AT = $(if $(filter first_hidden,$(1)),module:1,$(1))
where-runs/%: venv
	$(ONE_THREAD) $(RUN) experiment=$(word 1,$(subst /, ,$*)) gal=on gal.at=$(call WHERE_AT,$(word 2,$(subst /, ,$*))) \
	  name=where_to_inject/$(word 2,$(subst /, ,$*)) seed=$(REGRESSION_SEEDS) $(ARGS) || echo "where $* did not finish"
WHERE_RUNS := $(foreach e,$(addprefix table5_,$(TABLE5_DATASETS)) digits,$(foreach p,pre_logits first_hidden,where-runs/$(e)/$(p)))
LOGITS_RUNS := $(foreach d,$(TABLE5_DATASETS),table5-runs/$(d)/off table5-runs/$(d)/on) digits-runs/off digits-runs/on

where-to-inject: venv  ## GAL at the logits vs the classifier's input vs the first hidden layer (regression + digits, 5 seeds)
	$(MAKE) --no-print-directory -j$(JOBS) $(LOGITS_RUNS) $(WHERE_RUNS)
	$(PY) scripts/make_tables.py where_to_inject
	$(PY) scripts/make_figures.py --only where_to_inject

where-to-inject-confirm: venv  ## the same with seeds 0-19
	$(MAKE) --no-print-directory -j$(JOBS) REGRESSION_SEEDS=$(CONFIRM_SEEDS) $(LOGITS_RUNS) $(WHERE_RUNS)
	$(PY) scripts/make_tables.py where_to_inject
	$(PY) scripts/make_figures.py --only where_to_inject

# The paper's setting on GPUs (not run on the CPU): CIFAR-100, EfficientNet-B1, SGD, GAL at the logits vs pre-logits
where-to-inject-cifar100: venv  ## CIFAR-100 EfficientNet-B1 SGD with GAL at the logits and at pre-logits (GPUs)
	$(TRAIN) --multirun experiment=table2_cifar100_sgd gal=on gal.at=logits,pre_logits \
	  'name=where_to_inject_cifar100/$${gal.at}' seed=$(IMAGE_SEEDS) trainer.if_exists=skip $(ARGS)

# Eq. 7 as the paper writes it: GAL with the exact first-order term ("taylor") in float64 and in float32,
# beside the baseline and the authors' term (the Table V and digits runs above), 5 seeds each; then the alpha and
# beta ablations under the three GAL arms (the authors' term: the `make ablations` runs), the toy problem under
# each, the table and the figure.
EQ7_VARIANTS := taylor64:gal.first_order=taylor,gal.precision=float64 taylor32:gal.first_order=taylor,gal.precision=float32
EQ7_ABLATIONS := alpha beta
eq7_args = $(subst $(comma), ,$(word 2,$(subst :, ,$(filter $(1):%,$(EQ7_VARIANTS)))))
comma := ,
eq7-runs/%: venv
	$(ONE_THREAD) $(RUN) experiment=$(word 1,$(subst /, ,$*)) gal=on $(call eq7_args,$(word 2,$(subst /, ,$*))) \
	  name=eq7_$(word 2,$(subst /, ,$*)) seed=$(REGRESSION_SEEDS) $(ARGS) || echo "eq7 $* did not finish (see above)"
# eq7-sweep/<ablation>/<experiment>/<variant>: an ablation's sweep with Eq. 7's term, in eq7_<variant>_<ablation>/
# (the name is quoted for Hydra's override grammar, which takes no bare "=" in a value)
eq7-sweep/%: venv
	$(ONE_THREAD) $(RUN) ablation=$(word 1,$(subst /, ,$*)) experiment=$(word 2,$(subst /, ,$*)) gal=on \
	  $(call eq7_args,$(word 3,$(subst /, ,$*))) \
	  'name="eq7_$(word 3,$(subst /, ,$*))_$(word 1,$(subst /, ,$*))/$(word 1,$(subst /, ,$*))=$${gal.$(word 1,$(subst /, ,$*))}"' \
	  seed=$(REGRESSION_SEEDS) $(ARGS) || echo "eq7 sweep $* did not finish (see above)"
EQ7_RUNS := $(LOGITS_RUNS) \
	$(foreach e,$(addprefix table5_,$(TABLE5_DATASETS)) digits,$(foreach v,taylor64 taylor32,eq7-runs/$(e)/$(v)))

eq7: venv  ## Eq. 7's exact term vs the authors' (Table V sets, digits, alpha/beta ablations, the toy), 5 seeds
	$(MAKE) --no-print-directory -j$(JOBS) $(EQ7_RUNS) $(call sweep_targets,$(EQ7_ABLATIONS),$(ABLATION_EXPS)) \
	  $(foreach a,$(EQ7_ABLATIONS),$(foreach e,$(ABLATION_EXPS),$(foreach v,taylor64 taylor32,eq7-sweep/$(a)/$(e)/$(v))))
	$(PY) scripts/toy3d.py --eq7 --seeds 0 1 2 3 4
	$(PY) scripts/make_tables.py eq7
	$(PY) scripts/make_figures.py  # results/figures/eq7_diagnostics.png, with the other figures

# Conclusions that survive another machine: the runs behind the README's claims with seeds 0-19,
# one thread per job, $(JOBS) at a time; the tables put the 20-seed means and t-tests beside the 5-seed ones.
# The alpha ablation (under the three GAL arms) and digits' random one run 20 seeds (random's other tasks 5,
# the table's rows); AdaRem's grid runs 5 seeds, which pick each optimizer's best lr per task, and those 12
# cells then run 20.
CONFIRM_SEEDS := $(shell seq -s, 0 19)
CONFIRM_ABLATIONS := random alpha
confirm: venv  ## every claim of a difference re-run with 20 seeds (Table V, alpha, digits, Eq. 7, ablations, AdaRem)
	$(MAKE) --no-print-directory -j$(JOBS) REGRESSION_SEEDS=$(CONFIRM_SEEDS) $(EQ7_RUNS) \
	  $(foreach d,$(TABLE5_DATASETS),$(foreach a,0.01 0.1 0.5,table5-alpha-runs/$(d)/$(a))) \
	  sweep/random/digits $(call sweep_targets,alpha,$(ABLATION_EXPS)) \
	  $(foreach e,$(ABLATION_EXPS),$(foreach v,taylor64 taylor32,eq7-sweep/alpha/$(e)/$(v)))
	$(MAKE) --no-print-directory -j$(JOBS) $(call sweep_targets,random,$(filter-out digits,$(ABLATION_EXPS))) \
	  $(call sweep_targets,adarem,$(ABLATION_EXPS))
	cells=$$($(PY) scripts/make_tables.py --adarem-confirm-targets) && $(CELLS_MAKE) -j$(JOBS) $$cells
	$(PY) scripts/make_tables.py table5 table5_alpha digits eq7 $(addprefix ablation_,$(CONFIRM_ABLATIONS)) adarem
CELLS_MAKE = $(MAKE) --no-print-directory  # not $(MAKE) in the recipe: `make -n confirm` would run the script
# adarem-best/<task>/<optimizer>/<lr>: one cell of the AdaRem grid with seeds 0-19 (the command line's optimizer
# and lr replace the sweep's: Hydra's basic sweeper puts them after configs/ablation/adarem.yaml's params)
adarem-best/%: venv
	$(ONE_THREAD) $(RUN) ablation=adarem experiment=$(filter %$(word 1,$(subst /, ,$*)),$(ABLATION_EXPS)) \
	  optimizer=$(word 2,$(subst /, ,$*)) optimizer.lr=$(word 3,$(subst /, ,$*)) seed=$(CONFIRM_SEEDS) $(ARGS) \
	  || echo "adarem cell $* did not finish"

# Tables I-V: one target per paper row and arm, e.g. `make cifar100-sgd-gal NPROC=4 SEEDS=0`, each a thin alias
# for the row's experiment config (configs/experiment/); ARGS="..." adds overrides. Generated from the rows of
# results/paper/*.yaml by `python scripts/make_tables.py --make-rows`.
include results/paper/rows.mk

# Evaluate a trained DETR (facebookresearch/detr's model zoo file, or one of our last.pt) on COCO val2017 without
# training: `make coco-detr-r50-eval CKPT=detr-r50-e632da11.pth` (r50 | r101: the backbone of the file). Each file
# gets its own run directory, results/runs/table4_eval_<file name>/, apart from the table4 runs.
coco-detr-%-eval: venv  ## COCO AP of a DETR checkpoint, CKPT=<file> (coco-detr-r50-eval, coco-detr-r101-eval)
	$(if $(CKPT),,$(error $@ needs CKPT=<checkpoint file>, e.g. detr-r50-e632da11.pth from DETR's model zoo))
	$(TRAIN) experiment=table4_coco_detr_$* gal=off task.checkpoint=$(abspath $(CKPT)) trainer.epochs=0 \
	  name=table4_eval_$(basename $(notdir $(CKPT))) trainer.if_exists=skip $(ARGS)

table1 table2 table3 table4 digits: venv  ## a paper table (or digits') from the runs there are
	$(PY) scripts/make_tables.py $@

paper-files: venv  ## after editing results/paper/*.yaml: regenerate results/paper/rows.mk and the README's paper table
	$(PY) scripts/make_tables.py --make-rows --readme

# Ablations (configs/ablation/*.yaml, Hydra sweeps over GAL settings): `make ablation-policy` runs
# on the paper's setting (CIFAR-100, EfficientNet-B1, SGD); EXP=<experiment> runs it on any other.
EXP ?= table2_cifar100_sgd
ABLATIONS := policy random alpha beta arch
ABLATION_EXPS := table5_boston table5_diabetes table5_california digits
$(addprefix ablation-,$(ABLATIONS)): ablation-%: venv
	$(TRAIN) --multirun experiment=$(EXP) ablation=$* gal=on seed=$(IMAGE_SEEDS) trainer.if_exists=skip $(ARGS)

# On this machine: every ablation on the regression and digits experiments, 5 seeds, t-tests
# against the paper-setting GAL runs of `make reproduce-regression reproduce-digits`. Each
# sweep/<ablation>/<experiment> is its own target, run $(JOBS) at a time, one thread each.
sweep_targets = $(foreach ablation,$(1),$(foreach exp,$(2),sweep/$(ablation)/$(exp)))
sweep/%: venv
	$(ONE_THREAD) $(RUN) ablation=$(word 1,$(subst /, ,$*)) experiment=$(word 2,$(subst /, ,$*)) \
	  $(if $(filter adarem,$(word 1,$(subst /, ,$*))),,gal=on) seed=$(REGRESSION_SEEDS) $(ARGS) \
	  || echo "sweep $* did not finish"

ablations: venv  ## every ablation on regression + digits (5 seeds), then the tables
	$(MAKE) --no-print-directory -j$(JOBS) $(call sweep_targets,$(ABLATIONS),$(ABLATION_EXPS))
	$(PY) scripts/make_tables.py $(addprefix ablation_,$(ABLATIONS))

reproduce-ablations: ablations  ## = ablations

# AdaRem vs SGD-M vs Adam (no GAL) over one lr grid on regression and digits (5 seeds), and on the toy
# problem; results/tables/adarem.md. ADAREM_EXPS="table2_cifar100_sgd" runs the same sweep on other experiments.
ADAREM_EXPS ?= $(ABLATION_EXPS)
adarem: venv  ## AdaRem vs SGD-M vs Adam over an lr grid (regression, digits, the toy), then the table
	$(MAKE) --no-print-directory -j$(JOBS) $(call sweep_targets,adarem,$(ADAREM_EXPS))
	$(PY) scripts/toy_adarem.py
	$(PY) scripts/make_tables.py adarem

# Fig. 4: the 3D toy problem, standard vs GAL for five optimizers (seconds on a CPU)
fig4: venv  ## Fig. 4, the 3D toy problem (the authors' seeds of h; seeds 0-4 in fig4_seeds.md)
	$(PY) scripts/toy3d.py --seeds 0 1 2 3 4

# Figs. 5, 6, 8b (curves from the runs' log.jsonl) and Table VII (from results/bench/*.json)
figures: venv  ## Figs. 5-8 curves and ablation figures, Table VII
	$(PY) scripts/make_figures.py

# notebooks/analysis.ipynb on the committed results/, executed into notebooks/analysis_executed.ipynb
notebook: venv  ## notebooks/analysis.ipynb executed into analysis_executed.ipynb
	$(VENV)/bin/jupyter execute --timeout=120 notebooks/analysis.ipynb --output=analysis_executed

bench: venv  ## GAL's step overhead (results/bench/gal_overhead.json)
	$(PY) scripts/bench_gal_overhead.py

bench-startup: venv  ## start-up time of the command line, this checkout beside b2831e2 (results/bench/startup.json)
	$(PY) scripts/bench_startup.py --against b2831e2

bench-throughput: venv  ## trainer vs minimal loop, GAL on vs off, images/s (results/bench/throughput.json)
	$(PY) scripts/bench_throughput.py

# One CUDA GPU, ~9 min in phases that always finish: every paper model GAL off/on, the trainer end to end (kill +
# resume), fp32/fp16/compile (results/bench/gpu_check.json and .log). ARGS="--cpu --out-dir /tmp/x" rehearses it.
gpu-check: venv  ## on one CUDA GPU: paper models GAL off/on, trainer kill+resume, precisions, compile, host syncs
	$(PY) scripts/gpu_check.py $(ARGS)

# What a lent GPU machine needs to run gpu_check.py offline: wheels of .venv's versions + run.sh (device_bundle/)
device-bundle: venv  ## device_bundle/: wheels + run.sh for `bash device_bundle/run.sh` on a GPU machine
	$(PY) scripts/device_bundle.py

# Training again from scratch: a run directory that holds a run is never started over (trainer.if_exists)
RUNS_DIR ?= results/runs
clean-runs:  ## remove the runs under results/runs/ (NAME=<name>: that experiment's only); results/tables/ stays
	@case "$(NAME)" in */*|..|.) echo "error: NAME=$(NAME): give an experiment's name (a folder of $(RUNS_DIR)/)"; exit 1;; esac
	rm -rf $(RUNS_DIR)/$(NAME)

clean-venv:  ## remove .venv
	rm -rf $(VENV)
