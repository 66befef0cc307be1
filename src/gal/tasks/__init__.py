"""Tasks: each supplies data, a model, the injection point z with its loss, and metrics.

The trainer calls exactly the methods of :class:`Task` and nothing task-specific. Adding a task is one module
here (a subclass of :class:`Task`) and one YAML file in configs/task/.
"""

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from gal.config import SPLITS
from gal.errors import ConfigError, DatasetUnavailableError
from gal.features import Features, LossFn

__all__ = [
    "DatasetUnavailableError", "Features", "LossFn", "Task", "carve_validation", "eval_shard", "per_process_batch",
    "split_random_state",
]  # fmt: skip


def split_random_state(split: str, split_seed: int, seed: int) -> int:
    """The random state that draws a task's splits: ``split_seed`` (``split="fixed"``: every training seed sees the
    same test split) or the training ``seed`` (``"per_seed"``: the split's luck averages out over seeds)."""
    if split not in SPLITS:
        raise ConfigError(f"task.split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split_seed if split == "fixed" else seed


def carve_validation(arrays: tuple, val_size: float, random_state: int, stratify: Any = None):
    """(training arrays, validation arrays or None): ``val_size`` of the training rows held out (sklearn's
    train_test_split), so the validation rows are never test rows; ``val_size=0`` keeps every row for training."""
    if not 0 <= val_size < 1:
        raise ConfigError(f"task.val_size must be a fraction in [0, 1) of the training split; got {val_size}")
    if val_size == 0:
        return arrays, None
    from sklearn.model_selection import train_test_split  # scikit-learn only where a validation split is asked

    parts = train_test_split(*arrays, test_size=val_size, random_state=random_state, stratify=stratify)
    return tuple(parts[0::2]), tuple(parts[1::2])


def per_process_batch(global_batch_size: int, world_size: int) -> int:
    """Each process's share of the recipe's global batch (the paper's lr belongs to the global batch)."""
    if not isinstance(global_batch_size, int) or global_batch_size < 1:
        raise ConfigError(f"task.global_batch_size must be a positive integer, got {global_batch_size!r}")
    if global_batch_size < world_size or global_batch_size % world_size:
        raise ConfigError(
            f"task.global_batch_size={global_batch_size} does not divide among {world_size} processes: run with a "
            f"process count that divides it, or set task.global_batch_size to a multiple of {world_size} "
            "(the lr is the recipe's for its global batch: scale optimizer.lr yourself if you change it)"
        )
    return global_batch_size // world_size


def eval_shard(dataset: Dataset, rank: int, world_size: int) -> Subset:
    """This rank's part of an evaluation split: every world_size-th sample from ``rank``, disjoint and unpadded,
    so metrics summed over the ranks are exact (a DistributedSampler would pad with repeated samples)."""
    return Subset(dataset, range(rank, len(dataset), world_size))


class Task:
    """What the trainer asks of a task. The four methods without a body are the contract; the others are hooks
    with the default most tasks want, which a task overrides where it differs."""

    feature_dim: int  # size of z's last dimension, the GAL dim
    objective: tuple[str, str]  # (metric from evaluate, "minimize" | "maximize"): what a search optimises
    input_sizes_vary: bool = False  # True turns cudnn.benchmark off on CUDA (DETR's multi-scale batches)

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def loaders(
        self, seed: int, rank: int, world_size: int, device: torch.device | None = None
    ) -> tuple[DataLoader, DataLoader]:
        """(train, eval) for one of ``world_size`` processes, each train batch ``per_process_batch`` of the task's
        global batch; the train sampler has ``set_epoch`` (deterministic per epoch) unless it draws from the
        process's generator. ``device`` is where a loader may put its batches itself (timm's prefetcher)."""
        raise NotImplementedError

    def features_and_loss(self, model: nn.Module, batch: Any) -> Features:
        """z at the injection point and loss_fn(z) (:class:`Features`), for one training batch."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        raise NotImplementedError

    def val_loader(self, rank: int, world_size: int, device: torch.device | None = None) -> DataLoader | None:
        """The validation split's loader (task.val_size > 0 on a task that has one), else None."""
        return None

    def param_groups(self, model: nn.Module) -> nn.Module | list[dict[str, Any]]:
        """The optimizer's parameter groups (e.g. a backbone's own lr): their first holds the layers that produce z,
        whose lr is the eta of GAL's tentative step. The default, the model, is one group."""
        return model
