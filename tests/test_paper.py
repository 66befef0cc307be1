"""results/paper/*.yaml: every entry maps to an experiment, every paper-row experiment has an entry, and what is
generated from the files (results/paper/rows.mk, the README's table) is up to date."""

from pathlib import Path

import pytest

from gal.report import paper
from gal.report.paper import experiment_location, load, make_rows, paper_cell, paper_tables, with_readme_table

ROOT = Path(__file__).resolve().parents[1]
PAPER_EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("table[0-9]_*.yaml"))


def test_every_paper_table_is_transcribed_with_its_source():
    names = {table.name for table in paper_tables()}
    assert names == {f"table{n}" for n in range(1, 9)} | {"fig4"}
    for table in paper_tables():
        assert table.source.startswith(("Table ", "Fig. ")) and table.title and table.rows


def test_every_row_maps_to_an_existing_experiment_and_every_paper_experiment_has_a_row():
    rows = [row for table in paper_tables() for row in table.rows if row.experiment]
    for row in rows:
        assert (ROOT / "configs" / "experiment" / f"{row.experiment}.yaml").exists(), row
    assert sorted(row.experiment for row in rows) == PAPER_EXPERIMENTS


def test_each_row_reads_its_own_runs():
    """Two rows of a table never share a run folder (one would overwrite, or skip, the other's runs)."""
    for table in paper_tables():
        where = [experiment_location(row.experiment) for row in table.rows if row.experiment]
        assert len(set(where)) == len(where), table.name


def test_a_comparison_row_has_one_paper_value_per_metric():
    for table in paper_tables():
        for row in table.rows:
            if table.metrics and row.experiment:
                assert {"baseline", "gal"} <= set(row.paper), (table.name, row.title)
                assert all(len(values) == len(table.metrics) for values in row.paper.values()), (table.name, row)


def test_the_sweep_tables_name_run_folders_of_their_ablation():
    arch = {row.variant for row in load("table8").rows}
    assert arch == {f"{kind}-{'-'.join(w)}" for kind in ("mlp", "cnn")
                    for w in (["256"], ["256", "64"], ["256", "64", "32"], ["256", "64", "32", "16"])}  # fmt: skip
    assert {row.variant for row in load("table6").rows} == {
        f"{kind}-scale_by_grad={scaled}" for kind in ("uniform", "normal") for scaled in (True, False)
    }


def test_an_unknown_field_or_experiment_is_refused(tmp_path):
    (tmp_path / "table9.yaml").write_text("title: t\nsource: s\nrows: []\ncolour: red\n")
    with pytest.raises(ValueError, match="table9.yaml: unknown field.*colour"):
        load("table9", tmp_path)
    with pytest.raises(ValueError, match="configs/experiment/table9_mnist.yaml does not exist"):
        experiment_location("table9_mnist")


def test_paper_rows_mk_is_generated_from_the_yaml():
    rows = ROOT / "results" / "paper" / "rows.mk"
    assert rows.read_text() == make_rows(), "run `python scripts/make_tables.py --make-rows`"
    text = make_rows()
    assert "cifar100-sgd-gal: venv\n\t$(TRAIN) --multirun experiment=table2_cifar100_sgd gal=on " in text
    assert "seed=$(if $(SEEDS),$(SEEDS),0,1,2) trainer.if_exists=skip $(ARGS)" in text
    boston = "table5-boston: venv\n\t$(TRAIN) --multirun experiment=table5_boston gal=off "
    assert boston + "seed=$(if $(SEEDS),$(SEEDS),0,1,2,3,4)" in text


def test_the_readme_table_is_generated_from_the_yaml():
    readme = (ROOT / "README.md").read_text()
    assert with_readme_table(readme) == readme, "run `python scripts/make_tables.py --readme`"


def test_the_papers_cells_are_its_printed_numbers_rounded():
    assert paper_cell({"table": "table5", "row": "Boston housing", "metric": "mse"}) == "23.10±4.17 → 12.88±2.04"
    assert paper_cell({"table": "table5", "row": "California housing", "metric": "mse"}) == "2.117±0.363 → 1.164±0.066"
    assert paper_cell({"table": "table5", "row": "Diabetes", "metric": "mse"}) == "3226±39 → 2962±29"
    assert paper_cell({"table": "table1", "metric": "error"}) == "1.92→1.84, 2.01→1.91, 3.15→3.03"
    assert paper_cell({"table": "table4", "metric": "AP"}) == "39.13→39.61, 40.98→41.38"
    assert paper.significant("0.5", "0.25") == "0.5000±0.2500"
