"""Run directories, metrics.json files, and the statistics the tables are built from.

A run lives in results/runs/<experiment>/<task>/<optimizer>/<gal>/seed=<n>/ and holds
config.yaml, log.jsonl, last.pt (the latest epoch's checkpoint) and, once finished,
metrics.json: the resolved config, the last evaluation's metrics ("metrics"), the evaluation
that was best by the task's objective ("best", with its epoch), trainer.select's evaluation ("selected": the
last, or the test metrics of the epoch best on the validation split), with a validation split its last and
best evaluations ("val", "best_val"), and the machine and library versions that produced them ("environment").
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gal.storage import write_atomically

if TYPE_CHECKING:  # torch is imported where a run needs it: reading results (the tables) does without
    import torch

# Epochs are numbered from 1 wherever a user reads them: the console ("epoch 3/30"), the progress bar, log.jsonl
# (a step row's epoch is the one it belongs to, an evaluation row's the epochs trained before it, 0 for a run that
# only evaluates), metrics.json's best and selected, the checkpoint's and the tables'. Files of runs made when they
# counted from 0 have no "first_epoch" key: :func:`renumbered` and :func:`renumbered_rows` read them in today's count.
FIRST_EPOCH = 1
METRICS_FILE = "metrics.json"
LOG_FILE = "log.jsonl"  # one JSON line per logged step and evaluation (gal.runlog)
CONFIG_FILE = "config.yaml"  # the resolved config, written when the run starts
# the libraries whose versions a run records: the numbers can move with any of them
LIBRARIES = ("torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "hydra-core", "pycocotools")


def write_json(data: dict[str, Any], path: Path) -> None:
    """Atomic JSON write (temp file + rename); a full disk or a read-only directory raises
    :class:`gal.errors.StorageError` and leaves no temp file."""
    text = (json.dumps(data, indent=2) + "\n").encode()
    write_atomically(path, lambda file: file.write(text))


def environment(device: torch.device, world_size: int) -> dict[str, Any]:
    """What a run's numbers depend on beyond its config: the processor, the threads and the library versions.

    Runs are bit-for-bit repeatable on the same machine with the same thread count; another CPU model rounds
    differently, and long runs amplify that, so metrics.json records where each number came from.
    """
    import torch

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "cpu": _cpu_model(),
        "gpu": gpu,
        "processes": world_size,
        "threads": torch.get_num_threads(),  # intra-op threads per process (OMP_NUM_THREADS)
        "python": platform.python_version(),
        "cuda": torch.version.cuda if gpu else None,
        "libraries": _library_versions(),
    }


@cache
def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; what platform knows elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def _library_versions() -> dict[str, str | None]:
    import torch

    versions: dict[str, str | None] = {"torch": torch.__version__}  # with its build (e.g. +cu130)
    for name in LIBRARIES[1:]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_seed(run_dir: Path) -> int:
    """The seed of a run directory, from its name ``seed=<n>``."""
    return int(Path(run_dir).name.removeprefix("seed="))


def run_dirs(results_dir: Path, experiment: str, task: str, optimizer: str, gal: str) -> list[Path]:
    """Finished runs (those with a metrics.json) of one arm, all seeds, sorted by seed."""
    arm = Path(results_dir) / "runs" / experiment / task / optimizer / gal
    return sorted((p.parent for p in arm.glob(f"seed=*/{METRICS_FILE}")), key=run_seed)


def load_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / METRICS_FILE).read_text())


def keep_best(
    best: dict[str, Any] | None,
    metrics: dict[str, float],
    epoch: int,
    objective: tuple[str, str],
    test: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The better of ``best`` and this evaluation by the task's objective (metric, "minimize" | "maximize"):
    {"metric": name, "epoch": its number (FIRST_EPOCH), "metrics": all of that evaluation's metrics}.
    A NaN never wins over a number; on a tie the earlier epoch stays.

    With ``test`` (the same epoch's test metrics), ``metrics`` are the validation split's, which alone decide:
    {"metric", "epoch", "val": ``metrics``, "metrics": ``test``}, so selection never looks at the test split."""
    metric, direction = objective
    value = metrics.get(metric, float("nan"))
    if best is not None:
        held = best["val" if test is not None else "metrics"].get(metric, float("nan"))
        if np.isnan(value) or not (np.isnan(held) or (value < held if direction == "minimize" else value > held)):
            return best
    if test is not None:
        return {"metric": metric, "epoch": epoch, "val": dict(metrics), "metrics": dict(test)}
    return {"metric": metric, "epoch": epoch, "metrics": dict(metrics)}


def renumbered(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """A best or selected evaluation of a run whose epochs counted from 0 (its checkpoint or metrics.json has no
    "first_epoch"), with its epoch counted from 1."""
    return evaluation if evaluation is None else {**evaluation, "epoch": evaluation["epoch"] + 1}


def counts_from_0(rows: list[dict[str, Any]]) -> bool:
    """Whether log.jsonl's rows were written when epochs counted from 0: a step row of epoch 0."""
    return any(row.get("epoch") == 0 and "loss" in row for row in rows)


def renumbered_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """log.jsonl's rows with epochs counted from 1: a log that :func:`counts_from_0` gets 1 added to every row's
    epoch; one counted from 1 is returned as it is."""
    if not counts_from_0(rows):
        return rows
    return [{**row, "epoch": row["epoch"] + 1} if "epoch" in row else row for row in rows]


def run_result(summary: dict[str, Any]) -> dict[str, float]:
    """What a run returns to its caller and a search scores, from its metrics.json: trainer.select's test metrics,
    and with a validation split its validation metrics as ``val/<name>`` (a summary from before "selected" was
    kept: its last evaluation's metrics)."""
    selected = summary.get("selected") or {"metrics": summary.get("metrics", {})}
    return {**selected["metrics"], **{f"val/{k}": v for k, v in (selected.get("val") or {}).items()}}


def selected_metrics(
    select: str,
    last: dict[str, float],
    last_val: dict[str, float] | None,
    best_val: dict[str, Any] | None,
    last_epoch: int,
) -> dict[str, Any]:
    """trainer.select's evaluation, metrics.json's "selected": {"select", "epoch", "metrics" (test)[, "val"]}:
    the last one (``"last"``), or the one best on the validation split (``"best_val"``, from :func:`keep_best`)."""
    if select == "best_val":
        return {"select": select, **best_val}
    return {"select": select, "epoch": last_epoch, "metrics": dict(last), **({"val": last_val} if last_val else {})}


@dataclass(frozen=True)
class Comparison:
    """Baseline vs GAL values of one metric over seeds."""

    baseline: np.ndarray
    gal: np.ndarray

    @property
    def t_test(self) -> tuple[float, float]:
        """(t, p) of scipy.stats.ttest_ind(baseline, gal), the paper's two-sample t-test."""
        if len(self.baseline) < 2 or len(self.gal) < 2:
            return float("nan"), float("nan")
        from scipy import stats  # imported here: only the tables' t-tests need scipy

        result = stats.ttest_ind(self.baseline, self.gal)
        return float(result.statistic), float(result.pvalue)


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def format_metrics(metrics: dict[str, float]) -> str:
    """'mae 54.23, mse 4653, r2 0.09262': each metric to 4 significant digits, for the console."""
    return ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())
