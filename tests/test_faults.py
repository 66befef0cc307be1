"""Faults a long run meets: a torn log line, a damaged checkpoint, a full or read-only disk, weights gone NaN.

Real faults where a test can make them: /dev/full behind a temp file's name (ENOSPC), a file-size limit
(RLIMIT_FSIZE: a write torn mid-line), a read-only directory (not as root, who writes anyway). Each
checks the message (the file, what is wrong, what to do), that the last good checkpoint is left
byte-equal, and that no temp file is left behind.
"""

import errno
import json
import logging
import os
import resource
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

from gal import storage
from gal.checkpoint import load_checkpoint
from gal.cli import run
from gal.errors import CheckpointError, RunLogError, SetupError, StorageError
from gal.runlog import NonFiniteLossError, RunLog, check_weights_finite
from gal.tasks import Features
from gal.tasks.regression import RegressionTask
from gal.train import train

FAST = ["task=diabetes", "trainer.epochs=2", "trainer.progress=false", "trainer.log_every=5"]
RESUME = "trainer.if_exists=resume"  # continue the run in place (diabetes: 12 steps per epoch)
DEV_FULL = Path("/dev/full")  # every write fails with ENOSPC
AS_ROOT = os.geteuid() == 0  # root writes into a read-only (0o500) directory anyway


def _run_dir(cfg) -> Path:
    return Path(cfg.run_dir)


def _steps_logged(run_dir: Path) -> list[int]:
    return [row["step"] for row in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in row]


def _temp_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob("*.tmp"))


@pytest.fixture
def finished(make_config):
    """A finished 2-epoch run: (run_dir, {file name: bytes}) of its checkpoint, log and metrics."""
    cfg = make_config(*FAST)
    train(cfg)
    run_dir = _run_dir(cfg)
    return run_dir, {name: (run_dir / name).read_bytes() for name in ("last.pt", "log.jsonl", "metrics.json")}


# --- 1. log.jsonl: whole rows, a torn last line dropped on resume ---------------------------------------------


def _write_log(path: Path, text: str) -> RunLog:
    path.write_text(text)
    return RunLog(path, enabled=True)


@pytest.mark.parametrize("torn", ['{"step": 3, "epoch": 1, "lo', '{"step": 3, "epo\n', "\0\0\0\0"])
def test_a_torn_last_log_line_is_dropped_with_a_warning(tmp_path, caplog, torn):
    whole = "".join(json.dumps({"step": s, "epoch": 1, "loss": 1.0}) + "\n" for s in (1, 2))
    runlog = _write_log(tmp_path / "log.jsonl", whole + torn)
    with caplog.at_level(logging.WARNING, logger="gal.runlog"):
        runlog.truncate_after(10)
    assert (tmp_path / "log.jsonl").read_text() == whole
    assert caplog.messages == [f"dropped a torn last line of {tmp_path / 'log.jsonl'}: {torn.rstrip(chr(10))[:80]}"]
    assert not _temp_files(tmp_path)


def test_a_whole_last_row_without_its_newline_is_dropped_too(tmp_path, caplog):
    runlog = _write_log(tmp_path / "log.jsonl", '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 1.0}')
    runlog.truncate_after(10)
    assert (tmp_path / "log.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'
    assert "dropped a torn last line" in caplog.text


def test_a_damaged_log_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    text = '{"step": 1, "loss": 1.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n'
    runlog = _write_log(tmp_path / "log.jsonl", text)
    with pytest.raises(RunLogError, match=rf"^{tmp_path / 'log.jsonl'} line 2 is not a log row .*repair or delete"):
        runlog.truncate_after(10)
    assert (tmp_path / "log.jsonl").read_text() == text  # left as it was, for the user to look at


@contextmanager
def _file_size_limit(size: int):
    """Writes past ``size`` bytes of a file fail with EFBIG after a short write, as on a disk that fills up
    (RLIMIT_FSIZE; Python ignores the SIGXFSZ that comes with it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_write_torn_by_a_file_size_limit_is_dropped_on_resume(finished, make_config, caplog):
    run_dir, before = finished
    limit = len(before["log.jsonl"]) + 100  # room for one row and a bit: the next flush tears a row
    assert (run_dir / "config.yaml").stat().st_size < limit  # rewritten by the resumed run: it must fit
    with (
        _file_size_limit(limit),
        pytest.raises(StorageError, match=rf"^cannot write {run_dir / 'log.jsonl'}: File too large \[EFBIG\]"),
    ):
        train(make_config(*FAST, "trainer.epochs=3", RESUME))
    assert not (run_dir / "log.jsonl").read_text().endswith("\n")  # torn mid-row
    assert (run_dir / "last.pt").read_bytes() == before["last.pt"]
    with caplog.at_level(logging.WARNING, logger="gal.runlog"):
        train(make_config(*FAST, "trainer.epochs=3", RESUME))
    assert "dropped a torn last line of" in caplog.text
    assert _steps_logged(run_dir) == list(range(1, 37))  # each step once
    assert not _temp_files(run_dir)


# --- 2. a checkpoint that cannot be resumed from ----------------------------------------------------------------


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (lambda good, path: path.write_bytes(b""), r"it is empty \(0 bytes\)"),
        (lambda good, path: path.write_text("epoch 2\n"), r"it is not a PyTorch file .*starts b'epoc'"),
        (lambda good, path: path.write_bytes(_half(good)), r"it is truncated, damaged .*\((RuntimeError|OSError): "),
        (lambda good, path: torch.save({"weights": torch.ones(2)}, path),
         r"it is not one of this trainer's checkpoints \(no model, optimizer, epoch, step, rng, config\)"),
        (lambda good, path: torch.save({"model": nn.Linear(1, 1)}, path),
         r"it is not one of this trainer's checkpoints: it holds more than tensors .*\(UnpicklingError: "),
    ],
    ids=["empty", "text", "truncated", "foreign", "pickled-module"],
)  # fmt: skip
def test_a_damaged_checkpoint_is_one_clear_error(finished, damage, what):
    run_dir, before = finished
    path = run_dir / "last.pt"
    damage(before["last.pt"], path)
    with pytest.raises(CheckpointError, match=rf"^{path} cannot be resumed from: {what}") as error:
        load_checkpoint(path)
    assert str(error.value).endswith(
        "move it away or delete it to start this run from scratch, or restore it from a backup"
    )


def test_resuming_a_truncated_checkpoint_stops_with_one_line_and_keeps_it(finished, make_config):
    run_dir, before = finished
    (run_dir / "metrics.json").unlink()  # an unfinished run, killed while its checkpoint was copied
    (run_dir / "last.pt").write_bytes(_half(before["last.pt"]))
    with pytest.raises(SystemExit, match=rf"^error: {run_dir / 'last.pt'} cannot be resumed from: it is truncated"):
        run(make_config(*FAST, RESUME))
    assert (run_dir / "last.pt").read_bytes() == _half(before["last.pt"])  # never overwritten


# --- 3. a full or read-only disk ---------------------------------------------------------------------------------


def _fill_disk_behind(path: Path) -> None:
    """Writes to ``path`` go to /dev/full: ENOSPC, as on a full disk."""
    path.with_name(path.name + ".tmp").symlink_to(DEV_FULL)


def test_a_full_disk_while_saving_the_checkpoint_keeps_the_last_one(finished, make_config):
    run_dir, before = finished
    _fill_disk_behind(run_dir / "last.pt")
    with pytest.raises(StorageError) as error:
        train(make_config(*FAST, "trainer.epochs=3", RESUME))
    assert str(error.value) == (
        f"cannot write {run_dir / 'last.pt'}: No space left on device [ENOSPC]; the previous last.pt is kept. "
        "To go on, free space on that disk (or choose another results_dir=) and resume (trainer.if_exists=resume)"
    )
    assert error.value.__cause__.errno == errno.ENOSPC
    assert (run_dir / "last.pt").read_bytes() == before["last.pt"]
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2
    assert not _temp_files(run_dir) and not (run_dir / "last.pt.tmp").is_symlink()


def test_a_checkpoint_cut_short_by_the_disk_keeps_the_last_one(finished, make_config):
    """A write that stops part-way (a disk filling up): torch's zip writer must not hide the OSError."""
    run_dir, before = finished
    with _file_size_limit(len(before["last.pt"]) // 2), pytest.raises(StorageError) as error:
        train(make_config(*FAST, "trainer.epochs=3", RESUME))
    assert str(error.value).startswith(
        f"cannot write {run_dir / 'last.pt'}: File too large [EFBIG]; the previous last.pt is kept. "
        "To go on, raise the file-size limit"
    )
    assert (run_dir / "last.pt").read_bytes() == before["last.pt"]
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2
    assert not _temp_files(run_dir) and not (run_dir / "last.pt.tmp").is_symlink()


def test_a_full_disk_while_writing_metrics_json_keeps_the_checkpoint_and_resumes(make_config):
    cfg = make_config(*FAST)
    run_dir = _run_dir(cfg)
    run_dir.mkdir(parents=True)
    _fill_disk_behind(run_dir / "metrics.json")
    with pytest.raises(StorageError, match=rf"^cannot write {run_dir / 'metrics.json'}: No space left on device"):
        train(cfg)
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "metrics.json.tmp").is_symlink()
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2
    metrics = train(make_config(*FAST, RESUME))  # what the message says to do
    assert json.loads((run_dir / "metrics.json").read_text())["metrics"] == metrics
    assert not _temp_files(run_dir)


def test_a_full_disk_while_rewriting_the_log_on_resume_keeps_it(finished, make_config):
    run_dir, before = finished
    _fill_disk_behind(run_dir / "log.jsonl")
    with pytest.raises(StorageError, match=rf"^cannot write {run_dir / 'log.jsonl'}: No space left on device"):
        train(make_config(*FAST, "trainer.epochs=3", RESUME))
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert not _temp_files(run_dir) and not (run_dir / "log.jsonl.tmp").is_symlink()


def test_a_full_disk_is_one_line_on_the_command_line(finished, make_config):
    run_dir, _ = finished
    _fill_disk_behind(run_dir / "last.pt")
    with pytest.raises(SystemExit, match=rf"^error: cannot write {run_dir / 'last.pt'}: No space left on device"):
        run(make_config(*FAST, "trainer.epochs=3", RESUME))


@pytest.mark.skipif(AS_ROOT, reason="root writes into a read-only directory")
def test_a_read_only_run_directory_is_one_clear_error(finished, make_config):
    run_dir, before = finished
    run_dir.chmod(0o500)
    try:
        with pytest.raises(StorageError, match=rf"^cannot write {run_dir}/\S+: Permission denied \[EACCES\]") as error:
            train(make_config(*FAST, "trainer.epochs=3", RESUME))
    finally:
        run_dir.chmod(0o700)
    assert f"make {run_dir} writable" in str(error.value)
    assert (run_dir / "last.pt").read_bytes() == before["last.pt"]
    assert not _temp_files(run_dir)


@pytest.mark.parametrize(
    ("code", "advice"),
    [(errno.EACCES, "make {} writable"), (errno.EROFS, "make {} writable"), (errno.EDQUOT, "free space")],
)
def test_a_refused_rename_keeps_the_checkpoint_and_no_temp_file(finished, make_config, monkeypatch, code, advice):
    """The rename refused (as root cannot be, by a read-only directory): the temp file is removed."""
    run_dir, before = finished

    replace = os.replace

    def refuse_last_pt(source, target):
        if Path(target).name != "last.pt":
            return replace(source, target)
        raise OSError(code, os.strerror(code), str(source))

    monkeypatch.setattr(storage.os, "replace", refuse_last_pt)
    with pytest.raises(StorageError, match=rf"^cannot write {run_dir / 'last.pt'}: {os.strerror(code)}") as error:
        train(make_config(*FAST, "trainer.epochs=3", RESUME))
    assert advice.format(run_dir) in str(error.value)
    assert isinstance(error.value, OSError) and isinstance(error.value, SetupError)
    assert error.value.__cause__.errno == code
    assert (run_dir / "last.pt").read_bytes() == before["last.pt"]
    assert not _temp_files(run_dir)


# --- 4 and 5. NaN: the weights are checked each epoch, and the message says which checkpoint is kept -------------


class _NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose step makes the weights NaN."""

    @staticmethod
    def forward(ctx, z):
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class FaultyDiabetes(RegressionTask):
    """Diabetes with a fault from a training step on: a NaN loss, or (at one step) a NaN gradient only.

    The fault is set on the class (the task's config schema takes no keys of a test's)."""

    nan_loss_from_step = 0
    nan_gradient_at_step = 0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def features_and_loss(self, model, batch):
        self.calls += 1
        x, y = batch
        if self.nan_loss_from_step and self.calls >= self.nan_loss_from_step:
            y = y * float("nan")
        z, loss_fn, _ = super().features_and_loss(model, (x, y))
        return Features(_NaNGradient.apply(z) if self.calls == self.nan_gradient_at_step else z, loss_fn)


@pytest.fixture
def faulty(make_config, monkeypatch):
    """make_config for FaultyDiabetes with the given fault: ``faulty(*overrides, nan_loss_from_step=30)``."""

    def make(*overrides, **fault):
        for name, step in fault.items():
            monkeypatch.setattr(FaultyDiabetes, name, step)
        return make_config(*FAST, f"task._target_={__name__}.FaultyDiabetes", *overrides)

    return make


def test_weights_gone_nan_under_a_finite_loss_stop_the_run_before_evaluating_or_saving(faulty):
    cfg = faulty("trainer.epochs=3", nan_gradient_at_step=24)  # the last step of epoch 2
    run_dir = _run_dir(cfg)
    with pytest.raises(NonFiniteLossError) as error:
        train(cfg)
    assert str(error.value) == (
        "the model's weights are not finite at the end of epoch 2 (first: 0.weight): lower the learning rate "
        f"or check the data. The run stops here; {run_dir / 'last.pt'}, saved after 1 epoch (step 12), is kept."
    )
    state = load_checkpoint(run_dir / "last.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values())
    evaluated = [row["epoch"] for row in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
                 if "eval/mse" in row]  # fmt: skip
    assert evaluated == [1]  # the NaN weights were not evaluated
    assert not _temp_files(run_dir)


def test_weights_gone_nan_are_recorded_as_a_divergence(faulty):
    cfg = faulty("trainer.on_nonfinite=record", nan_gradient_at_step=12)
    assert train(cfg) == {}
    diverged = json.loads((_run_dir(cfg) / "metrics.json").read_text())["diverged"]
    assert diverged.startswith("the model's weights are not finite at the end of epoch 1")
    assert diverged.endswith("The run stops here; no checkpoint exists yet (the first is saved when epoch 1 ends).")


def test_the_adjusters_weights_are_checked_too():
    model, adjuster = nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    check_weights_finite(4, model=model, adjuster=adjuster)  # finite: nothing happens
    with torch.no_grad():
        adjuster[1].bias.fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"^the adjuster's weights are not finite at the end of epoch 4 "
                                                 r"\(first: 1.bias\)"):  # fmt: skip
        check_weights_finite(4, model=model, adjuster=adjuster)


@pytest.mark.parametrize(
    ("overrides", "nan_from", "kept"),
    [
        ([], 30, "{}, saved after 2 epochs (step 24), is kept."),
        ([], 5, "no checkpoint exists yet (the first is saved when epoch 1 ends)."),
        (["trainer.checkpoint=false"], 30, "no checkpoint is kept (trainer.checkpoint=false)."),
    ],
)
def test_the_nan_message_says_which_checkpoint_is_kept(faulty, overrides, nan_from, kept):
    cfg = faulty("trainer.epochs=4", "trainer.log_every=4", *overrides, nan_loss_from_step=nan_from)
    with pytest.raises(NonFiniteLossError) as error:
        train(cfg)
    assert str(error.value).startswith(f"training loss is nan at step {nan_from} (epoch {(nan_from - 1) // 12 + 1})")
    assert str(error.value).endswith("The run stops here; " + kept.format(_run_dir(cfg) / "last.pt"))


# --- 6. wandb: a resumed run goes on in the same wandb run -------------------------------------------------------


def test_a_resumed_run_logs_to_the_same_wandb_run(make_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_config(*FAST, "logger=wandb")
    train(cfg)
    run_dir = _run_dir(cfg)
    run_id = (run_dir / "wandb_id.txt").read_text()
    train(make_config(*FAST, "logger=wandb", "trainer.epochs=3", RESUME))
    assert (run_dir / "wandb_id.txt").read_text() == run_id
    offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert offline_runs and all(path.name.endswith(f"-{run_id}") for path in offline_runs)
    assert (run_dir / "wandb" / "latest-run").resolve().name.endswith(f"-{run_id}")


# --- Run files that cannot be read: one line, nothing changed -------------------------------------------------


def _snapshot(run_dir: Path) -> dict[str, bytes | None]:
    return {p.name: None if p.is_dir() else p.read_bytes() for p in sorted(run_dir.iterdir())}


@pytest.mark.parametrize("name", ["metrics.json", "last.pt", "log.jsonl", "config.yaml", "run.lock"])
def test_a_folder_where_a_run_file_should_be_is_one_line_and_changes_nothing(finished, make_config, name):
    run_dir, _ = finished
    path = run_dir / name
    if path.exists():
        path.unlink()
    path.mkdir()
    before = _snapshot(run_dir)
    with pytest.raises(SystemExit, match=rf"^error: {path} is a folder where the run keeps its .*: move it away"):
        run(make_config(*FAST, "trainer.epochs=3", RESUME))
    assert _snapshot(run_dir) == before


def test_a_metrics_json_that_is_not_json_is_one_line(finished, make_config):
    run_dir, _ = finished
    (run_dir / "metrics.json").write_text('{"metrics": {"mse": 1.0')  # cut short
    before = _snapshot(run_dir)
    with pytest.raises(SystemExit, match=rf"^error: {run_dir / 'metrics.json'} cannot be read \(JSONDecodeError"):
        run(make_config(*FAST, "trainer.if_exists=skip"))
    assert _snapshot(run_dir) == before


def test_a_checkpoint_lacking_a_part_is_one_line(finished, make_config):
    run_dir, _ = finished
    state = torch.load(run_dir / "last.pt", weights_only=True)
    del state["scaler"]
    torch.save(state, run_dir / "last.pt")
    (run_dir / "metrics.json").unlink()  # an unfinished run: resuming reads the whole checkpoint
    before = _snapshot(run_dir)
    with pytest.raises(SystemExit, match=r"^error: .*last.pt cannot be resumed from: it has no scaler state"):
        run(make_config(*FAST, RESUME))
    assert _snapshot(run_dir) == before


def _gal_epoch(log: RunLog, epoch: int, adjusted: float, remainder: float, steps: int = 4) -> list[str]:
    for step in range(steps):
        values = {"loss": 1.0, "adjusted_fraction": adjusted, "remainder": remainder}
        log.record_step(epoch * steps + step, {k: torch.tensor(v) for k, v in values.items()})
    log.flush(epoch)
    return log.gal_warnings(epoch)


def test_gal_warns_once_when_the_policy_rejects_g_or_the_remainder_explodes(tmp_path):
    log = RunLog(tmp_path / "log.jsonl", enabled=True)
    assert _gal_epoch(log, 0, adjusted=1.0, remainder=-1e-6) == []
    assert _gal_epoch(log, 1, adjusted=0.75, remainder=5e-4) == []  # 500-fold: not yet
    (rejected,) = _gal_epoch(log, 2, adjusted=0.25, remainder=1e-6)
    assert rejected.startswith("GAL's policy rejected g on 75% of epoch 2's logged steps")
    (grown,) = _gal_epoch(log, 3, adjusted=0.25, remainder=-2e-2)  # the policy's warning is not repeated
    assert grown.startswith("GAL's mean |r| grew 2e+04-fold from epoch 0 to epoch 3")
    assert _gal_epoch(log, 4, adjusted=0.0, remainder=1.0) == []  # each said once per run
    assert RunLog(tmp_path / "other.jsonl", enabled=True).gal_warnings(0) == []  # no GAL steps: nothing to say


def test_a_run_whose_policy_rejects_g_says_so_and_is_recorded(make_config, caplog):
    cfg = make_config(*FAST, "gal=on", "gal.beta=1e9", "optimizer.lr=1")
    with caplog.at_level(logging.WARNING, logger="gal.train"):
        train(cfg)
    assert "GAL's policy rejected g on 100% of epoch 1's logged steps" in caplog.text
    assert (_run_dir(cfg) / "metrics.json").exists()


def test_a_log_that_cannot_be_read_is_one_clear_error(tmp_path):
    (tmp_path / "log.jsonl").mkdir()  # a read fails as an unreadable file's would (root reads a 0o000 file)
    with pytest.raises(RunLogError, match=r"log.jsonl cannot be read \(IsADirectoryError: Is a directory\): move it"):
        RunLog(tmp_path / "log.jsonl", enabled=True).truncate_after(3)
