"""The benchmark scripts run end to end and write their JSON (no timing asserted: see results/bench/)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("bench_gal_overhead.py", ["--steps", "2", "--warmup", "1"]),
        ("bench_throughput.py", ["--steps", "1", "--rounds", "2", "--warmup", "0"]),
    ],
)
def test_benchmark_script_writes_its_report(tmp_path, script, args):
    out = tmp_path / "report.json"
    subprocess.run([sys.executable, str(SCRIPTS / script), *args, "--out", str(out)], check=True)
    report = json.loads(out.read_text())
    assert report["device"] and report["command"].startswith("python") and report["cases"]
    if script == "bench_gal_overhead.py":  # GAL's own arithmetic in float64 against float32
        assert all(case["float64_ratio"] > 0 for case in report["cases"])
        alone = [case["gal_step_alone_ms"] for case in report["cases"]]  # the GAL step by itself, both dtypes
        assert all(a["float32"]["median_ms"] > 0 and a["float64"]["median_ms"] > 0 for a in alone)
        assert all(math.isfinite(case["float64_cost"]) for case in report["cases"])
        points = {case["name"]: case["ratio_to_gal_off"] for case in report["injection_points"]}
        assert list(points["digits_cnn"]) == ["logits", "pre_logits", "module:4"]
        assert all(ratio > 0 for case in points.values() for ratio in case.values())
