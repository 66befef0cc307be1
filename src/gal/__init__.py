"""Gradient adjustment learning: learning to minimise the Taylor remainder."""

from typing import Any

__all__ = ["GALStats", "GradientAdjuster"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``gal.GradientAdjuster`` on first use (PEP 562): ``import gal.storage`` and the other light modules then
    load without timm and torchvision, which the adjuster's DDP helpers import."""
    if name in __all__:
        from gal import adjuster

        return getattr(adjuster, name)
    raise AttributeError(f"module 'gal' has no attribute {name!r}")
