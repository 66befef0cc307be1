"""Equal-budget tuning: results/tables/tuned.md (`make tuned`).

Each of Table V's data sets and digits: the baseline and GAL each get one Optuna TPE search with the same trial
count, sampler seed and ranges (GAL adds alpha and beta), every trial scored on the validation split; each arm's
best trial then trains with seeds 0-19, scored on the test split. Where the runs are:
- the searches: results/runs/tuned/search/<task>/<optimizer>/<off|on>/ (budget.json, optimization_results.yaml,
  trial=<nnn>/ runs);
- the best trials' seeds: results/runs/tuned/final/<task>/<optimizer>/<off|on>/seed=<n>/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gal.report.collect import CONFIRM_SEEDS, Runs, collect
from gal.report.paper import Metric, load
from gal.report.render import DIGITS_EXPERIMENT, table_runs
from gal.report.stats import fmt_g, p_value, verdict
from gal.results import METRICS_FILE
from gal.sweep import BUDGET_FILE

SEARCH_FOLDER = "tuned/search"
FINAL_FOLDER = "tuned/final"
COMMAND = "make tuned"
RESULTS_FILE = "optimization_results.yaml"  # hydra-optuna-sweeper's: best_params, best_value
ARM_TITLE = {"off": "Baseline", "on": "GAL"}


def tuned_rows() -> list[tuple[Runs, list[Metric], str]]:
    """Table V's three data sets and digits, each with the metrics its table shows and the metric its searches
    score (the task's objective: MSE, top-1 error)."""
    table5 = load("table5")
    rows = [(runs, list(table5.metrics), "mse") for runs in table_runs(table5)]
    digits = [Metric("error", "error % ↓", True), Metric("loss", "loss ↓", True)]  # as DIGITS, named for the verdict
    return [*rows, (Runs.of(DIGITS_EXPERIMENT[0], DIGITS_EXPERIMENT[1], COMMAND), digits, "error")]


def _row(dataset: str) -> Runs:
    for runs, *_ in tuned_rows():
        if runs.task == dataset:
            return runs
    raise SystemExit(f"unknown data set {dataset!r}; choose one of {', '.join(r.task for r, *_ in tuned_rows())}")


def search_dir(results_dir: Path, runs: Runs, arm: str) -> Path:
    return Path(results_dir) / "runs" / SEARCH_FOLDER / runs.task / runs.optimizer / arm


def best_trial(results_dir: Path, runs: Runs, arm: str) -> dict[str, Any] | None:
    """The search's best trial as the Optuna sweeper wrote it ({best_params, best_value}), None before it ends."""
    import yaml  # PyYAML, which Hydra and OmegaConf depend on

    path = search_dir(results_dir, runs, arm) / RESULTS_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else None


def best_overrides(results_dir: Path, dataset: str, arm: str) -> list[str]:
    """The best trial's settings as command-line overrides (`make tune-final/<set>/<arm>` passes them on)."""
    runs = _row(dataset)
    best = best_trial(results_dir, runs, arm)
    if best is None:
        where = search_dir(results_dir, runs, arm) / RESULTS_FILE
        raise SystemExit(f"no finished search: {where} is missing (run `make tune-search/{dataset}/{arm}`)")
    return [f"{key}={value}" for key, value in sorted(best["best_params"].items())]


def _budget(results_dir: Path, runs: Runs, arm: str) -> dict[str, Any] | None:
    path = search_dir(results_dir, runs, arm) / BUDGET_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _finished_trials(results_dir: Path, runs: Runs, arm: str) -> int:
    return len(list(search_dir(results_dir, runs, arm).glob(f"trial=*/{METRICS_FILE}")))


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tuned_table(results_dir: Path) -> str:
    """Per data set: the search space and budget, each arm's best configuration and validation score, and its
    20-seed test metrics with p and the verdict."""
    lines = [
        "# Equal-budget tuning on a validation split: baseline vs GAL",
        "",
        "Each arm gets one Optuna TPE search (hydra-optuna-sweeper) with the same number of trials, the same sampler "
        "seed and the same ranges; GAL searches alpha and beta besides. Every trial is one run (seed 0) scored on the "
        "validation split (20% of the training rows, carved before scaling; never the test split) after its last "
        "epoch. Each arm's best trial then trains with seeds 0-19 on the same rows and is scored on the test split; "
        "p from `scipy.stats.ttest_ind` over the 20 seeds.",
    ]
    verdicts = []
    for runs, metrics, objective in tuned_rows():
        lines += ["", f"## {runs.title}", ""]
        budgets = {arm: _budget(results_dir, runs, arm) for arm in ("off", "on")}
        if not all(budgets.values()):
            lines.append(f"missing: no searches under results/runs/{SEARCH_FOLDER}/{runs.task}/ (run `{COMMAND}`)")
            verdicts.append(f"- {runs.title}: missing")
            continue
        space = budgets["on"]["params"]
        lines += [
            f"Budget: {budgets['off']['n_trials']} trials per arm (TPE, sampler seed "
            f"{budgets['off']['sampler_seed']}). Search space: "
            + "; ".join(f"`{key}` {value}" for key, value in sorted(space.items()))
            + " (the baseline: the same without gal.*).",
            "",
            f"| Arm | trials | best configuration | best validation {objective} | "
            + " | ".join(f"{m.title} (test)" for m in metrics)
            + " | seeds |",
            "|" + " --- |" * (5 + len(metrics)),
        ]
        final = {}
        for arm in ("off", "on"):
            best = best_trial(results_dir, runs, arm)
            found = _finished_trials(results_dir, runs, arm)
            params = sorted((best or {}).get("best_params", {}).items())
            config = ", ".join(f"{key.split('.')[-1]} {_value(value)}" for key, value in params)
            score = _value(best["best_value"]) if best else "search unfinished"
            final[arm] = collect(results_dir, runs.at(FINAL_FOLDER, COMMAND), arm, metrics, CONFIRM_SEEDS)
            n = len(final[arm][metrics[0].key])
            cells = [fmt_g(final[arm][m.key]) if n else "missing" for m in metrics]
            lines.append(f"| {ARM_TITLE[arm]} | {found} / {budgets[arm]['n_trials']} | {config or '–'} | {score} | "
                         + " | ".join(cells) + f" | {n} |")  # fmt: skip
        n_off, n_on = (len(final[arm][metrics[0].key]) for arm in ("off", "on"))
        if n_off > 1 and n_on > 1:
            ps = ", ".join(f"{m.key} {p_value(final['off'][m.key], final['on'][m.key]):.2g}"
                           for m in metrics)  # fmt: skip
            lines += ["", f"p (baseline vs GAL, test): {ps}."]
            verdicts.append(f"- {runs.title}: {verdict(final['off'], final['on'], metrics)}, each arm tuned")
        else:
            verdicts.append(f"- {runs.title}: the best trials' 20 seeds are missing (run `{COMMAND}`)")
    return "\n".join([*lines, "", "## Verdict", "", *verdicts])
