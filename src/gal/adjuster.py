"""Gradient adjustment learning (GAL): the whole method, task-agnostic.

A small network h predicts an adjustment to dl/dz at one layer z of the model
(logits, boxes, a regression output). It is trained to minimise the remainder of
the first-order Taylor expansion of the loss at z (Eq. 6-7), and a conditional
policy (Algorithm 1, lines 7-10) decides whether the backbone receives the
adjusted gradient g or the vanilla one.

    adj = GradientAdjuster(dim, arch=(256, 64, 32), alpha=0.01, beta=1.0)
    z = model(x)
    stats = adj.backward(z, loss_fn, lr)   # replaces loss.backward()
    optimizer.step()                       # h's parameters are a param group of it
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gal.distributed import average_across_ranks, world_size
from gal.errors import ConfigError
from gal.settings import GALSettings

STEP_PRECISIONS = {"float32": torch.float32, "float64": torch.float64}  # the GAL step's own arithmetic
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}

_EPS = 1e-12  # guards ||v|| = 0; a zero gradient gives a zero adjustment by itself


@dataclass(repr=False)
class GALStats:
    """What one GAL step saw and chose, as detached tensors on z's device (nothing here forces a host sync).

    Fields (B is the batch, d the size of z's last dimension; z may have more dims, e.g. DETR's queries):

    - ``loss``: l(z), the batch-mean loss (a scalar), the one plain backprop would have used.
    - ``tentative_loss``: l(z - eta~ g), the mean loss after the tentative step with the adjusted gradient (a scalar).
    - ``remainder``: r of Eq. 7, a scalar per batch, or one per sample with ``per_sample=True``; h descends |r|.
    - ``grad``: dl/dz of the batch-mean loss, z's shape.
    - ``adjustment``: v~ of Eq. 4, z's shape (g = grad + adjustment, Eq. 5).
    - ``adjusted``: bool, True where the model received g rather than dl/dz (Alg. 1 lines 7-10): a scalar
      (one decision per batch), or one per sample with ``per_sample=True``.
    - ``g_wins``: bool, Alg. 1 line 7's test per sample whatever the policy (Fig. 8b counts these): the samples
      whose loss the tentative step with g did not raise; a scalar when ``loss_fn`` returns only the batch mean.

    :meth:`summary` reduces them to the trainer's step-log values (tensors), :meth:`as_dict` to plain floats.
    """

    loss: Tensor
    tentative_loss: Tensor
    remainder: Tensor
    grad: Tensor
    adjustment: Tensor
    adjusted: Tensor
    g_wins: Tensor

    def cosine(self) -> Tensor:
        """Mean cosine similarity between dl/dz and the adjustment v~ (Fig. 6)."""
        return nn.functional.cosine_similarity(self.grad, self.adjustment, dim=-1).mean()

    def adjusted_fraction(self) -> Tensor:
        """Fraction of decisions in which g beat the vanilla gradient (Fig. 8b)."""
        return self.adjusted.float().mean()

    def relative_change(self) -> Tensor:
        """|g_used - dl/dz| / |dl/dz| per row of z: how much GAL changed the gradient the model received.

        That is |v~| / |dl/dz| where the policy sent g (alpha exactly, under Eq. 4's scaling by ||dl/dz||) and 0
        where it sent dl/dz. At d = 1 (a scalar output) g = dl/dz (1 +- alpha), so no step moves by more than alpha.
        """
        ratio = self.adjustment.norm(dim=-1) / self.grad.norm(dim=-1).clamp_min(_EPS)
        used = self.adjusted.reshape(self.adjusted.shape + (1,) * (ratio.dim() - self.adjusted.dim()))
        return ratio * used

    def relative_change_summary(self) -> dict[str, Tensor]:
        """The step's mean and largest :meth:`relative_change` over the rows of z (the trainer's step logs)."""
        change = self.relative_change()
        return {"relative_change": change.mean(), "relative_change_max": change.max()}

    def summary(self) -> dict[str, Tensor]:
        """The step in scalars, still on the device (the trainer's log.jsonl row, read back every log_every steps):
        loss, tentative_loss, the mean remainder, cosine, adjusted_fraction, g_wins (how many samples passed line 7)
        and the mean and largest relative_change."""
        return {
            "loss": self.loss,
            "tentative_loss": self.tentative_loss,
            "remainder": self.remainder.mean(),
            "cosine": self.cosine(),
            "adjusted_fraction": self.adjusted_fraction(),
            "g_wins": self.g_wins.float().sum(),
            **self.relative_change_summary(),
        }

    def as_dict(self) -> dict[str, float]:
        """:meth:`summary` as Python floats (one host sync): ``print(stats.as_dict())``, or a logger's row."""
        return {key: float(value) for key, value in self.summary().items()}

    def __repr__(self) -> str:
        values = ", ".join(f"{key}={value:.4g}" for key, value in self.as_dict().items())
        return f"GALStats({values}; z {tuple(self.grad.shape)})"


def build_mlp(dim: int, arch: Sequence[int], bias: bool, activation: str | None) -> nn.Sequential:
    """The authors' h: Linear(dim, a1), ..., Linear(ak, dim), by default no activation."""
    widths = [dim, *arch, dim]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i > 0 and activation is not None:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(n_in, n_out, bias=bias))
    return nn.Sequential(*layers)


class ConvAdjuster(nn.Module):
    """Table VIII's CNN h: z as a side x side map, 3x3 convs with ``arch`` channels, pooling, one FC.

    The paper reshapes CIFAR-100's 100 logits to 10 x 10; a dim that is not a square (10 digits, 1000
    ImageNet classes) is zero-padded to the next one (4 x 4, 32 x 32), so the CNN h runs on every task.
    """

    def __init__(self, dim: int, arch: Sequence[int], bias: bool, activation: str | None) -> None:
        super().__init__()
        self.side = math.isqrt(dim - 1) + 1  # the smallest side with side * side >= dim
        self.padding = self.side * self.side - dim
        channels = [1, *arch]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            if i > 0 and activation is not None:
                layers.append(ACTIVATIONS[activation]())
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias))
        self.convs = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(arch[-1], dim, bias=bias)

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        maps = nn.functional.pad(z, (0, self.padding)).reshape(-1, 1, self.side, self.side)
        return self.fc(self.convs(maps)).reshape(*lead, -1)


class GradientAdjuster(nn.Module):
    """h(z; theta) and the GAL step of Algorithm 1.

    Args:
        dim: size d of the feature z at the injection point (its last dimension).
        settings: h's and the step's settings (:class:`gal.settings.GALSettings`, which documents each);
            the defaults when omitted.
        **options: any of those settings by name, replacing ``settings``' value (``alpha=0.1``).
    """

    def __init__(self, dim: int, settings: GALSettings | None = None, **options: Any) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"dim must be a positive int (the feature size of z), got {dim!r}")
        self.settings = chosen = GALSettings.of(settings, **options)
        self.dim, self.alpha, self.beta = dim, float(chosen.alpha), float(chosen.beta)
        self.policy, self.per_sample, self.kind = chosen.policy, chosen.per_sample, chosen.kind
        self.scale_by_grad, self.first_order, self.precision = (
            chosen.scale_by_grad,
            chosen.first_order,
            chosen.precision,
        )
        self.ddp = chosen.ddp
        if chosen.kind == "mlp":
            self.h: nn.Module | None = build_mlp(dim, chosen.arch, chosen.bias, chosen.activation)
        elif chosen.kind == "cnn":
            self.h = ConvAdjuster(dim, chosen.arch, chosen.bias, chosen.activation)
        else:
            self.h = None

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, policy={self.policy}, "
            f"per_sample={self.per_sample}, kind={self.kind}, scale_by_grad={self.scale_by_grad}, "
            f"first_order={self.first_order}, precision={self.precision}, ddp={self.ddp}"
        )

    def forward(self, z: Tensor) -> Tensor:
        """Eq. 3: the raw adjustment v = h(z) (or a random draw for 'uniform'/'normal')."""
        if self.kind == "uniform":
            return torch.rand_like(z) * 2 - 1
        if self.kind == "normal":
            return torch.randn_like(z)
        return self.h(z)

    def scaled_adjustment(self, v: Tensor, grad: Tensor) -> Tensor:
        """Eq. 4: v~ = alpha * ||dl/dz|| * v / ||v||, norms per sample over the feature dim."""
        direction = v / v.norm(dim=-1, keepdim=True).clamp_min(_EPS)
        if self.scale_by_grad:
            return self.alpha * grad.norm(dim=-1, keepdim=True) * direction
        return self.alpha * direction

    def backward(
        self,
        z: Tensor,
        loss_fn: Callable[[Tensor], Tensor],
        lr: float | Tensor,
        grad_scale: float | Tensor = 1.0,
        other_loss: Tensor | None = None,
    ) -> GALStats:
        """One GAL step in place of ``loss.backward()`` (Algorithm 1, lines 3-14).

        Args:
            z: features at the injection point, (..., dim), attached to the model's graph.
            loss_fn: the task loss as a function of z alone, the targets closed over, e.g.
                ``lambda z: F.cross_entropy(z, y, reduction="none")``. It takes a tensor of z's shape and returns
                the batch mean (a scalar) or per-sample losses (their mean is the loss; ``per_sample=True``
                needs them). GAL calls it twice, at z and at z - eta~ g, on tensors detached from the model.
            lr: the optimizer's current learning rate eta (after schedules).
            grad_scale: multiplies every gradient sent backward (a GradScaler's scale).
            other_loss: the part of the training loss that does not pass through z (DETR's class
                and auxiliary-layer terms); it gets its standard gradient in the same backward pass.

        Accumulates into ``.grad``: the chosen gradient (g or dl/dz) back through z into
        the model, and d|r|/dtheta into h. One backward pass through the backbone.

        Under DDP with ``ddp='global'`` the step is that of one process on the global batch: dl/dz is taken
        of the global mean loss, and in per-batch mode the decision and |r| use the global means. With
        ``ddp='per_rank'`` each process steps on its own batch (see the class docstring).

        The remainder (Eq. 7) is r = l(z - eta~ g) - l(z) + first-order term (see ``first_order``), with
        l the batch-mean loss in per-batch mode and, in per-sample mode, each sample's own loss l_i with
        r_i = l_i(z_i - eta~ g_i) - l_i(z_i) + eta~ <dl_i/dz_i, g_i> for 'taylor' (dl_i/dz_i is B x row i of
        the batch mean's gradient; g is built from the latter, as it is what the model receives). The
        per-sample test of line 7 and the 'authors' term use that batch mean's gradient as the authors'
        code would: l_i(z_i - eta~ g_i) <= l_i(z_i), with g_i = row i of (dl/dz + v~), 1/B of sample i's own
        gradient plus an adjustment scaled to it.
        ``other_loss`` does not depend on z, so it drops out of r.
        """
        if z.shape[-1] != self.dim:
            raise ValueError(f"z has feature size {z.shape[-1]} but the adjuster was built with dim={self.dim}")
        ranks = world_size() if self.ddp == "global" else 1  # the processes one step spans
        dtype = torch.promote_types(z.dtype, STEP_PRECISIONS[self.precision])  # never below z's own
        features = z.detach().to(dtype).requires_grad_(True)
        with torch.enable_grad():
            sample_losses = loss_fn(features)
            losses = self._reduce(sample_losses, dtype)
            loss = losses.mean()
            (grad,) = torch.autograd.grad(loss, features)
            grad = grad / ranks  # dl/dz of the mean loss over all ranks' samples
            features = features.detach()
            with torch.autocast(features.device.type, enabled=False):
                h_dtype = next(self.parameters(), features).dtype  # random kinds have no parameters
                adjustment = self.scaled_adjustment(self(features.to(h_dtype)).to(dtype), grad)
            adjusted_grad = grad + adjustment  # Eq. 5
            tentative_lr = self.beta * lr
            tentative_sample_losses = loss_fn(features - tentative_lr * adjusted_grad)
            tentative_losses = self._reduce(tentative_sample_losses, dtype)
            if self.first_order == "taylor":
                # dl/dz of the loss r is of: this rank's batch mean (ranks' r are averaged below, so the
                # terms add up to the global batch's) or each sample's own (B x its row of the mean's)
                own_grad = grad * (ranks * losses.numel())
                first_order = tentative_lr * (own_grad * adjusted_grad).reshape(*losses.shape, -1).sum(-1)
            else:  # the authors' codes: a sum over features (CIFAR, ImageNet), a mean in their 3D toy
                reduce = torch.mean if self.first_order == "mean" else torch.sum
                first_order = self._per_sample(tentative_lr * reduce(grad * adjusted_grad, -1), losses)
            remainder = tentative_losses - losses.detach() + first_order  # Eq. 7
        if self.per_sample or self.ddp == "per_rank":  # a process's own decisions; h's grads are averaged below
            objective = remainder.abs().mean()  # Eq. 6 (per sample: the mean of |r_i|)
            decided_on = tentative_losses.detach(), losses.detach()
        else:
            remainder_all, *decided_on = average_across_ranks(
                torch.stack([remainder.detach(), tentative_losses.detach(), losses.detach()])
            )
            objective = remainder * remainder_all.sign()  # its gradient, averaged over ranks, is d|r|/dtheta
            remainder = remainder_all
        use_adjusted = self._decide(*decided_on)
        mask = use_adjusted.reshape(use_adjusted.shape + (1,) * (grad.dim() - use_adjusted.dim()))
        chosen = torch.where(mask, adjusted_grad.detach(), grad)  # Alg. 1, lines 7-10
        # DDP averages the model's gradients over ranks, so each rank sends (number of ranks) x its share
        self._backpropagate(z, chosen * ranks, objective, grad_scale, other_loss)
        return GALStats(
            loss=loss.detach(),
            tentative_loss=tentative_losses.detach().mean(),
            remainder=remainder.detach(),
            grad=grad,
            adjustment=adjustment.detach(),
            adjusted=use_adjusted,
            g_wins=tentative_sample_losses.detach() <= sample_losses.detach(),
        )

    def _reduce(self, losses: Tensor, dtype: torch.dtype) -> Tensor:
        """Per-batch mode works on the batch mean; per-sample mode keeps one loss per sample."""
        if not self.per_sample:
            return losses.to(dtype).mean()
        if losses.dim() == 0:
            raise ValueError("per_sample=True needs loss_fn to return per-sample losses, not a scalar mean")
        return losses.to(dtype)

    def _per_sample(self, inner: Tensor, losses: Tensor) -> Tensor:
        """The authors' first-order term: reduce grad^T g to the loss's shape by a mean over dims a loss lacks.

        For a scalar loss this is the authors' ``.sum(feature dim).mean(batch)``.
        """
        while inner.dim() > losses.dim():
            inner = inner.mean(-1)
        return inner

    def _decide(self, tentative_losses: Tensor, losses: Tensor) -> Tensor:
        """Alg. 1 line 7: does the tentative step with g not increase the loss?"""
        if self.policy == "always":
            return torch.ones_like(losses, dtype=torch.bool)
        if self.policy == "never":
            return torch.zeros_like(losses, dtype=torch.bool)
        if self.policy == "lt":
            return tentative_losses < losses
        return tentative_losses <= losses

    def _backpropagate(
        self, z: Tensor, chosen: Tensor, objective: Tensor, grad_scale: float | Tensor, other_loss: Tensor | None
    ) -> None:
        tensors, grads = [z], [(chosen * grad_scale).to(z.dtype)]
        for scalar in (objective, other_loss):
            if scalar is not None and scalar.requires_grad:  # random kinds have no h to train
                tensors.append(scalar)
                # a float scale is filled on the device: torch.as_tensor(float, device=cuda) copies from the host
                scale = grad_scale.to(scalar.dtype) if torch.is_tensor(grad_scale) else scalar.new_full((), grad_scale)
                grads.append(scale)
        torch.autograd.backward(tensors, grads)
        self._average_gradients_across_ranks()

    def _average_gradients_across_ranks(self) -> None:
        """Keep h identical on every rank: h is not inside the model's DDP wrapper."""
        if world_size() == 1:
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        flat = average_across_ranks(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def count_weights(self) -> int:
        """Parameter count as the paper counts it: weights only, no biases."""
        return sum(p.numel() for name, p in self.named_parameters() if not name.endswith("bias"))
