"""GAL's settings, each declared once: its name, type, default and range (:class:`GALSettings`).

GradientAdjuster takes them (``GradientAdjuster(dim, GALSettings(alpha=0.1))``, or the same names as keywords),
and the config's schema extends them (gal.config.GalConfig, with the trainer's own ``enabled``, ``at`` and
``lr``), so configs/gal/on.yaml sets only what differs from these defaults. Torch-free: the config checks the
ranges before torch is imported.
"""

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from gal.errors import ConfigError

KINDS = ("mlp", "cnn", "uniform", "normal")
POLICIES = ("le", "lt", "always", "never")
FIRST_ORDERS = ("authors", "taylor", "mean")  # Eq. 7's first-order term: see GALSettings
DDP_MODES = ("global", "per_rank")  # one GAL step on the global batch, or one per process (the authors')
PRECISIONS = ("float32", "float64")  # the GAL step's own arithmetic
ACTIVATIONS = ("relu", "gelu", "tanh", "silu")


@dataclass
class GALSettings:
    """The settings of h and of the GAL step of Algorithm 1; the defaults are the paper's (CIFAR-100) and the
    authors' code's.

    arch: hidden widths of h, e.g. (256, 64, 32) -> d-256-64-32-d (channels for 'cnn').
    alpha: Eq. 4 magnitude ratio ||v~|| / ||dl/dz|| in [0, 1]; 0 is standard training.
    beta: tentative learning rate eta~ = beta * eta, beta > 0.
    policy: 'le' (Alg. 1 line 7, default), 'lt' (strict), 'always' (line 8), 'never' (line 10).
    per_sample: one decision per sample (Algorithm 1 as written; loss_fn then returns per-sample losses) instead
        of one per batch (the authors' code).
    kind: 'mlp' (default), 'cnn' (Table VIII), or 'uniform' / 'normal' random adjustments without a learned h
        (Table VI).
    scale_by_grad: Eq. 4 scaling by ||dl/dz||; False gives Table VI's alpha * v / ||v||.
    bias, activation: options of h's layers (the authors use bias and no activation).
    first_order: Eq. 7's first-order term eta~ dl/dz^T g. 'authors' (default, their code):
        eta~ (dl/dz * g).sum(feature dim).mean(other dims), with dl/dz of the batch-mean loss: 1/B of the Taylor
        term (1/(B x queries) for DETR's boxes), so the remainder keeps the first-order -(1 - 1/B) eta~ dl/dz^T g.
        'taylor': eta~ <dl/dz, g> summed over every element of z, with dl/dz of the loss whose remainder it is,
        so r is Eq. 7 literally, second order in eta~. 'mean': the authors' 3D toy
        (3d_example/visualize_convergence_gl.py), eta~ (dl/dz * g).mean(): the 'authors' term divided by d (half
        of it for the toy's two coordinates).
    precision: 'float32' (default) or 'float64', the least precision of the GAL step's own arithmetic (the losses
        at z and z - eta~ g, the first-order term, |r|): a z of a wider dtype keeps its own, so a float64 model
        computes in float64 either way. h's input is cast to h's parameters' dtype and its output back; the
        gradient sent to the model is cast to z's dtype. float32 rounds r away below the loss's spacing.
    ddp: how a DDP job steps (one process: no difference). 'global' (default): one GAL step on the global batch,
        as one process would take it. 'per_rank': the authors' multi-GPU step (imagenet/train_gal.py): each
        process takes dl/dz of its own batch's mean loss, decides on its own losses, and h descends the mean over
        processes of their |r_r|; DDP then averages the chosen gradients' effect on the model.
    """

    arch: list[int] = field(default_factory=lambda: [256, 64, 32])
    alpha: float = 0.01
    beta: float = 1.0
    policy: str = "le"
    per_sample: bool = False
    kind: str = "mlp"
    scale_by_grad: bool = True
    bias: bool = True
    activation: str | None = None
    first_order: str = "authors"
    precision: str = "float32"
    ddp: str = "global"

    @classmethod
    def of(cls, settings: "GALSettings | None" = None, prefix: str = "", **options: Any) -> "GALSettings":
        """``settings`` (default: the defaults) with ``options`` replacing fields, checked; an unknown option is
        refused naming the nearest setting (``prefix`` names where the options came from, e.g. ``gal.``)."""
        if settings is not None and not isinstance(settings, cls):
            raise ConfigError(
                f"settings must be a GALSettings or None, got {settings!r}: give the others by name (arch=...)"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        for name in options:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
                raise ConfigError(f"{prefix}{name} is not a GAL setting{hint}; the settings are: {', '.join(names)}")
        chosen = dataclasses.replace(settings or cls(), **options)
        chosen.check(prefix)
        return chosen

    def check(self, prefix: str = "") -> None:
        """Refuse settings GAL cannot run with: a ConfigError naming the setting (``prefix``: e.g. ``gal.``)."""
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ConfigError(f"{prefix}alpha must lie in [0, 1] (Eq. 4), got {self.alpha}")
        if not float(self.beta) > 0.0:
            raise ConfigError(f"{prefix}beta must be > 0 (tentative lr = beta * lr), got {self.beta}")
        for name, allowed in (("policy", POLICIES), ("kind", KINDS), ("first_order", FIRST_ORDERS),
                              ("precision", PRECISIONS), ("ddp", DDP_MODES)):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{prefix}{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            allowed = ", ".join(ACTIVATIONS)
            raise ConfigError(f"{prefix}activation must be null or one of {allowed}; got {self.activation!r}")
        if any(int(width) < 1 for width in self.arch):
            raise ConfigError(f"{prefix}arch must list layer widths >= 1; got {list(self.arch)}")
        if self.kind in ("mlp", "cnn") and len(self.arch) == 0:
            raise ConfigError(f"{prefix}arch must list at least one width for kind={self.kind!r} (h's hidden layers)")
