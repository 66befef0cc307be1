"""scripts/make_tables.py does not replace a table with one built from fewer runs (fewer filled cells, or a lost
section): it says which runs are missing with the command that makes them, exits with status 1, and --force
replaces it; a table rebuilt from as many runs is written as before."""

import shutil
import subprocess
import sys
from pathlib import Path

from gal.report.keep import filled_cells, held_back, sections

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "tables" / "table5.md"


def make_tables(results: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--results", str(results), "--out", str(out)]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=ROOT)


def test_a_table_from_fewer_runs_is_held_back_saying_what_to_run(tmp_path):
    out = tmp_path / "tables"
    out.mkdir()
    shutil.copy(COMMITTED, out / "table5.md")
    (tmp_path / "runs").mkdir()  # no runs: every row of ours is missing
    result = make_tables(tmp_path, out, "table5")
    assert result.returncode == 1
    assert (out / "table5.md").read_text() == COMMITTED.read_text()
    first, *reasons = result.stderr.splitlines()
    assert first.startswith(f"error: {out / 'table5.md'} not rewritten: the runs there give ")
    assert "lack its section '20-seed confirmation'" in first
    assert any("results/runs/table5/diabetes/ (run `make reproduce-regression`)" in line for line in reasons)
    assert reasons[-1] == "(`python scripts/make_tables.py --force table5` replaces them anyway)"

    forced = make_tables(tmp_path, out, "--force", "table5")
    assert forced.returncode == 0, forced.stderr
    assert "ours: missing" in (out / "table5.md").read_text()


def test_a_table_rebuilt_from_as_many_runs_is_written(tmp_path):
    out = tmp_path / "tables"
    (tmp_path / "runs").mkdir()
    assert make_tables(tmp_path, out, "table5").returncode == 0  # no table yet: written whatever it holds
    (out / "table5.md").write_text((out / "table5.md").read_text() + "a note the rebuild replaces\n")
    assert make_tables(tmp_path, out, "table5").returncode == 0
    assert "a note" not in (out / "table5.md").read_text()


def test_fill_counts_cells_holding_numbers_and_sections_count_headings():
    written = COMMITTED.read_text()
    assert sections(written) == ["20-seed confirmation"]
    assert filled_cells("| Row | 2.6±0.1 | (t, p) | (-0.11, 9.1e-01) | 5 / 5 | missing: run `make x` |") == 3
    assert held_back(written, written) is None
    fewer = written.replace("| 5 / 5 |", "| |", 1)
    assert held_back(written, fewer).startswith(f"the runs there give {filled_cells(written) - 1} of its ")
    assert held_back(fewer, written) is None  # more runs: the table grows
