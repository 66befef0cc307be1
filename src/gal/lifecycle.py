"""A run directory's life: what a new launch does with what is already there, and one process at a time.

    plan = plan_run(run_dir, config, if_exists, epochs)   # "fresh", "resume" or "reuse", or a SetupError
    with RunLock(run_dir): ...                            # a second process on the same run exits at once

``trainer.if_exists`` says what to do with a run directory that holds a run: ``error`` refuses it, ``skip``
reuses a finished run and continues an unfinished one, ``resume`` continues either. A run is reused or
continued only under the config it was trained with, compared key by key; what may change on a restart is
left out (:data:`RESTARTABLE`), and a larger number of epochs extends a run. An unfinished run is never
started again from scratch over its checkpoint.
"""

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gal.checkpoint import load_checkpoint
from gal.errors import ConfigError, RunExistsError, RunLockedError, StorageError
from gal.results import CONFIG_FILE, LOG_FILE, METRICS_FILE, run_result

CHECKPOINT_FILE = "last.pt"
LOCK_FILE = "run.lock"
# Every file a run keeps in its directory, and what it holds (for messages)
RUN_FILES = {
    METRICS_FILE: "summary", CHECKPOINT_FILE: "checkpoint", LOG_FILE: "step log", CONFIG_FILE: "resolved config",
    LOCK_FILE: "lock",
}  # fmt: skip
# Keys that may differ between the launches of one run: where it lives and is shown, how it is fed, what it
# is told to do when it exists or when its loss turns NaN (the steps it takes are the same), and its length
# (checked apart: more epochs extend a run, fewer are refused; task.epochs held it in runs made before
# trainer.epochs became the one epochs key).
RESTARTABLE = (
    "results_dir", "run_dir", "logger", "trainer.progress", "trainer.log_every", "trainer.device",
    "trainer.if_exists", "trainer.on_nonfinite", "task.num_workers", "trainer.epochs", "task.epochs",
)  # fmt: skip
# Keys added after runs were made, each with the value that reproduces the code before it: a run saved without
# one compares as if it had that value, so adding an option does not orphan the runs made before it.
ADDED = {
    "gal.at": "logits",  # where GAL sat before the key existed
    "gal.first_order": "authors",
    "gal.precision": "float32",
    "gal.ddp": "global",
    "trainer.tf32": False,  # every run made before these two keys ran on a CPU, where neither changes a number
    "trainer.deterministic": False,
    "trainer.select": "last",  # before a validation split existed: the last evaluation
    "task.split": "fixed",
    "task.val_size": 0.0,
    "task.feature_scaling": "standard",  # the regression tasks' only scaling before the keys
    "task.target_scaling": "standard",
}
SHOWN = 5  # differing keys quoted in an error


@dataclass(frozen=True)
class Plan:
    """What a launch does: "fresh" (a new run), "resume" (continue last.pt) or "reuse" (return ``metrics``)."""

    action: str
    metrics: dict[str, Any] | None = None


def check_run_files(run_dir: Path) -> None:
    """A ConfigError, before anything is opened or written, when one of the run's file names is taken by a folder."""
    for name, what in RUN_FILES.items():
        if (run_dir / name).is_dir():
            raise ConfigError(
                f"{run_dir / name} is a folder where the run keeps its {what}: move it away (nothing in the run's "
                "directory was changed)"
            )


def read_summary(path: Path) -> dict[str, Any]:
    """A finished run's metrics.json, or a ConfigError naming the file when it cannot be read as one."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"{path} cannot be read ({type(error).__name__}: {error}): move it away to train the run again, or "
            "restore it from a backup (nothing was changed)"
        ) from None
    if not isinstance(summary, dict) or "metrics" not in summary:
        raise ConfigError(f"{path} is not a run's summary (no metrics): move it away or restore it (nothing changed)")
    return summary


def plan_run(run_dir: Path, config: dict[str, Any], if_exists: str, epochs: int) -> Plan:
    """What to do with ``run_dir`` for a launch of ``config`` (resolved, plain) that trains ``epochs`` epochs;
    ``if_exists`` is one of gal.config.IF_EXISTS (gal.config.validate checks it before the trainer gets here)."""
    metrics_file, checkpoint = run_dir / METRICS_FILE, run_dir / CHECKPOINT_FILE
    if metrics_file.exists():
        summary = read_summary(metrics_file)
        if if_exists == "error":
            raise RunExistsError(
                f"{metrics_file} exists and is kept: pass trainer.if_exists=skip to reuse the run (or continue it "
                "to more epochs), or choose another name=/seed= for a new run"
            )
        check_same_config(run_dir, summary.get("config", {}), config)
        trained = summary.get("epochs", epochs)
        if "diverged" in summary or epochs == trained:
            return Plan("reuse", run_result(summary))
        if trained == 0 and not checkpoint.exists():  # an evaluation of the initial or loaded weights only
            return Plan("fresh")
        if epochs < trained:
            raise ConfigError(f"{run_dir} trained {trained} epochs; this launch asks for {epochs}: {_new_run_hint()}")
        if not checkpoint.exists():
            raise ConfigError(
                f"{run_dir} finished {trained} epochs without a checkpoint (trainer.checkpoint=false), so it cannot "
                f"be continued to {epochs}: {_new_run_hint()}"
            )
        return Plan("resume")
    if checkpoint.exists():
        state = load_checkpoint(checkpoint, mmap=True)  # the epoch and config, without reading the tensors
        done = state.get("epoch", 0)
        if if_exists == "error":
            raise RunExistsError(
                f"{run_dir} holds an unfinished run ({CHECKPOINT_FILE} after epoch {done}): pass "
                "trainer.if_exists=resume (or skip) to continue it, or choose another name=/seed= for a new run"
            )
        check_same_config(run_dir, state.get("config", {}), config)
        if epochs < done:
            raise ConfigError(f"{run_dir} has trained {done} epochs; this launch asks for {epochs}: {_new_run_hint()}")
        return Plan("resume")
    return Plan("fresh")  # nothing to keep: a new directory, or a start that died before its first checkpoint


def check_same_config(run_dir: Path, saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse to reuse or continue a run under another config, naming the keys that differ."""
    before, now = _flatten(saved), _flatten(config)
    groups_before = {name.rsplit(".", 1)[0] for name in before}  # "gal", "trainer", ... (and nested ones)
    for key, value in ADDED.items():
        if key in now and key.rsplit(".", 1)[0] in groups_before:  # a run that had the key's group, not the key
            before.setdefault(key, value)
    absent = "<absent>"
    differing = sorted(key for key in before.keys() | now.keys() if before.get(key, absent) != now.get(key, absent))
    if differing:
        shown = ", ".join(f"{k}: {before.get(k, absent)!r} -> {now.get(k, absent)!r}" for k in differing[:SHOWN])
        more = f" and {len(differing) - SHOWN} more" if len(differing) > SHOWN else ""
        raise ConfigError(
            f"{run_dir} was trained with another config ({shown}{more}): run it with its own settings (its "
            f"config.yaml) to reuse or continue it, or {_new_run_hint()}"
        )


def _new_run_hint() -> str:
    return "start a new run with another name= or seed= (the run directory follows them)"


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} for every leaf, without the RESTARTABLE keys (and whatever lies under them)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if name in RESTARTABLE:
            continue
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


class RunLock:
    """An exclusive lock on a run directory for one process's use of it (``run.lock``, fcntl.flock).

    A second process that asks for it exits at once with the holder's PID and host. The kernel drops the lock
    of a process that dies, so a killed run's directory is free again; the file itself stays (it is empty of
    meaning once unlocked). flock holds across the hosts of one file system only where that file system
    supports it (local disks, NFSv4, Lustre with flock enabled).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # no permission, a read-only file system
            raise StorageError(
                f"cannot open {self.path} ({type(error).__name__}: {error.strerror}): the run's directory must be "
                "writable; fix its permissions or choose another results_dir= (nothing was changed)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by {holder}: wait for it to end, or stop it; a second process "
                "would write over its checkpoint and logs"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
