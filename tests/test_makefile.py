"""The Makefile's sweep targets (dry runs): every ablation file has its commands, here and on the paper's setting."""

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p.stem for p in (ROOT / "configs" / "ablation").glob("*.yaml"))
GAL_ABLATIONS = [name for name in SWEEPS if name != "adarem"]  # adarem compares optimizers, GAL off


def make(*args: str) -> subprocess.CompletedProcess:
    """`make` as a user would type it (not as a sub-make of `make test`, which would echo directories)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def dry_run(*targets: str) -> str:
    """The commands `make -n` prints."""
    result = make("-n", *targets)
    result.check_returncode()
    return result.stdout


def test_make_ablations_runs_every_gal_ablation_on_every_cpu_experiment_then_the_tables():
    commands = dry_run("ablations")
    for name in GAL_ABLATIONS:
        for experiment in ("table5_boston", "table5_diabetes", "table5_california", "digits"):
            assert f"ablation={name} experiment={experiment} \\\n  gal=on seed=0,1,2,3,4" in commands
    tables = commands.rstrip().splitlines()[-1]
    assert "scripts/make_tables.py" in tables and set(tables.split()[2:]) == {f"ablation_{n}" for n in GAL_ABLATIONS}


@pytest.mark.parametrize("name", GAL_ABLATIONS)
def test_each_ablation_runs_on_the_papers_setting_or_any_experiment(name):
    assert f"experiment=table2_cifar100_sgd ablation={name} gal=on seed=0,1,2" in dry_run(f"ablation-{name}")
    assert f"experiment=digits ablation={name}" in dry_run(f"ablation-{name}", "EXP=digits")


def test_make_adarem_sweeps_without_gal_and_builds_the_toy_and_the_table():
    commands = dry_run("adarem")
    assert "ablation=adarem experiment=digits \\\n   seed=0,1,2,3,4" in commands and "gal=on" not in commands
    assert commands.rstrip().endswith("scripts/toy_adarem.py\n.venv/bin/python scripts/make_tables.py adarem")


def test_make_notebook_never_writes_over_the_committed_notebook():
    (command,) = [line for line in dry_run("notebook").splitlines() if "jupyter execute" in line]
    output = command.split("--output=")[1].split()[0]
    # nbclient appends .ipynb with Path.with_suffix: a dotted name like "analysis.run" would become analysis.ipynb
    assert "." not in output and output != "analysis"


def test_a_paper_row_runs_three_seeds_under_torchrun_on_one_or_several_nodes():
    assert (
        dry_run("cifar100-sgd-gal")
        .strip()
        .endswith(
            ".venv/bin/python -m gal --multirun experiment=table2_cifar100_sgd gal=on seed=0,1,2 trainer.if_exists=skip"
        )
    )
    one_node = dry_run("cifar100-sgd-gal", "NPROC=8")
    assert (
        ".venv/bin/torchrun --standalone --nproc_per_node=8 -m gal --multirun experiment=table2_cifar100_sgd"
        in one_node
    )
    two_nodes = dry_run("imagenet-resnet50-rmsprop", "NPROC=8", "NNODES=2", "RDZV=node0:29500")
    assert (
        "torchrun --nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=node0:29500 --rdzv-id=gal --nproc_per_node=8 -m gal"
        in two_nodes
    )


def test_several_nodes_without_a_rendezvous_is_a_one_line_error():
    result = make("-n", "imagenet-resnet50-rmsprop", "NNODES=2")
    assert result.returncode != 0 and "NNODES=2 needs RDZV=<host of node 0>:<free port>" in result.stderr


def test_cpu_sweeps_run_one_thread_per_run_several_at_a_time():
    commands = dry_run("reproduce-digits", "JOBS=3")
    assert "-j3 digits-runs/off digits-runs/on" in commands
    assert "OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/python -m gal --multirun" in commands
    for arm in ("off", "on"):  # one process per arm: start-up paid once
        assert f"experiment=digits gal={arm} seed=0,1,2,3,4" in commands
    assert "-j3" in dry_run("reproduce-regression", "JOBS=3") and "-j3" in dry_run("ablations", "JOBS=3")


def test_make_help_lists_the_targets():
    listing = make("help")
    for target in ("test", "reproduce-regression", "reproduce-digits", "ablations", "adarem", "gpu-check", "figures"):
        assert f"\n  {target} " in "\n" + listing.stdout
    assert "cifar100-sgd" in listing.stdout and "NNODES" in listing.stdout


def test_a_detr_checkpoint_is_evaluated_without_training_in_a_run_directory_of_its_own():
    command = dry_run("coco-detr-r101-eval", "CKPT=zoo/detr-r101-2c7b67e5.pth")
    assert f"experiment=table4_coco_detr_r101 gal=off task.checkpoint={ROOT}/zoo/detr-r101-2c7b67e5.pth" in command
    assert "trainer.epochs=0" in command and "name=table4_eval_detr-r101-2c7b67e5" in command
    result = make("-n", "coco-detr-r50-eval")
    assert result.returncode != 0 and "coco-detr-r50-eval needs CKPT=<checkpoint file>" in result.stderr


def test_make_eq7_runs_both_eq7_arms_beside_the_baseline_and_the_authors_term_then_its_table():
    commands = dry_run("eq7", "JOBS=2")
    for experiment in ("table5_boston", "table5_diabetes", "table5_california", "digits"):
        for variant in ("taylor64", "taylor32"):
            assert f"eq7-runs/{experiment}/{variant}" in commands
    assert "table5-runs/boston/off table5-runs/boston/on" in commands and "digits-runs/off digits-runs/on" in commands
    for ablation in ("alpha", "beta"):  # the ablations under the authors' term and under Eq. 7's
        assert f"sweep/{ablation}/table5_california" in commands and f"eq7-sweep/{ablation}/digits/taylor32" in commands
    assert "scripts/toy3d.py --eq7 --seeds 0 1 2 3 4" in commands
    assert "scripts/make_tables.py eq7\n" in commands and "scripts/make_figures.py" in commands.splitlines()[-1]
    run = dry_run("eq7-runs/digits/taylor64")
    assert "experiment=digits gal=on gal.first_order=taylor gal.precision=float64" in run and "name=eq7_taylor64" in run
    sweep = " ".join(dry_run("eq7-sweep/beta/table5_boston/taylor32").replace("\\\n", " ").split())
    assert "ablation=beta experiment=table5_boston gal=on gal.first_order=taylor gal.precision=float32" in sweep
    assert "'name=\"eq7_taylor32_beta/beta=${gal.beta}\"'" in sweep


def test_make_confirm_runs_the_claims_with_twenty_seeds_then_the_tables():
    commands = dry_run("confirm", "JOBS=2")
    assert "REGRESSION_SEEDS=" + ",".join(map(str, range(20))) in commands
    first = commands.split("OMP_NUM_THREADS", 1)[0]  # the first make command, before its recipes
    for target in (
        "table5-runs/california/off",
        "table5-alpha-runs/diabetes/0.5",
        "digits-runs/on",
        "eq7-runs/digits/taylor32",
        "sweep/random/digits",  # 20 seeds: on the REGRESSION_SEEDS=0,...,19 line
    ):
        assert target in first
    assert "sweep/alpha/table5_california" in first and "eq7-sweep/alpha/table5_boston/taylor64" in first
    five = commands.split("\nmake ")[1].split("OMP_NUM_THREADS")[0]  # the second make command: 5 seeds
    assert "REGRESSION_SEEDS" not in five and "sweep/random/table5_california" in five and "sweep/adarem/digits" in five
    assert "cells=$(.venv/bin/python scripts/make_tables.py --adarem-confirm-targets) && make" in commands
    assert commands.splitlines()[-1].endswith(
        "scripts/make_tables.py table5 table5_alpha digits eq7 ablation_random ablation_alpha adarem"
    )
    cell = " ".join(dry_run("adarem-best/california/adarem/0.1").replace("\\\n", " ").split())
    assert "ablation=adarem experiment=table5_california optimizer=adarem optimizer.lr=0.1 seed=0,1,2," in cell


@pytest.mark.parametrize(
    "target",
    ["eq7-sweep/alpha/digits/taylor64", "eq7-runs/table5_boston/taylor32", "table5-alpha-runs/diabetes/0.5",
     "sweep/beta/table5_california", "digits-runs/on", "adarem-best/digits/sgd/0.03"],
)  # fmt: skip
def test_each_cpu_run_target_gives_hydra_overrides_it_can_parse(target):
    """Hydra's own parser on the overrides a target passes (a bare "=" inside a value is a grammar error)."""
    command = dry_run(target).replace("\\\n", " ").split("||")[0]
    overrides = [word for word in shlex.split(command) if "=" in word and not word.startswith("OMP_NUM_THREADS")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    assert {o.key_or_group for o in parsed} >= {"seed", "experiment", "trainer.if_exists"}


def test_make_clean_runs_removes_one_experiments_runs_or_all_and_refuses_a_path(tmp_path):
    runs = tmp_path / "runs"
    for name in ("my_run", "default"):
        (runs / name / "diabetes" / "seed=0").mkdir(parents=True)
        (runs / name / "diabetes" / "seed=0" / "metrics.json").write_text("{}")
    assert make("clean-runs", f"RUNS_DIR={runs}", "NAME=my_run").returncode == 0
    assert sorted(p.name for p in runs.iterdir()) == ["default"]
    refused = make("clean-runs", f"RUNS_DIR={runs}", "NAME=../x")
    assert refused.returncode != 0 and "error: NAME=../x: give an experiment's name" in refused.stdout
    assert make("clean-runs", f"RUNS_DIR={runs}").returncode == 0
    assert not runs.exists() and tmp_path.exists()
