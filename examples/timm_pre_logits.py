"""GAL inside a timm model: dl/dz adjusted at the classifier's input (gal.inject's ``pre_logits``), not the logits.

    python examples/timm_pre_logits.py   # timm's tiny test ResNet on scikit-learn's digits, ~10 s on 2 cores

Any point works the same way: ``features`` (the unpooled map) or ``module:<name>`` (any of model.named_modules()).
"""

import timm
import torch
from sklearn.datasets import load_digits
from torch.nn import functional as F

from gal import GradientAdjuster
from gal.inject import Injection

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
images = torch.tensor(x / 16, dtype=torch.float32).reshape(-1, 1, 8, 8)
images = F.interpolate(images, size=32, mode="bilinear")  # timm's models downsample 32-fold
x_train, y_train, x_test, y_test = images[:1400], torch.tensor(y[:1400]), images[1400:], torch.tensor(y[1400:])


def forward(model, batch):
    """Run the model; return its output and the loss as a function of that output (what Injection needs)."""
    inputs, targets = batch
    return model(inputs), lambda output: F.cross_entropy(output, targets, reduction="none")


model = timm.create_model("test_resnet", num_classes=10, in_chans=1)
point = Injection("pre_logits", model, forward, (x_train[:8], y_train[:8]))  # one dry forward finds z's size
adj = GradientAdjuster(point.feature_dim, arch=(64,), alpha=0.01, beta=1.0)
optimizer = torch.optim.AdamW([*model.parameters(), *adj.parameters()], lr=2e-3)

for epoch in range(1, 6):
    model.train()
    for batch in torch.randperm(len(x_train)).split(64):
        optimizer.zero_grad()
        z, loss_fn, other_loss = point.features_and_loss(forward, model, (x_train[batch], y_train[batch]))
        # the classifier after z gets its standard gradient (other_loss); the layers before z get GAL's
        stats = adj.backward(z, loss_fn, optimizer.param_groups[0]["lr"], other_loss=other_loss)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean()
    print(f"epoch {epoch}: test accuracy {accuracy:.3f}, z {point.feature_dim}-d, last step {stats}")
