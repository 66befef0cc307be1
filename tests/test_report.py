"""gal.report rebuilds every table of a fixed synthetic results/ tree byte for byte (tests/golden/tables/), and
scripts/make_tables.py writes them with a reproducible date."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gal.report import TABLES
from tests.report_fixture import write_fixture

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "tables"
GOLDEN_DATE = "1796256000"  # 2026-12-03, the date in the golden files' footers


def body(text: str) -> str:
    """A table file without its footer (the date and the command that wrote it)."""
    return text.rsplit("\n\nGenerated ", 1)[0]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    write_fixture(folder)
    return folder


def test_every_table_has_a_golden_file():
    assert {p.stem for p in GOLDEN.glob("*.md")} == set(TABLES)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_each_table_is_rebuilt_byte_for_byte(results, name):
    golden = (GOLDEN / f"{name}.md").read_text()
    assert TABLES[name](results) == body(golden)


def test_the_command_line_writes_the_same_files(results, tmp_path):
    names = sorted(TABLES)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--results", str(results), "--out",
                    str(tmp_path), *names], check=True, capture_output=True,
                   env={**os.environ, "SOURCE_DATE_EPOCH": GOLDEN_DATE})  # fmt: skip
    for name in ("table5", "eq7"):  # one command wrote every file: its footer names all of them
        written = (tmp_path / f"{name}.md").read_text()
        assert body(written) == body((GOLDEN / f"{name}.md").read_text())
        assert written.endswith(f"Generated 2026-12-03 by `python scripts/make_tables.py {' '.join(names)}` from "
                                "results/runs/.\n")  # fmt: skip
