"""Markdown for the comparison tables (Tables I-V, digits), Table V's alpha sweep and GAL's injection points.

Each function takes the results folder and returns one table file's body; gal.report.TABLES names them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from gal.report.collect import Runs, collect, step_means
from gal.report.confirm import Claim, confirmation
from gal.report.paper import Metric, PaperTable, load
from gal.report.stats import fmt, p_value, verdict
from gal.results import Comparison

REPORTED = {  # what a table's rows report, in words, under its heading
    "last": "Each run's metrics after its last epoch.",
    "best": "Each run's best evaluation over its epochs by the task's objective (lowest top-1 error; the EMA "
    "model's when trained with one), with the other metrics of that evaluation: what the paper reports (the "
    "authors' CIFAR code prints the best test error, their timm train_gal.py the best EMA top-1). As theirs, the "
    "epoch is chosen on the test split itself, so these numbers are optimistic; metrics.json also keeps the last.",
}
DIGITS = PaperTable(  # not a paper table: the digits comparison has the comparison tables' form, no paper numbers
    name="digits",
    title="Digits (scikit-learn, 8x8): small CNN, SGD, GAL (100-32-16), alpha 0.001, beta 1",
    note="Fixed stratified 80/20 split (360 test images). No paper numbers exist.",
    source="",
    command="make reproduce-digits",
    metrics=(Metric("error", "Top-1 error % ↓", True), Metric("loss", "Test loss ↓", True)),
    rows=(),
)
DIGITS_EXPERIMENT = ("Digits, small CNN, SGD", "digits")
SENSITIVITY_ALPHAS = (0.001, 0.01, 0.1, 0.5)


def table_runs(table: PaperTable) -> list[Runs]:
    """Each row of a paper table as the runs it reads, with the paper's values."""
    return [Runs.of(row.title, row.experiment, table.command_of(row), reported=table.reported, paper=row.paper or {})
            for row in table.rows]  # fmt: skip


@cache
def task_rows() -> tuple[tuple[Runs, Metric], ...]:
    """The CPU tasks' paper-setting runs (Table V's three data sets, digits) and the metric each ablation, Eq. 7
    and injection-point table compares them on."""
    table5 = load("table5")
    rows = [(runs, table5.metrics[1]) for runs in table_runs(table5)]  # MSE
    return (*rows, (Runs.of("Digits", "digits", DIGITS.command), DIGITS.metrics[0]))


def comparison_table(results_dir: Path, table: PaperTable, rows: list[Runs] | None = None) -> str:
    """Baseline vs GAL per row: ours (mean±std, t-test) beside the paper's numbers."""
    rows = table_runs(table) if rows is None else rows
    metrics = list(table.metrics)
    blank = " |" * len(metrics)
    lines = [
        "| Row | Method | " + " | ".join(m.title for m in metrics) + " | seeds |",
        "|" + " --- |" * (len(metrics) + 3),
    ]
    verdicts = []
    for row in rows:
        baseline, gal = collect(results_dir, row, "off", metrics), collect(results_dir, row, "on", metrics)
        first = metrics[0].key
        if len(baseline[first]) == 0 or len(gal[first]) == 0:
            lines.append(f"| {row.title} | ours: missing | {row.missing_reason()} |" + blank[2:] + " |")
            verdicts.append(f"- {row.title}: missing")
        else:
            seeds = f"{len(baseline[first])} / {len(gal[first])}"
            comparisons = [Comparison(baseline[m.key], gal[m.key]).t_test for m in metrics]
            lines += [
                f"| {row.title} | Baseline (ours) | " + " | ".join(fmt(baseline[m.key]) for m in metrics)
                + f" | {seeds} |",
                "| | GAL (ours) | " + " | ".join(fmt(gal[m.key]) for m in metrics) + " | |",
                "| | (t, p) ours | " + " | ".join(f"({t:.2f}, {p:.2e})" for t, p in comparisons) + " | |",
            ]  # fmt: skip
            verdicts.append(f"- {row.title}: {verdict(baseline, gal, metrics)}")
        for label, key in (("Baseline", "baseline"), ("GAL", "gal"), ("(t, p)", "t_p")):
            if row.paper.get(key):
                lines.append(f"| | {label} (paper) | " + " | ".join(row.paper[key]) + " | |")
    heading = f"# {table.title}" + (f"\n\n{table.note}" if table.note else "")
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
                for row in rows for metric in metrics if metric.key != "r2"  # R2 = 1 - MSE / var(y): MSE's p
            ]),
        ]
    )  # fmt: skip


def paper_table(name: str):
    """The comparison table of results/paper/<name>.yaml."""
    return lambda results_dir: comparison_table(results_dir, load(name))


def digits_table(results_dir: Path) -> str:
    title, experiment = DIGITS_EXPERIMENT
    return comparison_table(results_dir, DIGITS, [Runs.of(title, experiment, DIGITS.command)])


def alpha_runs(row: Runs, alpha: float) -> Runs:
    """GAL's runs at one alpha of Table V's sweep (alpha = 0.001: the Table V runs themselves)."""
    return row if alpha == 0.001 else row.at(f"table5_alpha{alpha}")


def table5_alpha(results_dir: Path) -> str:
    """Sensitivity of Table V to alpha: GAL at each alpha against the same baseline runs."""
    table = load("table5")
    metrics = list(table.metrics)
    lines = [
        "| Data set | alpha | " + " | ".join(f"{m.title} (p vs baseline)" for m in metrics) + " | seeds |",
        "|" + " --- |" * (len(metrics) + 3),
    ]
    rows = table_runs(table)
    for row in rows:
        baseline = collect(results_dir, row, "off", metrics)
        if len(baseline["mae"]) == 0:
            lines.append(f"| {row.title} | baseline missing | {row.missing_reason()} | | | |")
            continue
        cells = " | ".join(fmt(baseline[m.key]) for m in metrics)
        lines.append(f"| {row.title} | baseline | {cells} | {len(baseline['mae'])} |")
        for alpha in SENSITIVITY_ALPHAS:
            gal = collect(results_dir, alpha_runs(row, alpha), "on", metrics)
            if len(gal["mae"]) == 0:
                lines.append(f"| | {alpha} | {alpha_runs(row, alpha).missing_reason()} | | | |")
                continue
            cells = [f"{fmt(gal[m.key])} (p={p_value(baseline[m.key], gal[m.key]):.2g})" for m in metrics]
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
                      (alpha_runs(row, alpha), "on"))
                for row in rows for alpha in SENSITIVITY_ALPHAS[1:] for metric in metrics[:2]
            ]),
        ]
    )  # fmt: skip


# GAL at three layers (`make where-to-inject`): the logits (the paper's; the Table V / digits GAL runs), the
# classifier's input and the first hidden layer, each against the baseline and against the logits.
WHERE_POINTS = (
    ("logits", "logits", None),
    ("pre_logits", "pre_logits", "pre_logits"),
    ("first hidden layer", "module:1", "first_hidden"),
)  # (label, gal.at, folder under where_to_inject/)


def where_to_inject(results_dir: Path) -> str:
    lines = [
        "| Task | z (gal.at) | metric | mean±std | p vs baseline | p vs logits | adjusted fraction | mean \\|r\\| "
        "| seeds |",
        "|" + " --- |" * 9,
    ]
    claims = []
    for default, metric in task_rows():
        baseline = collect(results_dir, default, "off", [metric])[metric.key]
        logits = collect(results_dir, default, "on", [metric])[metric.key]
        if len(baseline) == 0 or len(logits) == 0:
            lines.append(f"| {default.title} | missing | | {default.missing_reason()} | | | | | |")
            continue
        lines.append(f"| {default.title} | baseline (no GAL) | {metric.title} | {fmt(baseline)} | | | | | "
                     f"{len(baseline)} |")  # fmt: skip
        for label, at, folder in WHERE_POINTS:
            row = default if folder is None else default.at(f"where_to_inject/{folder}", "make where-to-inject")
            values = collect(results_dir, row, "on", [metric])[metric.key]
            if len(values) == 0:
                lines.append(f"| | {label} (`{at}`) | {metric.title} | missing: run `make where-to-inject` | | | | | |")
                continue
            p_logits = "" if folder is None else f"{p_value(logits, values):.2g}"
            steps = step_means(results_dir, row, ("adjusted_fraction", "remainder"))
            lines.append(
                f"| | {label} (`{at}`) | {metric.title} | {fmt(values)} | {p_value(baseline, values):.2g} | "
                f"{p_logits} | {steps['adjusted_fraction']:.3f} | {steps['remainder']:.2g} | {len(values)} |"
            )
            claims.append(Claim(f"{default.title}: baseline (A) vs GAL at {label} (B)", metric, (default, "off"),
                                (row, "on")))  # fmt: skip
            if folder is not None:
                claims.append(Claim(f"{default.title}: GAL at the logits (A) vs at {label} (B)", metric,
                                    (default, "on"), (row, "on")))  # fmt: skip
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
