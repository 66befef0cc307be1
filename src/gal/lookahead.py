"""The authors' Lookahead (CIFAR rows, Tables I-II), on timm's: gal.optim's "lookahead" builds it."""

from typing import Any

import timm.optim
import torch


class AuthorsLookahead(timm.optim.Lookahead):
    """timm's Lookahead in the phase and arithmetic of the authors' CIFAR Lookahead.

    cifar/src/lookahead.py (luoyan407/gradient_adjustment commit 77c431b, from alphadl/lookahead.pytorch;
    cifar/train_cifar.py wraps SGD with k=5, alpha=0.8) tests its counter before counting::

        loss = self.optimizer.step(closure)
        for group in self.param_groups:
            if group["counter"] == 0:
                self.update(group)
            group["counter"] += 1
            if group["counter"] >= self.k:
                group["counter"] = 0

    and ``update`` creates ``slow_param`` as a copy of the fast weights the first time, then does
    ``slow += (fast.data - slow) * self.alpha; fast.data.copy_(slow)``. So step 1 syncs, a no-op that sets the
    slow weights to the weights after the first step (phi_0 = theta_1, not Alg. 1's theta_0), and steps
    k+1, 2k+1, ... sync. timm counts first and syncs at steps k, 2k, ...; ``lookahead_step`` here still counts
    the steps taken. timm's ``slow.add_(fast - slow, alpha=alpha)`` fuses the multiply-add (one rounding
    instead of two) and skips params without a grad; ``update_slow`` below does neither, as the authors'.
    The slow weights stay in the inner optimizer's state as timm's ``lookahead_slow_buff``, and the counter,
    k and alpha in its param groups, so state_dict() holds them as tensors and numbers.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._base_optimizer.step(closure)
        for group in self._base_optimizer.param_groups:
            group["lookahead_step"] += 1
            if (group["lookahead_step"] - 1) % group["lookahead_k"] == 0:  # steps 1, k+1, 2k+1, ...
                self.update_slow(group)
        return loss

    @torch.no_grad()
    def update_slow(self, group: dict[str, Any]) -> None:
        for fast in group["params"]:
            state = self._base_optimizer.state[fast]
            if "lookahead_slow_buff" not in state:
                state["lookahead_slow_buff"] = fast.detach().clone()
            slow = state["lookahead_slow_buff"]
            slow += (fast - slow) * group["lookahead_alpha"]
            fast.copy_(slow)
