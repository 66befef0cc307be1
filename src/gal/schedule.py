"""Learning-rate schedules from timm's scheduler factory (stepped per epoch and per update)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from timm.scheduler.scheduler import Scheduler


def build_scheduler(
    optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, name: str | None = None, **kwargs: Any
) -> Scheduler | None:
    """timm scheduler ``name`` (multistep, step, cosine, ...) over ``epochs``; None keeps the lr constant.

    Every param group follows the schedule from its own initial lr (h's ``gal_lr`` included).
    """
    if name is None:
        return None
    from timm.scheduler import create_scheduler_v2  # here: a constant lr needs no timm (nor its torchvision)

    scheduler, _ = create_scheduler_v2(
        optimizer, sched=name, num_epochs=epochs, updates_per_epoch=steps_per_epoch, **kwargs
    )
    return scheduler
