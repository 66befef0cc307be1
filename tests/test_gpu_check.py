"""scripts/gpu_check.py and gal.device_check without a GPU: the one-line refusals, the phases' matrix, and the whole
check in its CPU mode (every phase, the same code and JSON schema as on a GPU, tiny models): the trainer killed and
resumed, a case stopped at its phase's deadline, a worker that dies; the host-sync detectors and the report's
verdicts."""

import importlib.util
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gal import device_check
from gal.adjuster import GradientAdjuster
from gal.benchmarking import SYNC_MESSAGE, counting_host_syncs, gal_frame, sync_errors_in_gal_step, time_rounds
from gal.precision import Precision

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)

CPU = torch.device("cpu")
GPU_PROFILE = device_check.profile(cpu=False)


def check(*argv: str, env: dict | None = None, timeout: float = 400) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})  # fmt: skip
    return result, time.monotonic() - started


def test_without_cuda_it_says_so_in_one_line_exits_2_and_writes_nothing(tmp_path):
    result, _ = check("--out-dir", str(tmp_path / "out"), env={"CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device is visible; this check must run on a machine with a GPU (or pass --cpu) "
        "(nothing written)"
    ]
    assert not (tmp_path / "out").exists()


def test_a_torch_too_old_is_named_with_the_minimum():
    old = SimpleNamespace(__version__="2.2.1+cu121")
    assert gpu_check.torch_problem(old, cpu=True) == "torch 2.2.1+cu121 is too old: the trainer needs torch >= 2.3"
    assert gpu_check.torch_problem(torch, cpu=True) is None


@pytest.mark.parametrize("argv", [["--phase-s", "d=10"], ["--phase-s", "a=soon"], ["--budget-s", "1"],
                                  ["--phases", "x"]])  # fmt: skip
def test_bad_flags_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(argv)
    assert exit_info.value.code == 2 and "error" in capsys.readouterr().err


def test_phase_limits_default_to_three_minutes_for_a_and_b():
    args = gpu_check.parse_args(["--phase-s", "a=60"])
    assert (
        args.budgets == {"a": 60.0, "b": 180.0, "c": None} and args.budget_s == 540 and args.phases == ["a", "b", "c"]
    )


def test_the_phases_run_every_model_in_bf16_first_then_the_other_precisions_and_compile():
    models = ["effnet_b1_cifar", "effnet_b2_imagenet", "resnet50_imagenet", "detr_r50_coco", "detr_r101_coco"]
    assert [c.name for c in device_check.phase_cases("a", GPU_PROFILE)] == [f"{m}/bf16/eager" for m in models]
    phase_c = [c.name for c in device_check.phase_cases("c", GPU_PROFILE)]
    eager = [f"{m}/{p}/eager" for p in ("off", "fp16") for m in models]
    assert phase_c == eager + [f"{m}/bf16/compiled" for m in models[:3]]  # DETR trains eager
    cpu = device_check.profile(cpu=True)
    assert [c.name for c in device_check.phase_cases("a", cpu)] == [f"{m}/bf16/eager" for m in models]


def test_each_model_is_its_paper_row_with_gal_on():
    rows = {name: device_check.compose_row(spec) for name, spec in device_check.GPU_MODELS.items()}
    expected = {  # (model, classes, GAL arch, optimizer, first-step lrs of the model and of h)
        "effnet_b1_cifar": ("tf_efficientnet_b1.aa_in1k", 100, [256, 64, 32], "sgd", (0.05, None)),
        "effnet_b2_imagenet": ("efficientnet_b2", 1000, [512, 256], "rmsproptf", (1e-6, 1e-6)),  # timm warm-up lr
        "resnet50_imagenet": ("resnet50", 1000, [512, 128], "rmsproptf", (1e-6, 1e-6)),
        "detr_r50_coco": ("resnet50", 91, [64, 16], "adamw", (1e-4, None)),
        "detr_r101_coco": ("resnet101", 91, [64, 16], "adamw", (1e-4, None)),
    }
    for name, (model, classes, arch, optimizer, lrs) in expected.items():
        cfg = rows[name]
        assert (cfg.task.model.get("name") or cfg.task.model.backbone) == model
        assert (cfg.task.num_classes, list(cfg.gal.arch), cfg.optimizer.name) == (classes, arch, optimizer)
        assert cfg.gal.enabled and device_check.first_step_lrs(cfg) == lrs
    gpus = {"effnet_b1_cifar": 4, "effnet_b2_imagenet": 8, "resnet50_imagenet": 8, "detr_r50_coco": 8,
            "detr_r101_coco": 8}  # fmt: skip
    for name, spec in device_check.GPU_MODELS.items():  # one GPU's share of the row's recipe, at the row's size
        assert spec.batch * gpus[name] == rows[name].task.global_batch_size, name
        assert spec.image_size == rows[name].task.get("image_size"), name
    assert rows["detr_r50_coco"].trainer.clip_grad_norm == 0.1 and not rows["detr_r50_coco"].trainer.tf32


@pytest.mark.serial
def test_the_whole_check_runs_on_the_cpu_phase_by_phase(tmp_path):
    """What a GPU session runs, on tiny models: every phase finishes, every case is ok, the report is complete."""
    result, _ = check("--cpu", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["complete"] and report["passed"] and report["problems"] == [] and report["mode"] == "cpu"
    assert list(report["phases"]) == ["a", "b", "c"]
    assert all(phase["ended"] == "finished" for phase in report["phases"].values())
    cases = {r["case"]: r for phase in report["phases"].values() for r in phase["records"]}
    assert all(r["status"] == "ok" for r in cases.values()), {n: r["status"] for n, r in cases.items()}
    assert [r["case"] for r in report["phases"]["a"]["records"]] == report["phases"]["a"]["planned"]

    classifier, detr = cases["effnet_b1_cifar/bf16/eager"], cases["detr_r50_coco/bf16/eager"]
    assert list(classifier["images_per_s"]) == ["trainer_gal_off", "trainer_gal_on", "minimal_loop"]
    assert list(detr["images_per_s"]) == ["trainer_gal_off", "trainer_gal_on"]
    assert classifier["gal_step_host_syncs"] == "not checked (needs CUDA)"
    assert classifier["step_host_syncs"] == {"checked": False, "steps": 1, "sites": {}, "unexpected": []}
    assert classifier["evaluation_host_syncs"]["checked"] is False
    assert detr["clip_grad_norm"] == 0.1 and detr["cudnn_benchmark"] is False  # as the trainer runs DETR
    assert cases["effnet_b1_cifar/bf16/compiled"]["compiled"] is True

    for row in ("cifar100_sgd/fp32", "imagenet_resnet50/fp16_ema"):
        run = cases[f"trainer/{row}/resume"]
        assert run["resume_equal"] is True and run["max_abs_diff"] == 0.0
        assert run["killed_after_epoch"] in (1, 2)  # killed mid-run: after the first checkpoint, before the last epoch
        assert run["resumed"]["metrics"][0]["epochs"] == 3 and run["straight"]["metrics"][0]["steps"] == 9
    detr_run = cases["trainer/coco_detr_r50/fp32/coco_eval"]
    assert set(detr_run["metrics"][0]["metrics"]) == {"AP", "AP50", "AP75", "APS", "APM", "APL"}
    optimizers = cases["trainer/cifar100_lookahead_adabound"]["metrics"]
    assert [m["run_dir"].split("/")[3] for m in optimizers] == ["adabound", "lookahead"]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "gpu_check PASSED" in log and "[b] trainer/cifar100_sgd/fp32/resume: ok" in log


@pytest.mark.serial
def test_a_stuck_case_is_stopped_at_its_phase_deadline_and_a_dead_worker_costs_one_case(tmp_path):
    faults = ["--crash-in", "effnet_b1_cifar/bf16/eager", "--hang-in", "resnet50_imagenet/bf16/eager"]
    result, seconds = check("--cpu", "--out-dir", str(tmp_path), "--phases", "a", "--phase-s", "a=45", *faults)
    assert result.returncode == 1
    assert seconds < 45 + 15  # the kill came at the phase's limit, not after the hung case
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["complete"] and not report["passed"]
    phase = report["phases"]["a"]
    assert phase["ended"] == "deadline"
    statuses = [(r["case"], r["status"]) for r in phase["records"]]
    assert statuses == [
        ("effnet_b1_cifar/bf16/eager", "error: the worker exited with code 139 during it (see gpu_check.log)"),
        ("effnet_b2_imagenet/bf16/eager", "ok"),  # a new worker went on after the one that died
        ("resnet50_imagenet/bf16/eager", "stopped: phase a's deadline passed during it"),
        ("detr_r50_coco/bf16/eager", "not run: deadline"),
        ("detr_r101_coco/bf16/eager", "not run: deadline"),
    ]
    assert len(report["problems"]) == 4 and "gpu_check FAILED" in result.stdout


def test_without_torchvision_every_phase_is_reported_skipped(tmp_path):
    result, _ = check("--cpu", "--out-dir", str(tmp_path), "--no-torchvision", "torchvision::nms does not exist")
    assert result.returncode == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (
        report["complete"]
        and [p["skipped"] for p in report["phases"].values()]
        == ["needs torchvision: torchvision::nms does not exist"] * 3
    )


def test_the_verdicts_count_targets_only_on_a_gpu_every_unexpected_sync_and_only_phase_c_may_run_out():
    missed = {"gal_on_vs_off": {"value": 0.95, "target_min": 0.99, "met": False}}
    case = {"case": "resnet50_imagenet/bf16/eager", "status": "ok", "targets": missed,
            "gal_step_host_syncs": "RuntimeError: called a synchronizing CUDA operation, at gal/adjuster.py:1 in f",
            "step_host_syncs": {"checked": True, "steps": 2, "sites": {"gal/x.py:3": 2}, "unexpected": ["gal/x.py:3"]},
            "evaluation_host_syncs": {"checked": True, "count": 3, "allowed": 1}}  # fmt: skip
    compile_left_out = {"case": "effnet_b1_cifar/bf16/compiled", "status": "stopped: phase c's deadline passed"}
    report = {
        "mode": "cuda",
        "phases": {
            "a": {"records": [case, {"case": "c", "status": "not run: deadline"}]},
            "c": {"records": [compile_left_out]},
        },
    }  # fmt: skip  (c: what time remains)
    assert gpu_check.problems(report) == [
        "resnet50_imagenet/bf16/eager: gal_on_vs_off 0.950 below 0.99",
        "resnet50_imagenet/bf16/eager: host sync in the GAL step: RuntimeError: called a synchronizing CUDA "
        "operation, at gal/adjuster.py:1 in f",
        "resnet50_imagenet/bf16/eager: unexpected host sync in the trainer's step at gal/x.py:3",
        "resnet50_imagenet/bf16/eager: 3 host syncs in evaluation (1 allowed)",
        "c: not run: deadline",
    ]
    assert len(gpu_check.problems({**report, "mode": "cpu"})) == 4  # tiny CPU models say nothing of GPU throughput


def test_a_resumed_run_that_differs_fails_the_comparison():
    run = {"exit_code": 0, "metrics": [{"metrics": {"error": 10.0}, "best": {"metrics": {"error": 9.0}}}]}
    other = {"exit_code": 0, "metrics": [{"metrics": {"error": 10.5}, "best": {"metrics": {"error": 9.0}}}]}
    assert device_check.compare_runs(run, run)["resume_equal"] is True
    differs = device_check.compare_runs(run, other)
    assert differs["resume_equal"] is False and differs["max_abs_diff"] == 0.5
    assert device_check.compare_runs(run, {**other, "exit_code": 1})["status"].startswith("failed: a run did not")


def test_syncs_are_counted_by_site_and_only_inside_the_block():
    with counting_host_syncs(CPU) as sites:
        warnings.warn(SYNC_MESSAGE, stacklevel=1)  # as CUDA's sync debug mode warns, once per sync
        warnings.warn(SYNC_MESSAGE, stacklevel=1)
        warnings.warn("something else", stacklevel=1)
    assert sorted(sites.values()) == [1, 1]  # two lines, one sync each; the other warning is not a sync
    assert all(Path(site.rsplit(":", 1)[0]).name == "test_gpu_check.py" for site in sites)


def test_the_gal_step_check_wraps_only_this_adjusters_backward():
    adjuster, other = GradientAdjuster(4, arch=(8,)), GradientAdjuster(4, arch=(8,))
    with sync_errors_in_gal_step(adjuster):
        assert "backward" in vars(adjuster) and "backward" not in vars(other)
    assert "backward" not in vars(adjuster)
    assert device_check.gal_step_host_syncs(lambda batches: None, adjuster, [], CPU) == "not checked (needs CUDA)"


def test_a_sync_is_located_in_the_gal_package():
    with pytest.raises(ValueError) as error_info:
        Precision(CPU, "fp8")  # raised inside gal/precision.py, as a sync error would be inside gal/adjuster.py
    site = gal_frame(error_info.value)
    assert site.startswith("gal/precision.py:") and site.endswith(" in __init__")
    assert gal_frame(ValueError("never raised")) is None


def test_rounds_interleave_the_arms_and_stop_at_the_deadline_after_two():
    calls = []
    arms = {name: (lambda batches, name=name: calls.append(name)) for name in ("a", "b", "c")}
    seconds, peaks = time_rounds(arms, [], 3, CPU, deadline=time.time() + 60)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # the order rotates every round
    assert [len(s) for s in seconds.values()] == [3, 3, 3] and set(peaks.values()) == {None}
    seconds, _ = time_rounds(arms, [], 5, CPU, deadline=time.time() - 1)
    assert [len(s) for s in seconds.values()] == [2, 2, 2]
