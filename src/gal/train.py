"""The shared trainer: ``python -m gal task=diabetes optimizer=adam gal=on seed=3``.

One loop for every task and optimizer, with and without GAL. A task supplies data, a
model, the injection point z with its loss and its metrics; ``GradientAdjuster.backward``
replaces ``loss.backward()`` when GAL is on. Runs under torchrun unchanged.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gal.adarem import OscillationTracker
from gal.adjuster import GradientAdjuster
from gal.checkpoint import WHAT_TO_DO, kept_checkpoint, load_checkpoint, save_checkpoint
from gal.cli import main  # python -m gal.train's entry point (gal.cli registers the resolvers the configs use)
from gal.config import validate
from gal.distributed import DistInfo, broadcast_from_main, gather_to_main, init_distributed
from gal.errors import CheckpointError, ConfigError, RunExistsError
from gal.inject import Injection
from gal.lifecycle import CHECKPOINT_FILE, RunLock, check_run_files, plan_run
from gal.optim import build_optimizer
from gal.precision import Precision
from gal.results import (
    CONFIG_FILE,
    FIRST_EPOCH,
    LOG_FILE,
    METRICS_FILE,
    environment,
    format_metrics,
    keep_best,
    renumbered,
    run_result,
    selected_metrics,
    write_json,
)
from gal.rng import random_seed, rng_state, set_rng_state
from gal.runlog import NonFiniteLossError, RunLog, check_weights_finite, start_wandb
from gal.schedule import build_scheduler
from gal.storage import write_atomically
from gal.tasks import Task, validation_loader

if TYPE_CHECKING:  # timm (and torchvision, which it imports) only for the runs that use it
    from timm.scheduler.scheduler import Scheduler
    from timm.utils import ModelEmaV3

log = logging.getLogger("gal.train")
OPTIONAL_STATE = ("adjuster", "scheduler", "ema", "oscillation")  # Trainee parts a checkpoint holds when present


def build_adjuster(gal_cfg: DictConfig, feature_dim: int) -> GradientAdjuster | None:
    """The GAL module from configs/gal/*.yaml, or None when GAL is off."""
    if not gal_cfg.enabled:
        return None
    kwargs = {k: v for k, v in OmegaConf.to_container(gal_cfg).items() if k not in ("enabled", "at", "lr")}
    return GradientAdjuster(feature_dim, **kwargs)


def build_task(task_cfg: DictConfig, seed: int = 0) -> Task:
    """Instantiate the task; its own errors (missing data, bad settings) surface unwrapped. A task whose splits
    are its own to draw (a ``split`` key: regression, digits) gets the training ``seed`` (``split=per_seed``)."""
    extra = {"seed": seed} if "split" in task_cfg else {}
    try:
        return instantiate(task_cfg, _convert_="all", **extra)
    except InstantiationException as error:
        if error.__cause__ is None:
            raise
        raise error.__cause__ from None


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


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reseed the (possibly nested) sampler so each epoch's order depends on (seed, epoch) only."""
    sampler = loader.sampler
    while sampler is not None:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
            return
        sampler = getattr(sampler, "sampler", None)


def evaluate(task: Task, model: nn.Module, loader: DataLoader, precision: Precision) -> dict[str, float]:
    """The task's metrics, in the training precision (its autocast; the model's memory format is the task's)."""
    with precision.autocast():
        return task.evaluate(model, loader)


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


def train_one_epoch(
    trainee: Trainee,
    task: Task,
    loader: DataLoader,
    runlog: RunLog,
    epoch: int,
    step: int,
    log_every: int,
    progress: tqdm,
) -> int:
    """One pass over ``loader``, the epoch numbered ``epoch`` (from 1, as every log says); returns the global step
    count after it."""
    model, optimizer, adjuster, precision = trainee.model, trainee.optimizer, trainee.adjuster, trainee.precision
    model.train()
    device = next(model.parameters()).device
    for batch in loader:
        batch = to_device(batch, device, trainee.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            if trainee.injection is None:
                z, loss_fn, *other = task.features_and_loss(model, batch)
            else:
                z, loss_fn, *other = trainee.injection.features_and_loss(task, model, batch)
            other_loss = other[0] if other else None  # loss terms that do not pass through z
            if adjuster is None:
                loss = loss_fn(z).float().mean() + (0.0 if other_loss is None else other_loss)
            else:
                lr = optimizer.param_groups[0]["lr"]
                stats = adjuster.backward(z, loss_fn, lr, grad_scale=precision.grad_scale(), other_loss=other_loss)
        if adjuster is None:
            precision.backward(loss)
            values = {"loss": loss}
        else:
            values = stats.summary()  # g_wins: this process's samples passing Alg. 1 line 7 (Fig. 8b)
        if trainee.clip_grad_norm is not None:
            precision.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), trainee.clip_grad_norm)
        precision.step(optimizer)
        if trainee.oscillation is not None:
            trainee.oscillation.update()
        step += 1
        if trainee.scheduler is not None:
            trainee.scheduler.step_update(num_updates=step)
        if trainee.ema is not None:
            trainee.ema.update(model, step=step)
        runlog.record_step(step, values)
        if step % log_every == 0:
            runlog.flush(epoch)
            progress.set_postfix(loss=f"{runlog.last['loss']:.4g}", epoch=epoch)
        progress.update()
    runlog.flush(epoch)
    return step


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one run as configured; returns its final metrics (also in metrics.json).

    Every rank of a distributed job calls this for every run of a ``--multirun``; the process
    group is joined by the first run and kept for the next ones (gal.distributed).
    """
    validate(cfg)  # ranges, before any data (Hydra checked the types; gal.config registers the schemas)
    dist_info = init_distributed(cfg.trainer.device)
    run_dir = Path(cfg.run_dir)
    epochs = cfg.trainer.epochs
    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    # rank 0 decides for all ranks (a rank that looked later could see files rank 0 just wrote), and holds the
    # run directory's lock while it looks and for the whole run
    lock = RunLock(run_dir)
    plan = None
    if dist_info.is_main:
        try:
            if run_dir.exists():
                check_run_files(run_dir)
                lock.acquire()
            plan = plan_run(run_dir, plain_cfg, cfg.trainer.if_exists, epochs)
        except Exception as error:  # noqa: BLE001  (passed on, then raised on every rank)
            plan = error
    try:
        plan = broadcast_from_main(plan)
        if isinstance(plan, Exception):  # every rank stops with rank 0's reason
            raise plan
        if plan.action == "reuse":
            log.info("%s is done already; reusing it", run_dir)
            return plan.metrics
        return _train(cfg, plain_cfg, run_dir, dist_info, epochs, resume=plan.action == "resume", lock=lock)
    except NonFiniteLossError as error:
        kept = kept_checkpoint(run_dir / CHECKPOINT_FILE, cfg.trainer.checkpoint)
        error.args = (f"{error} The run stops here; {kept}.",)
        if cfg.trainer.on_nonfinite == "error":
            raise
        # a learning-rate sweep keeps going: the run is finished, as diverged, and tables show it as such
        if dist_info.is_main:
            summary = {"metrics": {}, "diverged": str(error), "config": plain_cfg}
            summary["environment"] = environment(dist_info.device, dist_info.world_size)
            write_json(summary, run_dir / METRICS_FILE)
        log.warning("%s diverged: %s", run_dir, error)
        return {}
    finally:
        lock.release()


def _train(
    cfg: DictConfig,
    plain_cfg: dict[str, Any],
    run_dir: Path,
    dist_info: DistInfo,
    epochs: int,
    resume: bool,
    lock: RunLock,
) -> dict[str, Any]:
    """Build, then train from scratch or continue ``run_dir``'s checkpoint (``resume``), to ``epochs``;
    ``plain_cfg`` is ``cfg`` resolved, as config.yaml, the checkpoint and metrics.json keep it."""
    random_seed(cfg.seed, rank=0)  # the same weights (model and h) on every rank
    task = build_task(cfg.task, cfg.seed)
    train_loader, eval_loader = task.loaders(cfg.seed, dist_info.rank, dist_info.world_size, dist_info.device)
    val_loader = validation_loader(task, dist_info.rank, dist_info.world_size, dist_info.device)
    if len(train_loader) == 0:
        raise ConfigError(
            f"the training split ({len(train_loader.dataset)} samples here) does not fill one batch of "
            f"{train_loader.batch_size} per process: lower task.global_batch_size or use more data"
        )
    model, trainee = _build_trainee(cfg, task, dist_info, epochs, train_loader)
    random_seed(cfg.seed, dist_info.rank)  # each rank its own augmentations, dropout masks, worker seeds

    start_epoch, step, best, best_val = 0, 0, None, None
    checkpoint_path = run_dir / CHECKPOINT_FILE
    if dist_info.is_main:  # the data are loaded and the model built: the run directory is this process's now
        lock.acquire()
        if not resume and checkpoint_path.exists():
            raise RunExistsError(f"{run_dir} got a checkpoint while this run was starting: launch it again")
    if resume:
        state = load_checkpoint(checkpoint_path)
        start_epoch, step, best = _restore(state, model, trainee, dist_info, checkpoint_path)
        best_val = state.get("best_val")
        if state.get("first_epoch", 0) != FIRST_EPOCH:  # a run made when epochs counted from 0: renumber its record
            best, best_val = renumbered(best), renumbered(best_val)
        log.info("resuming %s after epoch %d (step %d)", run_dir, start_epoch, step)

    run_dir.mkdir(parents=True, exist_ok=True)
    wandb_run = None
    if dist_info.is_main:
        resolved = OmegaConf.to_yaml(cfg, resolve=True).encode()  # what OmegaConf.save writes; a disk error: one line
        write_atomically(run_dir / CONFIG_FILE, lambda file: file.write(resolved))
        if cfg.logger.wandb:
            wandb_run = start_wandb(cfg.logger.project, cfg.logger.mode, run_dir, str(run_dir), plain_cfg)
    runlog = RunLog(run_dir / LOG_FILE, enabled=dist_info.is_main, wandb_run=wandb_run)
    runlog.truncate_after(step)  # and renumbers a log whose epochs count from 0 (an older run, resumed)
    progress = tqdm(
        total=epochs * len(train_loader),
        initial=step,
        disable=not (cfg.trainer.progress and dist_info.is_main),
        desc=str(run_dir),
        dynamic_ncols=True,
    )
    evaluated = trainee.ema.module if trainee.ema is not None else model
    started = time.perf_counter()
    metrics: dict[str, float] = {}
    val_metrics: dict[str, float] | None = None
    try:
        with logging_redirect_tqdm():  # log lines print above the progress bar, not through it
            for epoch in range(start_epoch, epochs):  # 0-based here (the samplers' and schedulers' count) ...
                number = epoch + 1  # ... and from 1 in everything a user reads (FIRST_EPOCH)
                set_epoch(train_loader, epoch)
                log_every = cfg.trainer.log_every
                step = train_one_epoch(trainee, task, train_loader, runlog, number, step, log_every, progress)
                check_weights_finite(number, model=model, adjuster=trainee.adjuster)  # never evaluated or saved if not
                for warning in runlog.gal_warnings(number) if dist_info.is_main else []:
                    log.warning("%s: %s (the run goes on and is recorded)", run_dir, warning)
                if trainee.scheduler is not None:
                    trainee.scheduler.step(epoch + 1)
                if hasattr(trainee.optimizer, "epoch_end"):  # AdaRem decays its lambda once per epoch
                    trainee.optimizer.epoch_end()
                if (epoch + 1) % cfg.trainer.eval_every == 0 or epoch + 1 == epochs:
                    metrics = evaluate(task, evaluated, eval_loader, trainee.precision)
                    if trainee.oscillation is not None:
                        metrics["oscillation_q"] = trainee.oscillation.value().item()
                    runlog.log_epoch(number, step, metrics)
                    best = keep_best(best, metrics, number, task.objective)
                    if val_loader is not None:  # the epoch best on validation, chosen without a look at the test
                        val_metrics = evaluate(task, evaluated, val_loader, trainee.precision)
                        runlog.log_epoch(number, step, val_metrics, split="val")
                        best_val = keep_best(best_val, val_metrics, number, task.objective, test=metrics)
                    if dist_info.is_main:
                        log.info("epoch %d/%d: %s", number, epochs, format_metrics(metrics))
                if cfg.trainer.checkpoint:
                    every_rank_rng = gather_to_main(rng_state(dist_info.device))  # a collective: all ranks call it
                    if dist_info.is_main:
                        state = _state(model, trainee, number, step, every_rank_rng, plain_cfg, best, best_val)
                        save_checkpoint(state, checkpoint_path)
            if not metrics:  # resumed a finished run, or trained no epochs (evaluating a checkpoint)
                metrics = evaluate(task, evaluated, eval_loader, trainee.precision)
                best = best or keep_best(None, metrics, start_epoch, task.objective)  # after start_epoch epochs
                if val_loader is not None:
                    val_metrics = evaluate(task, evaluated, val_loader, trainee.precision)
                    best_val = best_val or keep_best(None, val_metrics, start_epoch, task.objective, test=metrics)
    finally:
        progress.close()
        runlog.close()
    selected = selected_metrics(cfg.trainer.select, metrics, val_metrics, best_val, max(epochs, start_epoch))
    if dist_info.is_main:
        summary = {
            "metrics": metrics,  # the last evaluation's
            "best": best,  # the best evaluation by the task's objective (what Tables I-III report), with its epoch
            **({"val": val_metrics, "best_val": best_val} if val_loader is not None else {}),
            "selected": selected,  # trainer.select's: the last evaluation, or the test metrics of the best on val
            "epochs": epochs,
            "first_epoch": FIRST_EPOCH,  # how "epoch" counts here and in log.jsonl (absent: from 0, older runs)
            "steps": step,
            "train_seconds": time.perf_counter() - started,
            "gal_weights": trainee.adjuster.count_weights() if trainee.adjuster is not None else 0,
            "config": plain_cfg,
            "environment": environment(dist_info.device, dist_info.world_size),
        }
        write_json(summary, run_dir / METRICS_FILE)
        name, _ = task.objective
        best_line = f"; best {name} {best['metrics'][name]:.4g} at epoch {best['epoch']}" if best else ""
        if cfg.trainer.select == "best_val":
            best_line += (f"; selected on validation: epoch {selected['epoch']}, val {name} "
                          f"{selected['val'][name]:.4g}, test {name} {selected['metrics'][name]:.4g}")  # fmt: skip
        log.info("%s: %s%s", run_dir, format_metrics(metrics), best_line)
    return run_result({"selected": selected})  # what a search scores: "val/<name>" beside the test metrics


def _build_trainee(
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
    model_groups = task.param_groups(model) if hasattr(task, "param_groups") else model
    optimizer = build_optimizer(model_groups, adjuster, gal_lr=cfg.gal.lr, **OmegaConf.to_container(cfg.optimizer))
    scheduler = build_scheduler(optimizer, epochs, len(train_loader), **OmegaConf.to_container(cfg.scheduler))
    ema = None
    if trainer.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=trainer.ema_decay)
    configure_backends(device, getattr(task, "input_sizes_vary", False), trainer.tf32, trainer.deterministic)
    trained = DistributedDataParallel(model) if dist_info.world_size > 1 else model
    if trainer.compile:
        trained = torch.compile(trained)
    precision = Precision(device, trainer.precision)
    trainable = [p for p in model.parameters() if p.requires_grad]
    oscillation = OscillationTracker(trainable) if trainer.oscillation else None
    return model, Trainee(
        trained, optimizer, adjuster, scheduler, precision, ema, channels_last, trainer.clip_grad_norm, oscillation,
        injection,
    )  # fmt: skip


def _state(
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


def _restore(
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


if __name__ == "__main__":  # python -m gal.train: gal.cli.main, as python -m gal
    main()
