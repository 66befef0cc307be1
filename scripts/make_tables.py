"""Build the Markdown tables in results/tables/ from the runs in results/runs/.

    python scripts/make_tables.py table5 table5_alpha     # what `make reproduce-regression` runs
    python scripts/make_tables.py table1 table2 table3 table4 digits

Every number comes from a metrics.json written by `python -m gal.train`; a row with no runs
is marked missing with the reason (the data set's own error, or the command to run).
"""

import argparse
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from gal.adjuster import GradientAdjuster
from gal.results import Comparison, load_metrics, mean_std, run_dirs
from gal.tasks import DatasetUnavailableError
from gal.tasks.regression import load_regression_data

Metric = tuple[str, str, bool]  # key in metrics.json, column title, lower is better
REGRESSION_METRICS: list[Metric] = [("mae", "MAE ↓", True), ("mse", "MSE ↓", True), ("r2", "R2 ↑", False)]
ERROR_METRICS: list[Metric] = [("error", "Top-1 error % ↓", True)]
IMAGENET_METRICS: list[Metric] = [("acc1", "Top-1 % ↑", False), ("acc5", "Top-5 % ↑", False)]
COCO_METRICS: list[Metric] = [(k, f"{k} ↑", False) for k in ("AP", "AP50", "AP75", "APS", "APM", "APL")]
DIGITS_METRICS: list[Metric] = [("error", "Top-1 error % ↓", True), ("loss", "Test loss ↓", True)]
SENSITIVITY_ALPHAS = (0.001, 0.01, 0.1, 0.5)
PROTOCOL_SEEDS = range(5)  # the paper's protocol: 5 seeds (Table V; Tables I-IV run 3, seeds 0-2)
CONFIRM_SEEDS = range(20)  # `make confirm`: the 20-seed check of each comparison


@dataclass(frozen=True)
class Row:
    """One paper row: where its runs live, the command that makes them, and the paper's numbers."""

    title: str
    experiment: str
    task: str
    optimizer: str
    command: str
    paper_baseline: tuple[str, ...] = ()
    paper_gal: tuple[str, ...] = ()
    paper_t_p: tuple[str, ...] = ()
    unavailable: Callable[[], str | None] = field(default=lambda: None)
    reported: str = "last"  # "best": each run's best evaluation by the task's objective (metrics.json "best")


def _regression_data_error(dataset: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            load_regression_data(dataset, download=False)
        except DatasetUnavailableError as error:
            return f"data unavailable: {error}"
        return None

    return check


def _table5_row(dataset: str, title: str, baseline, gal, t_p) -> Row:
    return Row(title, "table5", dataset, "adam", "make reproduce-regression", baseline, gal, t_p,
               _regression_data_error(dataset))  # fmt: skip


TABLE5_ROWS = [  # paper Table V: mean±std over 5 seeds and (t, p), baseline vs GAL
    _table5_row(
        "boston", "Boston housing",
        ("3.9535±0.4307", "23.0956±4.1695", "0.7668±0.0420"), ("2.8079±0.2720", "12.8808±2.0446", "0.8699±0.0206"),
        ("(5.02, 1.02e-03)", "(4.91, 1.17e-03)", "(-4.92, 1.16e-03)"),
    ),
    _table5_row(
        "diabetes", "Diabetes",
        ("44.3832±0.7752", "3226.0238±38.8293", "0.3821±0.0074"),
        ("41.6186±0.2989", "2961.5520±29.4521", "0.4327±0.0056"),
        ("(7.43, 7.34e-05)", "(12.13, 1.97e-06)", "(-12.14, 1.95e-06)"),
    ),
    _table5_row(
        "california", "California housing",
        ("1.0910±0.1297", "2.1168±0.3629", "-0.6084±0.2757"), ("0.7780±0.0262", "1.1635±0.0655", "0.1158±0.0498"),
        ("(5.28, 7.43e-04)", "(5.77, 4.15e-04)", "(-5.78, 4.14e-04)"),
    ),
]  # fmt: skip
TABLE1_ROWS = [  # paper Table I: CIFAR-10, EfficientNet-B1, error % over 3 runs
    Row("SGD", "table1", "cifar10", "sgd", "make cifar10-sgd cifar10-sgd-gal", ("1.92±0.12",), ("1.84±0.06",),
        reported="best"),
    Row("Lookahead", "table1", "cifar10", "lookahead", "make cifar10-lookahead cifar10-lookahead-gal",
        ("2.01±0.02",), ("1.91±0.02",), reported="best"),
    Row("AdaBound", "table1", "cifar10", "adabound", "make cifar10-adabound cifar10-adabound-gal",
        ("3.15±0.03",), ("3.03±0.01",), reported="best"),
]  # fmt: skip
TABLE2_ROWS = [  # paper Table II: CIFAR-100, EfficientNet-B1, error % over 3 runs
    Row("SGD", "table2", "cifar100", "sgd", "make cifar100-sgd cifar100-sgd-gal", ("11.81±0.10",), ("11.37±0.10",),
        reported="best"),
    Row("Lookahead", "table2", "cifar100", "lookahead", "make cifar100-lookahead cifar100-lookahead-gal",
        ("11.70±0.01",), ("11.44±0.02",), reported="best"),
    Row("AdaBound", "table2", "cifar100", "adabound", "make cifar100-adabound cifar100-adabound-gal",
        ("14.44±0.06",), ("14.12±0.06",), reported="best"),
]  # fmt: skip
TABLE3_ROWS = [  # paper Table III: ImageNet, RMSProp, 90 epochs, top-1 / top-5 over 3 runs
    Row("ResNet-50", "table3", "imagenet", "rmsproptf", "make imagenet-resnet50-rmsprop imagenet-resnet50-rmsprop-gal",
        ("76.43±0.02", "93.05±0.04"), ("76.53±0.03", "93.13±0.05"), reported="best"),
    Row("EfficientNet-B2", "table3", "imagenet", "rmsproptf",
        "make imagenet-effnet-b2-rmsprop imagenet-effnet-b2-rmsprop-gal",
        ("77.93±0.09", "93.92±0.03"), ("78.10±0.06", "93.94±0.06"), reported="best"),
]  # fmt: skip
TABLE4_ROWS = [  # paper Table IV: COCO 2017 val, DETR, 150 epochs
    Row("DETR-R50", "table4", "coco", "adamw", "make coco-detr-r50 coco-detr-r50-gal",
        ("39.13", "60.03", "40.94", "18.30", "42.51", "58.62"), ("39.61", "60.55", "41.62", "18.42", "42.52", "59.02")),
    Row("DETR-R101", "table4", "coco", "adamw", "make coco-detr-r101 coco-detr-r101-gal",
        ("40.98", "61.91", "43.59", "19.32", "45.09", "60.25"), ("41.38", "62.24", "43.87", "20.13", "45.10", "60.86")),
]  # fmt: skip
DIGITS_ROWS = [Row("Digits, small CNN, SGD", "digits", "digits", "sgd", "make reproduce-digits")]


def collect(
    results_dir: Path, row: Row, gal: str, metrics: list[Metric], seeds: range = PROTOCOL_SEEDS
) -> dict[str, np.ndarray]:
    """metric -> values over the runs of one arm whose seed is in ``seeds`` (empty arrays when there are none)."""
    runs = collect_by_seed(results_dir, row, gal, metrics, seeds)
    return {key: np.array([run[key] for run in runs.values()]) for key, _, _ in metrics}


def collect_by_seed(
    results_dir: Path, row: Row, gal: str, metrics: list[Metric], seeds: range
) -> dict[int, dict[str, float]]:
    """seed -> {metric: value} for the finished runs of one arm whose seed is in ``seeds``, in seed order."""
    found = {int(d.name.removeprefix("seed=")): d for d in run_dirs(results_dir, row.experiment, row.task,
                                                                    row.optimizer, gal)}  # fmt: skip
    runs = {seed: (d, load_metrics(d)) for seed, d in found.items() if seed in seeds}
    # a diverged run (trainer.on_nonfinite=record) counts as NaN: it shows in the mean, never silently dropped
    reported = {
        seed: None if "diverged" in r else reported_metrics(d, r, row.reported) for seed, (d, r) in runs.items()
    }
    return {seed: {key: np.nan if m is None else m[key] for key, _, _ in metrics} for seed, m in reported.items()}


def reported_metrics(run_dir: Path, run: dict, which: str) -> dict[str, float]:
    """A finished run's last evaluation (``which`` "last") or its best one by the task's objective ("best")."""
    if which == "last":
        return run["metrics"]
    if run.get("best") is None:
        raise ValueError(
            f"{run_dir / 'metrics.json'} has no best evaluation (it was written before metrics.json kept one): "
            "train the run again, or build this table from the last epoch"
        )
    return run["best"]["metrics"]


REPORTED = {  # what a table's rows report, in words, under its heading
    "last": "Each run's metrics after its last epoch.",
    "best": "Each run's best evaluation over its epochs by the task's objective (lowest top-1 error; the EMA "
    "model's when trained with one), with the other metrics of that evaluation: what the paper reports (the "
    "authors' CIFAR code prints the best test error, their timm train_gal.py the best EMA top-1). As theirs, the "
    "epoch is chosen on the test split itself, so these numbers are optimistic; metrics.json also keeps the last.",
}


def missing_reason(row: Row, experiment: str | None = None) -> str:
    """Why a row has no runs: the data set's own error, or the command that makes the runs."""
    experiment = experiment or row.experiment
    return row.unavailable() or f"no finished runs under results/runs/{experiment}/{row.task}/ (run `{row.command}`)"


def fmt(values: np.ndarray) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4f}±{std:.4f}"


def verdict(baseline: dict[str, np.ndarray], gal: dict[str, np.ndarray], metrics: list[Metric]) -> str:
    """Which metrics GAL improves or worsens at p < 0.05, in words."""
    better, worse = [], []
    for key, title, lower_is_better in metrics:
        _, p = Comparison(baseline[key], gal[key]).t_test
        if p < 0.05:
            gal_lower = np.mean(gal[key]) < np.mean(baseline[key])
            (better if gal_lower == lower_is_better else worse).append(title.split()[0])
    if not better and not worse:
        return "no significant difference (p ≥ 0.05 on every metric)"
    parts = [
        f"GAL better on {', '.join(better)}" if better else "",
        f"GAL worse on {', '.join(worse)}" if worse else "",
    ]
    return "; ".join(p for p in parts if p) + " (p < 0.05)"


@dataclass(frozen=True)
class Claim:
    """One comparison a table makes: arm A against arm B on one metric (each arm a Row and its gal folder)."""

    label: str
    metric: Metric
    a: tuple[Row, str]
    b: tuple[Row, str]


def confirmation(results_dir: Path, claims: list[Claim], command: str = "make confirm") -> list[str]:
    """Each comparison at the paper's 5 seeds and at 20 (``command``), and whether its verdict holds.

    A difference found with 5 seeds on one machine can be float rounding amplified by training: another CPU moved
    California's baseline by two standard deviations. A claim stands only where 20 seeds agree.
    """
    lines = ["| Comparison | metric | 5 seeds: A → B (p) | 20 seeds: A → B (p) | at 20 seeds |", "|" + " --- |" * 5]
    for claim in claims:
        key, title, lower_is_better = claim.metric
        a, b = (
            collect_by_seed(results_dir, row, gal, [claim.metric], CONFIRM_SEEDS) for row, gal in (claim.a, claim.b)
        )
        cells = []
        for seeds in (PROTOCOL_SEEDS, CONFIRM_SEEDS):  # one read of seeds 0-19, split by seed
            if all(seed in a and seed in b for seed in seeds):
                va, vb = (np.array([arm[seed][key] for seed in seeds]) for arm in (a, b))
                cells.append((va, vb, Comparison(va, vb).t_test[1]))
            else:
                cells.append(None)
        if cells[1] is None:
            continue
        five, twenty = (f"{np.mean(c[0]):.4g} → {np.mean(c[1]):.4g} ({c[2]:.2g})" if c else "missing" for c in cells)
        lines.append(f"| {claim.label} | {title} | {five} | {twenty} | {holds(cells[0], cells[1], lower_is_better)} |")
    if len(lines) == 2:
        return [f"20-seed confirmation: not run here (`{command}` runs seeds 0-19)."]
    return [
        "## 20-seed confirmation",
        "",
        f"Seeds 0-19 (`{command}`) beside the paper's 5 (seeds 0-4); means, and p from `scipy.stats.ttest_ind`. "
        "Only what holds at 20 seeds is claimed in the README.",
        "",
        *lines,
    ]


def diverged(arms: dict[str, np.ndarray]) -> list[str]:
    """ "<arm> diverged on k of n seeds" for each arm with a NaN (a run marked diverged): no t-test for it."""
    return [f"{arm} diverged on {int(np.isnan(v).sum())} of {len(v)} seeds" for arm, v in arms.items()
            if np.isnan(v).any()]  # fmt: skip


def holds(five: tuple | None, twenty: tuple, lower_is_better: bool) -> str:
    """Whether the 5-seed verdict (a difference at p < 0.05, or none) holds with 20 seeds."""

    def said(cell: tuple | None) -> str | None:
        if cell is None or not cell[2] < 0.05:
            return None
        return "B better" if (np.mean(cell[1]) < np.mean(cell[0])) == lower_is_better else "B worse"

    if said_diverged := diverged(dict(zip("AB", twenty[:2]))):
        return "; ".join(said_diverged) + " (no t-test)"
    at_5, at_20 = said(five), said(twenty)
    if at_5 and at_5 == at_20:
        return f"confirmed: {at_20}"
    if at_5:
        return f"not confirmed ({at_5} at 5 seeds only)"
    if at_20:
        return f"{at_20}: appears only with 20 seeds"
    return "no difference at 5 or 20 seeds"


def comparison_table(results_dir: Path, rows: list[Row], metrics: list[Metric], heading: str) -> str:
    """Baseline vs GAL per row: ours (mean±std, t-test) beside the paper's numbers."""
    blank = " |" * len(metrics)
    lines = [
        "| Row | Method | " + " | ".join(title for _, title, _ in metrics) + " | seeds |",
        "|" + " --- |" * (len(metrics) + 3),
    ]
    verdicts = []
    for row in rows:
        baseline, gal = collect(results_dir, row, "off", metrics), collect(results_dir, row, "on", metrics)
        first = metrics[0][0]
        if len(baseline[first]) == 0 or len(gal[first]) == 0:
            lines.append(f"| {row.title} | ours: missing | {missing_reason(row)} |" + blank[2:] + " |")
            verdicts.append(f"- {row.title}: missing")
        else:
            seeds = f"{len(baseline[first])} / {len(gal[first])}"
            comparisons = [Comparison(baseline[k], gal[k]).t_test for k, _, _ in metrics]
            lines += [
                f"| {row.title} | Baseline (ours) | "
                + " | ".join(fmt(baseline[k]) for k, _, _ in metrics)
                + f" | {seeds} |",
                "| | GAL (ours) | " + " | ".join(fmt(gal[k]) for k, _, _ in metrics) + " | |",
                "| | (t, p) ours | " + " | ".join(f"({t:.2f}, {p:.2e})" for t, p in comparisons) + " | |",
            ]
            verdicts.append(f"- {row.title}: {verdict(baseline, gal, metrics)}")
        for label, numbers in (("Baseline", row.paper_baseline), ("GAL", row.paper_gal), ("(t, p)", row.paper_t_p)):
            if numbers:
                lines.append(f"| | {label} (paper) | " + " | ".join(numbers) + " | |")
    return "\n".join(
        [
            heading,
            "",
            *[REPORTED[which] for which in sorted({row.reported for row in rows})],
            "",
            "Mean ± sample std over seeds; (t, p) from `scipy.stats.ttest_ind(baseline, gal)` "
            "(two-sample Student t-test, as in the paper).",
            "",
            *lines,
            "",
            "Verdict (ours):",
            *verdicts,
            "",
            *confirmation(results_dir, [
                Claim(f"{row.title}: baseline (A) vs GAL (B)", metric, (row, "off"), (row, "on"))
                for row in rows for metric in metrics if metric[0] != "r2"  # R2 = 1 - MSE / var(y): MSE's p
            ]),
        ]
    )  # fmt: skip


def table5_alpha(results_dir: Path) -> str:
    """Sensitivity of Table V to alpha: GAL at each alpha against the same baseline runs."""
    metrics = REGRESSION_METRICS
    lines = [
        "| Data set | alpha | " + " | ".join(f"{title} (p vs baseline)" for _, title, _ in metrics) + " | seeds |",
        "|" + " --- |" * (len(metrics) + 3),
    ]
    for row in TABLE5_ROWS:
        baseline = collect(results_dir, row, "off", metrics)
        if len(baseline["mae"]) == 0:
            lines.append(f"| {row.title} | baseline missing | {missing_reason(row)} | | | |")
            continue
        cells = " | ".join(fmt(baseline[k]) for k, _, _ in metrics)
        lines.append(f"| {row.title} | baseline | {cells} | {len(baseline['mae'])} |")
        for alpha in SENSITIVITY_ALPHAS:
            experiment = "table5" if alpha == 0.001 else f"table5_alpha{alpha}"
            gal = collect(results_dir, Row(row.title, experiment, row.task, row.optimizer, row.command), "on", metrics)
            if len(gal["mae"]) == 0:
                lines.append(f"| | {alpha} | {missing_reason(row, experiment)} | | | |")
                continue
            cells = [f"{fmt(gal[k])} (p={Comparison(baseline[k], gal[k]).t_test[1]:.2g})" for k, _, _ in metrics]
            lines.append(f"| | {alpha} | " + " | ".join(cells) + f" | {len(gal['mae'])} |")
    return "\n".join(
        [
            "# Table V sensitivity: alpha in {0.001, 0.01, 0.1, 0.5}, beta = 0.001",
            "",
            "GAL runs at each alpha (alpha = 0.001 are the Table V runs) against the Table V baseline runs; "
            "p from `scipy.stats.ttest_ind`. Every other setting as in Table V.",
            "",
            *lines,
            "",
            *confirmation(results_dir, [
                Claim(f"{row.title}: baseline (A) vs alpha {alpha} (B)", metric, (row, "off"),
                      (Row(row.title, "table5" if alpha == 0.001 else f"table5_alpha{alpha}", row.task, row.optimizer,
                           row.command), "on"))
                for row in TABLE5_ROWS for alpha in SENSITIVITY_ALPHAS[1:] for metric in REGRESSION_METRICS[:2]
            ]),
        ]
    )  # fmt: skip


# Where each ablation is run on this machine, and the paper-setting GAL runs it is tested against.
ABLATION_ROWS = [
    (Row("Boston housing", "table5", "boston", "adam", "make reproduce-regression"), ("mse", "MSE ↓", True)),
    (Row("Diabetes", "table5", "diabetes", "adam", "make reproduce-regression"), ("mse", "MSE ↓", True)),
    (Row("California housing", "table5", "california", "adam", "make reproduce-regression"), ("mse", "MSE ↓", True)),
    (Row("Digits", "digits", "digits", "sgd", "make reproduce-digits"), ("error", "Top-1 error % ↓", True)),
]


ABLATIONS = ("policy", "random", "alpha", "beta", "arch")  # configs/ablation/<name>.yaml
# Table VIII (CIFAR-100, SGD): the paper's parameter counts (K) and top-1 error (%) per variant of h.
PAPER_TABLE8 = {
    "mlp-256": ("51.2", "11.68"), "mlp-256-64": ("48.3", "11.61"), "mlp-256-64-32": ("47.2", "11.26"),
    "mlp-256-64-32-16": ("46.1", "11.84"), "cnn-256": ("28.1", "12.15"), "cnn-256-64": ("156.4", "12.13"),
    "cnn-256-64-32": ("171.7", "11.88"), "cnn-256-64-32-16": ("174.7", "11.75"),
}  # fmt: skip


def natural_key(name: str) -> list:
    """Sort "beta=5.0" before "beta=10.0": numbers in a name compare as numbers."""
    return [float(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", name))]


def arch_parameters(variants: list[str]) -> list[str]:
    """Table VIII's counts beside ours, at the paper's d = 100 and at this machine's tasks' d."""
    lines = [
        "Parameters of h. The paper counts the MLPs' weights only and, it turns out, the CNNs' weights plus their "
        "conv biases (e.g. CNN (256): 2,304 + 25,600 weights + 256 conv biases = 28,160 = its 28.1K).",
        "",
        "| h | paper params (d = 100) | ours, weights (d = 100) | ours, with biases (d = 100) | ours, weights "
        "(d = 1, regression) | ours, weights (d = 10, digits) | paper error % (CIFAR-100) |",
        "|" + " --- |" * 7,
    ]
    for variant in variants:
        kind, *widths = variant.split("-")
        counts = [GradientAdjuster(d, arch=[int(w) for w in widths], kind=kind) for d in (100, 1, 10)]
        paper_params, paper_error = PAPER_TABLE8.get(variant, ("", ""))
        total = sum(p.numel() for p in counts[0].parameters())
        lines.append(
            f"| {variant} | {paper_params}K | {counts[0].count_weights():,} | {total:,} | "
            f"{counts[1].count_weights():,} | {counts[2].count_weights():,} | {paper_error} |"
        )
    return [*lines, ""]


def ablation_variants(results_dir: Path, ablation: str) -> list[str]:
    """The run folders of one ablation sweep, in the paper's order (numbers ascending, MLPs before CNNs)."""
    root = results_dir / "runs" / f"ablation_{ablation}"
    variants = sorted((p.name for p in root.iterdir() if p.is_dir()), key=natural_key) if root.exists() else []
    return sorted(variants, key=lambda name: name.startswith("cnn"))  # stable: only moves Table VIII's CNNs last


def ablation_table(results_dir: Path, ablation: str) -> str:
    """Every variant of one ablation sweep against the default GAL runs, per task, with t-tests."""
    variants = ablation_variants(results_dir, ablation)
    lines = ["| Task | GAL variant | metric | mean±std | p vs default | seeds |", "|" + " --- |" * 6]
    claims = []
    for default_row, metric in ABLATION_ROWS:
        default = collect(results_dir, default_row, "on", [metric])[metric[0]]
        if len(default) == 0:
            lines.append(f"| {default_row.title} | default: missing | | {missing_reason(default_row)} | | |")
            continue
        lines.append(
            f"| {default_row.title} | default (paper settings) | {metric[1]} | {fmt(default)} | | {len(default)} |"
        )
        for variant in variants:
            row = Row(default_row.title, f"ablation_{ablation}/{variant}", default_row.task, default_row.optimizer,
                      "make ablations")  # fmt: skip
            values = collect(results_dir, row, "on", [metric])[metric[0]]
            if len(values) == 0:
                lines.append(f"| | {variant} | {metric[1]} | missing: run `make ablations` | | |")
                continue
            p = Comparison(default, values).t_test[1]
            lines.append(f"| | {variant} | {metric[1]} | {fmt(values)} | {p:.2g} | {len(values)} |")
            claims.append(Claim(f"{default_row.title}: default (A) vs {variant} (B)", metric, (default_row, "on"),
                                (row, "on")))  # fmt: skip
    preamble = arch_parameters(variants) if ablation == "arch" else []
    return "\n".join(
        [
            f"# Ablation: {ablation}",
            "",
            f"Sweep `configs/ablation/{ablation}.yaml` over each task's paper-setting experiment (GAL on); p from "
            "`scipy.stats.ttest_ind(default, variant)` against the default GAL runs (Table V / digits).",
            "",
            *preamble,
            *lines,
            "",
            *confirmation(results_dir, claims),
        ]
    )


# AdaRem vs SGD-M vs Adam (configs/ablation/adarem.yaml), on the tasks of ABLATION_ROWS and the toy problem.
COMPARED_OPTIMIZERS = (("sgd", "SGD-M"), ("adarem", "AdaRem"), ("adam", "Adam"))
Q_METRIC: Metric = ("oscillation_q", "Q", True)
TOY_ADAREM = Path("toy") / "adarem_toy.json"  # under results/, written by scripts/toy_adarem.py


def fmt_g(values: np.ndarray) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4g}±{std:.2g}"


def best_lr(grid: dict[str, dict[str, np.ndarray]], key: str, lower_is_better: bool) -> str | None:
    """The lr whose mean is best among those where no seed diverged (None when every lr diverged)."""
    finite = {lr: cell[key] for lr, cell in grid.items() if np.isfinite(cell[key]).all()}
    if not finite:
        return None
    sign = 1.0 if lower_is_better else -1.0
    return min(finite, key=lambda lr: sign * float(np.mean(finite[lr])))


def adarem_row(row: Row, lr: str, optimizer: str) -> Row:
    """The runs of one optimizer at one lr of the AdaRem sweep on one task."""
    return Row(row.title, f"adarem/{lr}", row.task, optimizer, "make adarem")


def adarem_grid(results_dir: Path, row: Row, metric: Metric, lrs: list[str]) -> dict[str, dict[str, dict]]:
    """optimizer -> lr -> {metric, Q: values over seeds 0-4}, the lrs with runs only."""
    grids = {}
    for optimizer, _ in COMPARED_OPTIMIZERS:
        cells = {lr: collect(results_dir, adarem_row(row, lr, optimizer), "off", [metric, Q_METRIC]) for lr in lrs}
        grids[optimizer] = {lr: cell for lr, cell in cells.items() if len(cell[metric[0]])}
    return grids


def adarem_best(grids: dict[str, dict[str, dict[str, dict]]]) -> dict[str, dict[str, str | None]]:
    """task -> optimizer -> its best lr on the 5-seed grid (None where every lr diverged or none ran)."""
    metrics = {row.task: metric for row, metric in ABLATION_ROWS}
    return {
        task: {optimizer: best_lr(grid, metrics[task][0], metrics[task][2]) for optimizer, grid in by_optimizer.items()}
        for task, by_optimizer in grids.items()
    }


def adarem_grids(results_dir: Path) -> tuple[list[str], dict[str, dict[str, dict[str, dict]]]]:
    """The sweep's lr folders, and task -> optimizer -> lr -> values (seeds 0-4) for every task."""
    lrs = adarem_lrs(results_dir)
    return lrs, {row.task: adarem_grid(results_dir, row, metric, lrs) for row, metric in ABLATION_ROWS}


def adarem_claims(best: dict[str, dict[str, str | None]]) -> list[Claim]:
    """AdaRem against SGD-M and Adam, each at its best lr, on each task's metric and on Q."""
    claims = []
    for row, metric in ABLATION_ROWS:
        ours = best[row.task]["adarem"]
        for optimizer, name in COMPARED_OPTIMIZERS[::2]:
            other = best[row.task][optimizer]
            if ours is None or other is None:
                continue
            for compared in (metric, Q_METRIC):
                label = f"{row.title}: {name} at {other} (A) vs AdaRem at {ours} (B)"
                claims.append(Claim(label, compared, (adarem_row(row, other, optimizer), "off"),
                                    (adarem_row(row, ours, "adarem"), "off")))  # fmt: skip
    return claims


def adarem_section(row: Row, metric: Metric, lrs: list[str], grids: dict, best: dict[str, str | None]) -> list[str]:
    """One task: each optimizer at its best lr, AdaRem's t-tests against the others, then the whole grid."""
    key, title, _ = metric
    if not any(grids.values()):
        return [f"## {row.title}", "", "missing: run `make adarem`", ""]
    lines = [f"## {row.title}", "", f"| Optimizer | best lr | {title} | Q | seeds |", "| --- | --- | --- | --- | --- |"]
    for optimizer, name in COMPARED_OPTIMIZERS:
        lr = best[optimizer]
        if lr is None:
            lines.append(f"| {name} | every lr diverged or is missing | | | |")
            continue
        cell = grids[optimizer][lr]
        lines.append(f"| {name} | {lr.removeprefix('lr=')} | {fmt(cell[key])} | {fmt_g(cell['oscillation_q'])} | "
                     f"{len(cell[key])} |")  # fmt: skip
    lines.append("")
    ours = grids["adarem"].get(best["adarem"]) if best["adarem"] else None
    for optimizer, name in COMPARED_OPTIMIZERS[::2]:
        other = grids[optimizer].get(best[optimizer]) if best[optimizer] else None
        if ours is None or other is None:
            continue
        _, p_metric = Comparison(other[key], ours[key]).t_test
        _, p_q = Comparison(other["oscillation_q"], ours["oscillation_q"]).t_test
        lines.append(f"- AdaRem vs {name}, each at its best lr: p = {p_metric:.2g} on {title.split()[0]}, "
                     f"p = {p_q:.2g} on Q")  # fmt: skip
    header = " | ".join(f"{name} {title.split()[0]} | {name} Q" for _, name in COMPARED_OPTIMIZERS)
    lines += ["", "Whole grid (mean±std over seeds; nan: a seed diverged):", "",
              f"| lr | {header} |", "|" + " --- |" * (1 + 2 * len(COMPARED_OPTIMIZERS))]  # fmt: skip
    for lr in lrs:
        cells = []
        for optimizer, _ in COMPARED_OPTIMIZERS:
            cell = grids[optimizer].get(lr)
            cells += [fmt(cell[key]), fmt_g(cell["oscillation_q"])] if cell else ["missing", ""]
        lines.append(f"| {lr.removeprefix('lr=')} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def toy_section(results_dir: Path) -> list[str]:
    """The toy problem's comparison, rendered by scripts/toy_adarem.py from its JSON."""
    path = results_dir / TOY_ADAREM
    if not path.exists():
        return ["## Toy problem (Fig. 4's f)", "", f"missing: {path} (run `python scripts/toy_adarem.py`)", ""]
    spec = importlib.util.spec_from_file_location("toy_adarem", Path(__file__).with_name("toy_adarem.py"))
    toy_adarem = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy_adarem)
    return [toy_adarem.markdown(json.loads(path.read_text())), ""]


def adarem_lrs(results_dir: Path) -> list[str]:
    """The lr folders of the AdaRem sweep ("lr=0.01", ...), ascending."""
    root = results_dir / "runs" / "adarem"
    return sorted((p.name for p in root.glob("lr=*")), key=natural_key) if root.exists() else []


def adarem_confirm_targets(results_dir: Path) -> list[str]:
    """`make` targets adarem-best/<task>/<optimizer>/<lr>: each optimizer's best cell, to run with seeds 0-19."""
    best = adarem_best(adarem_grids(results_dir)[1])
    missing = [f"{task}/{optimizer}" for task, cells in best.items() for optimizer, lr in cells.items() if lr is None]
    if missing:
        raise SystemExit(
            f"no best lr for {', '.join(missing)}: the 5-seed grid under {results_dir / 'runs' / 'adarem'} is "
            "missing or every lr diverged (run `make adarem` first)"
        )
    return [f"adarem-best/{task}/{optimizer}/{lr.removeprefix('lr=')}" for task, cells in best.items()
            for optimizer, lr in cells.items()]  # fmt: skip


def adarem_table(results_dir: Path) -> str:
    """AdaRem vs SGD-M vs Adam without GAL: regression, digits (trainer runs) and the toy problem."""
    lrs, grids = adarem_grids(results_dir)
    best = adarem_best(grids)
    sections = [adarem_section(row, metric, lrs, grids[row.task], best[row.task]) for row, metric in ABLATION_ROWS]
    return "\n".join(
        [
            "# AdaRem vs SGD-M vs Adam",
            "",
            "`configs/ablation/adarem.yaml` over each task's experiment with GAL off: every optimizer at every lr "
            "of one shared grid, no weight decay, everything else as in Table V / digits. Q is the oscillation index "
            "(AdaRem paper, Sec. 3.2.2) of the model's weights over the whole run. The best lr is picked by the "
            "mean test metric (these tasks have no validation split), which flatters every optimizer alike; p from "
            "`scipy.stats.ttest_ind` over seeds. The grid was first 1e-3 to 0.3 and was widened at whichever end "
            "held an optimizer's best lr until none did.",
            "",
            *[line for section in sections for line in section],
            *toy_section(results_dir),
            *confirmation(results_dir, adarem_claims(best)),
        ]
    )


# Eq. 7: (a) baseline and (b) GAL as the authors compute the first-order term (the Table V / digits
# runs), against (c) Eq. 7's exact term in float64 and (d) in float32 (`make eq7`); the same four arms under each
# value of the alpha and beta ablations ((b): the `make ablations` sweeps; (c), (d): eq7_<arm>_<ablation>/).
EQ7_ARMS = (("baseline", None, "off"), ("authors", None, "on"), ("taylor64", "eq7_taylor64", "on"),
            ("taylor32", "eq7_taylor32", "on"))  # fmt: skip
# (column, B, A): each p tests arm A against arm B
EQ7_TESTS = (("b", "authors", "baseline"), ("c", "taylor64", "baseline"), ("d", "taylor32", "baseline"),
             ("cb", "taylor64", "authors"))  # fmt: skip
EQ7_ABLATIONS = ("alpha", "beta")
TOY_EQ7 = Path("toy") / "eq7_toy.json"  # under results/, written by `python scripts/toy3d.py --eq7`


def eq7_sources(row: Row, ablation: str | None = None, variant: str | None = None) -> dict[str, tuple[Row, str]]:
    """Where each arm's runs live: the paper-setting runs, or one value of an ablation's sweep."""
    sources = {}
    for arm, prefix, gal in EQ7_ARMS:
        if ablation is None or arm == "baseline":
            experiment = prefix or row.experiment
        else:
            experiment = f"{prefix or 'ablation'}_{ablation}/{variant}"
        sources[arm] = (Row(row.title, experiment, row.task, row.optimizer, "make eq7"), gal)
    return sources


def eq7_line(results_dir: Path, label: str, metric: Metric, sources: dict[str, tuple[Row, str]]) -> tuple[str, str]:
    """One table line (the four arms, the p-values, seeds) and what differs at p < 0.05, in words ("" if none)."""
    arms = {arm: collect(results_dir, row, gal, [metric])[metric[0]] for arm, (row, gal) in sources.items()}
    missing = [arm for arm, values in arms.items() if len(values) == 0]
    if missing:
        return f"{label} | {metric[1]} | missing: {', '.join(missing)} (run `make eq7`) |" + " |" * 8, "missing"
    p = {column: Comparison(arms[a], arms[b]).t_test[1] for column, b, a in EQ7_TESTS}
    said = [f"{arm_diverged} (no t-test)" for arm_diverged in diverged(arms)]
    for column, b, a in EQ7_TESTS:
        if p[column] < 0.05:
            better = (np.mean(arms[b]) < np.mean(arms[a])) == metric[2]
            said.append(f"{b} {'better' if better else 'worse'} than {a} (p = {p[column]:.2g})")
    cells = " | ".join(fmt(arms[arm]) for arm, _, _ in EQ7_ARMS)
    pvalues = " | ".join(f"{p[column]:.2g}" for column, _, _ in EQ7_TESTS)
    seeds = "/".join(str(len(arms[arm])) for arm, _, _ in EQ7_ARMS)
    return f"{label} | {metric[1]} | {cells} | {pvalues} | {seeds} |", "; ".join(said)


EQ7_HEADER = [
    "| Task | setting | metric | (a) baseline | (b) GAL, authors' term | (c) Eq. 7, float64 | (d) Eq. 7, float32 | "
    "p (b) vs (a) | p (c) vs (a) | p (d) vs (a) | p (c) vs (b) | seeds |",
    "|" + " --- |" * 12,
]


def eq7_table(results_dir: Path) -> str:
    """Per task: the four arms at the paper's settings and under each alpha and beta, t-tests, a verdict per task."""
    lines, verdicts = list(EQ7_HEADER), []
    for row, metric in ABLATION_ROWS:
        line, said = eq7_line(results_dir, f"| {row.title} | paper", metric, eq7_sources(row))
        lines.append(line)
        verdicts.append(f"- {row.title}: {said or 'no arm differs from the baseline, nor (c) from (b) (p ≥ 0.05)'}")
    sections = [eq7_ablation(results_dir, ablation) for ablation in EQ7_ABLATIONS]
    return "\n".join(
        [
            "# Eq. 7 as the paper writes it, and as the authors' code computes it",
            "",
            "GAL's remainder r = l(z - eta~ g) - l(z) + (first-order term). (b) takes the authors' term, eta~ x the "
            "batch mean of sum_features(dl/dz * g) with dl/dz the gradient of the batch-mean loss (1/B of Eq. 7's "
            "term: r stays first order in eta~); (c) and (d) take Eq. 7's, eta~ <dl/dz, g> over every element of z "
            "(`gal.first_order=taylor`), with the GAL step's arithmetic in float64 (c) or float32 (d, where r is "
            "mostly rounding at these tasks' beta). Every other setting is the paper's (Table V: alpha = beta = "
            "0.001; digits: alpha 0.001, beta 1), or the ablation's value. p from `scipy.stats.ttest_ind`; mean ± "
            "sample std over seeds 0-4.",
            "",
            "## Paper settings",
            "",
            *lines,
            "",
            "Verdict:",
            *verdicts,
            "",
            *[line for section in sections for line in section],
            *eq7_toy(results_dir),
            *confirmation(results_dir, [
                Claim(f"{row.title}{setting}: {a} (A) vs {b} (B)", metric, sources[a], sources[b])
                for row, metric in ABLATION_ROWS
                for setting, sources in eq7_settings(results_dir, row)
                for _, b, a in EQ7_TESTS
            ]),
        ]
    )  # fmt: skip


def eq7_variants(results_dir: Path, ablation: str) -> list[str]:
    """The values of one ablation swept under any GAL arm ("alpha=0.1", ...), ascending."""
    roots = [results_dir / "runs" / f"{prefix or 'ablation'}_{ablation}" for _, prefix, _ in EQ7_ARMS[1:]]
    return sorted({p.name for root in roots if root.exists() for p in root.iterdir() if p.is_dir()}, key=natural_key)


def eq7_settings(results_dir: Path, row: Row) -> list[tuple[str, dict[str, tuple[Row, str]]]]:
    """(label, the arms' runs) at the paper's settings, then at each ablation value: what eq7.md compares."""
    settings = [("", eq7_sources(row))]
    for ablation in EQ7_ABLATIONS:
        settings += [(f", {v}", eq7_sources(row, ablation, v)) for v in eq7_variants(results_dir, ablation)]
    return settings


def eq7_ablation(results_dir: Path, ablation: str) -> list[str]:
    """The four arms at each value of one ablation (the baseline is the same runs throughout), a verdict per task."""
    variants = eq7_variants(results_dir, ablation)
    if not variants:
        return [f"## {ablation} ablation under each arm", "", "missing: run `make eq7`", ""]
    lines, verdicts = list(EQ7_HEADER), []
    for row, metric in ABLATION_ROWS:
        found, missing = [], []
        for variant in variants:
            line, said = eq7_line(
                results_dir, f"| {row.title} | {variant}", metric, eq7_sources(row, ablation, variant)
            )
            lines.append(line)
            if said == "missing":
                missing.append(variant)
            elif said:
                found.append(f"{variant}: {said}")
        verdict = "; ".join(found) if found else f"no difference at any {'other ' if missing else ''}value (p ≥ 0.05)"
        verdict += f"; missing at {', '.join(missing)} (run `make eq7`)" if missing else ""
        verdict = "missing (run `make eq7`)" if len(missing) == len(variants) else verdict
        verdicts.append(f"- {row.title}: {verdict}")
    return [
        f"## {ablation} ablation under each arm",
        "",
        f"`configs/ablation/{ablation}.yaml` swept with each GAL arm; (a) is the paper-setting baseline.",
        "",
        *lines,
        "",
        "Verdict:",
        *verdicts,
        "",
    ]


def eq7_toy(results_dir: Path) -> list[str]:
    """The toy problem under the four arms, from `python scripts/toy3d.py --eq7` (its own table: eq7_toy.md)."""
    path = results_dir / TOY_EQ7
    if not path.exists():
        return ["## Toy problem (Fig. 4)", "", f"missing: {path} (run `python scripts/toy3d.py --eq7`)", ""]
    verdicts = json.loads(path.read_text())["verdicts"]
    return ["## Toy problem (Fig. 4)", "", "Every arm's numbers: [eq7_toy.md](eq7_toy.md).", "", *verdicts, ""]


# GAL at three layers (`make where-to-inject`): the logits (the paper's; the Table V / digits GAL runs), the
# classifier's input and the first hidden layer, each against the baseline and against the logits.
WHERE_POINTS = (
    ("logits", "logits", None),
    ("pre_logits", "pre_logits", "pre_logits"),
    ("first hidden layer", "module:1", "first_hidden"),
)  # (label, gal.at, folder under where_to_inject/)


def step_means(results_dir: Path, row: Row, keys: tuple[str, ...]) -> dict[str, float]:
    """Each key's mean over every logged training step of every run of one GAL arm (log.jsonl's step rows)."""
    values: dict[str, list[float]] = {key: [] for key in keys}
    for run in run_dirs(results_dir, row.experiment, row.task, row.optimizer, "on"):
        with open(run / "log.jsonl") as log:
            for line in log:
                entry = json.loads(line)
                for key in keys:
                    if key in entry and "step" in entry:
                        values[key].append(abs(entry[key]) if key == "remainder" else entry[key])
    return {key: float(np.mean(v)) if v else float("nan") for key, v in values.items()}


def where_to_inject(results_dir: Path) -> str:
    lines = [
        "| Task | z (gal.at) | metric | mean±std | p vs baseline | p vs logits | adjusted fraction | mean \\|r\\| "
        "| seeds |",
        "|" + " --- |" * 9,
    ]
    claims = []
    for default_row, metric in ABLATION_ROWS:
        baseline = collect(results_dir, default_row, "off", [metric])[metric[0]]
        logits = collect(results_dir, default_row, "on", [metric])[metric[0]]
        if len(baseline) == 0 or len(logits) == 0:
            lines.append(f"| {default_row.title} | missing | | {missing_reason(default_row)} | | | | | |")
            continue
        lines.append(f"| {default_row.title} | baseline (no GAL) | {metric[1]} | {fmt(baseline)} | | | | | "
                     f"{len(baseline)} |")  # fmt: skip
        for label, at, folder in WHERE_POINTS:
            row = default_row if folder is None else Row(
                default_row.title, f"where_to_inject/{folder}", default_row.task, default_row.optimizer,
                "make where-to-inject",
            )  # fmt: skip
            values = collect(results_dir, row, "on", [metric])[metric[0]]
            if len(values) == 0:
                lines.append(f"| | {label} (`{at}`) | {metric[1]} | missing: run `make where-to-inject` | | | | | |")
                continue
            p_base = Comparison(baseline, values).t_test[1]
            p_logits = "" if folder is None else f"{Comparison(logits, values).t_test[1]:.2g}"
            steps = step_means(results_dir, row, ("adjusted_fraction", "remainder"))
            lines.append(
                f"| | {label} (`{at}`) | {metric[1]} | {fmt(values)} | {p_base:.2g} | {p_logits} | "
                f"{steps['adjusted_fraction']:.3f} | {steps['remainder']:.2g} | {len(values)} |"
            )
            claims.append(Claim(f"{default_row.title}: baseline (A) vs GAL at {label} (B)", metric,
                                (default_row, "off"), (row, "on")))  # fmt: skip
            if folder is not None:
                claims.append(Claim(f"{default_row.title}: GAL at the logits (A) vs at {label} (B)", metric,
                                    (default_row, "on"), (row, "on")))  # fmt: skip
    return "\n".join(
        [
            "# Where to inject: GAL at the logits, the classifier's input and the first hidden layer",
            "",
            "Each task's paper-setting experiment (Table V's, digits'), GAL on with only `gal.at` changed; h keeps the "
            "experiment's widths, sized to z by a dry forward (d = 1, the MLP's last hidden width or its first, "
            "for digits 10, 64 and the first conv's 16 channels per position). p from "
            "`scipy.stats.ttest_ind`; adjusted fraction and |r|: means over every logged training step.",
            "",
            *lines,
            "",
            *confirmation(results_dir, claims, "make where-to-inject-confirm"),
        ]
    )


TABLES: dict[str, Callable[[Path], str]] = {
    "table1": lambda r: comparison_table(r, TABLE1_ROWS, ERROR_METRICS, "# Table I: CIFAR-10, EfficientNet-B1"),
    "table2": lambda r: comparison_table(r, TABLE2_ROWS, ERROR_METRICS, "# Table II: CIFAR-100, EfficientNet-B1"),
    "table3": lambda r: comparison_table(r, TABLE3_ROWS, IMAGENET_METRICS, "# Table III: ImageNet, RMSProp"),
    "table4": lambda r: comparison_table(r, TABLE4_ROWS, COCO_METRICS, "# Table IV: COCO 2017 val, DETR, 150 epochs"),
    "table5": lambda r: comparison_table(
        r, TABLE5_ROWS, REGRESSION_METRICS,
        "# Table V: regression, Adam, baseline vs GAL (alpha = beta = 0.001)\n\n"
        "Metrics on the fixed test split, in the target's original units.",
    ),
    "table5_alpha": table5_alpha,
    "where_to_inject": where_to_inject,
    "eq7": eq7_table,
    "adarem": adarem_table,
    **{
        f"ablation_{name}": (lambda r, name=name: ablation_table(r, name))
        for name in ABLATIONS
    },
    "digits": lambda r: comparison_table(
        r, DIGITS_ROWS, DIGITS_METRICS,
        "# Digits (scikit-learn, 8x8): small CNN, SGD, GAL (100-32-16), alpha 0.001, beta 1\n\n"
        "Fixed stratified 80/20 split (360 test images). No paper numbers exist.",
    ),
}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="*", help=f"which tables to build: {', '.join(sorted(TABLES))}")
    parser.add_argument(
        "--adarem-confirm-targets", action="store_true",
        help="print the make targets that run each optimizer's best AdaRem cell with seeds 0-19 (`make confirm`)",
    )  # fmt: skip
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder (runs/ inside)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <results>/tables)")
    args = parser.parse_args(argv)
    if args.adarem_confirm_targets:
        print(" ".join(adarem_confirm_targets(args.results)))
        return
    unknown = [name for name in args.tables if name not in TABLES]
    if unknown or not args.tables:
        parser.error(f"unknown table {', '.join(unknown)}" if unknown else "name at least one table")
    out = args.out or args.results / "tables"
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/make_tables.py " + " ".join(args.tables)
    for name in args.tables:
        body = TABLES[name](args.results)
        footer = f"\n\nGenerated {date.today().isoformat()} by `{command}` from results/runs/.\n"
        (out / f"{name}.md").write_text(body + footer)
        print(f"wrote {out / f'{name}.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
