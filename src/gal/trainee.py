"""What one optimisation step touches, built from the config: the model, its optimizer, GAL's h, the scheduler,
the precision, EMA weights and AdaRem's oscillation index (:class:`Trainee`); and the checkpoint's state of them,
saved and taken back."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from gal.adarem import OscillationTracker
from gal.adjuster import GradientAdjuster
from gal.checkpoint import WHAT_TO_DO
from gal.distributed import DistInfo
from gal.errors import CheckpointError, ConfigError
from gal.inject import Injection
from gal.lifecycle import CHECKPOINT_FILE
from gal.optim import build_optimizer
from gal.precision import Precision
from gal.results import FIRST_EPOCH
from gal.rng import rng_state, set_rng_state
from gal.schedule import build_scheduler
from gal.tasks import Task
from gal.validate import gal_settings

if TYPE_CHECKING:  # timm (and torchvision, which it imports) only for the runs that use it
    from timm.scheduler.scheduler import Scheduler
    from timm.utils import ModelEmaV3

OPTIONAL_STATE = ("adjuster", "scheduler", "ema", "oscillation")  # Trainee parts a checkpoint holds when present


def build_adjuster(gal_cfg: DictConfig, feature_dim: int) -> GradientAdjuster | None:
    """The GAL module from configs/gal/*.yaml, or None when GAL is off."""
    return GradientAdjuster(feature_dim, gal_settings(gal_cfg)) if gal_cfg.enabled else None


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move a batch's tensors to ``device``; image batches (4-d) optionally to channels_last."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.dim() == 4 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(item, device, channels_last) for item in batch)
    if isinstance(batch, dict):
        return {key: to_device(item, device, channels_last) for key, item in batch.items()}
    return batch


def configure_backends(device: torch.device, input_sizes_vary: bool, tf32: bool, deterministic: bool) -> None:
    """The process-wide kernel choices of a run on ``device`` (set each run: a --multirun shares the process).

    cudnn.benchmark tunes each input size once, worth it only when sizes repeat (not DETR's multi-scale batches;
    facebookresearch/detr leaves it off). ``tf32`` sets both TF32 switches, matmul (PyTorch's default off) and
    cuDNN (PyTorch's default on), so that fp32 means fp32 unless asked. ``deterministic`` picks deterministic cuDNN
    and cuBLAS kernels (cuBLAS needs CUBLAS_WORKSPACE_CONFIG, docs.pytorch.org/docs/stable/notes/randomness.html)
    and warns on ops that have none (warn_only: adaptive pooling's backward, whose atomics see one value each
    at a 1x1 output, would otherwise stop every image model).
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = not (input_sizes_vary or deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


@dataclass
class Trainee:
    """What one optimisation step touches: the model and everything that updates with it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    adjuster: GradientAdjuster | None = None
    scheduler: Scheduler | None = None
    precision: Precision | None = None
    ema: ModelEmaV3 | None = None
    channels_last: bool = False
    clip_grad_norm: float | None = None  # max norm of the model's gradient (DETR: 0.1)
    oscillation: OscillationTracker | None = None  # the model's oscillation index Q (AdaRem, Sec. 3.2.2)
    injection: Injection | None = None  # z away from the task's own (gal.at other than logits), with GAL on


def build_trainee(
    cfg: DictConfig, task: Task, dist_info: DistInfo, epochs: int, train_loader: DataLoader
) -> tuple[nn.Module, Trainee]:
    """The model (unwrapped) and the step's objects, all on the run's device."""
    device, trainer = dist_info.device, cfg.trainer
    model = task.build_model().to(device)  # first, so both arms start from the same weights
    channels_last = trainer.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    injection, feature_dim = None, task.feature_dim
    if cfg.gal.enabled and cfg.gal.at != "logits":  # h's size from a dry forward of one batch (gal.inject)
        state = rng_state(device)  # drawing the batch leaves every generator as it was: h starts as at the logits
        injection = Injection(cfg.gal.at, model, task, to_device(next(iter(train_loader)), device, channels_last))
        set_rng_state(state, device)
        feature_dim = injection.feature_dim
    adjuster = build_adjuster(cfg.gal, feature_dim)
    if adjuster is not None:
        adjuster.to(device)
    model_groups = task.param_groups(model)
    optimizer = build_optimizer(model_groups, adjuster, gal_lr=cfg.gal.lr, **OmegaConf.to_container(cfg.optimizer))
    scheduler = build_scheduler(optimizer, epochs, len(train_loader), **OmegaConf.to_container(cfg.scheduler))
    ema = None
    if trainer.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=trainer.ema_decay)
    configure_backends(device, task.input_sizes_vary, trainer.tf32, trainer.deterministic)
    trained = DistributedDataParallel(model) if dist_info.world_size > 1 else model
    if trainer.compile:
        trained = torch.compile(trained)
    precision = Precision(device, trainer.precision)
    trainable = [p for p in model.parameters() if p.requires_grad]
    oscillation = OscillationTracker(trainable) if trainer.oscillation else None
    return model, Trainee(
        model=trained,
        optimizer=optimizer,
        adjuster=adjuster,
        scheduler=scheduler,
        precision=precision,
        ema=ema,
        channels_last=channels_last,
        clip_grad_norm=trainer.clip_grad_norm,
        oscillation=oscillation,
        injection=injection,
    )


def checkpoint_state(
    model: nn.Module,
    trainee: Trainee,
    epoch: int,
    step: int,
    rng: list[dict[str, Any]],
    config: dict[str, Any],
    best: dict[str, Any] | None = None,
    best_val: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a resumed run needs, ``rng`` holding each rank's generators in rank order;
    tensors and plain containers only (weights_only loads)."""
    optional = {key: getattr(trainee, key) for key in OPTIONAL_STATE}
    return {
        "model": model.state_dict(),
        **{key: part.state_dict() if part is not None else None for key, part in optional.items()},
        "optimizer": trainee.optimizer.state_dict(),
        "scaler": trainee.precision.scaler.state_dict(),
        "epoch": epoch,
        "first_epoch": FIRST_EPOCH,  # how best's and log.jsonl's epochs count (absent: from 0, older runs)
        "step": step,
        "rng": rng,
        "best": best,
        "best_val": best_val,
        "config": config,
    }


def restore(
    state: dict[str, Any], model: nn.Module, trainee: Trainee, dist_info: DistInfo, path: Path = Path(CHECKPOINT_FILE)
) -> tuple[int, int, dict[str, Any] | None]:
    """Load a checkpoint (read from ``path``) into the run's objects, each rank taking back its own generators;
    (epoch, step, best)."""
    saved_ranks = len(state.get("rng", []))
    if saved_ranks != dist_info.world_size:
        raise ConfigError(
            f"{path} was written by {saved_ranks or 'an unknown number of'} process(es) and this run has "
            f"{dist_info.world_size}: resume with the same NPROC (and nodes) as the run was started with"
        )
    model.load_state_dict(state["model"])
    for key in OPTIONAL_STATE:
        part = getattr(trainee, key)
        if part is not None and state.get(key) is None:
            raise ConfigError(
                f"{path} has no {key} state: the run was started without it, so it cannot be resumed "
                "with it; resume with the run's own settings (its config.yaml) or start a new run"
            )
        if part is not None:
            part.load_state_dict(state[key])
    trainee.optimizer.load_state_dict(state["optimizer"])
    if "scaler" not in state:
        raise CheckpointError(f"{path} cannot be resumed from: it has no scaler state; {WHAT_TO_DO}")
    trainee.precision.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"][dist_info.rank], dist_info.device)
    return state["epoch"], state["step"], state.get("best")
