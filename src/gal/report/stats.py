"""The statistics of the tables: mean ± sample std, the paper's two-sample t-test, and what a difference says.

Every p is ``scipy.stats.ttest_ind`` (through :class:`gal.results.Comparison`); a verdict speaks of p < 0.05.
"""

from __future__ import annotations

import numpy as np

from gal.report.paper import Metric
from gal.results import Comparison, mean_std


def fmt(values: np.ndarray) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4f}±{std:.4f}"


def fmt_g(values: np.ndarray) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4g}±{std:.2g}"


def p_value(a: np.ndarray, b: np.ndarray) -> float:
    return Comparison(a, b).t_test[1]


def verdict(baseline: dict[str, np.ndarray], gal: dict[str, np.ndarray], metrics: list[Metric]) -> str:
    """Which metrics GAL improves or worsens at p < 0.05, in words."""
    better, worse = [], []
    for metric in metrics:
        if p_value(baseline[metric.key], gal[metric.key]) < 0.05:
            gal_lower = np.mean(gal[metric.key]) < np.mean(baseline[metric.key])
            (better if gal_lower == metric.lower_is_better else worse).append(metric.title.split()[0])
    if not better and not worse:
        return "no significant difference (p ≥ 0.05 on every metric)"
    parts = [
        f"GAL better on {', '.join(better)}" if better else "",
        f"GAL worse on {', '.join(worse)}" if worse else "",
    ]
    return "; ".join(p for p in parts if p) + " (p < 0.05)"


def diverged(arms: dict[str, np.ndarray]) -> list[str]:
    """ "<arm> diverged on k of n seeds" for each arm with a NaN (a run marked diverged): no t-test for it."""
    return [f"{arm} diverged on {int(np.isnan(v).sum())} of {len(v)} seeds" for arm, v in arms.items()
            if np.isnan(v).any()]  # fmt: skip


def holds(five: tuple | None, twenty: tuple, lower_is_better: bool) -> str:
    """Whether the 5-seed verdict (a difference at p < 0.05, or none) holds with 20 seeds; each cell is
    (values of A, values of B, p)."""

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


def best_lr(grid: dict[str, dict[str, np.ndarray]], key: str, lower_is_better: bool) -> str | None:
    """The lr whose mean is best among those where no seed diverged (None when every lr diverged)."""
    finite = {lr: cell[key] for lr, cell in grid.items() if np.isfinite(cell[key]).all()}
    if not finite:
        return None
    sign = 1.0 if lower_is_better else -1.0
    return min(finite, key=lambda lr: sign * float(np.mean(finite[lr])))
