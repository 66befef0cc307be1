"""Tasks: each supplies data, a model, the injection point z with its loss, and metrics.

The trainer calls exactly the methods of :class:`Task` and nothing task-specific.
Adding a task is one module here and one YAML file in configs/task/.
"""

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from gal.errors import ConfigError, DatasetUnavailableError

__all__ = ["DatasetUnavailableError", "LossFn", "Task", "eval_shard", "per_process_batch"]

LossFn = Callable[[Tensor], Tensor]


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
