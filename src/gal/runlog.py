"""Per-step and per-epoch logs: a JSONL file always, Weights & Biases when asked.

Step values stay on the device in a buffer and are read back once per ``flush``, so
logging costs one host sync per ``log_every`` steps, not one per step. The flush also
checks the loss: a NaN or inf stops the run with the step it happened at.
Each flush appends its rows with one write, so a kill or a full disk tears at most the last line,
which a resumed run drops.
"""

import json
import logging
import math
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gal.distributed import average_across_ranks
from gal.errors import RunLogError
from gal.results import counts_from_0, renumbered_rows
from gal.storage import storage_errors, write_atomically

log = logging.getLogger("gal.runlog")
WANDB_ID_FILE = "wandb_id.txt"


class NonFiniteLossError(RuntimeError):
    """The training loss, or the weights, became NaN or inf."""


def check_weights_finite(epoch: int, **modules: nn.Module | None) -> None:
    """Raise :class:`NonFiniteLossError` when a weight of ``modules`` (the model, GAL's h) is NaN or inf at the
    end of ``epoch``, so that such weights are never evaluated or saved; one host sync."""
    named = [
        (owner, name, p)
        for owner, module in modules.items()
        if module is not None
        for name, p in module.named_parameters()
    ]
    if not named:
        return
    finite = torch.stack([p.isfinite().all() for *_, p in named]).all().float()
    if average_across_ranks(finite).item() == 1:  # every process takes the same decision
        return
    owner, name = next(((o, n) for o, n, p in named if not p.isfinite().all()), ("model", "on another process"))
    raise NonFiniteLossError(
        f"the {owner}'s weights are not finite at the end of epoch {epoch} (first: {name}): "
        "lower the learning rate or check the data."
    )


class RunLog:
    """Appends rows to ``run_dir/log.jsonl`` (rank 0) and mirrors them to wandb if enabled."""

    def __init__(self, path: Path, enabled: bool, wandb_run: Any = None) -> None:
        self.path, self.enabled, self.wandb_run = path, enabled, wandb_run
        self._steps: list[int] = []
        self._values: dict[str, list[torch.Tensor]] = {}
        self.last: dict[str, float] = {}
        self._gal: dict[int, list[float]] = {}  # epoch -> [logged GAL steps, sum of adjusted fractions, sum of |r|]
        self._warned: set[str] = set()

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step``: a resumed run redoes those steps and logs them again. A log whose
        epochs counted from 0 (an older run's) is rewritten counting from 1, as the rows it appends will."""
        if not (self.enabled and self.path.exists()):
            return
        read = self._read()
        if counts_from_0([row for _, row in read]):
            kept = [json.dumps(row) for row in renumbered_rows([row for _, row in read]) if row["step"] <= step]
        else:
            kept = [line for line, row in read if row["step"] <= step]  # the lines as written
        text = "".join(line + "\n" for line in kept).encode()
        write_atomically(self.path, lambda file: file.write(text))

    def _read(self) -> list[tuple[str, dict[str, Any]]]:
        """(line, row) for each line; a torn last line (a kill or a full disk mid-write) is dropped with a warning."""
        try:
            text = self.path.read_text(errors="replace")
        except OSError as error:  # a folder, no permission
            raise RunLogError(
                f"{self.path} cannot be read ({type(error).__name__}: {error.strerror}): move it away, or restore it, "
                "and resume again (nothing was changed)"
            ) from None
        *lines, tail = text.split("\n")  # tail: after the last newline
        if tail:
            lines.append(tail)
        rows = []
        for number, line in enumerate(lines, start=1):
            row = _parse_row(line)
            if row is None and number < len(lines):
                raise RunLogError(
                    f"{self.path} line {number} is not a log row ({line[:80]!r}): the file was damaged or edited; "
                    "repair or delete that line, or move the file away, and resume again"
                )
            if row is None or (number == len(lines) and tail):
                log.warning("dropped a torn last line of %s: %s", self.path, line[:80])
                break
            rows.append((line, row))
        return rows

    def record_step(self, step: int, values: dict[str, torch.Tensor]) -> None:
        """Buffer one step's scalar tensors (no host sync)."""
        self._steps.append(step)
        for key, value in values.items():
            self._values.setdefault(key, []).append(value.detach().float().reshape(()))

    def flush(self, epoch: int) -> None:
        """Read the buffered steps back, check the loss is finite, write one row per step."""
        if not self._steps:
            return
        keys = list(self._values)
        table = average_across_ranks(torch.stack([torch.stack(self._values[k]) for k in keys])).cpu().tolist()
        rows = [
            {"step": s, "epoch": epoch, **{k: table[i][j] for i, k in enumerate(keys)}}
            for j, s in enumerate(self._steps)
        ]
        self._steps, self._values = [], {}
        for row in rows:
            if not math.isfinite(row["loss"]):
                raise NonFiniteLossError(
                    f"training loss is {row['loss']} at step {row['step']} (epoch {epoch}): "
                    "lower the learning rate or check the data."
                )
        self.last = rows[-1]
        for row in rows:
            if "adjusted_fraction" in row:
                sums = self._gal.setdefault(epoch, [0, 0.0, 0.0])
                sums[0] += 1
                sums[1] += row["adjusted_fraction"]
                sums[2] += abs(row["remainder"])
        self._write(rows)

    def gal_warnings(self, epoch: int) -> list[str]:
        """What looks wrong with GAL in ``epoch`` (each said once per run): the policy rejecting g on most steps
        (GAL then is mostly standard training), or the mean |r| grown 1000-fold over the first logged epoch's."""
        if epoch not in self._gal:
            return []
        steps, adjusted, remainder = self._gal[epoch]
        first = self._gal[min(self._gal)]
        said = []
        if adjusted / steps < 0.5 and "policy" not in self._warned:
            said.append(("policy", f"GAL's policy rejected g on {1 - adjusted / steps:.0%} of epoch {epoch}'s logged "
                         "steps (the tentative step raised the loss): the backbone mostly got the vanilla gradient; "
                         "gal.beta or optimizer.lr may be too large"))  # fmt: skip
        mean_r, grown = remainder / steps, (remainder / steps) / max(first[2] / first[0], 1e-30)
        if grown > 1e3 and "remainder" not in self._warned:
            said.append(("remainder", f"GAL's mean |r| grew {grown:.2g}-fold from epoch {min(self._gal)} to epoch "
                         f"{epoch} ({mean_r:.3g}): h may be diverging; lower gal.lr or gal.beta"))  # fmt: skip
        self._warned.update(key for key, _ in said)
        return [text for _, text in said]

    def log_epoch(self, epoch: int, step: int, values: dict[str, float], split: str = "eval") -> None:
        """One evaluation's row, its metrics as ``<split>/<name>`` (``eval``: the test split; ``val``)."""
        self._write([{"step": step, "epoch": epoch, **{f"{split}/{k}": v for k, v in values.items()}}])

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        text = "".join(json.dumps(row) + "\n" for row in rows)
        with storage_errors(self.path), self.path.open("a") as f:
            f.write(text)  # whole rows in one write: a kill or a full disk tears at most the last line
            f.flush()
        if self.wandb_run is not None:
            for row in rows:
                self.wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _parse_row(line: str) -> dict[str, Any] | None:
    """The row a log line holds, or None when it is not one (torn, damaged)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def start_wandb(project: str, mode: str, run_dir: Path, name: str, config: dict[str, Any]) -> Any:
    """A wandb run in ``mode`` (offline unless $WANDB_MODE or logger.mode says online), resumed when the run is:
    its id is kept in ``run_dir/wandb_id.txt``. Steps redone after a crash are sent again: log.jsonl drops
    their first rows, wandb (whose steps only go up) may keep those instead."""
    import wandb  # imported here: slow to import and only needed with logger=wandb

    id_file = run_dir / WANDB_ID_FILE
    if not id_file.exists():
        run_id = secrets.token_hex(8)
        write_atomically(id_file, lambda file: file.write(run_id.encode()))
    run_id, mode = id_file.read_text().strip(), os.environ.get("WANDB_MODE", mode)
    return wandb.init(project=project, mode=mode, dir=str(run_dir), name=name, config=config, id=run_id, resume="allow")
