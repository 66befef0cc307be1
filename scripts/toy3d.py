"""Fig. 4: the 3D toy problem, standard training vs GAL under five optimizers.

f(x, y) = -sin(x^2) cos(3 y^2) exp(-(x y)^2) - exp(-(x + y)^2) is minimised from (0.75, 1.0). The toy's
"model" is the identity on the 2-D point p, so z = p and the trainer's GradientAdjuster applies unchanged:
``adj.backward(z, f, lr)`` replaces ``loss.backward()``, and h (2-64-24-2, Xavier-uniform weights, zero
biases) is a second param group of the same optimizer. Steps, lr, alpha, beta and each optimizer's extra
settings are the authors' code's (see PAPER_NOTES, "Fig. 4").

    python scripts/toy3d.py    # writes results/figures/fig4.png and results/tables/fig4.md
    python scripts/toy3d.py --seeds 0 1 2 3 4    # the same for seed 0, and results/tables/fig4_seeds.md
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import torch
from scipy import stats
from torch import Tensor, nn
from torch.optim import Optimizer

from gal.adjuster import GradientAdjuster
from gal.optim import OPTIMIZERS

START = (0.75, 1.0)
ARCH = (64, 24)
TOLERANCE = 1e-3  # a run has converged once f is within this of its best value
WINDOW = (-1.5, 1.5)  # x and y range of the contour plots


@dataclass(frozen=True)
class Setting:
    """One column of Fig. 4: an optimizer ``build(param_groups, lr=...)`` and its GAL settings."""

    name: str
    steps: int
    lr: float
    alpha: float
    beta: float
    build: Callable[..., Optimizer]


NO_DECAY = {"weight_decay": 0.0}  # the toy has no weight decay
SETTINGS = (  # name, steps, lr, alpha, beta, then the optimizer with its extra settings
    Setting("GD", 100, 0.1, 0.2, 1.0, partial(OPTIMIZERS["sgd"], **NO_DECAY, momentum=0.0)),
    Setting(
        "Lookahead(GD)", 600, 0.01, 0.1, 1.0, partial(OPTIMIZERS["lookahead"], **NO_DECAY, k=5, alpha=0.5, momentum=0.0)
    ),
    Setting("RMSProp", 150, 0.02, 0.3, 1.0, partial(torch.optim.RMSprop, eps=0.1)),
    Setting("Adam", 250, 0.02, 0.4, 0.1, partial(OPTIMIZERS["adam"], **NO_DECAY, betas=(0.8, 0.999), eps=0.1)),
    Setting("AdaBound", 300, 0.4, 0.5, 1.0, partial(OPTIMIZERS["adabound"], **NO_DECAY, final_lr=0.02, gamma=0.5)),
)


@dataclass
class Trace:
    """One run: f and the point before each step and after the last; for GAL, |r| and the decision per step."""

    f: list[float] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    remainder: list[float] = field(default_factory=list)
    adjusted: list[bool] = field(default_factory=list)

    def record(self, point: Tensor) -> None:
        """Append f at ``point`` and the point itself."""
        self.f.append(toy_f(point.detach()).item())
        self.points.append(tuple(point.tolist()))


def toy_f(z: Tensor) -> Tensor:
    """f(x, y) = -sin(x^2) cos(3 y^2) exp(-(x y)^2) - exp(-(x + y)^2) with (x, y) on z's last dim."""
    x, y = z[..., 0], z[..., 1]
    return -torch.sin(x**2) * torch.cos(3 * y**2) * torch.exp(-((x * y) ** 2)) - torch.exp(-((x + y) ** 2))


def make_adjuster(alpha: float, beta: float, seed: int) -> GradientAdjuster:
    """h of Fig. 4: 2-64-24-2 with Xavier-uniform weights and zero biases, drawn from ``seed``."""
    adjuster = GradientAdjuster(2, arch=ARCH, alpha=alpha, beta=beta)
    generator = torch.Generator().manual_seed(seed)
    for layer in adjuster.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)
    return adjuster


def run(setting: Setting, steps: int, adjuster: GradientAdjuster | None = None) -> Trace:
    """Minimise f from START for ``steps`` steps; GAL when an adjuster is given, else loss.backward()."""
    point = nn.Parameter(torch.tensor(START))
    groups = [{"params": [point]}]
    if adjuster is not None:
        groups.append({"params": list(adjuster.parameters())})
    optimizer = setting.build(groups, lr=setting.lr)
    trace = Trace()
    for _ in range(steps):
        trace.record(point)
        optimizer.zero_grad()
        z = point.view(1, 2)  # the identity model: z is the point itself
        if adjuster is None:
            toy_f(z).mean().backward()
        else:
            stats = adjuster.backward(z, lambda features: toy_f(features).mean(), setting.lr)
            trace.remainder.append(stats.remainder.abs().item())
            trace.adjusted.append(bool(stats.adjusted))
        optimizer.step()
    trace.record(point)
    return trace


def step_within_best(f: list[float], tolerance: float = TOLERANCE) -> int:
    """The first step at which f is within ``tolerance`` of its best (lowest) value."""
    best = min(f)
    return next(step for step, value in enumerate(f) if value <= best + tolerance)


def run_all(seed: int, steps_scale: float) -> dict[str, dict[str, Trace]]:
    """Both arms for every optimizer: {optimizer: {"standard": trace, "GAL": trace}}."""
    traces = {}
    for setting in SETTINGS:
        steps = max(1, round(setting.steps * steps_scale))
        adjuster = make_adjuster(setting.alpha, setting.beta, seed)
        traces[setting.name] = {"standard": run(setting, steps), "GAL": run(setting, steps, adjuster)}
    return traces


def table(traces: dict[str, dict[str, Trace]], command: str, seed: int) -> str:
    """Markdown: final and best f, the step within TOLERANCE of the best, and GAL's decisions, per run."""
    lines = [
        "# Fig. 4: the 3D toy problem, standard vs GAL",
        "",
        f"f(x, y) = -sin(x^2) cos(3 y^2) exp(-(x y)^2) - exp(-(x + y)^2) from {START}; h 2-{'-'.join(map(str, ARCH))}"
        f"-2, seed {seed} (h's initial weights; the standard arm has no randomness). Steps count from 0 (the start)"
        " and are measured against each run's own best f, so a run stuck in a worse minimum converges early: read"
        " them with the best f. 'g used' is the share of steps in which the adjusted gradient passed Alg. 1's test"
        " (line 7); mean abs r is the mean |remainder| (Eq. 7).",
        "",
        f"| Optimizer | Arm | steps | final f | best f | step within {TOLERANCE:g} of best | g used | mean abs r |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, arms in traces.items():
        for arm, trace in arms.items():
            used = f"{sum(trace.adjusted) / len(trace.adjusted):.0%}" if trace.adjusted else ""
            remainder = f"{sum(trace.remainder) / len(trace.remainder):.2e}" if trace.remainder else ""
            lines.append(
                f"| {name} | {arm} | {len(trace.f) - 1} | {trace.f[-1]:.4f} | {min(trace.f):.4f} | "
                f"{step_within_best(trace.f)} | {used} | {remainder} |"
            )
    return "\n".join([*lines, "", f"Generated by `{command}`.", ""])


def seeds_table(traces_by_seed: dict[int, dict[str, dict[str, Trace]]], command: str) -> str:
    """Markdown: per optimizer, the standard arm's one run against GAL's best and final f over the seeds."""
    seeds = list(traces_by_seed)
    first = traces_by_seed[seeds[0]]
    lines = [
        "# Fig. 4 over seeds: the 3D toy problem, standard vs GAL",
        "",
        f"As fig4.md (f from {START}, h 2-{'-'.join(map(str, ARCH))}-2), over {len(seeds)} seeds"
        f" ({', '.join(map(str, seeds))}) of h's initial weights. The standard arm has no randomness (it starts"
        " from the same point and does not use h), so its numbers are one run and no two-sample t-test against it"
        " is possible; GAL's are mean ± std (sample) over the seeds. 'lower' and 'higher' count the seeds where"
        f" GAL's best f is below or above the standard's by more than {TOLERANCE:g}; t and p are a one-sample"
        " t-test (scipy.stats.ttest_1samp, two-sided) of GAL's best f over the seeds against the standard's best f."
        " f is computed in float32, so best f values a few 1e-7 apart are the same minimum: where the counts are"
        " 0 and 0, t and p measure rounding, not a difference between the arms."
        f" Steps are the first step within {TOLERANCE:g} of the run's own best f (GAL: mean over the seeds).",
        "",
        "| Optimizer | steps | standard best f | standard final f | GAL best f | GAL final f"
        f" | lower (of {len(seeds)}) | higher (of {len(seeds)}) | standard step | GAL step | t | p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, arms in first.items():
        lines.append(seeds_row(name, arms["standard"], [traces_by_seed[seed][name]["GAL"] for seed in seeds]))
    return "\n".join([*lines, "", f"Generated by `{command}`.", ""])


def seeds_row(name: str, standard: Trace, gal: list[Trace]) -> str:
    """One row of :func:`seeds_table`: the standard run against GAL's runs (one per seed)."""
    standard_best = min(standard.f)
    gal_best = [min(trace.f) for trace in gal]
    lower = sum(best < standard_best - TOLERANCE for best in gal_best)
    higher = sum(best > standard_best + TOLERANCE for best in gal_best)
    test = stats.ttest_1samp(gal_best, standard_best)
    gal_step = statistics.mean(step_within_best(trace.f) for trace in gal)
    return (
        f"| {name} | {len(standard.f) - 1} | {standard_best:.4f} | {standard.f[-1]:.4f} | {mean_std(gal_best)} | "
        f"{mean_std([trace.f[-1] for trace in gal])} | {lower} | {higher} | {step_within_best(standard.f)} | "
        f"{gal_step:.1f} | {test.statistic:.2f} | {test.pvalue:.2g} |"
    )


def mean_std(values: list[float]) -> str:
    """'mean ± std' (sample std) to four decimals."""
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def figure(traces: dict[str, dict[str, Trace]], path: Path) -> None:
    """Top row: both paths on f's contours; bottom row: f against steps. Blue standard, red GAL."""
    grid = torch.linspace(*WINDOW, 301)
    xs, ys = torch.meshgrid(grid, grid, indexing="xy")
    heights = toy_f(torch.stack([xs, ys], dim=-1))
    fig, axes = plt.subplots(2, len(traces), figsize=(4 * len(traces), 7.5), squeeze=False)
    for column, (name, arms) in enumerate(traces.items()):
        top, bottom = axes[0, column], axes[1, column]
        top.contourf(xs, ys, heights, levels=30, cmap="viridis")
        top.contour(xs, ys, heights, levels=30, colors="k", linewidths=0.3)
        for (arm, trace), color in zip(arms.items(), ("tab:blue", "tab:red")):
            px, py = zip(*trace.points)
            top.plot(px, py, color=color, lw=1.5, label=arm)
            top.plot(px[-1], py[-1], "x", color=color, ms=8, mew=2)
            bottom.plot(trace.f, color=color, label=arm)
        top.plot(*START, "o", color="white", mec="k", ms=7, label="start")
        top.set(title=name, xlabel="x", ylabel="y", aspect="equal")
        bottom.set(xlabel="step", ylabel="f(x, y)")
        bottom.grid(alpha=0.3)
    axes[0, 0].legend(loc="lower left", fontsize=8)
    axes[1, 0].legend(fontsize=8)
    fig.suptitle("Fig. 4: blue standard, red GAL (o start, x end of each path)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, options: tuple[str, ...]) -> str:
    """The command line that sets ``options`` as ``args`` has them, leaving out those at their defaults."""
    words = ["python scripts/toy3d.py"]
    for option in options:
        value = getattr(args, option)
        if value != parser.get_default(option):
            words += [f"--{option.replace('_', '-')}", *map(str, value if isinstance(value, list) else [value])]
    return " ".join(words)


def main(argv: list[str] | None = None) -> None:
    """Run both arms for every optimizer, then write the figure and the table (argv: the CLI arguments).

    With ``--seeds``, the figure and table are the first seed's and the seeds table covers all of them; each
    file's footer names the command that writes it (fig4.md's: the single-seed command, which gives the same).
    """
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-figure", type=Path, default=Path("results/figures/fig4.png"))
    parser.add_argument("--out-table", type=Path, default=Path("results/tables/fig4.md"))
    parser.add_argument("--out-seeds-table", type=Path, default=Path("results/tables/fig4_seeds.md"))
    seed_options = parser.add_mutually_exclusive_group()
    seed_options.add_argument("--seed", type=int, default=0, help="seed of h's initial weights")
    seed_options.add_argument("--seeds", type=int, nargs="+", help="also write --out-seeds-table over these seeds")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiplies every run's steps (tests)")
    args = parser.parse_args(argv)
    if args.steps_scale <= 0:
        raise ValueError(f"--steps-scale must be > 0, got {args.steps_scale}")
    if args.seeds is not None and (len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds)):
        raise ValueError(f"--seeds needs at least two distinct seeds, got {args.seeds}")
    if args.seeds is not None:
        args.seed = args.seeds[0]
    start = time.perf_counter()
    traces = run_all(args.seed, args.steps_scale)
    figure(traces, args.out_figure)
    single_seed = ("out_figure", "out_table", "seed", "steps_scale")
    write(args.out_table, table(traces, command(parser, args, single_seed), args.seed))
    written = [args.out_figure, args.out_table]
    if args.seeds is not None:
        traces_by_seed = {args.seed: traces} | {seed: run_all(seed, args.steps_scale) for seed in args.seeds[1:]}
        all_seeds = ("out_figure", "out_table", "out_seeds_table", "seeds", "steps_scale")
        write(args.out_seeds_table, seeds_table(traces_by_seed, command(parser, args, all_seeds)))
        written.append(args.out_seeds_table)
    print(f"wrote {', '.join(map(str, written))} in {time.perf_counter() - start:.1f} s")


def write(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
