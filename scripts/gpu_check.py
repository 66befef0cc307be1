"""One command that proves the CUDA path on one GPU: the shared trainer's step, GAL off and on, for every paper model.

For each case (model x precision x eager/compiled) the arms train one model on the same batches already on the
device: ``trainer_gal_off`` and ``trainer_gal_on`` call ``gal.train.train_one_epoch`` (the real step: autocast,
``GradientAdjuster.backward`` or ``loss.backward()``, gradient clipping where the row clips, optimizer step, step
logs kept on the device), and for the classification models ``minimal_loop`` is a hand-written loop with the same
optimizer, precision and memory format. After warm-up, whole epochs are timed with the arms interleaved in rounds
(their order rotating, as scripts/bench_throughput.py does) and medians kept. Then a few GAL steps run with
``torch.cuda.set_sync_debug_mode("error")`` around ``GradientAdjuster.backward`` to prove it never waits on the host.

Models and settings come from the paper rows' experiment files (configs/experiment/), GAL from ``gal=on`` plus the
row's preset: EfficientNet-B1 (CIFAR-100, Table II), EfficientNet-B2 and ResNet-50 (ImageNet, Table III) on random
images, and DETR-R50 (Table IV, random weights) on a synthetic COCO set at DETR's multi-scale training sizes.

    python scripts/gpu_check.py        # the default matrix (~8-9 min); writes results/bench/gpu_check.json
    python scripts/gpu_check.py --models resnet50_imagenet --precisions bf16 --compile both

Exit status 0 when every case ran, met its targets and found no host sync; 1 otherwise (the JSON is still written);
2 without a CUDA device (then nothing is written: the JSON only ever comes from a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gal.adjuster import GradientAdjuster
from gal.benchmarking import machine_record
from gal.optim import build_optimizer
from gal.precision import Precision
from gal.results import write_json
from gal.tasks.classification import create_model
from gal.tasks.coco_data import collate_detection, write_synthetic_coco
from gal.train import Trainee, build_adjuster, build_task, to_device

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
_spec = importlib.util.spec_from_file_location("bench_throughput", Path(__file__).with_name("bench_throughput.py"))
bench_throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_throughput)  # its arms, batches, timing and quartiles: one copy, in that script

PRECISIONS = ("off", "bf16", "fp16")  # gal.precision.Precision modes: fp32, bf16 autocast, fp16 autocast + GradScaler
COMPILE_CHOICES = ("default", "off", "on", "both")
TRAINER_VS_MINIMAL_MIN = 0.97  # trainer (GAL off) images/s >= 0.97 x the minimal loop's
PRECISION_COST = {"off": 2.0, "bf16": 1.0, "fp16": 1.0}  # rough step time relative to bf16, for estimates only
COMPILED_COST, COMPILE_S_GUESS = 0.85, 90.0  # torch.compile: a faster step after a compile of about this long
Batches = list[Any]
Arm = Callable[[Batches], None]


@dataclass(frozen=True)
class ModelSpec:
    """One paper model as this check runs it on one GPU.

    ``experiment`` is the paper row's configs/experiment file: model, classes, GAL preset, optimizer, clipping.
    ``image_size`` is the square input of a classification model; None marks DETR, whose sizes are DETR's
    multi-scale ones, drawn from synthetic COCO images of ``coco_image_size`` (height, width).
    ``step_s_guess`` is a rough bf16 step time on an H100/H200-class GPU and ``setup_s_guess`` the time to
    build the case and let cudnn.benchmark tune it: estimates only, replaced by measurements as cases finish.
    """

    experiment: str
    batch: int
    image_size: int | None
    gal_min_ratio: float  # GAL-on images/s >= this x GAL-off's
    step_s_guess: float
    setup_s_guess: float
    overrides: tuple[str, ...] = ()
    coco_image_size: tuple[int, int] = (480, 640)  # COCO 2017 images are at most 640 px wide (cocodataset.org)

    @property
    def detection(self) -> bool:
        return self.image_size is None


MODELS = {  # batch per GPU and image size: the row's task.global_batch_size / GPUs, and its task.image_size
    # 80: the global 320 (configs/task/cifar100.yaml) over 4 GPUs; 224 px, the authors' Resize(224)
    "effnet_b1_cifar": ModelSpec("table2_cifar100_sgd", 80, 224, 0.99, 0.05, 6.0),
    # 100: the global 800 over the authors' 8 GPUs; 260 px, their fork's efficientnet_b2 default_cfg
    "effnet_b2_imagenet": ModelSpec("table3_imagenet_effnet_b2", 100, 260, 0.99, 0.10, 6.0),
    "resnet50_imagenet": ModelSpec("table3_imagenet_resnet50", 100, 224, 0.99, 0.035, 5.0),
    # 2: DETR's global 16 over its 8 GPUs (configs/task/coco.yaml); random weights, nothing to download
    "detr_r50_coco": ModelSpec(
        "table4_coco_detr_r50", 2, None, 0.97, 0.08, 20.0, ("task.model.pretrained_backbone=false",)
    ),
}


@dataclass(frozen=True)
class Case:
    """One timed configuration: a model of MODELS at one precision, eager or under torch.compile."""

    model: str
    precision: str
    compiled: bool

    @property
    def name(self) -> str:
        return f"{self.model}/{self.precision}/{'compiled' if self.compiled else 'eager'}"


@dataclass(frozen=True)
class Settings:
    """How long each case runs: steps per timed epoch, timed rounds, warm-up and sync-checked steps."""

    steps: int = 8
    rounds: int = 5
    warmup: int = 2
    sync_steps: int = 2


def build_matrix(models: list[str], precisions: list[str], compile_choice: str) -> list[Case]:
    """The cases to run, eager ones first (model by model), then compiled ones.

    'default' is every model eager at every precision, plus torch.compile for each classification model in bf16;
    'off' / 'on' / 'both' apply to every classification model and precision. DETR runs eager only: its input
    size changes every step (multi-scale training), which would recompile the model, and DETR trains eager.
    """
    if compile_choice not in COMPILE_CHOICES:
        raise ValueError(f"--compile must be one of {COMPILE_CHOICES}, got {compile_choice!r}")
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        raise ValueError(f"unknown {unknown}: models are {list(MODELS)}, precisions {list(PRECISIONS)}")
    eager = [Case(m, p, False) for m in models for p in precisions] if compile_choice != "on" else []
    if compile_choice == "default":
        compiled_precisions = [p for p in precisions if p == "bf16"]
    else:
        compiled_precisions = list(precisions) if compile_choice in ("on", "both") else []
    compiled = [Case(m, p, True) for m in models if not MODELS[m].detection for p in compiled_precisions]
    cases = eager + compiled
    if not cases:
        raise ValueError("no cases to run: DETR runs eager only, so --compile on needs a classification model")
    return cases


def compose_row(spec: ModelSpec, extra: list[str] | None = None) -> DictConfig:
    """The trainer's config for the row: its experiment file with ``gal=on``, plus overrides."""
    overrides = [f"experiment={spec.experiment}", "gal=on", *spec.overrides, *(extra or [])]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def first_step_lrs(cfg: DictConfig) -> tuple[float, float | None]:
    """(model lr, h's lr) of the row's first steps, which is what this check runs.

    timm's warm-up starts every param group at ``warmup_lr`` (configs/scheduler/step.yaml: 1e-6 for the
    ImageNet rows); without warm-up the groups start at their configured lrs. The lr does not change a step's
    cost, and the recipe's first lr keeps a hundred steps on random data finite.
    """
    scheduler = cfg.scheduler
    if scheduler.get("warmup_epochs", 0) and scheduler.get("warmup_lr") is not None:
        return scheduler.warmup_lr, scheduler.warmup_lr
    return cfg.optimizer.lr, cfg.gal.lr


def make_optimizer(cfg: DictConfig, params: Any, adjuster: GradientAdjuster | None) -> torch.optim.Optimizer:
    """The row's optimizer (configs/optimizer/<name>.yaml) at its first-step lr, as gal.train builds it."""
    lr, gal_lr = first_step_lrs(cfg)
    kwargs = {**OmegaConf.to_container(cfg.optimizer), "lr": lr}
    return build_optimizer(params, adjuster, gal_lr=gal_lr, **kwargs)


@dataclass
class Setup:
    """What a case times: its arms, the batches they share, the GAL arm's adjuster, and facts for the record."""

    arms: dict[str, Arm]
    batches: Batches
    adjuster: GradientAdjuster
    warmup_batches: Batches
    record: dict[str, Any] = field(default_factory=dict)


def trainee_for(
    cfg: DictConfig, trained: nn.Module, params: Any, adjuster: GradientAdjuster | None, mode: str, channels_last: bool
) -> Trainee:
    """The step's objects as gal.train builds them (its own optimizer and Precision), without scheduler or EMA."""
    device = next(trained.parameters()).device
    return Trainee(
        trained,
        make_optimizer(cfg, params, adjuster),
        adjuster,
        precision=Precision(device, mode),
        channels_last=channels_last,
        clip_grad_norm=cfg.trainer.clip_grad_norm,
    )


def classification_setup(
    spec: ModelSpec, case: Case, device: torch.device, settings: Settings, extra: list[str] | None = None
) -> Setup:
    """Three arms on one timm model (weights and, compiled, one compile shared) and random images on the device.

    The arms share the model: its weights' values do not change a step's cost, and one torch.compile per case
    instead of three keeps the whole check under ten minutes. Each arm has its own optimizer and loss scaler.
    """
    cfg = compose_row(spec, extra)
    num_classes, channels_last = cfg.task.num_classes, cfg.trainer.channels_last and device.type == "cuda"
    torch.manual_seed(0)
    model_kwargs = {**OmegaConf.to_container(cfg.task.model), "pretrained": False}
    model = create_model(num_classes=num_classes, **model_kwargs).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    adjuster = build_adjuster(cfg.gal, num_classes).to(device)
    trained = torch.compile(model) if case.compiled else model
    task = bench_throughput.BenchTask(cfg.task.get("label_smoothing", 0.0))
    log_every = cfg.trainer.log_every
    gal_off = trainee_for(cfg, trained, model, None, case.precision, channels_last)
    gal_on = trainee_for(cfg, trained, model, adjuster, case.precision, channels_last)
    arms = {
        "trainer_gal_off": bench_throughput.trainer_arm(gal_off, task, log_every),
        "trainer_gal_on": bench_throughput.trainer_arm(gal_on, task, log_every),
        "minimal_loop": bench_throughput.minimal_arm(
            trained, Precision(device, case.precision), make_optimizer(cfg, model, None)
        ),
    }
    batches = bench_throughput.random_batches(
        settings.steps, spec.batch, device, channels_last, spec.image_size, num_classes
    )
    record = _row_record(cfg, model, channels_last) | {"image_size": spec.image_size, "num_classes": num_classes}
    return Setup(arms, batches, adjuster, (batches * settings.warmup)[: settings.warmup], record)


def detection_setup(
    spec: ModelSpec, case: Case, device: torch.device, settings: Settings, extra: list[str] | None = None
) -> Setup:
    """GAL off and on through DetectionTask's own features_and_loss, on batches made by its data set and collate.

    The synthetic COCO images go through DETR's training transforms (facebookresearch/detr datasets/coco.py:
    shorter side one of 480..800 in steps of 32, longer side at most 1333, or a random crop first), so each batch
    has its own size; the warm-up runs every batch once so cudnn.benchmark has tuned every size before timing.
    """
    with tempfile.TemporaryDirectory() as root:
        write_synthetic_coco(Path(root), spec.batch * settings.steps, spec.coco_image_size, split="train2017")
        write_synthetic_coco(Path(root), 1, spec.coco_image_size, split="val2017")  # the task builds both splits
        cfg = compose_row(spec, [f"task.root={root}", "task.num_workers=0", *(extra or [])])
        task = build_task(cfg.task)
        torch.manual_seed(0)  # the augmentations' draws, hence the batches' sizes
        samples = [task.train_set[i] for i in range(spec.batch * settings.steps)]
    channels_last = cfg.trainer.channels_last and device.type == "cuda"
    batches = [
        to_device(collate_detection(samples[i : i + spec.batch]), device, channels_last)
        for i in range(0, len(samples), spec.batch)
    ]
    torch.manual_seed(0)
    model = task.build_model().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    adjuster = build_adjuster(cfg.gal, task.feature_dim).to(device)
    gal_off = trainee_for(cfg, model, task.param_groups(model), None, case.precision, channels_last)
    gal_on = trainee_for(cfg, model, task.param_groups(model), adjuster, case.precision, channels_last)
    log_every = cfg.trainer.log_every
    arms = {
        "trainer_gal_off": bench_throughput.trainer_arm(gal_off, task, log_every),
        "trainer_gal_on": bench_throughput.trainer_arm(gal_on, task, log_every),
    }
    warmup = max(settings.warmup, len(batches))
    record = _row_record(cfg, model, channels_last) | {
        "batch_image_sizes": [list(images.shape[-2:]) for images, _, _ in batches],
        "clip_grad_norm": cfg.trainer.clip_grad_norm,
    }
    return Setup(arms, batches, adjuster, (batches * warmup)[:warmup], record)


def _row_record(cfg: DictConfig, model: nn.Module, channels_last: bool) -> dict[str, Any]:
    """The row's settings that shape the step, for the JSON."""
    lr, gal_lr = first_step_lrs(cfg)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "channels_last": channels_last,
        "gal": OmegaConf.to_container(cfg.gal),
        "optimizer": {**OmegaConf.to_container(cfg.optimizer), "lr": lr, "gal_lr": gal_lr},
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    """torch.cuda.max_memory_allocated since the last reset, in MiB (None on the CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def time_rounds(
    arms: dict[str, Arm], batches: Batches, rounds: int, device: torch.device, deadline: float
) -> tuple[dict[str, list[float]], dict[str, float | None]]:
    """Seconds per timed epoch of each arm, arms interleaved with their order rotating; and each arm's peak memory.

    Stops after any round past ``deadline`` once two rounds (the fewest that give quartiles) have run.
    """
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    peaks: dict[str, float | None] = {arm: None for arm in arms}
    order = list(arms)
    for r in range(rounds):
        if r >= 2 and time.monotonic() > deadline:
            break
        for arm in order[r % len(order) :] + order[: r % len(order)]:
            reset_peak_memory(device)
            seconds[arm].append(bench_throughput.epoch_seconds(arms[arm], batches, device))
            peak = peak_memory_mib(device)
            peaks[arm] = peak if peaks[arm] is None else max(peaks[arm], peak)
    return seconds, peaks


@contextlib.contextmanager
def sync_errors_in_gal_step(adjuster: GradientAdjuster) -> Iterator[None]:
    """Within the block, every ``adjuster.backward`` call (as train_one_epoch makes it) runs under
    ``torch.cuda.set_sync_debug_mode("error")``: a host sync inside it raises. The rest of the step is not checked."""
    plain = adjuster.backward

    def checked(*args: Any, **kwargs: Any) -> Any:
        torch.cuda.set_sync_debug_mode("error")
        try:
            return plain(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    adjuster.backward = checked  # an attribute of this instance only; the class keeps its method
    try:
        yield
    finally:
        del adjuster.backward


def gal_step_host_syncs(gal_arm: Arm, adjuster: GradientAdjuster, batches: Batches, device: torch.device) -> str:
    """'none' when GradientAdjuster.backward made no host sync on ``batches``, else the error it raised.

    As tests/test_adjuster.py::test_backward_makes_no_host_device_sync_on_cuda, after warm-up (lazy CUDA
    initialisation may sync once). Only the GAL step is checked: DETR's Hungarian matching reads its costs
    back on purpose, in features_and_loss, before it.
    """
    if device.type != "cuda":
        return "not checked (needs CUDA)"
    try:
        with sync_errors_in_gal_step(adjuster):
            gal_arm(batches)
    except RuntimeError as error:
        if "synchroniz" not in str(error):  # "called a synchronizing CUDA operation" (c10/cuda/CUDAFunctions.cpp)
            raise
        message = str(error).strip().splitlines()[0]  # the rest is the C++ stack
        site = gal_frame(error)
        return f"{type(error).__name__}: {message}" + (f", at {site}" if site else "")
    finally:
        torch.cuda.synchronize(device)
    return "none"


def gal_frame(error: BaseException) -> str | None:
    """The innermost frame of this project's code (the ``gal`` package) in the error's traceback, as
    'gal/<module>.py:<line> in <function>': where the host sync was asked for, or the backward call that hit it."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        parts = Path(frame.filename).parts
        if "gal" in parts:
            package = len(parts) - 1 - parts[::-1].index("gal")
            return f"{'/'.join(parts[package:])}:{frame.lineno} in {frame.name}"
    return None


def evaluate_targets(medians: dict[str, float], gal_min_ratio: float) -> dict[str, dict[str, Any]]:
    """Each throughput ratio with its target and whether it is met (images/s medians of the arms)."""
    ratios = {"gal_on_vs_off": (medians["trainer_gal_on"] / medians["trainer_gal_off"], gal_min_ratio)}
    if "minimal_loop" in medians:
        ratios["trainer_vs_minimal"] = (medians["trainer_gal_off"] / medians["minimal_loop"], TRAINER_VS_MINIMAL_MIN)
    return {
        name: {"value": value, "target_min": target, "met": value >= target} for name, (value, target) in ratios.items()
    }


def case_steps(spec: ModelSpec, settings: Settings) -> int:
    """Training steps a case runs: warm-up and timed epochs of every arm, plus the sync-checked GAL steps."""
    arms = 2 if spec.detection else 3
    warmup = max(settings.warmup, settings.steps) if spec.detection else settings.warmup
    return arms * (warmup + settings.rounds * settings.steps) + settings.sync_steps


def run_case(
    case: Case,
    spec: ModelSpec,
    device: torch.device,
    settings: Settings,
    deadline: float,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """Build, warm up, time and sync-check one case; returns its record (status 'ok' or 'truncated: ...')."""
    started = time.monotonic()
    reset_peak_memory(device)
    build = detection_setup if spec.detection else classification_setup
    setup = build(spec, case, device, settings, extra)
    for run in setup.arms.values():
        run(setup.warmup_batches)
    seconds, peaks = time_rounds(setup.arms, setup.batches, settings.rounds, device, deadline)
    images = spec.batch * len(setup.batches)
    throughput = {arm: bench_throughput.quartiles([images / s for s in times]) for arm, times in seconds.items()}
    medians = {arm: q["median"] for arm, q in throughput.items()}
    syncs = gal_step_host_syncs(
        setup.arms["trainer_gal_on"], setup.adjuster, setup.batches[: settings.sync_steps], device
    )
    rounds_run = len(seconds["trainer_gal_off"])
    return {
        "case": case.name,
        "model": case.model,
        "experiment": spec.experiment,
        "precision": case.precision,
        "compiled": case.compiled,
        "batch": spec.batch,
        **setup.record,
        "steps_per_round": len(setup.batches),
        "rounds": rounds_run,
        "warmup_steps": len(setup.warmup_batches),
        "images_per_s": throughput,
        "step_ms": {arm: 1000 * spec.batch / median for arm, median in medians.items()},
        "gal_step_time_ratio": medians["trainer_gal_off"] / medians["trainer_gal_on"],  # on / off step time
        "peak_memory_mib": peaks,
        "targets": evaluate_targets(medians, spec.gal_min_ratio),
        "gal_step_host_syncs": syncs,
        "sync_checked_steps": len(setup.batches[: settings.sync_steps]),
        "seconds": time.monotonic() - started,
        "status": "ok" if rounds_run == settings.rounds else f"truncated: budget ran out after {rounds_run} rounds",
    }


def estimate_seconds(case: Case, settings: Settings, per_step: dict[str, float]) -> float:
    """Rough wall time of a case: its steps times a bf16 step time (measured for the model once an eager case
    of it has run, else the spec's guess) scaled by precision, plus set-up or compilation."""
    spec = MODELS[case.model]
    step_s = per_step.get(case.model, spec.step_s_guess) * PRECISION_COST[case.precision]
    if case.compiled:
        return case_steps(spec, settings) * step_s * COMPILED_COST + COMPILE_S_GUESS
    return case_steps(spec, settings) * step_s + spec.setup_s_guess


def learn_step_time(case: Case, record: dict[str, Any], settings: Settings, per_step: dict[str, float]) -> None:
    """Update the model's bf16-equivalent seconds per step from a finished eager case (set-up included)."""
    if record.get("status") == "ok" and not case.compiled:
        steps = case_steps(MODELS[case.model], settings)
        per_step[case.model] = record["seconds"] / steps / PRECISION_COST[case.precision]


def summarize(cases: list[dict[str, Any]], planned: int) -> dict[str, Any]:
    """Whether every planned case ran, met its targets and found no host sync in the GAL step."""
    ran = [c for c in cases if c.get("status") == "ok"]
    missed = [f"{c['case']}: {name}" for c in ran for name, t in c["targets"].items() if not t["met"]]
    syncs = [c["case"] for c in ran if c["gal_step_host_syncs"] != "none"]
    not_ok = [f"{c['case']}: {c.get('status')}" for c in cases if c.get("status") != "ok"]
    problems = not_ok + [f"{m} below target" for m in missed] + [f"host sync in {c}" for c in syncs]
    return {
        "planned": planned,
        "ran": len(ran),
        "not_ok": not_ok,
        "targets_missed": missed,
        "host_syncs_in": syncs,
        "problems": problems,
        "passed": len(ran) == planned and not problems,
    }


def format_table(cases: list[dict[str, Any]]) -> str:
    """A compact table: images/s medians, the two ratios (with '!' where a target is missed), peak memory, syncs."""
    columns = f"{'off img/s':>10}{'on img/s':>10}{'min img/s':>10}{'on/off':>9}{'off/min':>9}{'peak GiB':>9}"
    lines = [f"{'case':<34}{columns}  syncs"]
    for c in cases:
        if "images_per_s" not in c:
            lines.append(f"{c['case']:<34}{c.get('status', '')}")
            continue
        ips, targets = c["images_per_s"], c["targets"]
        cells = [
            f"{ips[arm]['median']:>10.1f}" if arm in ips else f"{'-':>10}"
            for arm in ("trainer_gal_off", "trainer_gal_on", "minimal_loop")
        ]
        for name in ("gal_on_vs_off", "trainer_vs_minimal"):
            t = targets.get(name)
            cells.append(f"{t['value']:>8.3f}{' ' if t['met'] else '!'}" if t else f"{'-':>9}")
        peaks = [p for p in c["peak_memory_mib"].values() if p is not None]
        cells.append(f"{max(peaks) / 1024:>9.1f}" if peaks else f"{'-':>9}")
        sync = c["gal_step_host_syncs"].rpartition(", at ")[2]  # where a sync was found, or the whole verdict
        lines.append(f"{c['case']:<34}{''.join(cells)}  {sync}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), metavar="MODEL",
        help=f"any of {', '.join(MODELS)} (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=list(PRECISIONS),
        help="off = fp32; bf16 = bf16 autocast; fp16 = fp16 autocast + GradScaler",
    )
    parser.add_argument(
        "--compile",
        choices=COMPILE_CHOICES,
        default="default",
        help="default: eager everywhere + compiled bf16 for each classification model",
    )
    parser.add_argument("--steps", type=int, default=Settings.steps, help="steps per timed epoch (DETR: batches)")
    parser.add_argument("--rounds", type=int, default=Settings.rounds, help="timed epochs per arm (at least 2)")
    parser.add_argument("--warmup", type=int, default=Settings.warmup, help="untimed steps per arm (DETR: >= steps)")
    parser.add_argument("--sync-steps", type=int, default=Settings.sync_steps, help="GAL steps under sync checks")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop before a case that would end later")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "gpu_check.json", help="the report")
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.steps < 1 or args.warmup < 0 or args.sync_steps < 1:
        parser.error("need --rounds >= 2 (quartiles), --steps >= 1, --warmup >= 0, --sync-steps >= 1")
    try:
        args.matrix = build_matrix(args.models, args.precisions, args.compile)
    except ValueError as error:
        parser.error(str(error))
    args.settings = Settings(args.steps, args.rounds, args.warmup, args.sync_steps)
    return args


def release(device: torch.device) -> None:
    """Free what the last case left: compiled graphs, cached blocks."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def report_header(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """The GPU, the software stack and the settings, for the JSON."""
    return {
        **machine_record(device),
        "gpu": torch.cuda.get_device_name(device),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "settings": {**vars(args.settings), "compile": args.compile, "budget_s": args.budget_s},
        "matrix": [case.name for case in args.matrix],
    }


def run_guarded(case: Case, device: torch.device, settings: Settings, deadline: float) -> dict[str, Any]:
    """run_case; an exception (an OOM, a failed compile) is recorded as this case's result, not the end of the check."""
    started = time.monotonic()
    try:
        record = run_case(case, MODELS[case.model], device, settings, deadline)
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        record = {"case": case.name, "status": f"error: {type(error).__name__}: {first_line}"}
        record["seconds"] = time.monotonic() - started
    release(device)
    return record


def run_matrix(args: argparse.Namespace, device: torch.device, header: dict[str, Any], started: float) -> list[dict]:
    """Every case in turn, the JSON rewritten after each; a case that would end past the budget stops the run."""
    per_step: dict[str, float] = {}
    records: list[dict[str, Any]] = []
    for i, case in enumerate(args.matrix):
        progress = f"[{i + 1}/{len(args.matrix)}] {case.name}"
        estimate = estimate_seconds(case, args.settings, per_step)
        left = sum(estimate_seconds(c, args.settings, per_step) for c in args.matrix[i:])
        elapsed = time.monotonic() - started
        if elapsed + estimate > args.budget_s:
            print(f"{progress}: needs ~{estimate:.0f} s, {elapsed:.0f} s of {args.budget_s:.0f} s spent; stopping")
            records += [{"case": c.name, "status": "not run: budget"} for c in args.matrix[i:]]
            break
        print(f"{progress}: ~{estimate:.0f} s (elapsed {elapsed:.0f} s, ~{left:.0f} s left)", flush=True)
        record = run_guarded(case, device, args.settings, started + args.budget_s)
        learn_step_time(case, record, args.settings, per_step)
        records.append(record)
        print(f"{progress}: {record['status']} in {record['seconds']:.0f} s", flush=True)
        write_json({**header, "cases": records, "complete": False}, args.out)
    return records


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device is visible; this check must run on a machine with a GPU (nothing written)",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True  # as gal.train builds a CUDA run
    steps = sum(case_steps(MODELS[c.model], args.settings) for c in args.matrix)
    estimate = sum(estimate_seconds(c, args.settings, {}) for c in args.matrix)
    print(
        f"{torch.cuda.get_device_name(device)}: {len(args.matrix)} cases, {steps} training steps, "
        f"~{estimate / 60:.1f} min estimated (budget {args.budget_s:.0f} s)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = report_header(device, args)
    records = run_matrix(args, device, header, started)
    summary = summarize(records, len(args.matrix))
    write_json({**header, "cases": records, "complete": True, "summary": summary}, args.out)
    print(format_table(records))
    verdict = "PASSED" if summary["passed"] else "FAILED: " + "; ".join(summary["problems"])
    print(f"gpu_check {verdict} in {time.monotonic() - started:.0f} s; wrote {args.out}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
