"""What a forward pass hands GAL: z at the injection point, its loss as a function of z, and the loss's other terms
(a task's ``features_and_loss``, gal.tasks; an injection point's, gal.inject). Torch only, as the GAL core."""

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

LossFn = Callable[[Tensor], Tensor]


class Features(NamedTuple):
    """What :meth:`Task.features_and_loss` returns: the arguments of GradientAdjuster.backward."""

    z: Tensor  # the features at the injection point, attached to the graph; GAL's dim is the last
    loss_fn: LossFn  # loss_fn(z) -> the per-sample (or mean) loss, a function of z alone
    other_loss: Tensor | None = None  # a scalar of the loss's terms that do not pass through z (DETR's class and
    # auxiliary-layer losses): their standard gradient
