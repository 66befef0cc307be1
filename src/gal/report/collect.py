"""Finished runs, read: one arm's metric values over seeds, the step rows of its logs, a sweep's variant folders.

An arm is a :class:`Runs` (a folder under results/runs/, a task, an optimizer) and its GAL folder ("off" or
"on"). A run that diverged (trainer.on_nonfinite=record) counts as NaN: it shows in the mean, never dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gal.report.paper import Location, Metric, experiment_location
from gal.results import LOG_FILE, load_metrics, renumbered_rows, run_dirs, run_seed

PROTOCOL_SEEDS = range(5)  # the paper's protocol: 5 seeds (Table V; Tables I-IV run 3, seeds 0-2)
CONFIRM_SEEDS = range(20)  # `make confirm`: the 20-seed check of each comparison
REGRESSION_TASKS = ("boston", "diabetes", "california")


def data_problem(task: str) -> str | None:
    """Why a regression task's data set cannot be loaded here (its own error), or None."""
    if task not in REGRESSION_TASKS:
        return None
    from gal.tasks import DatasetUnavailableError
    from gal.tasks.regression import load_regression_data

    try:
        load_regression_data(task, download=False)
    except DatasetUnavailableError as error:
        return f"data unavailable: {error}"
    return None


@dataclass(frozen=True)
class Runs:
    """The runs a table line reads: results/runs/<folder>/<task>/<optimizer>/, the title it shows, and the
    command that makes them (named when they are missing)."""

    title: str
    folder: str
    task: str
    optimizer: str
    command: str
    reported: str = "last"  # "best": each run's best evaluation by the task's objective (metrics.json "best")
    paper: dict = field(default_factory=dict)  # the paper's values: {baseline, gal[, t_p]}, one per metric

    @classmethod
    def of(cls, title: str, experiment: str, command: str, **kwargs) -> Runs:
        """The runs of ``experiment=<experiment>``, where `python -m gal` writes them."""
        where: Location = experiment_location(experiment)
        return cls(title, where.folder, where.task, where.optimizer, command, **kwargs)

    def at(self, folder: str, command: str | None = None) -> Runs:
        """The same task and optimizer under another folder (a sweep's variant, another arm's experiment)."""
        return replace(self, folder=folder, command=command or self.command)

    def missing_reason(self) -> str:
        """Why there are no runs: the data set's own error, or the command that makes them."""
        missing = f"no finished runs under results/runs/{self.folder}/{self.task}/ (run `{self.command}`)"
        return data_problem(self.task) or missing


Arm = tuple[Runs, str]  # runs and their GAL folder, "off" or "on"


def collect(results_dir: Path, runs: Runs, gal: str, metrics: list[Metric], seeds: range = PROTOCOL_SEEDS):
    """metric -> values over the runs of one arm whose seed is in ``seeds`` (empty arrays when there are none)."""
    found = collect_by_seed(results_dir, runs, gal, metrics, seeds)
    return {m.key: np.array([run[m.key] for run in found.values()]) for m in metrics}


def collect_by_seed(
    results_dir: Path, runs: Runs, gal: str, metrics: list[Metric], seeds: range
) -> dict[int, dict[str, float]]:
    """seed -> {metric: value} for the finished runs of one arm whose seed is in ``seeds``, in seed order."""
    found = {run_seed(d): d for d in run_dirs(results_dir, runs.folder, runs.task, runs.optimizer, gal)}
    summaries = {seed: (d, load_metrics(d)) for seed, d in found.items() if seed in seeds}
    reported = {
        seed: None if "diverged" in s else reported_metrics(d, s, runs.reported) for seed, (d, s) in summaries.items()
    }
    return {seed: {m.key: np.nan if r is None else r[m.key] for m in metrics} for seed, r in reported.items()}


def reported_metrics(run_dir: Path, summary: dict, which: str) -> dict[str, float]:
    """A finished run's last evaluation (``which`` "last") or its best one by the task's objective ("best")."""
    if which == "last":
        return summary["metrics"]
    if summary.get("best") is None:
        raise ValueError(
            f"{run_dir / 'metrics.json'} has no best evaluation (it was written before metrics.json kept one): "
            "train the run again, or build this table from the last epoch"
        )
    return summary["best"]["metrics"]


def log_rows(run_dir: Path) -> list[dict]:
    """A run's log.jsonl, one dict per line (training steps carry "step", evaluations "split"), epochs from 1."""
    with open(Path(run_dir) / LOG_FILE) as log:
        return renumbered_rows([json.loads(line) for line in log])


def step_means(results_dir: Path, runs: Runs, keys: tuple[str, ...], seeds: range = PROTOCOL_SEEDS) -> dict[str, float]:
    """Each key's mean over every logged training step of the runs of one GAL arm whose seed is in ``seeds`` (the
    seeds its metrics are read from), |r| for "remainder"."""
    values: dict[str, list[float]] = {key: [] for key in keys}
    for run in run_dirs(results_dir, runs.folder, runs.task, runs.optimizer, "on"):
        if run_seed(run) not in seeds:
            continue
        for entry in log_rows(run):
            for key in keys:
                if key in entry and "step" in entry:
                    values[key].append(abs(entry[key]) if key == "remainder" else entry[key])
    return {key: float(np.mean(v)) if v else float("nan") for key, v in values.items()}


def natural_key(name: str) -> list:
    """Sort "beta=5.0" before "beta=10.0": numbers in a name compare as numbers."""
    return [float(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", name))]


def subfolders(*roots: Path, pattern: str = "*") -> list[str]:
    """The names of the folders under any of ``roots`` matching ``pattern``, in natural order."""
    names = {p.name for root in roots if root.exists() for p in root.glob(pattern) if p.is_dir()}
    return sorted(names, key=natural_key)
