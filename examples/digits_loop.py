"""GAL in a plain PyTorch loop: an MLP on scikit-learn's digits (python examples/digits_loop.py, ~5 s on 2 cores)."""

from functools import partial

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F

from gal import GradientAdjuster

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(
    torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y), test_size=0.2, random_state=0
)

dim = 10  # d, the size of z: GAL adjusts dl/dz at the logits
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, dim))
adj = GradientAdjuster(dim, arch=(256, 64, 32), alpha=0.01, beta=1.0)  # h(z), an nn.Module
optimizer = torch.optim.SGD([{"params": model.parameters()}, {"params": adj.parameters()}], lr=0.05, momentum=0.9)

for epoch in range(1, 11):
    for batch in torch.randperm(len(x_train)).split(64):
        optimizer.zero_grad()
        z = model(x_train[batch])  # the features at the injection point, attached to the graph
        loss_fn = partial(F.cross_entropy, target=y_train[batch], reduction="none")  # z -> per-sample losses
        lr = optimizer.param_groups[0]["lr"]  # the optimizer's current lr (after any schedule)
        stats = adj.backward(z, loss_fn, lr)  # replaces loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean()
    print(f"epoch {epoch}: test accuracy {accuracy:.3f}, last step {stats}")
