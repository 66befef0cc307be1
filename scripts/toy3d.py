"""Fig. 4: the 3D toy problem, standard training vs GAL under five optimizers.

f(x, y) = -sin(x^2) cos(3 y^2) exp(-(x y)^2) - exp(-(x + y)^2) is minimised from (0.75, 1.0). The toy's
"model" is the identity on the 2-D point p, so z = p and the trainer's GradientAdjuster applies unchanged:
``adj.backward(z, f, lr)`` replaces ``loss.backward()``, and h (2-64-24-2, Xavier-uniform weights, zero
biases) is a second param group of the same optimizer. Steps, lr, alpha, beta, each optimizer's extra settings,
h's seed per optimizer and the first-order term eta~ (dl/dz * g).mean() ('mean') are the authors' code's (see
PAPER_NOTES, "Fig. 4").

    python scripts/toy3d.py    # results/figures/fig4.png and results/tables/fig4.md, the authors' seeds of h
    python scripts/toy3d.py --seeds 0 1 2 3 4    # the same, and results/tables/fig4_seeds.md over seeds 0-4
    python scripts/toy3d.py --eq7 --seeds 0 1 2 3 4    # results/tables/eq7_toy.md and results/toy/eq7_toy.json
"""

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping
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

from gal.adjuster import STEP_PRECISIONS, GradientAdjuster
from gal.optim import OPTIMIZERS
from gal.report.paper import load
from gal.settings import FIRST_ORDERS
from gal.toy import START, TOLERANCE, step_within_best, toy_f

ARCH = (64, 24)
WINDOW = (-1.5, 1.5)  # x and y range of the contour plots
FIRST_ORDER_TEXT = {  # how each first-order term reads on the toy's one point (B = 1, d = 2)
    "mean": "eta~ (dl/dz * g).mean() over the two coordinates, the authors' toy code's (half of Eq. 7's)",
    "authors": "eta~ (dl/dz * g).sum(), the authors' CIFAR/ImageNet code's (Eq. 7's, as B = 1)",
    "taylor": "eta~ <dl/dz, g>, Eq. 7's",
}


@dataclass(frozen=True)
class Setting:
    """One column of Fig. 4: an optimizer ``build(param_groups, lr=...)``, its GAL settings and h's seed."""

    name: str
    steps: int
    lr: float
    alpha: float
    beta: float
    authors_seed: int
    build: Callable[..., Optimizer]


NO_DECAY = {"weight_decay": 0.0}  # the toy has no weight decay
# authors_seed: the seed of h per optimizer in luoyan407/gradient_adjustment (commit 77c431b),
# 3d_example/visualize_convergence_gl.py lines 291-302 (torch.manual_seed before h is built)
SETTINGS = (  # name, steps, lr, alpha, beta, authors_seed, then the optimizer with its extra settings
    Setting("GD", 100, 0.1, 0.2, 1.0, 2679, partial(OPTIMIZERS["sgd"], **NO_DECAY, momentum=0.0)),
    Setting(
        "Lookahead(GD)",
        600,
        0.01,
        0.1,
        1.0,
        4870,
        partial(OPTIMIZERS["lookahead"], **NO_DECAY, k=5, alpha=0.5, momentum=0.0),
    ),
    Setting("RMSProp", 150, 0.02, 0.3, 1.0, 9910, partial(torch.optim.RMSprop, eps=0.1)),
    Setting("Adam", 250, 0.02, 0.4, 0.1, 9049, partial(OPTIMIZERS["adam"], **NO_DECAY, betas=(0.8, 0.999), eps=0.1)),
    Setting(
        "AdaBound", 300, 0.4, 0.5, 1.0, 5026, partial(OPTIMIZERS["adabound"], **NO_DECAY, final_lr=0.02, gamma=0.5)
    ),
)
# --eq7's arms: key, label, GAL's (first_order, precision) or None for standard training
EQ7_ARMS = (
    ("standard", "(a) standard", None),
    ("mean32", "(b) GAL, authors' toy term ('mean'), float32", ("mean", "float32")),
    ("taylor64", "(c) Eq. 7 ('taylor'), float64", ("taylor", "float64")),
    ("taylor32", "(d) Eq. 7 ('taylor'), float32", ("taylor", "float32")),
)
EQ7_TESTS = (("b_vs_a", "mean32", "standard"), ("c_vs_a", "taylor64", "standard"),
             ("d_vs_a", "taylor32", "standard"), ("c_vs_b", "taylor64", "mean32"))  # fmt: skip


@dataclass
class Trace:
    """One run: f and the point before each step and after the last; for GAL, per step |r|, the decision and
    cos(dl/dz, v~)."""

    f: list[float] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    remainder: list[float] = field(default_factory=list)
    adjusted: list[bool] = field(default_factory=list)
    cosine: list[float] = field(default_factory=list)

    def record(self, point: Tensor) -> None:
        """Append f at ``point`` and the point itself."""
        self.f.append(toy_f(point.detach()).item())
        self.points.append(tuple(point.tolist()))


def make_adjuster(
    alpha: float, beta: float, seed: int, first_order: str = "mean", precision: str = "float32"
) -> GradientAdjuster:
    """h of Fig. 4 (2-64-24-2), drawn from ``seed`` in the order of the authors' code.

    Their RNet (visualize_convergence_gl.py lines 120-136, after torch.manual_seed at line 302) builds every
    layer, so PyTorch's default init draws each weight and bias first, then applies Xavier-uniform to the
    weights in layer order and zeroes the biases (lines 89-92). The global generator is restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adjuster = GradientAdjuster(2, arch=ARCH, alpha=alpha, beta=beta, first_order=first_order, precision=precision)
        for layer in adjuster.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
    return adjuster


def run(
    setting: Setting, steps: int, adjuster: GradientAdjuster | None = None, dtype: torch.dtype = torch.float32
) -> Trace:
    """Minimise f from START for ``steps`` steps; GAL when an adjuster is given, else loss.backward().

    ``dtype`` is the point's (float64 in the tests against the authors' arithmetic, with h in float64).
    """
    point = nn.Parameter(torch.tensor(START, dtype=dtype))
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
            gal = adjuster.backward(z, lambda features: toy_f(features).mean(), setting.lr)
            trace.remainder.append(gal.remainder.abs().item())
            trace.adjusted.append(bool(gal.adjusted))
            trace.cosine.append(gal.cosine().item())
        optimizer.step()
    trace.record(point)
    return trace


def steps_of(setting: Setting, steps_scale: float) -> int:
    """The setting's number of steps times ``steps_scale`` (at least one)."""
    return max(1, round(setting.steps * steps_scale))


def seeds_for(seed: int | None) -> dict[str, int]:
    """h's seed per optimizer: the authors' (``seed`` None) or ``seed`` for every optimizer."""
    return {setting.name: setting.authors_seed if seed is None else seed for setting in SETTINGS}


def run_all(
    seeds: Mapping[str, int], steps_scale: float, first_order: str = "mean", precision: str = "float32"
) -> dict[str, dict[str, Trace]]:
    """Both arms for every optimizer, h drawn from ``seeds[name]``: {optimizer: {"standard": trace, "GAL": trace}}."""
    traces = {}
    for setting in SETTINGS:
        steps = steps_of(setting, steps_scale)
        adjuster = make_adjuster(setting.alpha, setting.beta, seeds[setting.name], first_order, precision)
        traces[setting.name] = {"standard": run(setting, steps), "GAL": run(setting, steps, adjuster)}
    return traces


def describe(first_order: str, precision: str) -> str:
    """The sentence that says which first-order term and arithmetic GAL's step used."""
    return f"GAL's first-order term is {FIRST_ORDER_TEXT[first_order]} ('{first_order}'), its step in {precision}."


def table(traces: dict[str, dict[str, Trace]], command: str, seeds: Mapping[str, int], gal_text: str) -> str:
    """Markdown: final and best f, the step within TOLERANCE of the best, and GAL's decisions, per run."""
    source = "the authors' seed per optimizer" if dict(seeds) == seeds_for(None) else "the seed"
    lines = [
        "# Fig. 4: the 3D toy problem, standard vs GAL",
        "",
        f"f(x, y) = -sin(x^2) cos(3 y^2) exp(-(x y)^2) - exp(-(x + y)^2) from {START}; h 2-{'-'.join(map(str, ARCH))}"
        f"-2 drawn from {source} in column 'h seed', in the"
        " authors' order (torch.manual_seed, PyTorch's default init of every layer, then Xavier-uniform weights"
        " and zero biases), which gives the same initial h as their code under this PyTorch; the standard arm has"
        f" no randomness. {gal_text} Steps count from 0 (the start) and are measured against each run's own best"
        " f, so a run stuck in a worse minimum converges early: read them with the best f. 'g used' is the share"
        " of steps in which the adjusted gradient passed Alg. 1's test (line 7); mean abs r is the mean"
        " |remainder| with that term.",
        "",
        f"| Optimizer | Arm | h seed | steps | final f | best f | step within {TOLERANCE:g} of best | g used"
        " | mean abs r |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, arms in traces.items():
        for arm, trace in arms.items():
            seed = seeds[name] if trace.adjusted else ""
            used = f"{statistics.mean(trace.adjusted):.0%}" if trace.adjusted else ""
            remainder = f"{statistics.mean(trace.remainder):.2e}" if trace.remainder else ""
            lines.append(
                f"| {name} | {arm} | {seed} | {len(trace.f) - 1} | {trace.f[-1]:.4f} | {min(trace.f):.4f} | "
                f"{step_within_best(trace.f)} | {used} | {remainder} |"
            )
    paper = load("fig4")  # results/paper/fig4.yaml
    claim = f"The paper ({paper.source}) prints no numbers; its claim: {paper.claim}."
    return "\n".join([*lines, "", claim, "", f"Generated by `{command}`.", ""])


def seeds_table(traces_by_seed: dict[int, dict[str, dict[str, Trace]]], command: str, gal_text: str) -> str:
    """Markdown: per optimizer, the standard arm's one run against GAL's best and final f over the seeds."""
    seeds = list(traces_by_seed)
    first = traces_by_seed[seeds[0]]
    lines = [
        "# Fig. 4 over seeds: the 3D toy problem, standard vs GAL",
        "",
        f"As fig4.md (f from {START}, h 2-{'-'.join(map(str, ARCH))}-2 drawn in the authors' order), over"
        f" {len(seeds)} seeds ({', '.join(map(str, seeds))}) of h's initial weights, the same for every optimizer,"
        f" in place of the authors' seed per optimizer. {gal_text} The standard arm has no randomness (it starts"
        " from the same point and does not use h), so its numbers are one run and no two-sample t-test against it"
        " is possible; GAL's are mean ± std (sample) over the seeds. 'lower' and 'higher' count the seeds where"
        f" GAL's best f is below or above the standard's by more than {TOLERANCE:g}; t and p are a one-sample"
        " t-test (scipy.stats.ttest_1samp, two-sided) of GAL's best f over the seeds against the standard's best f."
        " f is computed in float32, so best f values a few 1e-7 apart are the same minimum: where the counts are"
        " 0 and 0, t and p measure rounding, not a difference between the arms (n/a: every seed's best f is the same"
        " float, so the test is undefined)."
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
        f"{gal_step:.1f} | {'n/a' if math.isnan(test.statistic) else f'{test.statistic:.2f}'} | "
        f"{format_p(test.pvalue)} |"
    )


def mean_std(values: list[float], spec: str = ".4f") -> str:
    """'mean ± std' (sample std, ddof=1) in format ``spec``."""
    return f"{statistics.mean(values):{spec}} ± {statistics.stdev(values):{spec}}"


def summary(trace: Trace) -> dict[str, float]:
    """One run's scalars for eq7_toy.json: final and best f, the step within TOLERANCE of best, GAL's diagnostics."""
    scalars = {"final_f": trace.f[-1], "best_f": min(trace.f), "step_to_best": step_within_best(trace.f)}
    if trace.adjusted:
        scalars |= {
            "g_used": sum(trace.adjusted) / len(trace.adjusted),
            "mean_abs_r": statistics.mean(trace.remainder),
            "mean_cos": statistics.mean(trace.cosine),
        }
    return scalars


def run_eq7(seeds: list[int], steps_scale: float) -> dict[str, dict[str, dict]]:
    """{optimizer: {arm: {scalar: value}}}: the standard arm's one run, each GAL arm's scalars as lists over seeds."""
    results = {}
    for setting in SETTINGS:
        steps = steps_of(setting, steps_scale)
        arms = {"standard": summary(run(setting, steps))}
        for key, _, gal in EQ7_ARMS[1:]:
            runs = [summary(run(setting, steps, make_adjuster(setting.alpha, setting.beta, s, *gal))) for s in seeds]
            arms[key] = {scalar: [one[scalar] for one in runs] for scalar in runs[0]}
        results[setting.name] = arms
    return results


def eq7_pvalues(arms: dict[str, dict]) -> dict[str, float | None]:
    """Two-sided p of final f: a GAL arm against (a)'s one value (ttest_1samp), (c) against (b) (ttest_ind).

    None where the test is undefined (every value equal)."""
    pvalues = {}
    for test, arm, other in EQ7_TESTS:
        sample, reference = arms[arm]["final_f"], arms[other]["final_f"]
        result = stats.ttest_1samp(sample, reference) if other == "standard" else stats.ttest_ind(sample, reference)
        pvalues[test] = None if math.isnan(result.pvalue) else float(result.pvalue)
    return pvalues


def eq7_verdict(name: str, arms: dict[str, dict], pvalues: dict[str, float | None]) -> str:
    """One line: which comparisons differ at p < 0.05, by how much, and whether that is more than TOLERANCE."""
    said = []
    for test, arm, other in EQ7_TESTS:
        p = pvalues[test]
        if p is None or p >= 0.05:
            continue
        reference = arms[other]["final_f"]
        gap = statistics.mean(arms[arm]["final_f"]) - (statistics.mean(reference) if other != "standard" else reference)
        direction = "lower" if gap < 0 else "higher"
        rounding = "" if abs(gap) > TOLERANCE else f", within {TOLERANCE:g}: the same minimum"
        said.append(f"({test[0]}) {direction} than ({test[-1]}) by {abs(gap):.2g} (p = {p:.2g}{rounding})")
    return f"- {name}: " + (
        "; ".join(said) or "no GAL arm's final f differs from (a)'s, nor (c)'s from (b)'s (p ≥ 0.05)"
    )


def eq7_table(results: dict[str, dict[str, dict]], seeds: list[int], command: str) -> tuple[str, list[str]]:
    """Markdown for eq7_toy.md and its verdict lines (also stored in the JSON for make_tables.py)."""
    lines = [
        "# Eq. 7 on the toy problem (Fig. 4): the authors' term vs Eq. 7's",
        "",
        f"f from {START}, each optimizer's Fig. 4 settings (steps, lr, alpha, beta) in every arm; h 2-"
        f"{'-'.join(map(str, ARCH))}-2 drawn in the authors' order from seeds {', '.join(map(str, seeds))}"
        " (the same seeds in every GAL arm). GAL's remainder r = l(z - eta~ g) - l(z) + (first-order term):"
        f" (b) takes {FIRST_ORDER_TEXT['mean']}, so r keeps a first-order part -(1/2) eta~ dl/dz^T g; (c) and (d)"
        " take Eq. 7's eta~ <dl/dz, g> (`first_order='taylor'`; on the toy's single point it equals the authors'"
        " CIFAR/ImageNet term), with the GAL step's arithmetic in float64 (c) or float32 (d). (a) has no"
        " randomness: one run, so (b), (c) and (d) are tested against its value with a one-sample t-test"
        " (scipy.stats.ttest_1samp), and (c) against (b) with scipy.stats.ttest_ind; both two-sided, on final f."
        f" GAL arms: mean ± sample std over {len(seeds)} seeds. 'off (a)' counts seeds whose final f is more than"
        f" {TOLERANCE:g} from (a)'s (another minimum); steps count from 0 to the first within {TOLERANCE:g} of the"
        " run's best f; mean cos is cos(dl/dz, v~) averaged over steps. f is float32, so final f values a few 1e-7"
        " apart are one minimum: where every seed ends on the same float, off (a)'s by rounding, t is infinite and"
        " p = 0 (n/a where it equals (a)'s); the verdict marks differences within the tolerance as the same minimum.",
        "",
        "| Optimizer | Arm | final f | best f | step within 0.001 of best | g used | mean abs r | mean cos"
        " | off (a) | p vs (a) | p (c) vs (b) |",
        "|" + " --- |" * 11,
    ]
    verdicts = []
    for name, arms in results.items():
        pvalues = eq7_pvalues(arms)
        lines += [eq7_row(name, arms, key, label, pvalues) for key, label, _ in EQ7_ARMS]
        verdicts.append(eq7_verdict(name, arms, pvalues))
    text = "\n".join([*lines, "", "Verdict (final f, p < 0.05):", *verdicts, "", f"Generated by `{command}`.", ""])
    return text, verdicts


def eq7_row(name: str, arms: dict[str, dict], key: str, label: str, pvalues: dict[str, float | None]) -> str:
    """One row of eq7_toy.md: an arm's scalars (mean ± std over seeds for GAL) and its p-values."""
    arm = arms[key]
    if key == "standard":
        return f"| {name} | {label} | {arm['final_f']:.4f} | {arm['best_f']:.4f} | {arm['step_to_best']} |" + " |" * 6
    off = sum(abs(value - arms["standard"]["final_f"]) > TOLERANCE for value in arm["final_f"])
    vs_a = next(pvalues[test] for test, tested, other in EQ7_TESTS if tested == key and other == "standard")
    vs_b = format_p(pvalues["c_vs_b"]) if key == "taylor64" else ""
    return (
        f"| {name} | {label} | {mean_std(arm['final_f'])} | {mean_std(arm['best_f'])} | "
        f"{mean_std(arm['step_to_best'], '.1f')} | {mean_std(arm['g_used'], '.2f')} | "
        f"{mean_std(arm['mean_abs_r'], '.2e')} | {mean_std(arm['mean_cos'], '.3f')} | {off} of {len(arm['final_f'])}"
        f" | {format_p(vs_a)} | {vs_b} |"
    )


def format_p(p: float | None) -> str:
    """A p-value to two significant digits; 'n/a' where the test is undefined (None or nan)."""
    return "n/a" if p is None or math.isnan(p) else f"{p:.2g}"


def figure(traces: dict[str, dict[str, Trace]], path: Path, title: str) -> None:
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
    fig.suptitle(f"Fig. 4: blue standard, red GAL (o start, x end of each path); {title}")
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
            flag = f"--{option.replace('_', '-')}"
            words += [flag] if value is True else [flag, *map(str, value if isinstance(value, list) else [value])]
    return " ".join(words)


def parse(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The CLI's parser and its checked arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-figure", type=Path, default=Path("results/figures/fig4.png"))
    parser.add_argument("--out-table", type=Path, default=Path("results/tables/fig4.md"))
    parser.add_argument("--out-seeds-table", type=Path, default=Path("results/tables/fig4_seeds.md"))
    parser.add_argument("--out-eq7-table", type=Path, default=Path("results/tables/eq7_toy.md"))
    parser.add_argument("--out-eq7-json", type=Path, default=Path("results/toy/eq7_toy.json"))
    parser.add_argument("--seed", type=int, help="h's seed for every optimizer in the figure (default: the authors')")
    parser.add_argument("--seeds", type=int, nargs="+", help="also write --out-seeds-table over these seeds")
    parser.add_argument("--first-order", choices=FIRST_ORDERS, default="mean", help="GAL's first-order term")
    parser.add_argument("--precision", choices=tuple(STEP_PRECISIONS), default="float32", help="GAL step's arithmetic")
    parser.add_argument("--eq7", action="store_true", help="only the four arms of Eq. 7 over --seeds (eq7_toy)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiplies every run's steps (tests)")
    args = parser.parse_args(argv)
    if args.steps_scale <= 0:
        raise ValueError(f"--steps-scale must be > 0, got {args.steps_scale}")
    if args.seeds is not None and (len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds)):
        raise ValueError(f"--seeds needs at least two distinct seeds, got {args.seeds}")
    if args.eq7 and args.seeds is None:
        raise ValueError("--eq7 needs --seeds (at least two distinct seeds)")
    fixed_by_eq7 = ("seed", "first_order", "precision")
    if args.eq7 and any(getattr(args, name) != parser.get_default(name) for name in fixed_by_eq7):
        raise ValueError("--eq7 sets h's seeds (--seeds) and each arm's term and precision itself: drop --seed, "
                         "--first-order and --precision")  # fmt: skip
    return parser, args


def main(argv: list[str] | None = None) -> None:
    """Write Fig. 4 and its table (with ``--seeds``, also the seeds table), or with ``--eq7`` only eq7_toy.

    Each file's footer names the command that writes it (fig4.md's: the one without ``--seeds``, which gives the same).
    """
    parser, args = parse(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    written = write_eq7(parser, args) if args.eq7 else write_fig4(parser, args)
    print(f"wrote {', '.join(map(str, written))} in {time.perf_counter() - start:.1f} s")


def write_fig4(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Path]:
    """Fig. 4 and fig4.md for ``--seed`` (default: the authors' seeds), and fig4_seeds.md over ``--seeds``."""
    seeds = seeds_for(args.seed)
    gal_text = describe(args.first_order, args.precision)
    traces = run_all(seeds, args.steps_scale, args.first_order, args.precision)
    seeds_title = "the authors' seeds of h" if args.seed is None else f"seed {args.seed} of h"
    figure(traces, args.out_figure, f"'{args.first_order}' first-order term, {seeds_title}")
    gal_options = ("first_order", "precision", "steps_scale")
    single = command(parser, args, ("out_figure", "out_table", "seed", *gal_options))
    write(args.out_table, table(traces, single, seeds, gal_text))
    if args.seeds is None:
        return [args.out_figure, args.out_table]
    traces_by_seed = {
        seed: run_all(seeds_for(seed), args.steps_scale, args.first_order, args.precision) for seed in args.seeds
    }
    sweep = command(parser, args, ("out_figure", "out_table", "out_seeds_table", "seed", "seeds", *gal_options))
    write(args.out_seeds_table, seeds_table(traces_by_seed, sweep, gal_text))
    return [args.out_figure, args.out_table, args.out_seeds_table]


def write_eq7(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Path]:
    """eq7_toy.md and eq7_toy.json: every optimizer under the four arms over ``--seeds``."""
    results = run_eq7(args.seeds, args.steps_scale)
    eq7_command = command(parser, args, ("out_eq7_table", "out_eq7_json", "eq7", "seeds", "steps_scale"))
    text, verdicts = eq7_table(results, args.seeds, eq7_command)
    write(args.out_eq7_table, text)
    settings = {
        "seeds": args.seeds,
        "start": START,
        "arch": ARCH,
        "tolerance": TOLERANCE,
        "arms": {key: label for key, label, _ in EQ7_ARMS},
        "steps": {setting.name: steps_of(setting, args.steps_scale) for setting in SETTINGS},
    }
    pvalues = {name: eq7_pvalues(arms) for name, arms in results.items()}
    record = {"command": eq7_command, "torch": torch.__version__, "settings": settings, "results": results}
    write(args.out_eq7_json, json.dumps(record | {"pvalues": pvalues, "verdicts": verdicts}, indent=1) + "\n")
    return [args.out_eq7_table, args.out_eq7_json]


def write(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
