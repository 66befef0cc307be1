"""The shared trainer, which ``python -m gal task=diabetes optimizer=adam gal=on seed=3`` runs (gal.cli).

One loop for every task and optimizer, with and without GAL. A task supplies data, a
model, the injection point z with its loss and its metrics; ``GradientAdjuster.backward``
replaces ``loss.backward()`` when GAL is on. Runs under torchrun unchanged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gal.checkpoint import kept_checkpoint, load_checkpoint, save_checkpoint
from gal.distributed import DistInfo, broadcast_from_main, gather_to_main, init_distributed
from gal.errors import ConfigError, RunExistsError
from gal.lifecycle import CHECKPOINT_FILE, RunLock, check_run_files, plan_run
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
from gal.rng import random_seed, rng_state
from gal.runlog import NonFiniteLossError, RunLog, check_weights_finite, start_wandb
from gal.storage import write_atomically
from gal.tasks import Task
from gal.trainee import Trainee, build_trainee, checkpoint_state, restore, to_device
from gal.validate import validate

log = logging.getLogger("gal.train")


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
                z, loss_fn, other_loss = task.features_and_loss(model, batch)
            else:
                z, loss_fn, other_loss = trainee.injection.features_and_loss(task, model, batch)
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


@dataclass
class Run:
    """One run being trained: its settings, what it trains on, and where it stands (what a checkpoint saves and a
    resume takes back: epochs done, steps, the best evaluations so far)."""

    cfg: DictConfig
    plain_cfg: dict[str, Any]  # cfg resolved, as config.yaml, the checkpoint and metrics.json keep it
    run_dir: Path
    dist_info: DistInfo
    epochs: int
    task: Task
    loaders: tuple[DataLoader, DataLoader, DataLoader | None]  # train, eval (the test split), validation or None
    model: nn.Module  # unwrapped (trainee.model may be its DDP or compiled wrapper)
    trainee: Trainee
    epoch: int = 0  # epochs done (0-based count: the samplers' and schedulers')
    step: int = 0
    best: dict[str, Any] | None = None
    best_val: dict[str, Any] | None = None


def _train(
    cfg: DictConfig,
    plain_cfg: dict[str, Any],
    run_dir: Path,
    dist_info: DistInfo,
    epochs: int,
    resume: bool,
    lock: RunLock,
) -> dict[str, Any]:
    """Build, then train from scratch or continue ``run_dir``'s checkpoint (``resume``), to ``epochs``."""
    run = _build(cfg, plain_cfg, run_dir, dist_info, epochs)
    _open(run, resume, lock)
    started = time.perf_counter()
    metrics, val_metrics = _epochs(run)
    return _summary(run, metrics, val_metrics, time.perf_counter() - started)


def _build(cfg: DictConfig, plain_cfg: dict[str, Any], run_dir: Path, dist_info: DistInfo, epochs: int) -> Run:
    """The task, its data and the model with everything that trains it, the same weights on every rank."""
    random_seed(cfg.seed, rank=0)  # the same weights (model and h) on every rank
    task = build_task(cfg.task, cfg.seed)
    train_loader, eval_loader = task.loaders(cfg.seed, dist_info.rank, dist_info.world_size, dist_info.device)
    val_loader = task.val_loader(dist_info.rank, dist_info.world_size, dist_info.device)
    if len(train_loader) == 0:
        raise ConfigError(
            f"the training split ({len(train_loader.dataset)} samples here) does not fill one batch of "
            f"{train_loader.batch_size} per process: lower task.global_batch_size or use more data"
        )
    model, trainee = build_trainee(cfg, task, dist_info, epochs, train_loader)
    random_seed(cfg.seed, dist_info.rank)  # each rank its own augmentations, dropout masks, worker seeds
    loaders = (train_loader, eval_loader, val_loader)
    return Run(cfg, plain_cfg, run_dir, dist_info, epochs, task, loaders, model, trainee)


def _open(run: Run, resume: bool, lock: RunLock) -> None:
    """Take the run directory (its lock), restore the checkpoint when resuming, and write config.yaml."""
    checkpoint_path = run.run_dir / CHECKPOINT_FILE
    if run.dist_info.is_main:  # the data are loaded and the model built: the run directory is this process's now
        lock.acquire()
        if not resume and checkpoint_path.exists():
            raise RunExistsError(f"{run.run_dir} got a checkpoint while this run was starting: launch it again")
    if resume:
        state = load_checkpoint(checkpoint_path)
        run.epoch, run.step, run.best = restore(state, run.model, run.trainee, run.dist_info, checkpoint_path)
        run.best_val = state.get("best_val")
        if state.get("first_epoch", 0) != FIRST_EPOCH:  # a run made when epochs counted from 0: renumber its record
            run.best, run.best_val = renumbered(run.best), renumbered(run.best_val)
        log.info("resuming %s after epoch %d (step %d)", run.run_dir, run.epoch, run.step)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if run.dist_info.is_main:
        resolved = OmegaConf.to_yaml(
            run.cfg, resolve=True
        ).encode()  # what OmegaConf.save writes; a disk error: one line
        write_atomically(run.run_dir / CONFIG_FILE, lambda file: file.write(resolved))


def _epochs(run: Run) -> tuple[dict[str, float], dict[str, float] | None]:
    """Train the epochs left, evaluating every trainer.eval_every and saving a checkpoint after each; (the last
    evaluation's metrics, and its validation metrics or None)."""
    cfg, task, trainee, dist_info = run.cfg, run.task, run.trainee, run.dist_info
    train_loader, eval_loader, val_loader = run.loaders
    wandb_run = None
    if dist_info.is_main and cfg.logger.wandb:
        wandb_run = start_wandb(cfg.logger.project, cfg.logger.mode, run.run_dir, str(run.run_dir), run.plain_cfg)
    runlog = RunLog(run.run_dir / LOG_FILE, enabled=dist_info.is_main, wandb_run=wandb_run)
    runlog.truncate_after(run.step)  # and renumbers a log whose epochs count from 0 (an older run, resumed)
    progress = tqdm(
        total=run.epochs * len(train_loader),
        initial=run.step,
        disable=not (cfg.trainer.progress and dist_info.is_main),
        desc=str(run.run_dir),
        dynamic_ncols=True,
    )
    evaluated = trainee.ema.module if trainee.ema is not None else run.model

    def evaluation(number: int) -> tuple[dict[str, float], dict[str, float] | None]:
        """The test split's metrics, and the validation split's, kept as the best where they are."""
        metrics = evaluate(task, evaluated, eval_loader, trainee.precision)
        if trainee.oscillation is not None:
            metrics["oscillation_q"] = trainee.oscillation.value().item()
        run.best = keep_best(run.best, metrics, number, task.objective)
        val_metrics = None
        if val_loader is not None:  # the epoch best on validation, chosen without a look at the test
            val_metrics = evaluate(task, evaluated, val_loader, trainee.precision)
            run.best_val = keep_best(run.best_val, val_metrics, number, task.objective, test=metrics)
        return metrics, val_metrics

    metrics: dict[str, float] = {}
    val_metrics: dict[str, float] | None = None
    try:
        with logging_redirect_tqdm():  # log lines print above the progress bar, not through it
            for epoch in range(run.epoch, run.epochs):  # 0-based here (the samplers' and schedulers' count) ...
                number = epoch + 1  # ... and from 1 in everything a user reads (FIRST_EPOCH)
                set_epoch(train_loader, epoch)
                log_every = cfg.trainer.log_every
                run.step = train_one_epoch(trainee, task, train_loader, runlog, number, run.step, log_every, progress)
                run.epoch = number
                check_weights_finite(
                    number, model=run.model, adjuster=trainee.adjuster
                )  # never evaluated or saved if not
                for warning in runlog.gal_warnings(number) if dist_info.is_main else []:
                    log.warning("%s: %s (the run goes on and is recorded)", run.run_dir, warning)
                if trainee.scheduler is not None:
                    trainee.scheduler.step(number)
                if hasattr(trainee.optimizer, "epoch_end"):  # AdaRem decays its lambda once per epoch
                    trainee.optimizer.epoch_end()
                if number % cfg.trainer.eval_every == 0 or number == run.epochs:
                    metrics, val_metrics = evaluation(number)
                    runlog.log_epoch(number, run.step, metrics)
                    if val_metrics is not None:
                        runlog.log_epoch(number, run.step, val_metrics, split="val")
                    if dist_info.is_main:
                        log.info("epoch %d/%d: %s", number, run.epochs, format_metrics(metrics))
                if cfg.trainer.checkpoint:
                    _save(run)
            if not metrics:  # resumed a finished run, or trained no epochs (evaluating a checkpoint)
                metrics = evaluate(task, evaluated, eval_loader, trainee.precision)
                run.best = run.best or keep_best(None, metrics, run.epoch, task.objective)  # after run.epoch epochs
                if val_loader is not None:
                    val_metrics = evaluate(task, evaluated, val_loader, trainee.precision)
                    run.best_val = run.best_val or keep_best(None, val_metrics, run.epoch, task.objective, test=metrics)
    finally:
        progress.close()
        runlog.close()
    return metrics, val_metrics


def _save(run: Run) -> None:
    """The checkpoint after an epoch: rank 0 writes it, with every rank's generators."""
    every_rank_rng = gather_to_main(rng_state(run.dist_info.device))  # a collective: all ranks call it
    if run.dist_info.is_main:
        state = checkpoint_state(
            run.model, run.trainee, run.epoch, run.step, every_rank_rng, run.plain_cfg, run.best, run.best_val
        )
        save_checkpoint(state, run.run_dir / CHECKPOINT_FILE)


def _summary(
    run: Run, metrics: dict[str, float], val_metrics: dict[str, float] | None, seconds: float
) -> dict[str, Any]:
    """metrics.json and the run's last console line (rank 0); what a search scores."""
    cfg, trainee, has_val = run.cfg, run.trainee, run.loaders[2] is not None
    selected = selected_metrics(cfg.trainer.select, metrics, val_metrics, run.best_val, max(run.epochs, run.epoch))
    if run.dist_info.is_main:
        summary = {
            "metrics": metrics,  # the last evaluation's
            "best": run.best,  # the best evaluation by the task's objective (what Tables I-III report), with its epoch
            **({"val": val_metrics, "best_val": run.best_val} if has_val else {}),
            "selected": selected,  # trainer.select's: the last evaluation, or the test metrics of the best on val
            "epochs": run.epochs,
            "first_epoch": FIRST_EPOCH,  # how "epoch" counts here and in log.jsonl (absent: from 0, older runs)
            "steps": run.step,
            "train_seconds": seconds,
            "gal_weights": trainee.adjuster.count_weights() if trainee.adjuster is not None else 0,
            "config": run.plain_cfg,
            "environment": environment(run.dist_info.device, run.dist_info.world_size),
        }
        write_json(summary, run.run_dir / METRICS_FILE)
        name, best = run.task.objective[0], run.best
        best_line = f"; best {name} {best['metrics'][name]:.4g} at epoch {best['epoch']}" if best else ""
        if cfg.trainer.select == "best_val":
            best_line += (f"; selected on validation: epoch {selected['epoch']}, val {name} "
                          f"{selected['val'][name]:.4g}, test {name} {selected['metrics'][name]:.4g}")  # fmt: skip
        log.info("%s: %s%s", run.run_dir, format_metrics(metrics), best_line)
    return run_result({"selected": selected})  # what a search scores: "val/<name>" beside the test metrics


if __name__ == "__main__":  # the one entry point is gal.cli's; this module holds the loop
    import shlex
    import sys

    raise SystemExit(
        f"error: the trainer's command is python -m gal: {shlex.join(['python', '-m', 'gal', *sys.argv[1:]])}"
    )
