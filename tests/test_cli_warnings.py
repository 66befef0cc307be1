"""A ``gal.*`` setting on the command line of a run or sweep in which GAL stays off says so in one warning line: the
run trains the baseline, which the user may have taken for GAL."""

import subprocess
import sys

import pytest

WARNING = "warning: gal.beta=0.5 is set but GAL is off (gal=off): "
CASES = [
    (["gal.beta=0.5"], WARNING + "this run trains the baseline; add gal=on"),
    (["--multirun", "gal.beta=0.5", "seed=0,1"], WARNING + "every job of this sweep trains the baseline; add gal=on"),
    (["--multirun", "gal=off,on", "gal.beta=0.5"], None),  # the GAL arm's beta
    (["gal=on", "gal.beta=0.5"], None),
    (["gal.enabled=false", "gal.beta=0.5"], None),  # GAL turned off by name: the user knows
    (["optimizer.lr=0.01"], None),
]


@pytest.mark.parametrize(("args", "warning"), CASES, ids=[" ".join(args) for args, _ in CASES])
def test_gal_settings_with_gal_off_are_said_once(tmp_path, args, warning):
    command = [sys.executable, "-m", "gal", *args, "task=diabetes", "trainer.epochs=0", "trainer.progress=false"]
    result = subprocess.run([*command, f"results_dir={tmp_path}"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: gal.")]
    assert warnings == ([warning] if warning else []), result.stderr[-2000:]
