"""The 3D toy problem of the paper's Fig. 4: f, its start point and when a run has converged.

f(x, y) = -sin(x^2) cos(3 y^2) exp(-(x y)^2) - exp(-(x + y)^2) from (0.75, 1.0) (PAPER_NOTES, "Fig. 4");
scripts/toy3d.py runs Fig. 4 on it, scripts/toy_adarem.py AdaRem against SGD-M and Adam.
"""

import torch
from torch import Tensor

START = (0.75, 1.0)
TOLERANCE = 1e-3  # a run has converged once f is within this of its best value


def toy_f(z: Tensor) -> Tensor:
    """f(x, y) = -sin(x^2) cos(3 y^2) exp(-(x y)^2) - exp(-(x + y)^2) with (x, y) on z's last dim."""
    x, y = z[..., 0], z[..., 1]
    return -torch.sin(x**2) * torch.cos(3 * y**2) * torch.exp(-((x * y) ** 2)) - torch.exp(-((x + y) ** 2))


def step_within_best(f: list[float], tolerance: float = TOLERANCE) -> int:
    """The first step at which f is within ``tolerance`` of its best (lowest) value."""
    best = min(f)
    return next(step for step, value in enumerate(f) if value <= best + tolerance)
