"""The 20-seed confirmation: each comparison a table makes, at the paper's 5 seeds and at 20, and whether its
verdict holds. A difference found with 5 seeds on one machine can be float rounding amplified by training:
another CPU moved California's baseline by two standard deviations. A claim stands only where 20 seeds agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gal.report.collect import CONFIRM_SEEDS, PROTOCOL_SEEDS, Arm, collect_by_seed
from gal.report.paper import Metric
from gal.report.stats import holds, p_value


@dataclass(frozen=True)
class Claim:
    """One comparison a table makes: arm A against arm B on one metric."""

    label: str
    metric: Metric
    a: Arm
    b: Arm


def confirmation(results_dir: Path, claims: list[Claim], command: str = "make confirm") -> list[str]:
    """The claims that have seeds 0-19 in both arms, at 5 seeds and at 20 (made by ``command``)."""
    lines = ["| Comparison | metric | 5 seeds: A → B (p) | 20 seeds: A → B (p) | at 20 seeds |", "|" + " --- |" * 5]
    for claim in claims:
        key = claim.metric.key
        a, b = (
            collect_by_seed(results_dir, runs, gal, [claim.metric], CONFIRM_SEEDS) for runs, gal in (claim.a, claim.b)
        )
        cells = []
        for seeds in (PROTOCOL_SEEDS, CONFIRM_SEEDS):  # one read of seeds 0-19, split by seed
            if all(seed in a and seed in b for seed in seeds):
                va, vb = (np.array([arm[seed][key] for seed in seeds]) for arm in (a, b))
                cells.append((va, vb, p_value(va, vb)))
            else:
                cells.append(None)
        if cells[1] is None:
            continue
        five, twenty = (f"{np.mean(c[0]):.4g} → {np.mean(c[1]):.4g} ({c[2]:.2g})" if c else "missing" for c in cells)
        verdict = holds(cells[0], cells[1], claim.metric.lower_is_better)
        lines.append(f"| {claim.label} | {claim.metric.title} | {five} | {twenty} | {verdict} |")
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
