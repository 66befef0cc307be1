"""scripts/gpu_check.py without a GPU: the no-CUDA exit, the case matrix and flags, targets and summary, and one
case of each kind (classification, DETR) timed end to end on the CPU with tiny models (no JSON is written)."""

import dataclasses
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gal.adjuster import GradientAdjuster
from gal.precision import Precision

from .synthetic_images import TINY_DETR

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up while the class is built
spec.loader.exec_module(gpu_check)

CPU = torch.device("cpu")
TINY = gpu_check.Settings(steps=2, rounds=2, warmup=1, sync_steps=1)
ARMS = ["trainer_gal_off", "trainer_gal_on", "minimal_loop"]


def test_without_cuda_it_exits_2_says_so_and_writes_nothing(tmp_path):
    out = tmp_path / "bench" / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device is visible; this check must run on a machine with a GPU (nothing written)"
    ]
    assert not out.parent.exists()  # not even the folder: the JSON only ever comes from a GPU run


def test_default_matrix_is_every_model_eager_then_compiled_bf16_classification():
    args = gpu_check.parse_args([])
    names = [case.name for case in args.matrix]
    eager = [f"{m}/{p}/eager" for m in gpu_check.MODELS for p in ("off", "bf16", "fp16")]
    compiled = [f"{m}/bf16/compiled" for m in ("effnet_b1_cifar", "effnet_b2_imagenet", "resnet50_imagenet")]
    assert names == eager + compiled
    assert args.settings == gpu_check.Settings(steps=8, rounds=5, warmup=2, sync_steps=2)
    assert args.budget_s == 540 and args.out.name == "gpu_check.json" and args.out.parent.name == "bench"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--models", "resnet50_imagenet", "--precisions", "bf16", "--compile", "both"],
            ["resnet50_imagenet/bf16/eager", "resnet50_imagenet/bf16/compiled"],
        ),
        (
            ["--models", "detr_r50_coco", "effnet_b1_cifar", "--precisions", "fp16", "--compile", "off"],
            ["detr_r50_coco/fp16/eager", "effnet_b1_cifar/fp16/eager"],
        ),
        (  # DETR runs eager only, so 'on' leaves it out
            ["--models", "effnet_b2_imagenet", "detr_r50_coco", "--precisions", "off", "bf16", "--compile", "on"],
            ["effnet_b2_imagenet/off/compiled", "effnet_b2_imagenet/bf16/compiled"],
        ),
        (["--models", "detr_r50_coco", "--precisions", "off"], ["detr_r50_coco/off/eager"]),  # no bf16: no compile
    ],
)
def test_flags_select_the_cases(argv, expected):
    assert [case.name for case in gpu_check.parse_args(argv).matrix] == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--rounds", "1"],  # quartiles need two rounds
        ["--sync-steps", "0"],
        ["--models", "detr_r50_coco", "--compile", "on"],  # nothing left to run
        ["--precisions", "fp8"],
        ["--models", "vit_b16"],
    ],
)
def test_bad_flags_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(argv)
    assert exit_info.value.code == 2 and "error" in capsys.readouterr().err


def test_each_model_is_its_paper_row_with_gal_on():
    rows = {name: gpu_check.compose_row(spec) for name, spec in gpu_check.MODELS.items()}
    expected = {  # (model, classes, GAL arch, optimizer, first-step lrs of the model and of h)
        "effnet_b1_cifar": ("tf_efficientnet_b1.aa_in1k", 100, [256, 64, 32], "sgd", (0.05, None)),
        "effnet_b2_imagenet": ("efficientnet_b2", 1000, [512, 256], "rmsproptf", (1e-6, 1e-6)),  # timm warm-up lr
        "resnet50_imagenet": ("resnet50", 1000, [512, 128], "rmsproptf", (1e-6, 1e-6)),
        "detr_r50_coco": ("resnet50", 91, [64, 16], "adamw", (1e-4, None)),
    }
    for name, (model, classes, arch, optimizer, lrs) in expected.items():
        cfg = rows[name]
        assert (cfg.task.model.get("name") or cfg.task.model.backbone) == model
        assert (cfg.task.num_classes, list(cfg.gal.arch), cfg.optimizer.name) == (classes, arch, optimizer)
        assert cfg.gal.enabled and gpu_check.first_step_lrs(cfg) == lrs
    assert rows["detr_r50_coco"].trainer.clip_grad_norm == 0.1
    assert rows["detr_r50_coco"].task.model.pretrained_backbone is False
    sizes = {name: (spec.batch, spec.image_size) for name, spec in gpu_check.MODELS.items()}
    assert sizes == {
        "effnet_b1_cifar": (80, 224),
        "effnet_b2_imagenet": (100, 260),
        "resnet50_imagenet": (100, 224),
        "detr_r50_coco": (2, None),
    }
    gpus = {"effnet_b1_cifar": 4, "effnet_b2_imagenet": 8, "resnet50_imagenet": 8, "detr_r50_coco": 8}
    for name, spec in gpu_check.MODELS.items():  # one GPU's share of the row's recipe, at the row's size
        assert spec.batch * gpus[name] == rows[name].task.global_batch_size, name
        assert spec.image_size == rows[name].task.get("image_size"), name


def test_targets_summary_and_table():
    targets = gpu_check.evaluate_targets(
        {"trainer_gal_off": 100.0, "trainer_gal_on": 99.5, "minimal_loop": 102.0}, 0.99
    )
    assert targets["gal_on_vs_off"] == {"value": pytest.approx(0.995), "target_min": 0.99, "met": True}
    assert targets["trainer_vs_minimal"] == {"value": pytest.approx(100 / 102), "target_min": 0.97, "met": True}
    detr = gpu_check.evaluate_targets({"trainer_gal_off": 10.0, "trainer_gal_on": 9.6}, 0.97)
    assert list(detr) == ["gal_on_vs_off"] and detr["gal_on_vs_off"]["met"] is False  # 0.96 < 0.97

    def record(name, targets, syncs="none"):
        ips = {arm: {"median": 10.0, "p25": 9.0, "p75": 11.0} for arm in ARMS[: len(targets) + 1]}
        peaks = dict.fromkeys(ips, 2048.0)
        return {"case": name, "status": "ok", "images_per_s": ips, "targets": targets, "peak_memory_mib": peaks,
                "gal_step_host_syncs": syncs}  # fmt: skip

    good = record("resnet50_imagenet/bf16/eager", targets)
    assert gpu_check.summarize([good], planned=1)["passed"] is True
    slow = record("detr_r50_coco/bf16/eager", detr)
    sync = "RuntimeError: called a synchronizing CUDA operation, at gal/adjuster.py:262 in _backpropagate"
    synced = record("effnet_b1_cifar/fp16/eager", targets, sync)
    skipped = {"case": "resnet50_imagenet/bf16/compiled", "status": "not run: budget"}
    summary = gpu_check.summarize([good, slow, synced, skipped], planned=4)
    assert summary == {
        "planned": 4,
        "ran": 3,
        "not_ok": ["resnet50_imagenet/bf16/compiled: not run: budget"],
        "targets_missed": ["detr_r50_coco/bf16/eager: gal_on_vs_off"],
        "host_syncs_in": ["effnet_b1_cifar/fp16/eager"],
        "problems": [
            "resnet50_imagenet/bf16/compiled: not run: budget",
            "detr_r50_coco/bf16/eager: gal_on_vs_off below target",
            "host sync in effnet_b1_cifar/fp16/eager",
        ],
        "passed": False,
    }
    rows = [line.split() for line in gpu_check.format_table([good, slow, synced, skipped]).splitlines()]
    assert rows[0][0] == "case" and rows[0][-1] == "syncs"
    assert rows[1] == ["resnet50_imagenet/bf16/eager", "10.0", "10.0", "10.0", "0.995", "0.980", "2.0", "none"]
    assert rows[2] == ["detr_r50_coco/bf16/eager", "10.0", "10.0", "-", "0.960!", "-", "2.0", "none"]  # ! = missed
    assert rows[3][-3:] == ["gal/adjuster.py:262", "in", "_backpropagate"]
    assert rows[4] == ["resnet50_imagenet/bf16/compiled", "not", "run:", "budget"]


def test_rounds_interleave_the_arms_and_stop_at_the_deadline_after_two():
    calls = []
    arms = {name: (lambda batches, name=name: calls.append(name)) for name in ("a", "b", "c")}
    seconds, peaks = gpu_check.time_rounds(arms, [], 3, CPU, deadline=time.monotonic() + 60)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # the order rotates every round
    assert [len(s) for s in seconds.values()] == [3, 3, 3] and set(peaks.values()) == {None}
    seconds, _ = gpu_check.time_rounds(arms, [], 5, CPU, deadline=time.monotonic() - 1)
    assert [len(s) for s in seconds.values()] == [2, 2, 2]


def test_a_spent_budget_stops_before_the_next_case_and_records_the_rest(tmp_path, capsys):
    args = gpu_check.parse_args(["--models", "resnet50_imagenet", "--budget-s", "0", "--out", str(tmp_path / "r.json")])
    records = gpu_check.run_matrix(args, CPU, header={}, started=time.monotonic())
    assert records == [
        {"case": name, "status": "not run: budget"}
        for name in ("resnet50_imagenet/off/eager", "resnet50_imagenet/bf16/eager", "resnet50_imagenet/fp16/eager",
                     "resnet50_imagenet/bf16/compiled")
    ]  # fmt: skip
    assert "stopping" in capsys.readouterr().out and not args.out.exists()
    assert gpu_check.summarize(records, planned=4)["passed"] is False


def test_estimates_use_guesses_then_measurements():
    settings, per_step = gpu_check.Settings(), {}
    resnet, detr = gpu_check.MODELS["resnet50_imagenet"], gpu_check.MODELS["detr_r50_coco"]
    steps = gpu_check.case_steps(resnet, settings)
    assert steps == 3 * (2 + 5 * 8) + 2  # three arms: warm-up and five timed epochs of 8 steps; two sync-checked
    assert gpu_check.case_steps(detr, settings) == 2 * (8 + 5 * 8) + 2  # DETR warms up on each of its 8 batches
    eager = gpu_check.Case("resnet50_imagenet", "bf16", False)
    compiled = gpu_check.Case("resnet50_imagenet", "bf16", True)
    assert gpu_check.estimate_seconds(compiled, settings, {}) > gpu_check.estimate_seconds(eager, settings, {})
    fp32 = gpu_check.Case("resnet50_imagenet", "off", False)
    gpu_check.learn_step_time(fp32, {"status": "ok", "seconds": steps * 0.5}, settings, per_step)
    assert per_step == {"resnet50_imagenet": 0.25}  # fp32 counts as twice a bf16 step
    assert gpu_check.estimate_seconds(eager, settings, per_step) == pytest.approx(steps * 0.25 + resnet.setup_s_guess)


def test_sync_check_wraps_only_this_adjusters_backward():
    adjuster, other = GradientAdjuster(4, arch=(8,)), GradientAdjuster(4, arch=(8,))
    with gpu_check.sync_errors_in_gal_step(adjuster):
        assert "backward" in vars(adjuster) and "backward" not in vars(other)
    assert "backward" not in vars(adjuster)  # the class's method again
    assert gpu_check.gal_step_host_syncs(lambda batches: None, adjuster, [], CPU) == "not checked (needs CUDA)"


def test_a_sync_is_located_in_the_gal_package():
    with pytest.raises(ValueError) as error_info:
        Precision(CPU, "fp8")  # raised inside gal/precision.py, as a sync error would be inside gal/adjuster.py
    site = gpu_check.gal_frame(error_info.value)
    assert site.startswith("gal/precision.py:") and site.endswith(" in __init__")
    assert gpu_check.gal_frame(ValueError("never raised")) is None


@pytest.mark.parametrize(
    ("precision", "model"),
    [
        ("off", ["task.model.name=test_efficientnet"]),  # a real timm EfficientNet, at 32 px
        # fp16 autocast + GradScaler in both loops; CPU fp16 kernels are slow, so the repo's small CNN, at 8 px
        (
            "fp16",
            [
                "task.model.name=digits_cnn",
                "+task.model.in_chans=3",
                "+task.model.image_size=8",
                "~task.model.drop_rate",
                "~task.model.drop_path_rate",
            ],
        ),  # fmt: skip
    ],
)
def test_a_classification_case_runs_end_to_end_on_the_cpu(precision, model):
    size = 8 if precision == "fp16" else 32
    spec = dataclasses.replace(gpu_check.MODELS["effnet_b1_cifar"], batch=4, image_size=size, overrides=tuple(model))
    case = gpu_check.Case("effnet_b1_cifar", precision, False)
    record = gpu_check.run_case(case, spec, CPU, TINY, deadline=time.monotonic() + 600)
    assert record["status"] == "ok" and record["case"] == f"effnet_b1_cifar/{precision}/eager"
    assert (record["rounds"], record["steps_per_round"], record["warmup_steps"]) == (2, 2, 1)
    assert list(record["images_per_s"]) == ARMS and all(q["median"] > 0 for q in record["images_per_s"].values())
    assert set(record["targets"]) == {"gal_on_vs_off", "trainer_vs_minimal"}
    assert record["gal_step_time_ratio"] == pytest.approx(1 / record["targets"]["gal_on_vs_off"]["value"])
    assert record["gal"]["arch"] == [256, 64, 32] and record["num_classes"] == 100 and not record["channels_last"]
    assert record["gal_step_host_syncs"] == "not checked (needs CUDA)" and set(record["peak_memory_mib"].values()) == {
        None
    }


def test_a_detr_case_runs_end_to_end_on_the_cpu():
    tiny = (*TINY_DETR, "task.scales=[32]", "task.max_size=48")  # 32 x 40 px: a ResNet-18 feature map of 1 x 2
    spec = dataclasses.replace(gpu_check.MODELS["detr_r50_coco"], coco_image_size=(32, 40), overrides=tiny)
    settings = gpu_check.Settings(steps=1, rounds=2, warmup=0, sync_steps=1)
    record = gpu_check.run_case(
        gpu_check.Case("detr_r50_coco", "off", False), spec, CPU, settings, time.monotonic() + 600
    )
    assert record["status"] == "ok" and list(record["images_per_s"]) == ARMS[:2]
    assert list(record["targets"]) == ["gal_on_vs_off"] and record["targets"]["gal_on_vs_off"]["target_min"] == 0.97
    assert record["warmup_steps"] == 1 and record["batch_image_sizes"] == [[32, 40]]  # warm-up: every batch once
    assert record["gal"]["arch"] == [64, 16] and record["clip_grad_norm"] == 0.1
