"""Draw the logged curves (Figs. 5, 6, 8b) and write Table VII (training time, baseline vs GAL).

    python scripts/make_figures.py [--results results] [--out results/figures] [--only curves ablations ...]

One PNG per run set results/runs/<experiment>/<task>/<optimizer>/ that has both a gal=off and a
gal=on arm, from the runs' log.jsonl files: curves_<experiment>_<task>_<optimizer>.png with
Fig. 5 (evaluation loss per epoch, both arms, and GAL minus the baseline seed by seed), Fig. 6 (the
GAL arm's remainder and cos(grad, v~) per step) and Fig. 8b (steps per epoch in which g was used,
and samples per epoch in which the tentative step with g did not raise the sample's loss, Alg. 1
line 7). One PNG per ablation sweep with runs (Fig. 7 left / middle / right: alpha, beta, h's
architecture; Fig. 8a: the update policy; Table VI: random adjustments): ablation_<name>.png, every
variant's final metric per task beside the default GAL runs and the baseline. Table VII goes to
<results>/tables/table7.md from the JSON files written by the two benchmark scripts. `--only` makes
some of these (e.g. `--only curves`) and leaves the other files as they are.
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gal.report import build_date  # noqa: E402
from gal.report.ablations import ABLATIONS, ablation_variants  # noqa: E402
from gal.report.collect import collect, log_rows  # noqa: E402
from gal.report.eq7 import eq7_sources  # noqa: E402
from gal.report.paper import load  # noqa: E402
from gal.report.readings import effects as reading_effects  # noqa: E402
from gal.report.render import WHERE_POINTS, task_rows  # noqa: E402
from gal.results import LOG_FILE, run_seed  # noqa: E402

COMMAND = "python scripts/make_figures.py"
EVAL_LOSS_KEYS = ("eval/loss", "eval/mse")  # classification logs a loss; regression only the MSE
ARM_LABEL = {"off": "baseline", "on": "GAL"}
# Fig. 5: GAL dashed over a wide, pale baseline, so both show where the curves coincide
CURVE_STYLE = {"off": {"color": "tab:blue", "ls": "-", "lw": 3.0, "alpha": 0.5},
               "on": {"color": "tab:red", "ls": "--", "lw": 1.3, "alpha": 1.0}}  # fmt: skip
OUTPUTS = ("curves", "ablations", "where_to_inject", "eq7", "table5_readings", "table7")


@dataclass(frozen=True)
class RunSet:
    """The runs of one experiment/task/optimizer: arm ("off"/"on") -> seed -> that run's log rows."""

    experiment: str
    task: str
    optimizer: str
    arms: dict[str, dict[int, list[dict[str, Any]]]]

    @property
    def name(self) -> str:
        return f"{self.experiment}/{self.task}/{self.optimizer}"

    def logs(self, arm: str) -> list[list[dict[str, Any]]]:
        """The log rows of each seed of one arm, in seed order."""
        return [self.arms[arm][seed] for seed in sorted(self.arms[arm])]


def find_run_sets(results_dir: Path) -> list[RunSet]:
    """Every experiment/task/optimizer folder under runs/ with at least one seed's log.jsonl."""
    grouped: dict[tuple[str, str, str], dict[str, dict[int, list[dict[str, Any]]]]] = {}
    for log in sorted(Path(results_dir, "runs").glob("*/*/*/*/seed=*/log.jsonl")):
        experiment, task, optimizer, gal = log.parts[-6:-2]
        arm = grouped.setdefault((experiment, task, optimizer), {}).setdefault(gal, {})
        arm[run_seed(log.parent)] = log_rows(log.parent)
    return [RunSet(*key, arms) for key, arms in sorted(grouped.items())]


def stack(series: list[np.ndarray]) -> np.ndarray:
    """Seeds x points, cut to the shortest seed (a seed still running has fewer points)."""
    n = min(len(s) for s in series)
    return np.stack([s[:n] for s in series])


def eval_loss_key(rows: list[dict[str, Any]]) -> str | None:
    keys = {k for row in rows for k in row}
    return next((k for k in EVAL_LOSS_KEYS if k in keys), None)


def step_series(seeds: list[list[dict[str, Any]]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, seeds x steps) of a per-step value."""
    rows = [[r for r in seed if key in r] for seed in seeds]
    values = stack([np.array([r[key] for r in seed_rows]) for seed_rows in rows])
    return np.array([r["step"] for r in rows[0]])[: values.shape[1]], values


def per_epoch_sums(seeds: list[list[dict[str, Any]]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, seeds x epochs of a per-step value summed over each epoch's steps, steps per epoch)."""
    sums, counts = [], []
    for seed in seeds:
        rows = [r for r in seed if key in r]
        epochs = sorted({r["epoch"] for r in rows})
        sums.append(np.array([sum(r[key] for r in rows if r["epoch"] == e) for e in epochs]))
        counts.append(np.array([sum(1 for r in rows if r["epoch"] == e) for e in epochs], dtype=float))
    values = stack(sums)
    return np.arange(values.shape[1]), values, stack(counts).mean(axis=0)


def band(ax: plt.Axes, x: np.ndarray, values: np.ndarray, color: str, label: str, ls: str = "-", lw: float = 1.2,
         alpha: float = 1.0) -> None:  # fmt: skip
    """Mean over seeds as a line, min-max over seeds as a shaded band."""
    ax.plot(x, values.mean(axis=0), color=color, label=label, lw=lw, ls=ls, alpha=alpha)
    if len(values) > 1:
        ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=color, alpha=0.15, lw=0)


def eval_curves(logs: list[list[dict[str, Any]]], key: str) -> np.ndarray:
    """Seeds x epochs of an evaluation value."""
    return stack([np.array([r[key] for r in seed if key in r]) for seed in logs])


def plot_eval_loss(run_set: RunSet, ax_loss: plt.Axes, ax_diff: plt.Axes) -> None:
    """Fig. 5: both arms' evaluation loss per epoch, and GAL minus the baseline on the seeds both arms ran (a seed
    starts both arms from the same weights)."""
    ax_loss.set_title("Fig. 5: evaluation loss")
    ax_diff.set_title("Fig. 5: GAL − baseline, same seed")
    key = eval_loss_key([r for arm in run_set.arms for seed in run_set.logs(arm) for r in seed])
    if key is None:
        for ax in (ax_loss, ax_diff):
            ax.text(0.5, 0.5, "no eval/loss or eval/mse logged", ha="center", transform=ax.transAxes)
        return
    name = key.removeprefix("eval/")
    for arm in ("off", "on"):  # GAL on top
        values = eval_curves(run_set.logs(arm), key)
        band(ax_loss, np.arange(1, values.shape[1] + 1), values, label=ARM_LABEL[arm], **CURVE_STYLE[arm])
    ax_loss.set(xlabel="epoch", ylabel=f"evaluation {name}", yscale="log")
    ax_loss.legend()

    seeds = sorted(set(run_set.arms["off"]) & set(run_set.arms["on"]))
    ax_diff.axhline(0, color="gray", lw=0.8)
    ax_diff.set(xlabel="epoch", ylabel=f"GAL − baseline, evaluation {name}")
    if not seeds:
        ax_diff.text(0.5, 0.5, "no seed with both arms", ha="center", transform=ax_diff.transAxes)
        return
    off, on = (eval_curves([run_set.arms[arm][s] for s in seeds], key) for arm in ("off", "on"))
    n = min(off.shape[1], on.shape[1])
    diff = on[:, :n] - off[:, :n]
    band(ax_diff, np.arange(1, n + 1), diff, "black", f"mean over {len(seeds)} seeds")
    last, base = diff[:, -1].mean(), off[:, n - 1].mean()
    ax_diff.text(0.98, 0.95, f"last epoch: {last:+.3g} ({last / base:+.2%} of the baseline)", ha="right",
                 va="top", transform=ax_diff.transAxes, fontsize=9)  # fmt: skip
    ax_diff.legend(loc="lower right")


def curves_figure(run_set: RunSet) -> plt.Figure:
    """Fig. 5 (two panels), Fig. 6 (two panels) and Fig. 8b (two panels) in one figure."""
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    (ax_loss, ax_diff, ax_rem), (ax_cos, ax_adj, ax_wins) = axes
    seeds_note = ", ".join(f"{ARM_LABEL[a]} {len(run_set.arms[a])} seeds" for a in ("off", "on"))
    fig.suptitle(f"{run_set.name} ({seeds_note}); lines: mean over seeds, bands: min-max")
    plot_eval_loss(run_set, ax_loss, ax_diff)

    gal = run_set.logs("on")
    steps, remainder = step_series(gal, "remainder")
    ax_rem.plot(steps, np.abs(remainder).mean(axis=0), color="tab:red", lw=0.6)
    ax_rem.set(xlabel="step", ylabel="|remainder| (mean over seeds)", yscale="log", title="Fig. 6: GAL remainder")
    steps, cosine = step_series(gal, "cosine")
    ax_cos.plot(steps, cosine.mean(axis=0), color="tab:red", lw=0.6)
    ax_cos.axhline(0, color="gray", lw=0.5)
    ax_cos.set(xlabel="step", ylabel="cos(grad, v~) (mean over seeds)", title="Fig. 6: cos(grad, v~)")

    epochs, adjusted, steps_per_epoch = per_epoch_sums(gal, "adjusted_fraction")
    band(ax_adj, epochs + 1, adjusted, "tab:red", "steps where g was used")
    ax_adj.plot(epochs + 1, steps_per_epoch[: len(epochs)], color="black", ls=":", lw=1.2, label="steps in the epoch")
    ax_adj.set(xlabel="epoch", ylabel="steps (adjusted_fraction summed)", ylim=(0, None), title="Fig. 8b: g used")
    ax_adj.legend()

    if any("g_wins" in r for seed in gal for r in seed):
        epochs, wins, _ = per_epoch_sums(gal, "g_wins")
        band(ax_wins, epochs + 1, wins, "tab:red", "samples where g passes line 7")
        ax_wins.set(ylim=(0, None))
        ax_wins.legend()
    else:
        ax_wins.text(0.5, 0.5, "g_wins not logged by these runs", ha="center", transform=ax_wins.transAxes)
    ax_wins.set(xlabel="epoch", ylabel="samples (g_wins summed)", title="Fig. 8b: samples where g beats dl/dz")
    fig.tight_layout()
    return fig


def plot_run_set(run_set: RunSet, path: Path) -> None:
    fig = curves_figure(run_set)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ablation(results_dir: Path, ablation: str, path: Path) -> bool:
    """Each variant's final metric per task (mean ± std over seeds, dots: seeds) against the default GAL runs
    (red line) and the baseline (blue, dashed); False when the sweep has no runs."""
    variants = ablation_variants(results_dir, ablation)
    if not variants:
        return False
    rows = task_rows()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 4.2), squeeze=False)
    for ax, (row, metric) in zip(axes[0], rows):
        key, title = metric.key, metric.title
        for gal, label, color, ls in (("on", "default GAL", "tab:red", "-"), ("off", "baseline", "tab:blue", "--")):
            values = collect(results_dir, row, gal, [metric])[key]
            if len(values):
                ax.axhline(np.mean(values), color=color, ls=ls, lw=1, label=f"{label} (mean)")
        for x, variant in enumerate(variants):
            values = collect(results_dir, row.at(f"ablation_{ablation}/{variant}"), "on", [metric])[key]
            if len(values):
                ax.errorbar(x, np.mean(values), yerr=np.std(values, ddof=1) if len(values) > 1 else 0, fmt="o",
                            color="black", capsize=3)  # fmt: skip
                ax.plot(np.full(len(values), x + 0.15), values, ".", color="gray", ms=4)
        ax.set_xticks(range(len(variants)), variants, rotation=45, ha="right", fontsize=8)
        ax.set(title=row.title, ylabel=title)
        if ax.get_legend_handles_labels()[0]:  # no default or baseline runs: nothing to name
            ax.legend(fontsize=7)
    fig.suptitle(f"Ablation {ablation} (configs/ablation/{ablation}.yaml): mean ± std over seeds, dots are seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_where_to_inject(results_dir: Path, path: Path) -> bool:
    """GAL's final metric per injection point and task (mean ± std over seeds, dots: seeds) against the baseline
    (blue, dashed); False when no point has runs beyond the logits'."""
    rows, points = task_rows(), WHERE_POINTS
    found = False
    fig, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 4.2), squeeze=False)
    for ax, (row, metric) in zip(axes[0], rows):
        key, title = metric.key, metric.title
        baseline = collect(results_dir, row, "off", [metric])[key]
        if len(baseline):
            ax.axhline(np.mean(baseline), color="tab:blue", ls="--", lw=1, label="baseline (mean)")
        for x, (_, _, folder) in enumerate(points):
            point_row = row if folder is None else row.at(f"where_to_inject/{folder}")
            values = collect(results_dir, point_row, "on", [metric])[key]
            if len(values):
                found |= folder is not None
                ax.errorbar(x, np.mean(values), yerr=np.std(values, ddof=1) if len(values) > 1 else 0, fmt="o",
                            color="tab:red", capsize=3)  # fmt: skip
                ax.plot(np.full(len(values), x + 0.15), values, ".", color="gray", ms=4)
        ax.set_xticks(range(len(points)), [label for label, _, _ in points], fontsize=8)
        ax.set(title=row.title, ylabel=title, xlim=(-0.5, len(points) - 0.5))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("GAL by injection point (gal.at): mean ± std over seeds, dots are seeds")
    fig.tight_layout()
    if found:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return found


def plot_readings(results_dir: Path, path: Path) -> bool:
    """Table V's readings: one point per reading, x its baseline's distance d from the paper's baseline, y GAL's
    effect on MSE in baseline stds (below 0: GAL better); one panel per data set. False when there are none."""
    points = reading_effects(results_dir)
    if not any(points.values()):
        return False
    fig, axes = plt.subplots(1, len(points), figsize=(4.5 * len(points), 4.0), squeeze=False)
    for ax, (title, cells) in zip(axes[0], points.items()):
        finite = [(d, e) for d, e in cells if np.isfinite(d) and np.isfinite(e)]
        if finite:
            x, y = np.array(finite).T
            ax.scatter(x, y, s=14, color="tab:red", alpha=0.7)
            ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1.0)  # linear within one std; a baseline whose seeds all agree has a tiny std
        ax.axhline(0, color="gray", lw=0.8)
        ax.axvline(1, color="tab:blue", ls="--", lw=0.8, label="d = 1 (within the paper's std)")
        ax.set(title=f"{title} ({len(finite)} readings)", xlabel="d: baseline's distance from the paper's (paper stds)",
               ylabel="GAL − baseline, MSE (baseline stds; symlog)")  # fmt: skip
        ax.legend(fontsize=7)
    fig.suptitle("Table V over readings of its recipe: GAL's effect against the baseline's distance from the paper's")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


EQ7_STYLE = {"authors": ("tab:red", "GAL, authors' term"), "taylor64": ("tab:green", "Eq. 7, float64"),
             "taylor32": ("tab:purple", "Eq. 7, float32")}  # fmt: skip


def eq7_step_rows(results_dir: Path, row: Any, arm: str) -> list[dict[str, Any]]:
    """Every GAL step row (all seeds) of one Eq. 7 arm of one task, where gal.report.eq7.eq7_sources puts it."""
    runs, gal = eq7_sources(row)[arm]
    logs = Path(results_dir, "runs", runs.folder, runs.task, runs.optimizer, gal).glob(f"seed=*/{LOG_FILE}")
    return [r for log in sorted(logs) for r in log_rows(log.parent) if "remainder" in r]


def plot_eq7(results_dir: Path, path: Path) -> bool:
    """What h learns under each first-order term (make eq7), per task: the distribution of cos(dl/dz, v~), |r|
    against the loss change of the tentative step, and the fraction of steps taking g per epoch; False when
    no Eq. 7 run exists."""
    data = {(row.title, arm): eq7_step_rows(results_dir, row, arm) for row, _ in task_rows()
            for arm in EQ7_STYLE}  # fmt: skip
    if not any(rows for (_, arm), rows in data.items() if arm != "authors"):
        return False
    titles = [row.title for row, _ in task_rows()]
    fig, axes = plt.subplots(len(titles), 3, figsize=(13, 3.2 * len(titles)), squeeze=False)
    for (cos_ax, r_ax, g_ax), title in zip(axes, titles):
        for arm, (color, label) in EQ7_STYLE.items():
            rows = data[(title, arm)]
            if not rows:
                continue
            cos_ax.hist([r["cosine"] for r in rows], bins=40, range=(-1, 1), color=color, alpha=0.5, label=label)
            change = np.abs([r["tentative_loss"] - r["loss"] for r in rows]) + 1e-30
            r_ax.loglog(change, np.abs([r["remainder"] for r in rows]) + 1e-30, ".", ms=1.5, color=color, alpha=0.4)
            epochs = sorted({r["epoch"] for r in rows})
            taken = [np.mean([r["adjusted_fraction"] for r in rows if r["epoch"] == e]) for e in epochs]
            g_ax.plot(epochs, taken, color=color, label=label)
        cos_ax.set(title=f"{title}: cos(dl/dz, v~) per step", xlabel="cosine", ylabel="steps")
        r_ax.set(title="|r| against |l(z - eta~ g) - l(z)|", xlabel="|loss change|", ylabel="|r|")
        g_ax.set(title="steps taking g", xlabel="epoch", ylabel="fraction", ylim=(-0.05, 1.05))
        cos_ax.legend(fontsize=7)
    fig.suptitle("What h learns under the authors' first-order term and Eq. 7's (all seeds; make eq7)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def load_bench(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def overhead_lines(bench: dict[str, Any] | None, path: Path) -> list[str]:
    """Per-step timing of one training step (scripts/bench_gal_overhead.py)."""
    lines = [
        "| Case | batch | baseline ms/step | GAL ms/step | baseline ms/image | GAL ms/image | GAL / baseline |",
        "|" + " --- |" * 7,
    ]
    if bench is None:
        return lines + [f"| missing: {path} (run `make bench`) | | | | | | |"]
    for case in bench["cases"]:
        batch, base, gal = case["shapes"]["batch"], case["median_ms_baseline"], case["median_ms_gal"]
        lines.append(
            f"| {case['name']} | {batch} | {base:.3f} | {gal:.3f} | {base / batch:.4f} | {gal / batch:.4f} "
            f"| {gal / base:.3f} ({gal / base - 1:+.1%}) |"
        )
    return lines + ["", f"Device: {bench['device']}; made by `{bench['command']}` ({bench['timestamp']})."]


def throughput_lines(bench: dict[str, Any] | None, path: Path) -> list[str]:
    """Whole-trainer throughput, GAL off vs on (scripts/bench_throughput.py)."""
    lines = [
        "| Model | batch | baseline images/s | GAL images/s | baseline s/image | GAL s/image | GAL / baseline |",
        "|" + " --- |" * 7,
    ]
    if bench is None:
        return lines + [f"| missing: {path} (run `make bench-throughput`) | | | | | | |"]
    for case in bench["cases"]:
        off, on = (case["images_per_s"][f"trainer_gal_{arm}"]["median"] for arm in ("off", "on"))
        ratio = off / on  # s/image on over s/image off
        lines.append(
            f"| {case['model']} | {case['batch']} | {off:.3f} | {on:.3f} | {1 / off:.4f} | {1 / on:.4f} "
            f"| {ratio:.3f} ({ratio - 1:+.1%}) |"
        )
    return lines + ["", f"Device: {bench['device']}; made by `{bench['command']}` ({bench['timestamp']})."]


def table7(results_dir: Path) -> str:
    """Table VII: training time baseline vs GAL, ours (two benchmarks) beside the paper's."""
    overhead_path, throughput_path = results_dir / "bench/gal_overhead.json", results_dir / "bench/throughput.json"
    table = load("table7")  # the paper's numbers: results/paper/table7.yaml
    paper = ["| Data set | " + " | ".join(table.columns) + " |", "|" + " --- |" * (1 + len(table.columns))]
    paper += ["| " + " | ".join([row.title, *row.paper]) + " |" for row in table.rows]
    return "\n".join(
        [
            "# Table VII: training time, baseline vs GAL",
            "",
            "Medians over timed steps; per image = per step / batch; GAL / baseline > 1 means GAL is slower.",
            "",
            f"## Ours: one training step (model + GAL), from {overhead_path}",
            "",
            *overhead_lines(load_bench(overhead_path), overhead_path),
            "",
            f"## Ours: the trainer's throughput, from {throughput_path}",
            "",
            *throughput_lines(load_bench(throughput_path), throughput_path),
            "",
            "## Paper (Table VII): training time per image, seconds",
            "",
            *paper,
            "",
            f"Generated {build_date()} by `{COMMAND}`.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder (runs/, bench/ inside)")
    parser.add_argument("--out", type=Path, default=None, help="figures folder (default: <results>/figures)")
    parser.add_argument("--only", nargs="+", choices=OUTPUTS, default=OUTPUTS, help="make only these (default: all)")
    args = parser.parse_args(argv)
    out = args.out or args.results / "figures"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for run_set in find_run_sets(args.results) if "curves" in args.only else []:
        missing = [ARM_LABEL[a] for a in ("off", "on") if a not in run_set.arms]
        if missing:
            print(f"skipped {run_set.name}: no {' or '.join(missing)} runs")
            continue
        path = out / f"curves_{run_set.experiment}_{run_set.task}_{run_set.optimizer}.png"
        plot_run_set(run_set, path)
        print(f"wrote {path}")
    for ablation in ABLATIONS if "ablations" in args.only else []:
        path = out / f"ablation_{ablation}.png"
        if plot_ablation(args.results, ablation, path):
            print(f"wrote {path}")
    if "where_to_inject" in args.only and plot_where_to_inject(args.results, out / "where_to_inject.png"):
        print(f"wrote {out / 'where_to_inject.png'}")
    if "eq7" in args.only and plot_eq7(args.results, out / "eq7_diagnostics.png"):
        print(f"wrote {out / 'eq7_diagnostics.png'}")
    if "table5_readings" in args.only and plot_readings(args.results, out / "table5_readings.png"):
        print(f"wrote {out / 'table5_readings.png'}")
    if "table7" in args.only:
        tables = args.results / "tables"
        tables.mkdir(parents=True, exist_ok=True)
        (tables / "table7.md").write_text(table7(args.results))
        print(f"wrote {tables / 'table7.md'}")
    print(f"{time.perf_counter() - start:.1f} s in all", file=sys.stderr)


if __name__ == "__main__":
    main()
