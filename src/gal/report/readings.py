"""Table V over readings of its unstated recipe: results/tables/table5_readings.md (`make table5-readings`).

The paper gives no preprocessing, epochs, lr, batch or split for Table V. A reading is one choice of feature
scaling, target scaling, epochs and Adam's lr; both arms train under it (GAL at the paper's alpha = beta = 0.001),
and the readings are sorted by how far their baseline lies from the paper's (:func:`distance`). The three nearest
per data set run again with seeds 0-19, once with the fixed split and once with a split drawn from each seed.

A reading's runs: results/runs/table5_readings/<reading>/<task>/adam/<off|on>/seed=<n>/ (per-seed splits:
table5_readings_per_seed/), <reading> = x_<feature scaling>-y_<target scaling>-e<epochs>-lr<lr> (the Makefile's
READING_NAME); the settings are read back from each run's metrics.json, not from the folder's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gal.report.collect import CONFIRM_SEEDS, PROTOCOL_SEEDS, Runs, collect, log_rows, subfolders
from gal.report.paper import Metric, load
from gal.report.render import table_runs
from gal.report.stats import fmt_g, p_value, verdict
from gal.results import load_metrics, mean_std, run_dirs, run_seed

FOLDER = "table5_readings"
PER_SEED_FOLDER = "table5_readings_per_seed"
CLOSEST = 3  # readings per data set confirmed with 20 seeds
COMMAND = "make table5-readings"
DISTANCE = (
    "d = the largest |ours − paper| / paper std over MAE, MSE and R2, of the baseline's 5-seed means against the "
    "paper's baseline (its mean ± std): d < 1 is within one of the paper's standard deviations on every metric"
)


@dataclass(frozen=True)
class Reading:
    """One reading of the recipe: the settings that make it, as the runs' configs hold them."""

    feature_scaling: str
    target_scaling: str
    epochs: int
    lr: float

    @property
    def folder(self) -> str:
        """Its folder name, the Makefile's READING_NAME."""
        return f"x_{self.feature_scaling}-y_{self.target_scaling}-e{self.epochs}-lr{self.lr}"

    def make_target(self, dataset: str, split: str) -> str:
        """The Makefile target that runs it with seeds 0-19 (``split``: fixed | per_seed)."""
        settings = f"{self.feature_scaling}/{self.target_scaling}/{self.epochs}/{self.lr}"
        return f"readings-confirm/{dataset}/{settings}/{split}"

    def cells(self) -> list[str]:
        return [self.feature_scaling, self.target_scaling, str(self.epochs), f"{self.lr:g}"]


def reading_of(run_dir: Path) -> Reading:
    """The reading a run was trained under, from its metrics.json's config."""
    config = load_metrics(run_dir)["config"]
    task = config["task"]
    return Reading(
        task.get("feature_scaling", "standard"), task.get("target_scaling", "standard"),
        int(config["trainer"]["epochs"]), float(config["optimizer"]["lr"]),
    )  # fmt: skip


def paper_baseline(row: Runs) -> dict[str, tuple[float, float]]:
    """metric -> (mean, std) of the paper's baseline, parsed from its "mean±std" cells."""
    return {m.key: tuple(float(x) for x in cell.split("±")) for m, cell in zip(table5().metrics, row.paper["baseline"])}


def distance(ours: dict[str, float], paper: dict[str, tuple[float, float]]) -> float:
    """The largest |ours - paper mean| / paper std over the metrics both have: how far a baseline lies from the
    paper's, in the paper's own spread (NaN when ours diverged)."""
    return max(abs(ours[key] - mean) / std for key, (mean, std) in paper.items() if key in ours)


def table5():
    return load("table5")


@dataclass
class Cell:
    """One reading of one data set: both arms' values per metric over the seeds read."""

    reading: Reading
    baseline: dict[str, np.ndarray]
    gal: dict[str, np.ndarray]
    distance: float

    def effect(self, key: str = "mse") -> float:
        """GAL's mean minus the baseline's, in units of the baseline's std (Δ / std; NaN when std is 0)."""
        mean, std = mean_std(self.baseline[key])
        return (np.mean(self.gal[key]) - mean) / std if std > 0 else float("nan")


def readings(results_dir: Path, row: Runs, folder: str = FOLDER, seeds: range = PROTOCOL_SEEDS) -> list[Cell]:
    """Every reading of one data set found under ``folder``, nearest the paper's baseline first."""
    metrics = list(table5().metrics)
    paper = paper_baseline(row)
    cells = []
    for name in subfolders(Path(results_dir) / "runs" / folder):
        runs = row.at(f"{folder}/{name}", COMMAND)
        found = run_dirs(results_dir, runs.folder, runs.task, runs.optimizer, "off")
        if not found:
            continue
        baseline, gal = (collect(results_dir, runs, arm, metrics, seeds) for arm in ("off", "on"))
        if not len(baseline["mse"]) or not len(gal["mse"]):
            continue
        means = {m.key: float(np.mean(baseline[m.key])) for m in metrics}
        cells.append(Cell(reading_of(found[0]), baseline, gal, distance(means, paper)))
    return sorted(cells, key=lambda c: (np.isnan(c.distance), c.distance))


def confirm_targets(results_dir: Path) -> list[str]:
    """The make targets that run the :data:`CLOSEST` readings of each data set with seeds 0-19, both splits."""
    targets = []
    for row in table_runs(table5()):
        for cell in readings(results_dir, row)[:CLOSEST]:
            targets += [cell.reading.make_target(row.task, split) for split in ("fixed", "per_seed")]
    return targets


def _delta(cell: Cell, metric: Metric) -> str:
    p = p_value(cell.baseline[metric.key], cell.gal[metric.key])
    delta = np.mean(cell.gal[metric.key]) - np.mean(cell.baseline[metric.key])
    return f"{delta:+.3g} ({p:.2g})"


def _diverged(cell: Cell) -> str:
    counts = [int(np.isnan(values["mse"]).sum()) for values in (cell.baseline, cell.gal)]
    return "" if not any(counts) else f" (diverged: {counts[0]} baseline, {counts[1]} GAL)"


def readings_table(results_dir: Path) -> str:
    """results/tables/table5_readings.md: per data set every reading, nearest the paper's baseline first, then
    the nearest three at 20 seeds with fixed and per-seed splits."""
    metrics = list(table5().metrics)
    names = [m.title for m in metrics]
    lines = [
        "# Table V over readings of its recipe: baseline vs GAL (alpha = beta = 0.001)",
        "",
        "The paper gives no preprocessing, epochs or learning rate. Each reading is one choice of feature scaling "
        "(standard, minmax, none), target scaling (standard, none), epochs (a third of the recipe's, the recipe's, "
        "three times it) and Adam's lr (1e-2, 1e-3, 1e-4); both arms share it. Test split fixed (split_seed 0), "
        "metrics in the target's original units after the last epoch, 5 seeds per arm.",
        "",
        f"{DISTANCE}. Δ = GAL − baseline (mean), with p from `scipy.stats.ttest_ind`. Rows sorted by d.",
    ]
    verdicts, bounds = [], []
    for row in table_runs(table5()):
        cells = readings(results_dir, row)
        lines += ["", f"## {row.title}", ""]
        if not cells:
            lines.append(f"missing: {row.at(FOLDER, COMMAND).missing_reason()}")
            continue
        bounds.append(_bound_row(results_dir, row, cells[:CLOSEST]))
        lines += [
            "| features | target | epochs | lr | d | " + " | ".join(f"baseline {n}" for n in names) + " | "
            + " | ".join(f"GAL {n}" for n in names) + " | " + " | ".join(f"Δ {n.split()[0]} (p)" for n in names)
            + " |",
            "|" + " --- |" * (5 + 3 * len(metrics)),
        ]  # fmt: skip
        for cell in cells:
            lines.append(
                "| " + " | ".join(cell.reading.cells()) + f" | {cell.distance:.2f}{_diverged(cell)} | "
                + " | ".join(fmt_g(cell.baseline[m.key]) for m in metrics) + " | "
                + " | ".join(fmt_g(cell.gal[m.key]) for m in metrics) + " | "
                + " | ".join(_delta(cell, m) for m in metrics) + " |"
            )  # fmt: skip
        verdicts += _confirmed(results_dir, row, cells[:CLOSEST], metrics)
    return "\n".join([*lines, "", *_confirmation_section(verdicts), "", *_bound_section(bounds)])


def _bound_row(results_dir: Path, row: Runs, nearest: list[Cell]) -> str:
    """The realized |g_used - dl/dz| / |dl/dz| over every logged GAL step of the nearest readings (seeds 0-4)."""
    means, largest, used = [], [], []
    for cell in nearest:
        runs = row.at(f"{FOLDER}/{cell.reading.folder}")
        for run in run_dirs(results_dir, runs.folder, runs.task, runs.optimizer, "on"):
            if run_seed(run) not in PROTOCOL_SEEDS or not (run / "log.jsonl").exists():
                continue
            steps = [entry for entry in log_rows(run) if "relative_change" in entry]
            means += [entry["relative_change"] for entry in steps]
            largest += [entry["relative_change_max"] for entry in steps]
            used += [entry["adjusted_fraction"] for entry in steps]
    if not means:
        return f"| {row.title} | 0 | not logged | | |"
    return (f"| {row.title} | {len(means)} | {np.mean(means):.6f} | {np.max(largest):.6f} | "
            f"{np.mean(used):.1%} |")  # fmt: skip


def _bound_section(rows: list[str]) -> list[str]:
    if not rows:
        return []
    return [
        "## The bound at d = 1",
        "",
        "With a 1-d z (the regression output), Eq. 4 gives |v~| = alpha |dl/dz| and Eq. 5 g = dl/dz ± alpha |dl/dz|, "
        "so g = dl/dz (1 ± alpha) for each sample: GAL changes no sample's gradient by more than alpha = 0.001 "
        "(0.1%), and by exactly alpha where the policy sends g. Measured from the step logs (log.jsonl's "
        "`relative_change`, the step's mean over samples of |g_used − dl/dz| / |dl/dz|, and `relative_change_max`) "
        "of the GAL runs of the three nearest readings, seeds 0-4:",
        "",
        "| data set | GAL steps | mean relative change | largest | steps where g was sent |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]


def _confirmed(results_dir: Path, row: Runs, nearest: list[Cell], metrics: list[Metric]) -> list[str]:
    """The 20-seed rows of the nearest readings: fixed split, then per-seed splits."""
    out = []
    for cell in nearest:
        for split, folder in (("fixed", FOLDER), ("per seed", PER_SEED_FOLDER)):
            runs = row.at(f"{folder}/{cell.reading.folder}", COMMAND)
            baseline, gal = (collect(results_dir, runs, arm, metrics, CONFIRM_SEEDS) for arm in ("off", "on"))
            n = (len(baseline["mse"]), len(gal["mse"]))
            if min(n) < len(CONFIRM_SEEDS):
                out.append(
                    f"| {row.title} | {' / '.join(cell.reading.cells())} | {split} | {n[0]} / {n[1]} | "
                    f"missing: `{cell.reading.make_target(row.task, split.replace(' ', '_'))}` |" + " |" * 6
                )
                continue
            confirmed = Cell(cell.reading, baseline, gal, cell.distance)
            out.append(
                f"| {row.title} | {' / '.join(cell.reading.cells())} | {split} | 20 / 20 | "
                f"{fmt_g(baseline['mse'])} | {fmt_g(gal['mse'])} | {confirmed.effect():+.2f} | "
                + " | ".join(f"{p_value(baseline[m.key], gal[m.key]):.2g}" for m in metrics)
                + f" | {verdict(baseline, gal, metrics)} |"
            )
    return out


def _confirmation_section(rows: list[str]) -> list[str]:
    if not rows:
        return []
    return [
        "## The three nearest readings with 20 seeds",
        "",
        f"Seeds 0-19 per arm (`{COMMAND}`), once with the fixed test split and once with each seed drawing its own "
        "split (task.split=per_seed: on a few hundred rows one split's luck can dominate the error). Δ/std = GAL's "
        "mean MSE minus the baseline's, in the baseline's std.",
        "",
        "| data set | reading (features / target / epochs / lr) | split | seeds | baseline MSE | GAL MSE | Δ/std | "
        "p MAE | p MSE | p R2 | verdict |",
        "|" + " --- |" * 11,
        *rows,
    ]


def effects(results_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """The figure's points: data set -> (d, GAL's effect on MSE in baseline stds) for every 5-seed reading."""
    return {row.title: [(c.distance, c.effect()) for c in readings(results_dir, row)] for row in table_runs(table5())}
