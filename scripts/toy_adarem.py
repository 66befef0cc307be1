"""AdaRem vs SGD-M vs Adam on Fig. 4's toy function, without GAL: final f, convergence and oscillation index Q.

Each seed draws a start point START + U(-0.25, 0.25)^2; from it every optimizer runs STEPS steps at each lr of its
grid. SGD-M and AdaRem share a grid (AdaRem borrows SGD-M's hyperparameters, papers/adarem_paper.txt Sec. 4);
Adam has its own. An "epoch" is EPOCH_STEPS steps: AdaRem's lambda^t decays once per epoch (Sec. 4.1.1).
Q is the oscillation index of Sec. 3.2.2 over the path of points, :func:`gal.adarem.oscillation_index`.

    python scripts/toy_adarem.py    # writes results/toy/adarem_toy.json; make_tables.py renders it
"""

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from gal import toy
from gal.adarem import oscillation_index
from gal.optim import OPTIMIZERS

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
    return torch.tensor(toy.START) + (2 * torch.rand(2, generator=generator) - 1) * SPREAD


def run(
    build: Callable[..., Optimizer], lr: float, start: Tensor, steps: int, epoch_steps: int = EPOCH_STEPS
) -> list[Tensor]:
    """The points theta_0, ..., theta_steps of minimising f from ``start``; ``epoch_end()`` every ``epoch_steps``."""
    point = nn.Parameter(start.clone())
    optimizer = build([point], lr=lr)
    points = [point.detach().clone()]
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        toy.toy_f(point).backward()
        optimizer.step()
        if step % epoch_steps == 0 and hasattr(optimizer, "epoch_end"):  # AdaRem's per-epoch lambda decay
            optimizer.epoch_end()
        points.append(point.detach().clone())
    return points


def metrics(points: list[Tensor]) -> dict[str, float]:
    """Final and best f, the first step within toy.TOLERANCE of the best, and Q (Sec. 3.2.2) of the path."""
    f = toy.toy_f(torch.stack(points)).tolist()
    return {
        "final_f": f[-1],
        "best_f": min(f),
        "steps_to_best": toy.step_within_best(f),
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
        "start_rule": f"START + U(-{SPREAD:g}, {SPREAD:g})^2, torch.Generator().manual_seed(seed), START {toy.START}",
        "starts": [start_point(seed).tolist() for seed in seeds],
        "tolerance": toy.TOLERANCE,
        "weight_decay": 0.0,
        "optimizers": {
            name: {"lrs": list(grid), "builder": about} for name, (_, grid, about) in OPTIMIZERS_COMPARED.items()
        },
    }


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
