"""Importing the trainer and its tasks loads no library that only a side path needs (tables, digits, plots)."""

import json
import subprocess
import sys

import pytest

MODULES = ("gal.train", "gal.tasks.classification", "gal.tasks.detection", "gal.optim", "gal.precision", "gal.results")
# scipy: t-tests and DETR's matching; sklearn: digits and regression; matplotlib, pandas: figures and tables.
# gal.tasks.detection imports pycocotools.coco at module level, which loads none of them (only numpy).
LAZY = ("scipy", "sklearn", "wandb", "matplotlib", "pandas")
# timm.utils.summary does `try: import wandb` at import time, and the trainer needs timm.utils (ModelEmaV3,
# init_distributed_device_so): wandb is loaded whenever it is installed, whatever this project imports lazily
LOADED_BY_TIMM = {"wandb"}


def test_the_trainer_and_its_tasks_import_no_side_library():
    code = (
        f"import sys, json; import {', '.join(MODULES)}; "
        f"print(json.dumps([name for name in {LAZY!r} if name in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert loaded - LOADED_BY_TIMM == set(), f"imported at module level: {sorted(loaded - LOADED_BY_TIMM)}"


def test_a_table5_run_starts_without_timm_torchvision_or_pytorch_optimizer(tmp_path):
    """The regression rows use torch's Adam, a constant lr and one process: nothing of timm's (which imports
    torchvision, seconds of start-up on a small CPU) is needed, from the command line to metrics.json."""
    code = (
        "import sys, json, runpy; "
        f"sys.argv = ['gal', 'experiment=table5_diabetes', 'gal=on', 'trainer.epochs=1', 'results_dir={tmp_path}', "
        "'trainer.progress=false']; "
        'exec(\'try:\\n    runpy.run_module("gal", run_name="__main__")\\nexcept SystemExit:\\n    pass\'); '
        "print(json.dumps([m for m in ('timm', 'torchvision', 'pytorch_optimizer') if m in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    assert list(tmp_path.rglob("metrics.json"))  # it trained


@pytest.mark.parametrize(
    "argv",
    [["--cfg", "job"], ["experiment=table5_diabetes", "gal.alpah=0.1"], ["+gal.alpah=0.1"], ["task=diabetez"]],
    ids=["cfg-job", "typo", "plus-typo", "unknown-option"],
)
def test_composing_or_refusing_a_command_imports_no_torch(argv, tmp_path):
    """`--cfg job` prints the config, and a typo is refused, before torch (seconds of start-up) is imported."""
    code = (
        "import sys, json, runpy; "
        f"sys.argv = ['gal', *{argv!r}, 'results_dir={tmp_path}']; "
        'exec(\'try:\\n    runpy.run_module("gal", run_name="__main__")\\nexcept SystemExit:\\n    pass\'); '
        "print(json.dumps('torch' in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) is False, result.stderr[-2000:]
    assert not list(tmp_path.rglob("*.json"))


def test_the_tables_import_no_torch():
    """scripts/make_tables.py reads metrics.json files: importing gal.report (and gal.results) loads no torch."""
    code = "import sys, json; import gal.report, gal.results; print(json.dumps('torch' in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) is False
