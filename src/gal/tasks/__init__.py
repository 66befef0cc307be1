"""Tasks: each supplies data, a model, the injection point z with its loss, and metrics.

The trainer calls exactly the methods of :class:`Task` and nothing task-specific.
Adding a task is one module here and one YAML file in configs/task/.
"""

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from gal.config import SPLITS
from gal.errors import ConfigError, DatasetUnavailableError

__all__ = [
    "DatasetUnavailableError", "LossFn", "Task", "carve_validation", "eval_shard", "per_process_batch",
    "split_random_state", "validation_loader",
]  # fmt: skip

LossFn = Callable[[Tensor], Tensor]


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


def validation_loader(task: "Task", rank: int, world_size: int, device: torch.device | None) -> DataLoader | None:
    """The task's validation loader (``task.val_size`` > 0 on a task that has one), else None."""
    make = getattr(task, "val_loader", None)  # the regression tasks and digits; other tasks have none
    return None if make is None else make(rank, world_size, device)


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


class Task(Protocol):
    feature_dim: int  # size of z's last dimension, the GAL dim
    objective: tuple[str, str]  # (metric from evaluate, "minimize" | "maximize"): what a search optimises
    # optional: input_sizes_vary = True turns cudnn.benchmark off on CUDA (DETR's multi-scale batches)

    def build_model(self) -> nn.Module: ...

    def loaders(
        self, seed: int, rank: int, world_size: int, device: torch.device | None = None
    ) -> tuple[DataLoader, DataLoader]:
        """(train, eval) for one of ``world_size`` processes, each train batch ``per_process_batch`` of the task's
        global batch; the train sampler has ``set_epoch`` (deterministic per epoch) unless it draws from the
        process's generator. ``device`` is where a loader may put its batches itself (timm's prefetcher)."""
        ...

    def features_and_loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, LossFn] | tuple[Tensor, LossFn, Tensor]:
        """z at the injection point (attached to the graph) and loss_fn(z) -> per-sample or mean loss.

        A task whose loss has terms that do not pass through z (DETR's class and auxiliary-layer
        losses) returns them as a third element: a scalar that gets its standard gradient.
        A task may also define ``param_groups(model) -> list[dict]`` (e.g. a backbone's own lr); its
        first group holds the layers that produce z, whose lr is the eta that GAL's tentative step uses.
        """
        ...

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]: ...
