"""examples/ runs as a researcher runs it, each script whole (each under a minute on 2 cores), and the README's GAL
snippet is examples/digits_loop.py itself, so that it runs as pasted."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# each example's last line: what it prints once trained
LAST_LINE = {
    "digits_loop.py": r"epoch 10: test accuracy 0\.9\d\d, last step GALStats\(loss=.*; z \(\d+, 10\)\)",
    "timm_pre_logits.py": r"epoch 5: test accuracy 0\.\d{3}, z 96-d, last step GALStats\(.*; z \(\d+, 96\)\)",
    "regression_mlp.py": r"GAL: test MSE \d+\.\d",
}


def test_every_example_is_listed_and_short():
    assert sorted(path.name for path in EXAMPLES.glob("*.py")) == sorted(LAST_LINE)
    for path in EXAMPLES.glob("*.py"):
        assert len(path.read_text().splitlines()) < 60, path.name


@pytest.mark.parametrize("name", sorted(LAST_LINE))
def test_the_example_runs(name, tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.fullmatch(LAST_LINE[name], result.stdout.strip().splitlines()[-1]), result.stdout[-1000:]


def test_the_readme_snippet_is_the_digits_example_whole():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert (EXAMPLES / "digits_loop.py").read_text() in blocks
