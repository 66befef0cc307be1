"""Importing the trainer and its tasks loads no library that only a side path needs (tables, digits, plots)."""

import json
import subprocess
import sys

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
