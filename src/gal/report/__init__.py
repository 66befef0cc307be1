"""The tables of results/tables/, built from the runs under results/runs/ (scripts/make_tables.py is its CLI).

paper     results/paper/*.yaml: the paper's tables as data; the Makefile's row targets, the README's table
collect   finished runs: one arm's values over seeds, log rows, a sweep's variant folders
stats     mean ± std, the paper's t-test, verdicts
confirm   the 20-seed confirmation of every comparison a table makes
render    Tables I-V and digits, Table V's alpha sweep, GAL's injection points
readings  Table V over readings of its unstated recipe, nearest the paper's baseline first
tuned     equal-budget tuning of both arms on a validation split, each arm's best at 20 seeds
ablations the ablation sweeps (Tables VI, VIII, Figs. 7, 8a) and AdaRem; eq7: Eq. 7's term; toy: AdaRem's toy
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path

from gal.report import ablations, eq7, readings, render, tuned

TABLES: dict[str, Callable[[Path], str]] = {
    **{name: render.paper_table(name) for name in ("table1", "table2", "table3", "table4", "table5")},
    "table5_alpha": render.table5_alpha,
    "table5_readings": readings.readings_table,
    "tuned": tuned.tuned_table,
    "where_to_inject": render.where_to_inject,
    "eq7": eq7.eq7_table,
    "adarem": ablations.adarem_table,
    **{f"ablation_{name}": (lambda r, name=name: ablations.ablation_table(r, name)) for name in ablations.ABLATIONS},
    "digits": render.digits_table,
}


def build_date() -> str:
    """Today, or the date of SOURCE_DATE_EPOCH (the reproducible-builds convention) when it is set: the date a
    generated table's footer gives."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return datetime.fromtimestamp(int(epoch), timezone.utc).date().isoformat() if epoch else date.today().isoformat()
