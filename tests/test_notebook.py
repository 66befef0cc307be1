"""notebooks/analysis.ipynb runs top to bottom, on the committed results/ and on a nearly empty one."""

import os
import shutil
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"
RESULTS = ROOT / "results"


def execute(env_overrides: dict[str, str]) -> tuple[str, int]:
    """Run the notebook with cwd notebooks/; return (all text it printed or displayed, number of images).

    An appended cell prints the kernel's interpreter: a kernelspec from elsewhere (a user-level
    "python3" with another python) would otherwise fail later with a puzzling ImportError.
    """
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel python:', sys.executable)"))
    env = {k: v for k, v in os.environ.items() if k != "GAL_RESULTS"} | env_overrides
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute(env=env)  # raises CellExecutionError on the first cell that fails
    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                texts.append(out.data.get("text/markdown", "") + out.data.get("text/plain", ""))
                images += "image/png" in out.data
    text = "\n".join(texts)
    assert f"kernel python: {sys.executable}" in text, "the python3 kernel does not run this interpreter"
    return text, images


def test_runs_on_committed_results():
    text, images = execute({})  # no GAL_RESULTS: the notebook must find results/ from notebooks/
    assert "Table V" in text and "Table VII" in text and "Ablation" in text
    # every committed file is shown; only the optional extras (fig4_seeds, adarem) may be absent
    assert [line for line in text.splitlines() if line.startswith("missing:")] == []
    figures = [*(RESULTS / "figures").glob("curves_*.png"), *(RESULTS / "figures").glob("ablation_*.png")]
    assert images == 1 + len(figures)  # fig4.png, the curves and the ablation figures


def test_reports_missing_results(tmp_path):
    (tmp_path / "tables").mkdir()
    shutil.copy(RESULTS / "tables" / "table5.md", tmp_path / "tables")
    text, images = execute({"GAL_RESULTS": str(tmp_path)})
    assert "Table V" in text and images == 0
    for line in (
        "missing: tables/digits.md",
        "missing: figures/fig4.png",
        "missing: tables/table7.md",
        "missing: bench/*.json",
        "missing: tables/ablation_*.md",
        "not generated yet: run make adarem",
    ):
        assert line in text


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
