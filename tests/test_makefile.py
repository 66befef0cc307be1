"""The Makefile's sweep targets (dry runs): every ablation file has its commands, here and on the paper's setting."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p.stem for p in (ROOT / "configs" / "ablation").glob("*.yaml"))
GAL_ABLATIONS = [name for name in SWEEPS if name != "adarem"]  # adarem compares optimizers, GAL off


def dry_run(*targets: str) -> str:
    """`make -n` as a user would type it (not as a sub-make of `make test`, which would echo directories)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    command = ["make", "--no-print-directory", "-n", *targets]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout


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
