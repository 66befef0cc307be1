"""AdaRem vs SGD-M vs Adam on Fig. 4's toy function, without GAL: final f, convergence and oscillation index Q.

Each seed draws a start point START + U(-0.25, 0.25)^2; from it every optimizer runs STEPS steps at each lr of its
grid. SGD-M and AdaRem share a grid (AdaRem borrows SGD-M's hyperparameters, papers/adarem_paper.txt Sec. 4);
Adam has its own. An "epoch" is EPOCH_STEPS steps: AdaRem's lambda^t decays once per epoch (Sec. 4.1.1).
Q is the oscillation index of Sec. 3.2.2 over the path of points, :func:`gal.adarem.oscillation_index`.

    python scripts/toy_adarem.py    # writes results/toy/adarem_toy.json; make_tables.py renders it
"""

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn
from torch.optim import Optimizer

from gal.adarem import oscillation_index
from gal.optim import OPTIMIZERS
from gal.results import mean_std

_spec = importlib.util.spec_from_file_location("toy3d", Path(__file__).resolve().with_name("toy3d.py"))
toy3d = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy3d)  # scripts/ is not a package; toy3d's import only defines things

SEEDS = (0, 1, 2, 3, 4)
STEPS = 300
EPOCH_STEPS = 10  # steps per "epoch"; AdaRem's lambda^t is multiplied by lambda at the end of each
SPREAD = 0.25  # the start point is START + U(-SPREAD, SPREAD) per coordinate
# Half-decade grids wide enough that each optimizer's best lr (by mean final f) is inside: on this f a large lr is
# what lets a run leave the local minimum near (0.64, 1.43), and a larger one throws it out along x + y = 0.
SGD_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
ADAM_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
OPTIMIZERS_COMPARED: dict[str, tuple[Callable[..., Optimizer], tuple[float, ...], str]] = {
    "SGD-M": (partial(OPTIMIZERS["sgd"], weight_decay=0.0, momentum=0.9), SGD_GRID, "sgd, momentum 0.9"),
    "AdaRem": (
        partial(OPTIMIZERS["adarem"], weight_decay=0.0, momentum_beta=0.9, lam=0.999),
        SGD_GRID,
        "adarem, momentum_beta 0.9, lam 0.999",
    ),
    "Adam": (partial(OPTIMIZERS["adam"], weight_decay=0.0), ADAM_GRID, "adam, torch defaults"),
}
METRICS = ("final_f", "best_f", "steps_to_best", "q")


def start_point(seed: int) -> Tensor:
    """START + U(-SPREAD, SPREAD)^2 from ``torch.Generator().manual_seed(seed)``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.tensor(toy3d.START) + (2 * torch.rand(2, generator=generator) - 1) * SPREAD


def run(
    build: Callable[..., Optimizer], lr: float, start: Tensor, steps: int, epoch_steps: int = EPOCH_STEPS
) -> list[Tensor]:
    """The points theta_0, ..., theta_steps of minimising f from ``start``; ``epoch_end()`` every ``epoch_steps``."""
    point = nn.Parameter(start.clone())
    optimizer = build([point], lr=lr)
    points = [point.detach().clone()]
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        toy3d.toy_f(point).backward()
        optimizer.step()
        if step % epoch_steps == 0 and hasattr(optimizer, "epoch_end"):  # AdaRem's per-epoch lambda decay
            optimizer.epoch_end()
        points.append(point.detach().clone())
    return points


def metrics(points: list[Tensor]) -> dict[str, float]:
    """Final and best f, the first step within toy3d.TOLERANCE of the best, and Q (Sec. 3.2.2) of the path."""
    f = toy3d.toy_f(torch.stack(points)).tolist()
    return {
        "final_f": f[-1],
        "best_f": min(f),
        "steps_to_best": toy3d.step_within_best(f),
        "q": oscillation_index(points).item(),
    }


def run_grid(seeds: list[int], steps: int) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{optimizer: {lr: {metric: [one value per seed]}}}, lr keys as '%g' strings."""
    results = {}
    for name, (build, grid, _) in OPTIMIZERS_COMPARED.items():
        results[name] = {}
        for lr in grid:
            per_seed = [metrics(run(build, lr, start_point(seed), steps)) for seed in seeds]
            results[name][f"{lr:g}"] = {metric: [values[metric] for values in per_seed] for metric in METRICS}
    return results


def settings(seeds: list[int], steps: int) -> dict:
    """The run's settings as stored in the JSON."""
    return {
        "steps": steps,
        "seeds": seeds,
        "epoch_steps": EPOCH_STEPS,
        "start_rule": f"START + U(-{SPREAD:g}, {SPREAD:g})^2, torch.Generator().manual_seed(seed), START {toy3d.START}",
        "starts": [start_point(seed).tolist() for seed in seeds],
        "tolerance": toy3d.TOLERANCE,
        "weight_decay": 0.0,
        "optimizers": {
            name: {"lrs": list(grid), "builder": about} for name, (_, grid, about) in OPTIMIZERS_COMPARED.items()
        },
    }


def best_lr(by_lr: dict[str, dict[str, list[float]]]) -> str:
    """The lr key with the lowest mean final f."""
    return min(by_lr, key=lambda lr: statistics.mean(by_lr[lr]["final_f"]))


def fmt(values: list[float], digits: int = 4) -> str:
    """'mean ± std' over the seeds (sample std, as every table here: gal.results.mean_std)."""
    mean, spread = mean_std(np.array(values))
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def cells(values: dict[str, list[float]]) -> str:
    """final f, best f, Q and steps of one (optimizer, lr) as table cells."""
    return (
        f"{fmt(values['final_f'])} | {fmt(values['best_f'])} | {fmt(values['q'], 2)} | "
        f"{fmt(values['steps_to_best'], 1)}"
    )


def paired_tests(runs: dict, best: dict[str, str]) -> list[str]:
    """Table rows: AdaRem against SGD-M and Adam, each at its best lr, paired over the seeds (ttest_rel)."""
    rows = []
    adarem = runs["AdaRem"][best["AdaRem"]]
    for other in ("SGD-M", "Adam"):
        for metric, label in (("final_f", "final f"), ("q", "Q")):
            mine, theirs = adarem[metric], runs[other][best[other]][metric]
            test = stats.ttest_rel(mine, theirs)
            difference = statistics.mean(a - b for a, b in zip(mine, theirs))
            rows.append(
                f"| AdaRem - {other} | {label} | {difference:+.4g} | {test.statistic:.2f} | {test.pvalue:.2g} |"
            )
    return rows


def markdown(data: dict) -> str:
    """The '## Toy problem (Fig. 4's f)' section of results/tables/adarem.md from adarem_toy.json's dict."""
    setting, runs = data["settings"], data["runs"]
    best = {name: best_lr(by_lr) for name, by_lr in runs.items()}
    n = len(setting["seeds"])
    lines = [
        "## Toy problem (Fig. 4's f)",
        "",
        f"Fig. 4's f, no GAL, {setting['steps']} steps from {n} start points ({setting['start_rule']}; seeds"
        f" {', '.join(map(str, setting['seeds']))}), no weight decay. An epoch is {setting['epoch_steps']} steps:"
        " AdaRem's lambda^t (lambda 0.999) decays once per epoch. SGD-M and AdaRem share an lr grid (AdaRem borrows"
        " SGD-M's hyperparameters). Values are mean ± std over the start points; best lr is the lowest mean final f;"
        f" steps is the first step within {setting['tolerance']:g} of the run's own best f (read it with best f: a"
        " run stuck in a worse minimum converges early); Q is the oscillation index (Sec. 3.2.2; 1 for a path"
        " monotone in every coordinate). f has two global minima (-1.3549 at ±(0.968, -0.322)), a local one (-0.184"
        " near (0.64, 1.43)) and a valley where f tends to -1 along x + y = 0: at a small lr the start point decides"
        " the basin, so the best lr by final f is the one large enough to leave the local minimum and small enough"
        " not to be thrown out along the valley or off to f = 0.",
        "",
        "| Optimizer | best lr | final f | best f | Q | steps |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {name} | {best[name]} | {cells(runs[name][best[name]])} |" for name in runs),
        "",
        f"Paired t-tests (scipy.stats.ttest_rel, same {n} start points), each optimizer at its best lr:",
        "",
        "| Comparison | metric | mean difference | t | p |",
        "| --- | --- | --- | --- | --- |",
        *paired_tests(runs, best),
        "",
        "### Toy problem: every lr",
        "",
        "| Optimizer | lr | final f | best f | Q | steps |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {name} | {lr} | {cells(values)} |" for name, by_lr in runs.items() for lr, values in by_lr.items()),
        "",
        f"Generated by `{data['command']}`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run every optimizer at every lr from every seed's start point and write the JSON (argv: the CLI)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/toy/adarem_toy.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds needs at least two distinct seeds (paired t-tests), got {args.seeds}")
    start = time.perf_counter()
    data = {
        "command": " ".join(["python scripts/toy_adarem.py", *argv]),
        "torch": torch.__version__,
        "settings": settings(args.seeds, args.steps),
        "runs": run_grid(args.seeds, args.steps),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
