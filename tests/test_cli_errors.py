"""Every bad setting, damaged run file and diverged run through the command line: one `error:` line, no
traceback, a non-zero exit, and nothing already written changed (slow: one process per case)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gal.train import train

from .conftest import compose_config

RUN = ["task=diabetes", "trainer.epochs=2", "trainer.progress=false"]
BAD_SETTINGS = [
    (["optimizer.weight_decay=-1"], "error: optimizer.weight_decay of adam must be >= 0"),
    (["optimizer.betas=[0.9]"], "error: optimizer.betas of adam must be two values in [0, 1)"),
    (["task.test_size=1.5"], "error: task.test_size must be a fraction in (0, 1)"),
    (["seed=-1"], "error: seed must be an integer in [0, 4294967295]"),
    (["task.csv_path=.", "task=boston"], "error: Boston CSV path '.' is a folder"),
    (["optimizer.lr=1e30"], "error: training loss is nan at step "),
    (["+gal.alpah=0.1"], "error: gal.alpah is not a setting of gal (did you mean gal.alpha?)"),
]


def gal(args: list[str], results: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gal", *RUN, *args, f"results_dir={results}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def one_line_error(result: subprocess.CompletedProcess, start: str) -> None:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(start), result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "start"), BAD_SETTINGS, ids=[a[0] for a, _ in BAD_SETTINGS])
def test_a_bad_setting_is_one_line(tmp_path, args, start):
    one_line_error(gal(args, tmp_path), start)
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.fixture
def finished(tmp_path) -> Path:
    cfg = compose_config(RUN, tmp_path)
    train(cfg)
    return Path(cfg.run_dir)


def snapshot(run_dir: Path) -> dict[str, bytes | None]:
    return {p.name: None if p.is_dir() else p.read_bytes() for p in sorted(run_dir.iterdir())}


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["last.pt is a folder", "metrics.json is a folder", "last.pt lacks scaler"])
def test_a_damaged_run_file_is_one_line_and_changes_nothing(tmp_path, finished, damage):
    if damage.endswith("is a folder"):
        path = finished / damage.split()[0]
        path.unlink()
        path.mkdir()
        start = f"error: {path} is a folder"
    else:
        state = torch.load(finished / "last.pt", weights_only=True)
        del state["scaler"]
        torch.save(state, finished / "last.pt")
        (finished / "metrics.json").unlink()
        start = f"error: {finished / 'last.pt'} cannot be resumed from: it has no scaler state"
    before = snapshot(finished)
    one_line_error(gal(["trainer.epochs=3", "trainer.if_exists=resume"], tmp_path), start)
    assert snapshot(finished) == before
