"""Checkpoints: tensors and plain containers only, written atomically, read back with a clear error."""

import pickle
from pathlib import Path
from typing import Any, BinaryIO

import torch

from gal.errors import CheckpointError
from gal.storage import write_atomically

REQUIRED_KEYS = ("model", "optimizer", "epoch", "step", "rng", "config")  # what every one of ours holds
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format (a zip archive) since PyTorch 1.6
WHAT_TO_DO = "move it away or delete it to start this run from scratch, or restore it from a backup"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` via a temp file + rename, so a crash never leaves half a file; a full disk
    or a read-only directory raises :class:`gal.errors.StorageError` and keeps the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: _save(state, file))


def _save(state: dict[str, Any], file: BinaryIO) -> None:
    """torch.save into an open file (torch's own file writer reports a full disk as "unexpected pos")."""
    try:
        torch.save(state, file)
    except RuntimeError as error:
        if isinstance(error.__context__, OSError):  # closing the zip after a failed write raises over the OSError
            raise error.__context__ from None
        raise


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no pickled code);
    ``mmap=True`` maps the tensors instead of reading them (a cheap look at the epoch and step).

    Raises :class:`gal.errors.CheckpointError` naming the file and what is wrong with it when it is
    empty, not a PyTorch file, truncated or unreadable, or not one of this trainer's checkpoints.
    """
    try:
        with path.open("rb") as file:
            head = file.read(len(ZIP_MAGIC))
    except OSError as error:  # a folder, no permission
        raise _error(path, f"it cannot be read ({type(error).__name__}: {error.strerror})") from None
    if not head:
        raise _error(path, "it is empty (0 bytes)")
    if head != ZIP_MAGIC:
        raise _error(path, f"it is not a PyTorch file (torch.save writes a zip archive; this starts {head!r})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise _error(
            path,
            f"it is not one of this trainer's checkpoints: it holds more than tensors and plain containers "
            f"({_short(error)})",
        ) from error
    except Exception as error:  # noqa: BLE001  (torch's reader fails on a damaged file in many ways, OSError included)
        raise _error(path, f"it is truncated, damaged or not torch.save's ({_short(error)})") from error
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise _error(path, f"it is not one of this trainer's checkpoints (no {', '.join(missing)})")
    return state


def kept_checkpoint(path: Path, enabled: bool) -> str:
    """What a stopped run leaves at ``path``, for its message: the checkpoint's epochs and step, or why none."""
    if not path.exists():
        return (
            "no checkpoint exists yet (the first is saved when epoch 1 ends)"
            if enabled
            else "no checkpoint is kept (trainer.checkpoint=false)"
        )
    try:
        state = load_checkpoint(path, mmap=True)  # maps the tensors: reads the epoch and step only
    except CheckpointError as error:
        return str(error)
    epochs = f"{state['epoch']} epoch" + ("s" if state["epoch"] != 1 else "")
    return f"{path}, saved after {epochs} (step {state['step']}), is kept"


def _error(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} cannot be resumed from: {what}; {WHAT_TO_DO}")


def _short(error: Exception) -> str:
    """``Type: first sentence`` of an exception (torch's run on for lines)."""
    first = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first[:160]}" if first else type(error).__name__
