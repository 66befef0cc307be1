"""Cluster sweeps and searches through Hydra's own plugins: submitit (local and SLURM) and Optuna.

No SLURM here: the SLURM preset is composed and its checks are run against stand-in ``sinfo`` /
``sbatch`` commands; submitit's local launcher runs real jobs the way its SLURM launcher would
(the task function pickled, unpickled in a fresh process, run).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

import gal.train  # noqa: F401  (registers the ${objective_direction:...} resolver)
from gal.cluster import check_slurm_request

from .conftest import CONFIG_DIR

GAL = [sys.executable, "-m", "gal"]
QUICK = ["task=diabetes", "trainer.epochs=1", "trainer.progress=false"]


def gal_command(args: list[str], cwd: Path, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """``python -m gal args`` with ``env`` over this environment (None removes a variable)."""
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([*GAL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_submitit_local_launcher_runs_every_job(tmp_path):
    result = gal_command(
        ["--multirun", "hydra/launcher=submitit_local", *QUICK, "seed=0,1", f"results_dir={tmp_path}"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = sorted(p.parent.name for p in tmp_path.rglob("metrics.json"))
    assert found == ["seed=0", "seed=1"]


def test_optuna_search_over_alpha_and_beta_optimises_the_tasks_metric(tmp_path):
    args = [
        "hparams_search=gal_alpha_beta",
        *QUICK,
        "trainer.epochs=2",
        "hydra.sweeper.n_trials=3",
        f"results_dir={tmp_path}",
    ]
    result = gal_command(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "search_alpha_beta").rglob("metrics.json")]
    assert len(trials) == 3
    for trial in trials:
        assert trial["config"]["gal"]["enabled"]
        assert 1e-4 <= trial["config"]["gal"]["alpha"] <= 0.5 and 1e-3 <= trial["config"]["gal"]["beta"] <= 10
    summary = yaml.safe_load((tmp_path / "runs/search_alpha_beta/diabetes/adam/optimization_results.yaml").read_text())
    best = min(trials, key=lambda t: t["selected"]["val"]["mse"])  # scored on validation, never on the test split
    assert summary["best_value"] == pytest.approx(best["selected"]["val"]["mse"])
    assert all(trial["config"]["task"]["val_size"] == 0.2 for trial in trials)
    assert summary["best_params"]["gal.alpha"] == pytest.approx(best["config"]["gal"]["alpha"])


@pytest.mark.parametrize(
    ("task", "direction"), [("diabetes", "minimize"), ("cifar100", "minimize"), ("coco", "maximize")]
)
def test_the_search_direction_follows_the_tasks_metric(task, direction):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["hparams_search=gal_alpha_beta", f"task={task}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == direction


def test_the_slurm_preset_asks_for_one_task_per_gpu_and_reads_the_partition_from_the_environment(monkeypatch):
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)
    overrides = ["hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.gal_cluster.CheckedSlurmLauncher"
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.account is None


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """PATH with an ``sinfo`` listing partitions debug and gpu (no default) and an ``sbatch`` that must not run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text('#!/bin/sh\nprintf "debug\\ngpu\\n"\n')
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho submitted > "$(dirname "$0")/called"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SBATCH_PARTITION", raising=False)
    return bin_dir


def test_a_slurm_request_the_cluster_would_refuse_is_one_line_before_submitting(tmp_path, fake_slurm):
    result = gal_command(["--multirun", "hydra/launcher=slurm", *QUICK, f"results_dir={tmp_path}"], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: this cluster has no default partition: pass hydra.launcher.partition=<one of debug, gpu> "
        "or export SBATCH_PARTITION"
    )
    assert not (fake_slurm / "called").exists()


SLURM_REQUEST = {"partition": None, "gpus_per_node": 8, "tasks_per_node": 8}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"partition": "big"},
            "hydra.launcher.partition=big: no partition big on this cluster; choose from debug, gpu",
        ),
        ({"partition": "gpu,big"}, "no partition big"),
        ({"tasks_per_node": 1}, "hydra.launcher.tasks_per_node=1 but gpus_per_node=8"),
    ],
)
def test_what_sbatch_would_refuse_is_named(fake_slurm, change, message):
    check_slurm_request({**SLURM_REQUEST, "partition": "gpu"})  # a request the cluster takes
    with pytest.raises(ValueError, match=re.escape(message)):
        check_slurm_request({**SLURM_REQUEST, **change})


def test_slurm_without_sbatch_says_where_to_run(monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin")  # no SLURM tools
    with pytest.raises(ValueError, match="run from a SLURM login node"):
        check_slurm_request(SLURM_REQUEST)
