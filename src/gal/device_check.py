"""The cases of scripts/gpu_check.py, run phase by phase in a worker process that the script kills at the phase's
deadline: ``python -m gal.device_check --phase a --events FILE --deadline T [--cpu]``.

- Phase a, every paper model in bf16, eager (:func:`run_case`): the shared trainer's step with GAL off and on (and,
  for the classifiers, a minimal hand-written loop) on the same batches already on the device, timed with the arms
  interleaved; host syncs counted over whole trainer steps and over evaluation, and ``GradientAdjuster.backward``
  run under ``torch.cuda.set_sync_debug_mode("error")``.
- Phase b, the real trainer end to end (:func:`trainer_items`): ``python -m gal`` on synthetic data sets in their
  real on-disk formats, for the CIFAR-100 row (fp32) and the ImageNet ResNet-50 row (fp16 + GradScaler, EMA, timm's
  PrefetchLoader) killed (SIGKILL) after the first checkpoint and resumed, the resumed metrics compared with an
  uninterrupted run's; DETR-R50 with COCO evaluation (pycocotools); the CIFAR rows' Lookahead and AdaBound.
- Phase c, the other precisions and torch.compile: fp32 and fp16 eager for every model, then bf16 compiled.

With ``--cpu`` the same phases run the same code on tiny models and data on the CPU (what ``make test`` runs).
The worker appends one JSON line per event to ``--events``: ``{"planned": [names]}`` first, then
``{"start": name}`` and ``{"record": {...}}`` for each item, so the parent knows which item a kill interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gal.adjuster import GradientAdjuster
from gal.benchmarking import (
    Arm,
    Batches,
    BenchTask,
    counting_host_syncs,
    gal_frame,
    minimal_arm,
    quartiles,
    random_batches,
    reset_peak_memory,
    sync_errors_in_gal_step,
    time_rounds,
    trainer_arm,
)
from gal.checkpoint import load_checkpoint
from gal.optim import build_optimizer
from gal.precision import Precision
from gal.synthetic_data import TINY_DETR, write_cifar, write_image_folder
from gal.tasks.coco_data import collate_detection, write_synthetic_coco
from gal.train import build_task
from gal.trainee import Trainee, build_adjuster, configure_backends, to_device

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
PHASES = ("a", "b", "c")
TRAINER_VS_MINIMAL_MIN = 0.97  # trainer (GAL off) images/s >= 0.97 x the minimal loop's
# Host syncs a trainer step may make, by where they are asked for; any other site is reported as unexpected.
EXPECTED_SYNCS = {
    "gal/runlog.py": "the step logs' read, every log_every steps and at an epoch's end",
    "torch/amp/grad_scaler.py": "GradScaler's inf check before the optimizer step (fp16 only), PyTorch's own",
    "gal/models/detr/matcher.py": "DETR's Hungarian matching, solved on the host (scipy): one copy per step",
}
EVAL_SYNCS_ALLOWED = 1  # classification evaluation: the final read of the summed metrics, none per batch


@dataclass(frozen=True)
class ModelSpec:
    """One paper model as the check runs it on one device.

    ``experiment`` is the paper row's configs/experiment file (model, classes, GAL preset, optimizer, clipping).
    ``image_size`` is the square input of a classification model; None marks DETR, whose sizes are DETR's
    multi-scale ones, drawn from synthetic COCO images of ``coco_image_size`` (height, width).
    """

    experiment: str
    batch: int
    image_size: int | None
    gal_min_ratio: float  # GAL-on images/s >= this x GAL-off's
    overrides: tuple[str, ...] = ()
    coco_image_size: tuple[int, int] = (480, 640)  # COCO 2017 images are at most 640 px wide (cocodataset.org)

    @property
    def detection(self) -> bool:
        return self.image_size is None


RANDOM_DETR = ("task.model.pretrained_backbone=false",)  # random weights: nothing to download
# batch per GPU and image size: the row's task.global_batch_size / GPUs, and its task.image_size
GPU_MODELS = {
    # 80: the global 320 (configs/task/cifar100.yaml) over 4 GPUs; 224 px, the authors' Resize(224)
    "effnet_b1_cifar": ModelSpec("table2_cifar100_sgd", 80, 224, 0.99),
    # 100: the global 800 over the authors' 8 GPUs; 260 px, their fork's efficientnet_b2 default_cfg
    "effnet_b2_imagenet": ModelSpec("table3_imagenet_effnet_b2", 100, 260, 0.99),
    "resnet50_imagenet": ModelSpec("table3_imagenet_resnet50", 100, 224, 0.99),
    # 2: DETR's global 16 over its 8 GPUs (configs/task/coco.yaml)
    "detr_r50_coco": ModelSpec("table4_coco_detr_r50", 2, None, 0.97, RANDOM_DETR),
    "detr_r101_coco": ModelSpec("table4_coco_detr_r101", 2, None, 0.97, RANDOM_DETR),
}
# the repo's small CNN (registered with timm) at 8 px: CPU bf16/fp16 kernels are slow, and the lines run are the same
TINY_CNN = ("task.model.name=digits_cnn", "+task.model.in_chans=3", "+task.model.image_size=8",
            "~task.model.drop_rate", "~task.model.drop_path_rate")  # fmt: skip
TINY_DETR_STEP = (*TINY_DETR, "task.scales=[32]", "task.max_size=48")  # 32 x 40 px: a 1 x 2 feature map
CPU_MODELS = {  # the same rows with a small CNN at 8 px and a tiny DETR at 32 x 40 px
    name: dataclasses.replace(
        spec,
        batch=4 if not spec.detection else 1,
        image_size=None if spec.detection else 8,
        overrides=TINY_DETR_STEP if spec.detection else TINY_CNN,
        coco_image_size=(32, 40),
    )
    for name, spec in GPU_MODELS.items()
}


@dataclass(frozen=True)
class Settings:
    """How long each case runs: steps per timed epoch, timed rounds, warm-up and sync-checked steps."""

    steps: int = 8
    rounds: int = 5
    warmup: int = 2
    sync_steps: int = 2


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the CUDA check and its CPU rehearsal."""

    device: torch.device
    models: dict[str, ModelSpec]
    settings: Settings
    compile_backend: str  # torch.compile's: inductor on the GPU; on the CPU the same tracing without codegen
    compiled_models: tuple[str, ...]
    other_precision_models: tuple[str, ...] | None = None  # phase c's fp32/fp16 cases (None: every model)
    trainer_scale: dict[str, int] = field(default_factory=dict)  # sizes of phase b's runs
    trainer_overrides: tuple[str, ...] = ()  # phase b, every run
    classifier_overrides: tuple[str, ...] = ()  # phase b, the classification runs
    workers: int = 4  # DataLoader worker processes in phase b


def profile(cpu: bool) -> Profile:
    if not cpu:
        return Profile(
            device=torch.device("cuda"),
            models=GPU_MODELS,
            settings=Settings(),
            compile_backend="inductor",
            compiled_models=("effnet_b1_cifar", "effnet_b2_imagenet", "resnet50_imagenet"),
            # 64 images a step, 8 steps an epoch, 3 epochs: a few dozen steps, each epoch a second or two
            trainer_scale={
                "batch": 64,
                "train_batches": 8,
                "eval_images": 160,
                "coco_images": 16,
                "epochs": 3,
                "classes": 10,
            },  # fmt: skip
            trainer_overrides=("trainer.device=cuda",),
        )
    return Profile(
        device=torch.device("cpu"),
        models=CPU_MODELS,
        settings=Settings(steps=2, rounds=2, warmup=1, sync_steps=1),
        compile_backend="eager",  # dynamo's tracing and graph breaks, without a C++ compile per model
        compiled_models=("effnet_b1_cifar",),
        other_precision_models=("effnet_b1_cifar", "detr_r50_coco"),  # one of each kind: the rows share their lines
        trainer_scale={"batch": 4, "train_batches": 3, "eval_images": 8, "coco_images": 2, "epochs": 3, "classes": 3},
        trainer_overrides=("trainer.device=cpu",),
        classifier_overrides=("task.image_size=8", *TINY_CNN),
        workers=0,
    )


@dataclass(frozen=True)
class Case:
    """One timed configuration: a model at one precision, eager or under torch.compile."""

    model: str
    precision: str  # gal.precision.Precision's modes: off (fp32), bf16, fp16 (with a GradScaler)
    compiled: bool

    @property
    def name(self) -> str:
        return f"{self.model}/{self.precision}/{'compiled' if self.compiled else 'eager'}"


def phase_cases(phase: str, prof: Profile) -> list[Case]:
    """Phase a: every model in bf16, eager. Phase c: fp32 and fp16 eager, then bf16 compiled (classifiers:
    DETR's input size changes every step, which would recompile it, and DETR trains eager)."""
    if phase == "a":
        return [Case(m, "bf16", False) for m in prof.models]
    models = prof.models if prof.other_precision_models is None else prof.other_precision_models
    eager = [Case(m, p, False) for p in ("off", "fp16") for m in models]
    return eager + [Case(m, "bf16", True) for m in prof.compiled_models]


# --- Phases a and c: one model's step, timed ------------------------------------------------------------------------
def compose_row(spec: ModelSpec, extra: list[str] | None = None) -> DictConfig:
    """The trainer's config for the row: its experiment file with ``gal=on``, plus overrides."""
    overrides = [f"experiment={spec.experiment}", "gal=on", *spec.overrides, *(extra or [])]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def first_step_lrs(cfg: DictConfig) -> tuple[float, float | None]:
    """(model lr, h's lr) of the row's first steps, which is what the check runs.

    timm's warm-up starts every param group at ``warmup_lr`` (configs/scheduler/step.yaml: 1e-6 for the ImageNet
    rows); without warm-up the groups start at their configured lrs. The lr does not change a step's cost, and the
    recipe's first lr keeps a hundred steps on random data finite.
    """
    scheduler = cfg.scheduler
    if scheduler.get("warmup_epochs", 0) and scheduler.get("warmup_lr") is not None:
        return scheduler.warmup_lr, scheduler.warmup_lr
    return cfg.optimizer.lr, cfg.gal.lr


def make_optimizer(cfg: DictConfig, params: Any, adjuster: GradientAdjuster | None) -> torch.optim.Optimizer:
    """The row's optimizer (configs/optimizer/<name>.yaml) at its first-step lr, as gal.train builds it."""
    lr, gal_lr = first_step_lrs(cfg)
    return build_optimizer(params, adjuster, gal_lr=gal_lr, **{**OmegaConf.to_container(cfg.optimizer), "lr": lr})


@dataclass
class Setup:
    """What a case times: its arms, the batches they share, the GAL arm's adjuster, and facts for the record."""

    arms: dict[str, Arm]
    batches: Batches
    adjuster: GradientAdjuster
    warmup_batches: Batches
    model: nn.Module  # uncompiled, as the trainer evaluates it
    task: Any  # the classification task whose evaluate is sync-checked; None for DETR (phase b evaluates it)
    record: dict[str, Any] = field(default_factory=dict)


def trainee_for(
    cfg: DictConfig, trained: nn.Module, params: Any, adjuster: GradientAdjuster | None, mode: str, channels_last: bool
) -> Trainee:
    """The step's objects as gal.train builds them (its own optimizer and Precision), without scheduler or EMA."""
    device = next(trained.parameters()).device
    optimizer = make_optimizer(cfg, params, adjuster)
    precision = Precision(device, mode)
    return Trainee(trained, optimizer, adjuster, precision=precision, channels_last=channels_last,
                   clip_grad_norm=cfg.trainer.clip_grad_norm)  # fmt: skip


def classification_setup(spec: ModelSpec, case: Case, prof: Profile) -> Setup:
    """Three arms on one timm model (weights and, compiled, one compile shared) and random images on the device.

    The arms share the model: its weights' values do not change a step's cost, and one torch.compile per case
    instead of three keeps the check short. Each arm has its own optimizer and loss scaler.
    """
    from gal.tasks.classification import create_model

    cfg, device, settings = compose_row(spec), prof.device, prof.settings
    num_classes, channels_last = cfg.task.num_classes, cfg.trainer.channels_last and device.type == "cuda"
    configure_backends(device, False, cfg.trainer.tf32, cfg.trainer.deterministic)  # as gal.train does
    torch.manual_seed(0)
    model = create_model(num_classes=num_classes, **{**OmegaConf.to_container(cfg.task.model), "pretrained": False})
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    adjuster = build_adjuster(cfg.gal, num_classes).to(device)
    trained = torch.compile(model, backend=prof.compile_backend) if case.compiled else model
    task = BenchTask(cfg.task.get("label_smoothing", 0.0), num_classes)
    log_every = cfg.trainer.log_every
    arms = {
        "trainer_gal_off": trainer_arm(trainee_for(cfg, trained, model, None, case.precision, channels_last), task,
                                       log_every),
        "trainer_gal_on": trainer_arm(trainee_for(cfg, trained, model, adjuster, case.precision, channels_last), task,
                                      log_every),
        "minimal_loop": minimal_arm(trained, Precision(device, case.precision), make_optimizer(cfg, model, None)),
    }  # fmt: skip
    batches = random_batches(settings.steps, spec.batch, device, channels_last, spec.image_size, num_classes)
    record = _row_record(cfg, model, channels_last) | {"image_size": spec.image_size, "num_classes": num_classes}
    return Setup(arms, batches, adjuster, (batches * settings.warmup)[: settings.warmup], model, task, record)


def detection_setup(spec: ModelSpec, case: Case, prof: Profile) -> Setup:
    """GAL off and on through DetectionTask's own features_and_loss, on batches made by its data set and collate.

    The synthetic COCO images go through DETR's training transforms (facebookresearch/detr datasets/coco.py:
    shorter side one of 480..800 in steps of 32, longer side at most 1333, or a random crop first), so each batch
    has its own size; cudnn.benchmark is off, as the trainer sets it for DETR, and the warm-up runs every batch once.
    """
    device, settings = prof.device, prof.settings
    with tempfile.TemporaryDirectory() as root:
        write_synthetic_coco(Path(root), spec.batch * settings.steps, spec.coco_image_size, split="train2017")
        write_synthetic_coco(Path(root), 1, spec.coco_image_size, split="val2017")  # the task builds both splits
        cfg = compose_row(spec, [f"task.root={root}", "task.num_workers=0"])
        task = build_task(cfg.task)
        torch.manual_seed(0)  # the augmentations' draws, hence the batches' sizes
        samples = [task.train_set[i] for i in range(spec.batch * settings.steps)]
    channels_last = cfg.trainer.channels_last and device.type == "cuda"
    configure_backends(device, task.input_sizes_vary, cfg.trainer.tf32, cfg.trainer.deterministic)
    batches = [
        to_device(collate_detection(samples[i : i + spec.batch]), device, channels_last)
        for i in range(0, len(samples), spec.batch)
    ]
    torch.manual_seed(0)
    model = task.build_model().to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    adjuster = build_adjuster(cfg.gal, task.feature_dim).to(device)
    log_every = cfg.trainer.log_every
    arms = {
        "trainer_gal_off": trainer_arm(
            trainee_for(cfg, model, task.param_groups(model), None, case.precision, channels_last), task, log_every
        ),
        "trainer_gal_on": trainer_arm(
            trainee_for(cfg, model, task.param_groups(model), adjuster, case.precision, channels_last), task, log_every
        ),
    }
    warmup = max(settings.warmup, len(batches))
    record = _row_record(cfg, model, channels_last) | {
        "batch_image_sizes": [list(images.shape[-2:]) for images, _, _ in batches],
        "clip_grad_norm": cfg.trainer.clip_grad_norm,
    }
    return Setup(arms, batches, adjuster, (batches * warmup)[:warmup], model, None, record)


def _row_record(cfg: DictConfig, model: nn.Module, channels_last: bool) -> dict[str, Any]:
    """The row's settings that shape the step, for the JSON."""
    lr, gal_lr = first_step_lrs(cfg)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "channels_last": channels_last,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32": cfg.trainer.tf32,
        "gal": OmegaConf.to_container(cfg.gal),
        "optimizer": {**OmegaConf.to_container(cfg.optimizer), "lr": lr, "gal_lr": gal_lr},
    }


def gal_step_host_syncs(gal_arm: Arm, adjuster: GradientAdjuster, batches: Batches, device: torch.device) -> str:
    """'none' when GradientAdjuster.backward made no host sync on ``batches``, else the error it raised.

    As tests/test_adjuster.py::test_backward_makes_no_host_device_sync_on_cuda, after warm-up (lazy CUDA
    initialisation may sync once).
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


def step_host_syncs(gal_arm: Arm, batches: Batches, device: torch.device) -> dict[str, Any]:
    """Host syncs over whole trainer steps (GAL on), by site; the sites not in EXPECTED_SYNCS are 'unexpected'."""
    if device.type != "cuda":
        return {"checked": False, "steps": len(batches), "sites": {}, "unexpected": []}
    with counting_host_syncs(device) as sites:  # a sync is seen when asked for: no need to wait for the kernels
        gal_arm(batches)
    torch.cuda.synchronize(device)
    unexpected = [site for site in sites if site.rsplit(":", 1)[0] not in EXPECTED_SYNCS]
    return {"checked": True, "steps": len(batches), "sites": dict(sites), "unexpected": unexpected}


def evaluation_host_syncs(task: Any, model: nn.Module, batches: Batches, device: torch.device) -> dict[str, Any]:
    """Host syncs of the classification task's evaluate over ``batches``: at most EVAL_SYNCS_ALLOWED in all."""
    if device.type != "cuda":
        return {"checked": False, "batches": len(batches), "count": None, "allowed": EVAL_SYNCS_ALLOWED}
    with counting_host_syncs(device) as sites:
        task.evaluate(model, batches)
    return {"checked": True, "batches": len(batches), "count": sum(sites.values()), "sites": dict(sites),
            "allowed": EVAL_SYNCS_ALLOWED}  # fmt: skip


def evaluate_targets(medians: dict[str, float], gal_min_ratio: float) -> dict[str, dict[str, Any]]:
    """Each throughput ratio with its target and whether it is met (images/s medians of the arms)."""
    ratios = {"gal_on_vs_off": (medians["trainer_gal_on"] / medians["trainer_gal_off"], gal_min_ratio)}
    if "minimal_loop" in medians:
        ratios["trainer_vs_minimal"] = (medians["trainer_gal_off"] / medians["minimal_loop"], TRAINER_VS_MINIMAL_MIN)
    return {name: {"value": v, "target_min": t, "met": v >= t} for name, (v, t) in ratios.items()}


def run_case(case: Case, prof: Profile, deadline: float) -> dict[str, Any]:
    """Build, warm up, time and sync-check one case; its record (status 'ok', or 'truncated: ...' when the
    deadline cut the timed rounds short)."""
    started, device, settings = time.monotonic(), prof.device, prof.settings
    spec = prof.models[case.model]
    reset_peak_memory(device)
    setup = (detection_setup if spec.detection else classification_setup)(spec, case, prof)
    for run in setup.arms.values():
        run(setup.warmup_batches)
    seconds, peaks = time_rounds(setup.arms, setup.batches, settings.rounds, device, deadline)
    images = spec.batch * len(setup.batches)
    throughput = {arm: quartiles([images / s for s in times]) for arm, times in seconds.items()}
    medians = {arm: q["median"] for arm, q in throughput.items()}
    checked = setup.batches[: settings.sync_steps]
    gal_arm = setup.arms["trainer_gal_on"]
    record = {
        "case": case.name,
        "model": case.model,
        "experiment": spec.experiment,
        "precision": case.precision,
        "compiled": case.compiled,
        "batch": spec.batch,
        **setup.record,
        "steps_per_round": len(setup.batches),
        "rounds": len(seconds["trainer_gal_off"]),
        "warmup_steps": len(setup.warmup_batches),
        "images_per_s": throughput,
        "step_ms": {arm: 1000 * spec.batch / median for arm, median in medians.items()},
        "gal_step_time_ratio": medians["trainer_gal_off"] / medians["trainer_gal_on"],  # on / off step time
        "peak_memory_mib": peaks,
        "targets": evaluate_targets(medians, spec.gal_min_ratio),
        "gal_step_host_syncs": gal_step_host_syncs(gal_arm, setup.adjuster, checked, device),
        "step_host_syncs": step_host_syncs(gal_arm, checked, device),
        "sync_checked_steps": len(checked),
    }
    if setup.task is not None:  # classification: the task's evaluate on the timed batches
        record["evaluation_host_syncs"] = evaluation_host_syncs(setup.task, setup.model, setup.batches[:3], device)
    record["seconds"] = time.monotonic() - started
    record["status"] = "ok" if record["rounds"] == settings.rounds else f"truncated after {record['rounds']} rounds"
    return record


# --- Phase b: the real trainer, python -m gal ------------------------------------------------------------------------
@dataclass
class TrainerRuns:
    """Phase b's runs of ``python -m gal``: their synthetic data, folders and common overrides."""

    prof: Profile
    workdir: Path
    deadline: float  # time.time()
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.results = self.workdir / "results"

    # the data sets, each written once, when a run first needs it
    def cifar100(self) -> list[str]:
        scale = self.prof.trainer_scale
        root = self.workdir / "cifar100"
        if not root.exists():
            write_cifar(root, "cifar100", scale["batch"] * scale["train_batches"], scale["eval_images"])
        return [f"task.root={root}", "task.download=false", "task.verify=false", "task.model.pretrained=false",
                *self.prof.classifier_overrides]  # fmt: skip

    def imagenet(self) -> list[str]:
        scale = self.prof.trainer_scale
        root, classes = self.workdir / "imagenet", scale["classes"]
        if not root.exists():
            per_class = -(-scale["batch"] * scale["train_batches"] // classes)
            write_image_folder(root, [f"n{i:08d}" for i in range(classes)], per_class, 64, 0,
                               -(-scale["eval_images"] // classes))  # fmt: skip
        return [f"task.root={root}", f"task.num_classes={classes}", *self.prof.classifier_overrides]

    def coco(self) -> list[str]:
        root, images = self.workdir / "coco", self.prof.trainer_scale["coco_images"]
        if not root.exists():
            size = (480, 640) if self.prof.device.type == "cuda" else (32, 40)
            write_synthetic_coco(root, images, size, split="train2017")
            write_synthetic_coco(root, max(2, images // 4), size, split="val2017")
        tiny = list(TINY_DETR_STEP) if self.prof.device.type != "cuda" else []
        return [f"task.root={root}", *RANDOM_DETR, *tiny]

    def command(self, name: str, overrides: list[str], multirun: bool = False) -> list[str]:
        scale = self.prof.trainer_scale
        common = [
            f"results_dir={self.results}",
            f"name={name}",
            "seed=0",
            "trainer.progress=false",
            "trainer.deterministic=true",  # a resumed run equals the uninterrupted one on one GPU
            f"trainer.epochs={scale['epochs']}",
            f"task.global_batch_size={scale['batch']}",
            f"task.num_workers={self.prof.workers}",
            *self.prof.trainer_overrides,
        ]
        return [sys.executable, "-m", "gal", *(["--multirun"] if multirun else []), *common, *overrides]

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if self.prof.device.type == "cpu":
            env["OMP_NUM_THREADS"] = "1"  # two runs side by side on two cores
        return env

    def launch(self, command: list[str], log_name: str) -> subprocess.Popen:
        self.log("  $ " + " ".join(command[1:]))
        output = open(self.workdir / f"{log_name}.log", "w")  # noqa: SIM115  (closed with the process, in finish())
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=self.environment(), cwd=ROOT)

    def finish(self, process: subprocess.Popen, log_name: str) -> dict[str, Any]:
        """Wait for ``process`` (until the deadline); its exit code, seconds and, on failure, its last lines."""
        started = time.monotonic()
        try:
            code = process.wait(timeout=max(1.0, self.deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        process.stdout and process.stdout.close()
        result = {"exit_code": code, "seconds": time.monotonic() - started}
        if code != 0:
            lines = (self.workdir / f"{log_name}.log").read_text(errors="replace").splitlines()
            result["last_lines"] = lines[-12:]
            self.log("\n".join(f"  | {line}" for line in lines[-40:]))
        return result

    def run(self, name: str, overrides: list[str], multirun: bool = False) -> dict[str, Any]:
        process = self.launch(self.command(name, overrides, multirun), name)
        return self.finish(process, name) | {"metrics": self.metrics(name)}

    def metrics(self, name: str) -> list[dict[str, Any]]:
        """Each run's metrics.json under results/runs/<name>/ (several for a --multirun), in path order."""
        found = sorted((self.results / "runs" / name).rglob("metrics.json"))
        return [{"run_dir": str(p.parent.relative_to(self.results)), **_read_json(p)} for p in found]

    def killed_and_resumed(self, name: str, overrides: list[str]) -> dict[str, Any]:
        """The run killed (SIGKILL) as soon as its first checkpoint exists, side by side with the uninterrupted run,
        then resumed (trainer.if_exists=resume); the resumed metrics compared with the uninterrupted ones."""
        straight = self.launch(self.command(f"{name}_straight", overrides), f"{name}_straight")
        killed = self.launch(self.command(f"{name}_killed", overrides), f"{name}_killed")
        runs = self.results / "runs" / f"{name}_killed"
        checkpoint = None
        while killed.poll() is None and time.time() < self.deadline and checkpoint is None:
            checkpoint = next(iter(runs.rglob("last.pt")), None) if runs.exists() else None
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)
        kill = self.finish(killed, f"{name}_killed")
        record: dict[str, Any] = {"straight": self.finish(straight, f"{name}_straight")}
        record["straight"]["metrics"] = self.metrics(f"{name}_straight")
        if checkpoint is None:
            return record | {"status": f"failed: no checkpoint before the kill ({kill})"}
        if (checkpoint.parent / "metrics.json").exists():
            return record | {"status": "failed: the run had finished before the kill (epochs too short)"}
        record["killed_after_epoch"] = load_checkpoint(checkpoint)["epoch"]
        record["resumed"] = self.run(f"{name}_killed", [*overrides, "trainer.if_exists=resume"])
        return record | compare_runs(record["straight"], record["resumed"])


def compare_runs(straight: dict[str, Any], resumed: dict[str, Any]) -> dict[str, Any]:
    """Whether the resumed run's final and best metrics equal the uninterrupted run's, bit for bit."""
    if straight["exit_code"] or resumed["exit_code"] or not straight["metrics"] or not resumed["metrics"]:
        return {"status": "failed: a run did not finish (see its last lines)", "resume_equal": False}
    a, b = straight["metrics"][0], resumed["metrics"][0]
    pairs = [(a["metrics"], b["metrics"]), (a["best"]["metrics"], b["best"]["metrics"])]
    diffs = [abs(x[k] - y[k]) for x, y in pairs for k in x.keys() & y.keys()]
    equal = all(x == y for x, y in pairs)
    return {
        "resume_equal": equal,
        "max_abs_diff": max(diffs, default=0.0),
        "status": "ok" if equal else "failed: the resumed run's metrics differ from the uninterrupted run's",
    }


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    return {key: data.get(key) for key in ("metrics", "best", "epochs", "steps", "train_seconds", "diverged")}


def trainer_items(runs: TrainerRuns) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """Phase b's items in priority order, each a name and a function returning its record."""
    gal_on = ["gal=on"]

    def cifar() -> dict[str, Any]:
        return runs.killed_and_resumed("cifar100_sgd", ["experiment=table2_cifar100_sgd", *gal_on, *runs.cifar100()])

    def imagenet() -> dict[str, Any]:
        rows = ["experiment=table3_imagenet_resnet50", *gal_on, *runs.imagenet()]
        return runs.killed_and_resumed("imagenet_resnet50", rows)

    def detr() -> dict[str, Any]:
        result = runs.run("coco_detr_r50", ["experiment=table4_coco_detr_r50", *gal_on, *runs.coco(),
                                            "task.global_batch_size=2", "trainer.epochs=1"])  # fmt: skip
        ap = [m for m in result["metrics"] if m["metrics"] and "AP" in m["metrics"]]
        return result | {"status": "ok" if result["exit_code"] == 0 and ap else "failed: no COCO AP in metrics.json"}

    def optimizers() -> dict[str, Any]:
        # task=cifar100 first: a --multirun composes its base config without the swept experiment
        experiments = ["task=cifar100", "experiment=table2_cifar100_lookahead,table2_cifar100_adabound"]
        result = runs.run("cifar100_optimizers", [*experiments, *gal_on, *runs.cifar100(), "trainer.epochs=1"], True)
        done = len([m for m in result["metrics"] if m["metrics"]]) == 2
        return result | {"status": "ok" if result["exit_code"] == 0 and done else "failed: not both runs finished"}

    return [
        ("trainer/cifar100_sgd/fp32/resume", cifar),
        ("trainer/imagenet_resnet50/fp16_ema/resume", imagenet),
        ("trainer/coco_detr_r50/fp32/coco_eval", detr),
        ("trainer/cifar100_lookahead_adabound", optimizers),
    ]


# --- The worker ------------------------------------------------------------------------------------------------------
def phase_items(phase: str, prof: Profile, deadline: float, workdir: Path) -> list[tuple[str, Callable[[], dict]]]:
    if phase == "b":
        return trainer_items(TrainerRuns(prof, workdir, deadline, log=lambda text: print(text, flush=True)))
    return [(case.name, lambda case=case: run_case(case, prof, deadline)) for case in phase_cases(phase, prof)]


def guarded(name: str, item: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The item's record; an exception (an OOM, a failed compile) becomes its status, not the end of the phase."""
    started = time.monotonic()
    try:
        record = item()
    except Exception as error:  # noqa: BLE001
        first_line = (str(error).strip().splitlines() or [""])[0]
        record = {"status": f"error: {type(error).__name__}: {first_line}"}
        site = gal_frame(error)
        if site:
            record["at"] = site
    record.setdefault("seconds", time.monotonic() - started)
    return {"case": name, **record}


def cuda_broken(record: dict[str, Any]) -> bool:
    """A CUDA error (an illegal access, a device-side assert) leaves the context unusable: the worker must end."""
    return record["status"].startswith("error") and "CUDA error" in record["status"]


def release(device: torch.device) -> None:
    """Free what the last case left: compiled graphs, cached blocks."""
    import gc

    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one phase of scripts/gpu_check.py (run by it, not by hand)")
    parser.add_argument("--phase", choices=PHASES, required=True)
    parser.add_argument("--events", type=Path, required=True, help="JSON lines: planned, start, record")
    parser.add_argument("--deadline", type=float, required=True, help="time.time() at which the parent kills this")
    parser.add_argument("--start", type=int, default=0, help="first item (after a worker that died)")
    parser.add_argument("--workdir", type=Path, required=True, help="phase b's data sets and runs")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--hang-in", default=None, help=argparse.SUPPRESS)  # fault injection for the tests:
    parser.add_argument("--crash-in", default=None, help=argparse.SUPPRESS)  # a stuck or a dying item
    args = parser.parse_args(argv)
    prof = profile(args.cpu)
    items = phase_items(args.phase, prof, args.deadline, args.workdir)

    def emit(event: dict[str, Any]) -> None:
        with args.events.open("a") as file:
            file.write(json.dumps(event) + "\n")

    if args.start == 0:
        emit({"planned": [name for name, _ in items]})
    for name, item in items[args.start :]:
        emit({"start": name})
        print(f"[{args.phase}] {name}", flush=True)
        if name == args.hang_in:
            time.sleep(3600)
        if name == args.crash_in:
            os._exit(139)
        record = guarded(name, item)
        emit({"record": record})
        print(f"[{args.phase}] {name}: {record['status']} in {record['seconds']:.1f} s", flush=True)
        release(prof.device)
        if cuda_broken(record):
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
