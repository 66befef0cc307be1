"""Sweeps that finish (gal.sweep): a refused job does not stop its sweep, one table at the end, tidy searches.

Real Hydra on the command line (``python -m gal --multirun``, a few seconds to start each) on diabetes, one epoch.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gal.cli import run
from gal.errors import RunExistsError
from gal.lifecycle import LOCK_FILE
from gal.sweep import _arm_names
from gal.train import train

from .conftest import compose_config
from .test_train import targets_turn_nan

QUICK = ["task=diabetes", "trainer.epochs=1", "trainer.progress=false"]
ARM = Path("runs/default/diabetes/adam/on")  # under results_dir: gal=on's seeds
EXISTS = "metrics.json exists and is kept: pass trainer.if_exists=skip"


def gal(args: list[str], results_dir: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gal", *args, *QUICK, f"results_dir={results_dir}"]
    return subprocess.run(command, cwd=results_dir, capture_output=True, text=True, timeout=300)


def summary_of(results_dir: Path) -> dict:
    """The one sweep summary under ``results_dir``."""
    (found,) = results_dir.rglob("sweeps/*/summary.json")
    return json.loads(found.read_text())


def files_of(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Each file's bytes and time stamp; the lock file's bytes only (it names its holder while a process looks)."""
    return {p.name: (p.read_bytes(), 0 if p.name == LOCK_FILE else p.stat().st_mtime_ns) for p in run_dir.iterdir()}


@pytest.fixture(scope="module")
def finished_seed0(tmp_path_factory) -> Path:
    """A finished run of gal=on seed 0, made by a single run; each test copies it into its own results_dir."""
    results_dir = tmp_path_factory.mktemp("finished")
    result = gal(["gal=on", "seed=0"], results_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    return results_dir / ARM / "seed=0"


def with_seed0(finished_seed0: Path, results_dir: Path) -> Path:
    run_dir = results_dir / ARM / "seed=0"
    shutil.copytree(finished_seed0, run_dir)  # results_dir may change between launches of a run
    return run_dir


def test_a_refused_job_is_one_line_the_others_run_and_the_sweep_exits_non_zero(finished_seed0, tmp_path):
    run_dir = with_seed0(finished_seed0, tmp_path)
    before = files_of(run_dir)
    result = gal(["--multirun", "gal=on", "seed=0,1"], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith(f"error: {run_dir}: {EXISTS}") and len(errors) == 2
    assert errors[1] == "error: 1 of 2 jobs did not finish (listed above)"
    assert f"refused: {run_dir}: {EXISTS}" in result.stderr  # the end's list (all a submitit sweep's host sees)
    assert (tmp_path / ARM / "seed=1" / "metrics.json").exists()
    assert files_of(run_dir) == before  # not a byte or a time stamp changed
    (arm,) = summary_of(tmp_path)["arms"]
    assert (arm["n"], arm["refused"], arm["diverged"], arm["failed"]) == (1, 1, 0, 0)


def test_with_if_exists_skip_the_existing_run_is_reused_and_the_sweep_exits_zero(finished_seed0, tmp_path):
    run_dir = with_seed0(finished_seed0, tmp_path)
    before = files_of(run_dir)
    result = gal(["--multirun", "gal=on", "seed=0,1", "trainer.if_exists=skip"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert files_of(run_dir) == before
    (arm,) = summary_of(tmp_path)["arms"]
    assert (arm["n"], arm["refused"]) == (2, 0)


def test_a_single_run_over_an_existing_run_still_stops_with_one_line(tmp_path, monkeypatch):
    cfg = compose_config([*QUICK, "gal=on"], tmp_path)
    train(cfg)
    with pytest.raises(SystemExit, match=f"^error: {cfg.run_dir}/{EXISTS}"):
        run(cfg)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(RunExistsError):
        run(cfg)


def test_the_summary_gives_each_arm_the_mean_and_std_over_its_seeds_and_counts_a_diverged_seed(monkeypatch, tmp_path):
    # gal=on seed 1 diverges (its targets turn NaN, in this process); the sweep reuses it as the finished run it is
    with monkeypatch.context() as patch:
        targets_turn_nan(patch, 1)
        train(compose_config([*QUICK, "gal=on", "seed=1", "trainer.on_nonfinite=record"], tmp_path))
    args = ["--multirun", "gal=off,on", "seed=0,1", "trainer.if_exists=skip", "trainer.on_nonfinite=record"]
    result = gal(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    arms = {arm["arm"]: arm for arm in summary_of(tmp_path)["arms"]}
    assert list(arms) == ["gal=off", "gal=on"]
    assert [(a["n"], a["diverged"], a["refused"]) for a in arms.values()] == [(2, 0, 0), (1, 1, 0)]
    assert list(arms["gal=off"]["metrics"]) == ["mae", "mse", "r2"] and arms["gal=off"]["objective"] == [
        "mse",
        "minimize",
    ]
    for gal_arm, seeds in (("off", [0, 1]), ("on", [0])):
        runs = [
            json.loads((tmp_path / f"runs/default/diabetes/adam/{gal_arm}/seed={s}/metrics.json").read_text())
            for s in seeds
        ]
        for metric, stats in arms[f"gal={gal_arm}"]["metrics"].items():
            values = [r["metrics"][metric] for r in runs]
            assert stats["mean"] == pytest.approx(np.mean(values))
            assert stats["std"] == pytest.approx(np.std(values, ddof=1) if len(values) > 1 else 0.0)
    mse = arms["gal=off"]["metrics"]["mse"]
    assert f"| gal=off | 2 | {mse['mean']:.4g} ± {mse['std']:.4g} |" in result.stdout  # 4 significant digits


def test_a_setting_every_job_shares_is_one_line_per_job_and_leaves_no_folder(tmp_path):
    result = gal(["--multirun", "gal=on", "gal.alpha=2", "seed=0,1"], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors[:2] == [
        f"error: {tmp_path / ARM}/seed={s}: gal.alpha must lie in [0, 1] (Eq. 4), got 2.0" for s in (0, 1)
    ]
    assert not (tmp_path / "runs" / "default").exists()  # nothing trained, and the job folders Hydra made are gone


def test_a_search_names_its_trials_by_number_leaves_no_empty_folder_and_lists_them_best_first(tmp_path):
    result = gal(["hparams_search=gal_alpha_beta", "hydra.sweeper.n_trials=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    search = tmp_path / "runs" / "search_alpha_beta" / "diabetes" / "adam"
    assert sorted(p.name for p in search.glob("trial=*")) == ["trial=000", "trial=001"]
    assert [p for p in tmp_path.rglob("*") if p.is_dir() and not any(p.iterdir())] == []
    arms = summary_of(search)["arms"]
    mse = [arm["metrics"]["val/mse"]["mean"] for arm in arms]  # ranked on the validation split, as Optuna scores
    assert mse == sorted(mse) and len(arms) == 2
    for arm in arms:  # each trial's values: in its config.yaml (the trainer's) and in its row's name
        trial_dir = search / arm["arm"].split()[0]
        saved = json.loads((trial_dir / "metrics.json").read_text())["config"]["gal"]
        assert f"gal.alpha={saved['alpha']}" in arm["overrides"] and f"gal.beta={saved['beta']}" in arm["overrides"]
        assert arm["arm"].startswith(f"{trial_dir.name} gal.alpha={saved['alpha']:.4g} gal.beta=")


def test_arms_are_named_by_the_overrides_that_differ_between_them():
    arms = [("task=diabetes", "gal=off"), ("task=diabetes", "gal=on", "gal.alpha=0.010716295704927558")]
    assert _arm_names(arms) == ["gal=off", "gal=on gal.alpha=0.01072"]
    assert _arm_names([("task=diabetes", "gal=on")]) == ["all"]


def test_a_run_that_diverges_under_on_nonfinite_error_is_one_line_and_the_sweep_goes_on(tmp_path):
    result = gal(["--multirun", "optimizer.lr=1e30,0.001"], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "training loss is nan at step " in errors[0] and "The run stops here;" in errors[0]
    assert errors[-1] == "error: 1 of 2 jobs did not finish (listed above)"
    arms = summary_of(tmp_path)["arms"]
    assert sorted((arm["n"], arm["failed"]) for arm in arms) == [(0, 1), (1, 0)]
