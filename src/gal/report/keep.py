"""A committed table is not replaced by one built from fewer runs: ``make table5`` after the quick start (which runs
only the diabetes row) would otherwise turn Boston and California into "missing" and drop the 20-seed section.

A table's fill is the number of its Markdown cells that hold a number, and its sections are its ``##`` headings.
A rebuilt table with fewer filled cells, or without one of the written one's sections, is held back
(scripts/make_tables.py says which of its rows are missing and the command that makes them; ``--force`` writes it).
"""

import re

NUMBER = re.compile(r"[-−(]*\d")  # a cell that starts with a number: 2.6050±0.0856, (t, p), 5 / 5, 0.3576 → 0.3573


def filled_cells(table: str) -> int:
    """How many cells of the Markdown tables in ``table`` hold a number (a missing row's cells hold its reason)."""
    return sum(
        bool(NUMBER.match(cell.strip()))
        for line in table.splitlines()
        if line.startswith("|")
        for cell in line.strip().strip("|").split("|")
    )


def sections(table: str) -> list[str]:
    """The ``##`` headings of ``table``, in order."""
    return [line.lstrip("#").strip() for line in table.splitlines() if line.startswith("## ")]


def held_back(written: str, rebuilt: str) -> str | None:
    """Why ``rebuilt`` must not replace ``written`` (the table on disk), or None when it holds at least as much.

    The reason names what the rebuilt table lacks and the lines that say which runs are missing, each with the
    command that makes them (the rows' own "missing" reasons)."""
    lost = [name for name in sections(written) if name not in sections(rebuilt)]
    before, after = filled_cells(written), filled_cells(rebuilt)
    if after >= before and not lost:
        return None
    lacks = [f"{after} of its {before} filled cells"] if after < before else []
    lacks += [f"its section '{name}'" for name in lost]
    old_lines = set(written.splitlines())
    missing = [
        " ".join(cell.strip() for cell in line.strip("|").split("|") if cell.strip())
        for line in rebuilt.splitlines()
        if ("missing" in line or "not run here" in line) and "`" in line and line not in old_lines
    ]
    return f"the runs there give {' and lack '.join(lacks)}" + "".join(f"\n  {line}" for line in missing)
