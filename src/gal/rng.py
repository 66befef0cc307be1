"""Per-process randomness: seeding each rank apart, and saving and restoring its generators.

Model and GAL initialisation draw from ``seed`` alone, so every rank starts from the same
weights. What a rank draws while training (augmentations, dropout and drop-path masks,
DataLoader worker seeds, GAL's random adjustments) comes from ``seed + rank``, so ranks do not
repeat each other's draws; the data order stays a function of (seed, epoch) through each task's
DistributedSampler. Seeding is :func:`random_seed`, timm's (torch, numpy and Python's ``random``); a checkpoint
keeps every rank's generators so each rank resumes its own.
"""

import random
from typing import Any

import numpy as np
import torch


def random_seed(seed: int, rank: int = 0) -> None:
    """timm.utils.random_seed, line for line (timm/utils/random.py): importing timm for it would cost a run that
    needs no timm model a few seconds of start-up (timm imports torchvision)."""
    torch.manual_seed(seed + rank)
    np.random.seed(seed + rank)
    random.seed(seed + rank)


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's generators as tensors and plain containers (``torch.load(weights_only=True)`` reads them)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gaussian],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
