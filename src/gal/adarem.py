"""AdaRem and AdaRem-S ("Adaptive gradient method with resilience and momentum", papers/adarem_paper.txt).

AdaRem scales SGD's step per coordinate by a_t = 1 + lambda^t b_t (Eq. 2), where b_t (Eq. 1) is +1 when the
gradient agrees with the momentum (the past update trend) and -1 when it opposes it, so oscillating coordinates
are damped. AdaRem-S (Algorithm 2) also keeps every weight that feeds a BatchNorm on the sphere of its initial
radius, with the SLR learning rate of Sec. 3.4.1. The oscillation index Q of Sec. 3.2.2 measures the damping.

Readings of the paper (Algorithms 1 and 2, Sec. 3.3-3.4):
- max|m_t| in Eq. 1 is taken over each parameter tensor (the paper writes it over the whole vector theta).
- The step follows the gradient, not the momentum: theta_{t+1} = theta_t - eta_t * g_t - eta_hat_t gamma theta_t.
  The momentum only decides a_t; it is updated after the step from m_t, and m_0 = 0 makes step 0 plain SGD.
- Weight decay is decoupled and uses the base lr eta_hat_t, not the adapted eta_t (Algorithms 1 and 2).
- lambda^t counts epochs, not steps: "just multiplying lambda once per epoch is enough" (Sec. 4.1.1);
  ``lam_t`` starts at lambda^0 = 1 and :meth:`AdaRem.epoch_end` multiplies it by lambda.
- The projection Pi_F is the identity (F = R^n); AdaRem-S's sphere is its explicit normalisation step.
"""

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


class AdaRem(Optimizer):
    """Algorithm 1: SGD whose per-coordinate lr is scaled by a_t = 1 + lambda^t b_t, with a_t in [1 - lambda^t,
    1 + lambda^t].

    ``lr`` is eta_hat_t (the schedule's lr; the paper borrows SGD-M's), ``momentum_beta`` is beta, ``lam`` is
    lambda and ``weight_decay`` is gamma. Each param group carries ``lam_t`` (lambda^epoch); call
    :meth:`epoch_end` once per epoch. The state is one momentum tensor per parameter.
    """

    keeps_spheres = False  # groups with sphere=True need AdaRemS

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum_beta: float = 0.9,
        lam: float = 0.999,
        weight_decay: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= momentum_beta <= 1.0:
            raise ValueError(f"momentum_beta must be in [0, 1], got {momentum_beta}")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if eps <= 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        defaults = dict(
            lr=lr, momentum_beta=momentum_beta, lam=lam, lam_t=1.0, weight_decay=weight_decay, eps=eps, sphere=False
        )
        super().__init__(params, defaults)
        if any(group["sphere"] for group in self.param_groups) and not self.keeps_spheres:
            raise ValueError("a param group has sphere=True: use AdaRemS for weights kept on a sphere")

    def epoch_end(self) -> None:
        """lambda^t <- lambda^t * lambda: the paper decays lambda once per epoch (Sec. 4.1.1), not per step."""
        for group in self.param_groups:
            group["lam_t"] *= group["lam"]

    @torch.no_grad()
    def step(self, closure=None):
        """One iteration of Algorithm 1 (Algorithm 2 for groups with ``sphere=True``)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdaRem does not support sparse gradients")
                state = self.state[p]
                if not state:
                    self._init_state(p, state, group)
                grad, momentum = p.grad, state["momentum"]
                adjusted_gradient = adjustment(grad, momentum, group["lam_t"], group["eps"]) * grad  # a_t * g_t
                if group["sphere"]:
                    self._sphere_update(p, adjusted_gradient, state, group)
                else:
                    p.mul_(1.0 - group["lr"] * group["weight_decay"]).add_(adjusted_gradient, alpha=-group["lr"])
                momentum.mul_(group["momentum_beta"]).add_(grad, alpha=1.0 - group["momentum_beta"])  # m_{t+1}
        return loss

    def _init_state(self, p: Tensor, state: dict[str, Tensor], group: dict[str, Any]) -> None:
        state["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)  # m_0 = 0

    def _sphere_update(self, p: Tensor, adjusted_gradient: Tensor, state: dict[str, Tensor], group: dict) -> None:
        raise ValueError("a param group has sphere=True: use AdaRemS for weights kept on a sphere")


def adjustment(grad: Tensor, momentum: Tensor, lam_t: float, eps: float) -> Tensor:
    """Eq. 2: a_t = 1 + lambda^t b_t, with Eq. 1's b_t,i = g_t,i m_t,i / (|g_t,i| max|m_t| + eps) in [-1, 1].

    The max is over the tensor's entries, kept on the device (no host sync).
    """
    alignment = grad * momentum / (grad.abs() * momentum.abs().amax() + eps)  # b_t
    return alignment.mul_(lam_t).add_(1.0)


class AdaRemS(AdaRem):
    """Algorithm 2: AdaRem with the weights that precede a BatchNorm kept on the sphere of their initial radius.

    Those weights are the param groups with ``sphere=True``, or the tensors in ``bn_weights`` (for instance
    :func:`preceding_batchnorm(model) <preceding_batchnorm>`), which are split off into such groups. The sphere
    is per tensor: the paper normalises "the parameter vector" theta_{t+1} / ||theta_{t+1}|| R, and a layer
    followed by BN is scale invariant as a whole (Sec. 3.4). R is the tensor's norm at its first step, so
    theta_hat_0 = theta_0. Other parameters take AdaRem's step.

    SLR (Sec. 3.4.1): the sphere's weights move with eta_hat_t = lr / alpha_t^2, where alpha_t = ||theta_B|| / R
    is the scale of the Euclidean twin B (the unconstrained network that takes ``lr``) on the same ray; by similar
    triangles BB' = alpha_t AA', so alpha_{t+1} = alpha_t ||theta'|| / R with theta' the step before normalising.
    Weight decay is Algorithm 2's -eta_hat_t gamma theta_hat_t: it shrinks theta' and so alpha, which raises the
    sphere's lr as the exponential lr of Li & Arora (2019) would.
    """

    keeps_spheres = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum_beta: float = 0.9,
        lam: float = 0.999,
        weight_decay: float = 0.0,
        eps: float = 1e-8,
        bn_weights: Iterable[Tensor] | None = None,
    ) -> None:
        groups = split_sphere_groups(params, bn_weights) if bn_weights is not None else params
        super().__init__(groups, lr, momentum_beta=momentum_beta, lam=lam, weight_decay=weight_decay, eps=eps)
        if not any(group["sphere"] for group in self.param_groups):
            warnings.warn("AdaRemS has no weights to keep on a sphere (no bn_weights, no sphere group)", stacklevel=2)

    def _init_state(self, p: Tensor, state: dict[str, Tensor], group: dict[str, Any]) -> None:
        super()._init_state(p, state, group)
        if group["sphere"]:
            state["radius"] = torch.linalg.vector_norm(p.detach())  # R = ||theta_0||
            state["alpha"] = torch.ones_like(state["radius"])  # the twin starts at theta_0

    def _sphere_update(self, p: Tensor, adjusted_gradient: Tensor, state: dict[str, Tensor], group: dict) -> None:
        """theta' = theta_hat - eta_t * g - eta_hat gamma theta_hat, then theta_hat <- theta' R / ||theta'||."""
        radius, alpha = state["radius"], state["alpha"]
        sphere_lr = group["lr"] / alpha.square()  # SLR: eta_hat_t = eta'_t / alpha_t^2
        p.mul_(1.0 - sphere_lr * group["weight_decay"]).sub_(adjusted_gradient * sphere_lr)
        norm = torch.linalg.vector_norm(p).clamp_min(torch.finfo(p.dtype).tiny)
        alpha.mul_(norm / radius.clamp_min(torch.finfo(p.dtype).tiny))  # alpha_{t+1} = alpha_t ||theta'|| / R
        p.mul_(radius / norm)


def split_sphere_groups(
    params: Iterable[Tensor] | Iterable[dict[str, Any]], bn_weights: Iterable[Tensor]
) -> list[dict[str, Any]]:
    """The param groups with each group's ``bn_weights`` moved to a copy of it marked ``sphere=True``.

    A group left empty is dropped; order is kept (each group's other params, then its sphere weights).
    """
    params = list(params)
    groups = [{"params": params}] if params and isinstance(params[0], Tensor) else params
    marked = set(bn_weights)
    seen: set[Tensor] = set()
    split = []
    for group in groups:
        members = list(group["params"]) if not isinstance(group["params"], Tensor) else [group["params"]]
        sphere = [p for p in members if p in marked]
        seen.update(sphere)
        split.append({**group, "params": [p for p in members if p not in marked]})
        split.append({**group, "params": sphere, "sphere": True})
    if len(seen) != len(marked):
        raise ValueError(f"{len(marked) - len(seen)} of bn_weights are not among the optimizer's params")
    return [group for group in split if group["params"]]


NORMALIZED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def preceding_batchnorm(model: nn.Module) -> set[nn.Parameter]:
    """The weights of conv/linear layers directly followed by a BatchNorm over their output channels.

    Heuristic: walk ``model.modules()`` in registration order and pair a BatchNorm with the conv/linear
    registered just before it when no other leaf module comes between them and the channel counts match.
    Registration order is the forward order in Sequential stacks and in torchvision/timm blocks (conv1, bn1,
    ..., downsample = (conv, bn)), but nothing checks the forward graph: a model that registers a BN far from
    the layer it normalises needs its weights listed by hand. The BN cancels the layer's bias, so the weight
    alone is scale invariant (Sec. 3.4) whether or not the layer has a bias.
    """
    found: set[nn.Parameter] = set()
    previous: nn.Module | None = None
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            channels = getattr(previous, "out_channels", getattr(previous, "out_features", None))
            if previous is not None and channels == module.num_features:
                found.add(previous.weight)
            previous = None
        elif isinstance(module, NORMALIZED_LAYERS):
            previous = module
        elif not any(True for _ in module.children()):  # a leaf between the layer and the BN breaks the pair
            previous = None
    return found


def oscillation_index(path: Sequence[Tensor]) -> Tensor:
    """Sec. 3.2.2: Q = (1/n) sum_i l_i / d_i over a trajectory of snapshots theta_0, ..., theta_T.

    l_i is the path length of coordinate i (sum of |theta_{t+1,i} - theta_{t,i}|) and d_i its displacement
    |theta_T,i - theta_0,i|; see :func:`path_per_displacement` for coordinates that did not move.
    """
    trajectory = torch.stack([snapshot.detach().flatten() for snapshot in path])
    path_length = trajectory.diff(dim=0).abs().sum(dim=0)
    return path_per_displacement(path_length, (trajectory[-1] - trajectory[0]).abs())


def path_per_displacement(path_length: Tensor, displacement: Tensor) -> Tensor:
    """Mean of q_i = l_i / d_i over the coordinates with d_i > 0 (NaN when there are none).

    A coordinate with zero displacement has no defined q (0/0 if it never moved); it is left out of the mean.
    """
    moved = displacement > 0
    q = torch.where(moved, path_length / torch.where(moved, displacement, 1.0), 0.0)
    return q.sum() / moved.sum()


class OscillationTracker:
    """Running oscillation index Q (Sec. 3.2.2) of ``params``: call :meth:`update` after each optimizer step.

    Keeps theta_0, the previous weights and the per-coordinate path length on the parameters' device
    (three copies of the parameters); :meth:`value` returns Q as a 0-d tensor, without a host sync.
    """

    def __init__(self, params: Iterable[Tensor]) -> None:
        self.params = list(params)
        self.start = [p.detach().clone() for p in self.params]
        self.previous = [p.detach().clone() for p in self.params]
        self.path_length = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """Add |theta_t - theta_{t-1}| to each coordinate's path length."""
        for p, previous, path_length in zip(self.params, self.previous, self.path_length):
            path_length.add_((p - previous).abs())
            previous.copy_(p)

    @torch.no_grad()
    def value(self) -> Tensor:
        """Q = mean over coordinates of path length / |theta_T - theta_0| (coordinates that moved)."""
        path_length = torch.cat([length.flatten() for length in self.path_length])
        displacement = torch.cat([(p - start).abs().flatten() for p, start in zip(self.params, self.start)])
        return path_per_displacement(path_length, displacement)

    def state_dict(self) -> dict[str, list[Tensor]]:
        """theta_0, the previous weights and the path lengths, so a resumed run keeps its Q."""
        return {"start": self.start, "previous": self.previous, "path_length": self.path_length}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, list[Tensor]]) -> None:
        for key, tensors in self.state_dict().items():
            for tensor, saved in zip(tensors, state[key], strict=True):
                tensor.copy_(saved)
