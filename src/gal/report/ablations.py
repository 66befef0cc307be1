"""Markdown for the ablation sweeps (configs/ablation/*.yaml) and for AdaRem vs SGD-M vs Adam.

An ablation's variants are its run folders, results/runs/ablation_<name>/<variant>/, each tested against the
paper-setting GAL runs of the same task (Table V's data sets, digits).
"""

from __future__ import annotations

import json
from pathlib import Path

from gal.report.collect import Runs, collect, subfolders
from gal.report.confirm import Claim, confirmation
from gal.report.paper import Metric, load
from gal.report.render import task_rows
from gal.report.stats import best_lr, fmt, fmt_g, p_value
from gal.report.toy import markdown as toy_markdown

ABLATIONS = ("policy", "random", "alpha", "beta", "arch")  # configs/ablation/<name>.yaml


def arch_parameters(variants: list[str]) -> list[str]:
    """Table VIII's counts beside ours, at the paper's d = 100 and at this project's CPU tasks' d."""
    from gal.adjuster import GradientAdjuster

    paper = {row.variant: row.paper for row in load("table8").rows}
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
        paper_params, paper_error = paper.get(variant, ("", ""))
        total = sum(p.numel() for p in counts[0].parameters())
        lines.append(
            f"| {variant} | {paper_params}K | {counts[0].count_weights():,} | {total:,} | "
            f"{counts[1].count_weights():,} | {counts[2].count_weights():,} | {paper_error} |"
        )
    return [*lines, ""]


def random_paper() -> list[str]:
    """Table VI's errors (CIFAR-100, EfficientNet-B1, SGD) per random adjustment, with the run folder each is."""
    table = load("table6")
    setting = table.title.split("(", 1)[1].rstrip(")")
    lines = [
        f"The paper ({table.source}: {setting}; the standard process {table.reference['baseline']}%, GAL "
        f"{table.reference['gal']}%), and the run folder of each random adjustment here:",
        "",
        "| v~ | run folder | paper error % |",
        "| --- | --- | --- |",
    ]
    for row in table.rows:
        title = row.title.replace("|", r"\|")  # the paper's |v| inside a Markdown cell
        lines.append(f"| {title} | {row.variant} | {row.paper[0]} |")
    return [*lines, ""]


def ablation_variants(results_dir: Path, ablation: str) -> list[str]:
    """The run folders of one ablation sweep, in the paper's order (numbers ascending, MLPs before CNNs)."""
    variants = subfolders(results_dir / "runs" / f"ablation_{ablation}")
    return sorted(variants, key=lambda name: name.startswith("cnn"))  # stable: only moves Table VIII's CNNs last


def ablation_table(results_dir: Path, ablation: str) -> str:
    """Every variant of one ablation sweep against the default GAL runs, per task, with t-tests."""
    variants = ablation_variants(results_dir, ablation)
    lines = ["| Task | GAL variant | metric | mean±std | p vs default | seeds |", "|" + " --- |" * 6]
    claims = []
    for default_row, metric in task_rows():
        default = collect(results_dir, default_row, "on", [metric])[metric.key]
        if len(default) == 0:
            lines.append(f"| {default_row.title} | default: missing | | {default_row.missing_reason()} | | |")
            continue
        lines.append(
            f"| {default_row.title} | default (paper settings) | {metric.title} | {fmt(default)} | | {len(default)} |"
        )
        for variant in variants:
            row = default_row.at(f"ablation_{ablation}/{variant}", "make ablations")
            values = collect(results_dir, row, "on", [metric])[metric.key]
            if len(values) == 0:
                lines.append(f"| | {variant} | {metric.title} | missing: run `make ablations` | | |")
                continue
            lines.append(f"| | {variant} | {metric.title} | {fmt(values)} | {p_value(default, values):.2g} | "
                         f"{len(values)} |")  # fmt: skip
            claims.append(Claim(f"{default_row.title}: default (A) vs {variant} (B)", metric, (default_row, "on"),
                                (row, "on")))  # fmt: skip
    preamble = arch_parameters(variants) if ablation == "arch" else random_paper() if ablation == "random" else []
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


# AdaRem vs SGD-M vs Adam (configs/ablation/adarem.yaml), on the CPU tasks and the toy problem.
COMPARED_OPTIMIZERS = (("sgd", "SGD-M"), ("adarem", "AdaRem"), ("adam", "Adam"))
Q_METRIC = Metric("oscillation_q", "Q", True)
TOY_ADAREM = Path("toy") / "adarem_toy.json"  # under results/, written by scripts/toy_adarem.py
Grid = dict[str, dict[str, dict]]  # optimizer -> lr -> {metric: values over seeds 0-4}


def adarem_runs(row: Runs, lr: str, optimizer: str) -> Runs:
    """The runs of one optimizer at one lr of the AdaRem sweep on one task."""
    return Runs(row.title, f"adarem/{lr}", row.task, optimizer, "make adarem")


def adarem_grid(results_dir: Path, row: Runs, metric: Metric, lrs: list[str]) -> Grid:
    """optimizer -> lr -> {metric, Q: values over seeds 0-4}, the lrs with runs only."""
    grids = {}
    for optimizer, _ in COMPARED_OPTIMIZERS:
        cells = {lr: collect(results_dir, adarem_runs(row, lr, optimizer), "off", [metric, Q_METRIC]) for lr in lrs}
        grids[optimizer] = {lr: cell for lr, cell in cells.items() if len(cell[metric.key])}
    return grids


def adarem_grids(results_dir: Path) -> tuple[list[str], dict[str, Grid]]:
    """The sweep's lr folders, and task -> optimizer -> lr -> values (seeds 0-4) for every task."""
    lrs = subfolders(results_dir / "runs" / "adarem", pattern="lr=*")
    return lrs, {row.task: adarem_grid(results_dir, row, metric, lrs) for row, metric in task_rows()}


def adarem_best(grids: dict[str, Grid]) -> dict[str, dict[str, str | None]]:
    """task -> optimizer -> its best lr on the 5-seed grid (None where every lr diverged or none ran)."""
    metrics = {row.task: metric for row, metric in task_rows()}
    return {
        task: {optimizer: best_lr(grid, metrics[task].key, metrics[task].lower_is_better)
               for optimizer, grid in by_optimizer.items()}
        for task, by_optimizer in grids.items()
    }  # fmt: skip


def adarem_claims(best: dict[str, dict[str, str | None]]) -> list[Claim]:
    """AdaRem against SGD-M and Adam, each at its best lr, on each task's metric and on Q."""
    claims = []
    for row, metric in task_rows():
        ours = best[row.task]["adarem"]
        for optimizer, name in COMPARED_OPTIMIZERS[::2]:
            other = best[row.task][optimizer]
            if ours is None or other is None:
                continue
            for compared in (metric, Q_METRIC):
                label = f"{row.title}: {name} at {other} (A) vs AdaRem at {ours} (B)"
                claims.append(Claim(label, compared, (adarem_runs(row, other, optimizer), "off"),
                                    (adarem_runs(row, ours, "adarem"), "off")))  # fmt: skip
    return claims


def adarem_section(row: Runs, metric: Metric, lrs: list[str], grids: Grid, best: dict[str, str | None]) -> list[str]:
    """One task: each optimizer at its best lr, AdaRem's t-tests against the others, then the whole grid."""
    key, title = metric.key, metric.title
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
        p_metric, p_q = p_value(other[key], ours[key]), p_value(other["oscillation_q"], ours["oscillation_q"])
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
    """The toy problem's comparison, from scripts/toy_adarem.py's JSON."""
    path = results_dir / TOY_ADAREM
    if not path.exists():
        return ["## Toy problem (Fig. 4's f)", "", f"missing: {path} (run `python scripts/toy_adarem.py`)", ""]
    return [toy_markdown(json.loads(path.read_text())), ""]


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
    sections = [adarem_section(row, metric, lrs, grids[row.task], best[row.task]) for row, metric in task_rows()]
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
