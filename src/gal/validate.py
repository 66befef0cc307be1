"""The ranges a type cannot say, checked before any data is loaded: :func:`validate` refuses a setting out of its
range with a ConfigError naming the key and what it may be (the types were checked when Hydra composed)."""

import dataclasses
import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from gal.config import DATASET_ROWS, IF_EXISTS, ON_NONFINITE, SCALINGS, SELECT, SPLITS, VALIDATION_DATASETS
from gal.errors import ConfigError
from gal.keys import declared_keys_only
from gal.settings import GALSettings


def validate(cfg: DictConfig) -> None:
    """Refuse a setting out of its range before any data is loaded: a ConfigError naming the key and what it may be.

    The types were checked when Hydra composed ``cfg``; these are the ranges a type cannot say, and the keys that
    ``+key=value`` added to a node whose schema lacks them.
    """
    from gal.distributed import DEVICES
    from gal.inject import check_point
    from gal.precision import MODES as PRECISIONS

    declared_keys_only(cfg)
    trainer, task, gal = cfg.trainer, cfg.task, cfg.gal
    _one_of("trainer.if_exists", trainer.if_exists, IF_EXISTS)
    _one_of("trainer.on_nonfinite", trainer.on_nonfinite, ON_NONFINITE)
    _one_of("trainer.precision", trainer.precision, PRECISIONS)
    _one_of("trainer.device", trainer.device, DEVICES)
    if OmegaConf.is_missing(trainer, "epochs"):  # a task file of one's own that gives no recipe length
        raise ConfigError("trainer.epochs is not set: pass trainer.epochs=N, or set trainer.epochs in the task file")
    _at_least("trainer.epochs", trainer.epochs, 0)  # 0 = evaluate only (a checkpoint, e.g. make coco-detr-r50-eval)
    _at_least("trainer.eval_every", trainer.eval_every, 1)
    _at_least("trainer.log_every", trainer.log_every, 1)
    _at_least("task.global_batch_size", task.global_batch_size, 1)
    _positive("optimizer.lr", cfg.optimizer.lr)
    _optimizer_ranges(cfg.optimizer)
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, {MAX_SEED}] (NumPy's seed range); got {cfg.seed}")
    if "test_size" in task and not 0 < task.test_size < 1:
        raise ConfigError(f"task.test_size must be a fraction in (0, 1) (the test split); got {task.test_size}")
    _splits(task)
    _one_of("trainer.select", trainer.select, SELECT)
    if trainer.select == "best_val" and not task.get("val_size"):
        raise ConfigError(
            "trainer.select=best_val picks an epoch on the validation split, and this run has none: set "
            "task.val_size (e.g. 0.2), or trainer.select=last"
        )
    _positive("gal.lr", gal.lr)
    if "hidden" in task:  # the regression MLP
        _widths("task.hidden", task.hidden)
    # GAL's own ranges (gal.settings), with GAL on or off: a value out of range is refused either way, never trained
    # past as a baseline
    gal_settings(gal).check("gal.")
    check_point(gal.at)
    if gal.at != "logits" and task._target_.endswith("DetectionTask"):
        raise ConfigError(
            f"gal.at={gal.at}: on DETR GAL adjusts the predicted boxes only (gal.at=logits, which means the boxes "
            "there); the class scores and auxiliary layers get their standard gradient"
        )


MAX_SEED = 2**32 - 1
# Every optimizer hyperparameter but lr (checked apart) and its range: (test, what it may be), per key, and where
# two optimizers give a key different meanings, per "<optimizer name>.<key>".
OPTIMIZER_RANGES: dict[str, tuple[Any, str]] = {
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "momentum_beta": (lambda v: 0 <= v <= 1, "in [0, 1]"),  # AdaRem's own check
    "lam": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "eps": (lambda v: v > 0, "> 0"),
    "final_lr": (lambda v: v > 0, "> 0"),
    "gamma": (lambda v: v > 0, "> 0"),
    "k": (lambda v: v >= 1, "an integer >= 1"),
    "lookahead.alpha": (lambda v: 0 < v <= 1, "in (0, 1] (the slow weights' step toward the fast ones)"),
    "rmsproptf.alpha": (lambda v: 0 <= v < 1, "in [0, 1) (the squared gradients' decay)"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two values in [0, 1), e.g. [0.9, 0.999]"),
}


def _splits(task: DictConfig) -> None:
    """The split and scaling keys of the tasks that have them (regression, digits): names, and a validation
    split that leaves at least one batch of training rows, from the data set's known size."""
    for key, names in SCALINGS.items():
        if key in task:
            _one_of(f"task.{key}", task[key], names)
    if "split" in task:
        _one_of("task.split", task.split, SPLITS)
    val_size, dataset = task.val_size, task.get("dataset", task._target_.rsplit(".", 1)[-1])
    if not 0 <= val_size < 1:
        raise ConfigError(f"task.val_size must be a fraction in [0, 1) of the training split; got {val_size}")
    if val_size and dataset not in VALIDATION_DATASETS:
        raise ConfigError(
            f"task.val_size applies to {', '.join(VALIDATION_DATASETS)}, not {dataset}: set task.val_size=0 (its "
            "evaluation split is the data set's own)"
        )
    if task.get("split", "fixed") != "fixed" and dataset not in DATASET_ROWS:
        raise ConfigError(f"task.split=per_seed applies to {', '.join(DATASET_ROWS)}, not {dataset}: its test split "
                          "is the data set's own; set task.split=fixed")  # fmt: skip
    if dataset not in DATASET_ROWS:
        return
    rows = DATASET_ROWS[dataset]
    training = rows - math.ceil(task.get("test_size", 0.2) * rows)  # scikit-learn's train_test_split sizes
    left = training - math.ceil(val_size * training)
    if val_size and left < task.global_batch_size:
        raise ConfigError(
            f"task.val_size={val_size} leaves {left} of {dataset}'s {training} training rows, fewer than one batch "
            f"(task.global_batch_size={task.global_batch_size}): lower task.val_size or the batch"
        )


def _optimizer_ranges(optimizer: DictConfig) -> None:
    """Each hyperparameter the chosen optimizer takes within its range (the keys it does not take are refused
    at compose time by its schema)."""
    for key in optimizer:
        rule = OPTIMIZER_RANGES.get(f"{optimizer.name}.{key}") or OPTIMIZER_RANGES.get(str(key))
        value = optimizer[key]
        if rule is not None and value is not None:
            plain = list(value) if isinstance(value, ListConfig) else value
            if not rule[0](plain):
                raise ConfigError(f"optimizer.{key} of {optimizer.name} must be {rule[1]}; got {plain}")


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _at_least(key: str, value: int | None, low: int) -> None:
    """``value`` >= ``low``; None (not set) passes."""
    if value is not None and value < low:
        raise ConfigError(f"{key} must be an integer >= {low}; got {value}")


def _positive(key: str, value: float | None) -> None:
    """``value`` > 0; None (not set) passes."""
    if value is not None and not value > 0:
        raise ConfigError(f"{key} must be > 0; got {value}")


def _widths(key: str, widths: list[int]) -> None:
    if any(width < 1 for width in widths):
        raise ConfigError(f"{key} must list layer widths >= 1; got {list(widths)}")


def gal_settings(gal: DictConfig) -> GALSettings:
    """The GradientAdjuster settings of a config's ``gal`` node (its other keys, enabled, at and lr, are the
    trainer's)."""
    names = [field.name for field in dataclasses.fields(GALSettings)]
    return GALSettings(**{name: OmegaConf.to_object(gal[name]) if isinstance(gal[name], ListConfig) else gal[name]
                          for name in names})  # fmt: skip
