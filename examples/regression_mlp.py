"""GAL on a regression MLP, beside the baseline it replaces: scikit-learn's diabetes, both arms sharing everything
but GAL (python examples/regression_mlp.py, ~10 s on 2 cores). At d = 1 GAL scales dl/dz by (1 +- alpha)."""

from functools import partial

import torch
from sklearn.datasets import load_diabetes
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F

from gal import GradientAdjuster

x, y = load_diabetes(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(x, y.reshape(-1, 1), test_size=0.2, random_state=0)
x_scaler, y_scaler = StandardScaler().fit(x_train), StandardScaler().fit(y_train)
x_train, x_test = (torch.tensor(x_scaler.transform(a), dtype=torch.float32) for a in (x_train, x_test))
y_train_scaled = torch.tensor(y_scaler.transform(y_train), dtype=torch.float32)


def train(gal: bool) -> float:
    """Train the MLP with or without GAL and return its test MSE in the target's units."""
    torch.manual_seed(0)  # the same initial weights in both arms, and the same batch order (h draws its own weights)
    model, order = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 1)), torch.Generator().manual_seed(0)
    adj = GradientAdjuster(1, arch=(128, 4), alpha=0.001, beta=0.001) if gal else None  # Table V's h
    params = [*model.parameters(), *(adj.parameters() if gal else [])]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    for _ in range(100):
        for batch in torch.randperm(len(x_train), generator=order).split(32):
            optimizer.zero_grad()
            z, target = model(x_train[batch]), y_train_scaled[batch]
            if gal:
                loss_fn = partial(F.mse_loss, target=target, reduction="none")  # z -> per-sample losses
                adj.backward(z, loss_fn, optimizer.param_groups[0]["lr"])  # replaces loss.backward()
            else:
                F.mse_loss(z, target).backward()
            optimizer.step()
    with torch.no_grad():
        prediction = y_scaler.inverse_transform(model(x_test).numpy())
    return mean_squared_error(y_test, prediction)


for gal in (False, True):
    print(f"{'GAL' if gal else 'baseline'}: test MSE {train(gal):.1f}")
