"""GAL at any layer (gal.at): correctness against plain backprop and the equations, whole runs, and bad points."""

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from gal.adjuster import GradientAdjuster
from gal.errors import ConfigError
from gal.inject import Injection
from gal.tasks import Features, Task
from gal.train import train
from gal.validate import validate

from .conftest import compose_config
from .test_distributed import TORCHRUN, assert_same_run, launch

torch.set_num_threads(1)


class ImageTask(Task):
    """The classification task's step (cross-entropy on model(images)), for any model."""

    def features_and_loss(self, model, batch):
        images, labels = batch
        return Features(model(images), lambda logits: F.cross_entropy(logits.float(), labels, reduction="none"))


class BNNet(nn.Module):
    """conv - BN - ReLU - pool - fc - dropout - BN1d - fc: BatchNorm and dropout after the injection point."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 16)
        self.drop, self.norm, self.out = nn.Dropout(0.5), nn.BatchNorm1d(16), nn.Linear(16, 5)

    def forward(self, x):
        x = self.body(self.stem(x)).mean((2, 3))
        return self.out(self.norm(self.drop(self.fc(x))))


def image_batch(seed=0, n=6, size=16, classes=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def plain_gradients(model, task, batch, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    output, loss_fn, _ = task.features_and_loss(model, batch)
    loss_fn(output).mean().backward()
    return gradients(model)


def decomposed_gradients(model, task, batch, at, seed=0):
    """loss_fn(z) through z (the layers up to z) + other_loss (the layers after it): what a GAL-off step would be."""
    injection = Injection(at, model, task, batch)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    z, loss_fn, other_loss = injection.features_and_loss(task, model, batch)
    (loss_fn(z).mean() + other_loss).backward()
    return gradients(model), injection


MODELS = {
    "timm resnet": lambda: timm.create_model("test_resnet", num_classes=5, drop_rate=0.3),
    "torchvision resnet": lambda: torchvision.models.resnet18(num_classes=5),
    "timm efficientnet": lambda: timm.create_model("test_efficientnet", num_classes=5, drop_rate=0.3),
    "plain BN + dropout": BNNet,
}
POINTS = {
    "timm resnet": ["pre_logits", "features", "module:layer2", "module:fc"],
    "timm efficientnet": ["pre_logits", "features", "module:blocks.1"],
    "torchvision resnet": ["pre_logits", "module:layer3.1"],
    "plain BN + dropout": ["pre_logits", "module:body", "module:fc", "module:drop"],
}
CASES = [(model, at) for model, points in POINTS.items() for at in points]


@pytest.mark.parametrize(("model_name", "at"), CASES, ids=[f"{m}-{a}" for m, a in CASES])
def test_the_decomposition_at_any_point_gives_plain_backprops_gradients_bit_for_bit(model_name, at):
    """Training mode, with dropout and BatchNorm after the point: the same dropout masks (the random state is
    replayed), and the same gradient for every parameter, before and after z."""
    torch.manual_seed(0)
    model, task, batch = MODELS[model_name]().train(), ImageTask(), image_batch()
    start = copy.deepcopy(model.state_dict())
    plain = plain_gradients(model, task, batch)
    plain_buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.load_state_dict(start)
    decomposed, injection = decomposed_gradients(model, task, batch, at)
    assert decomposed.keys() == plain.keys()
    for name in plain:
        assert torch.equal(decomposed[name], plain[name]), name
    # GAL's evaluations of the layers after z moved no running statistics: the step moved them once, as plain's
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, plain_buffers[name]), name
    assert injection.suffix == {"pre_logits": "classifier", "features": "head"}.get(at, "rerun")


@pytest.mark.parametrize("at", ["pre_logits", "module:layer2", "features"])
def test_h_is_sized_from_a_dry_forward(at):
    model = timm.create_model("test_resnet", num_classes=5)
    injection = Injection(at, model, ImageTask(), image_batch())
    with torch.no_grad():
        layer2 = model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(image_batch()[0]))))))
    expected = {"pre_logits": model.num_features, "features": model.num_features, "module:layer2": layer2.shape[1]}
    assert injection.feature_dim == expected[at]


def test_loss_fn_at_z_is_the_training_loss_with_dropout_after_the_point():
    torch.manual_seed(0)
    model, task, batch = BNNet().train(), ImageTask(), image_batch()
    injection = Injection("module:fc", model, task, batch)
    torch.manual_seed(1)
    output, plain_loss, _ = task.features_and_loss(model, batch)
    torch.manual_seed(1)
    z, loss_fn, _ = injection.features_and_loss(task, model, batch)
    assert torch.equal(loss_fn(z), plain_loss(output))
    assert torch.equal(loss_fn(z.detach()), loss_fn(z.detach()))  # every evaluation sees the same masks


def test_the_gal_step_at_a_hidden_layer_matches_eq_4_to_7_in_float64():
    """A float64 MLP, z = its first hidden layer (after ReLU), h an MLP: the adjuster's gradients for h, for the
    layers before z and after it, against Eq. 4-7 and Algorithm 1 written out here."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1)).double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, dtype=torch.float64)

    class Regression(Task):
        def features_and_loss(self, model, batch):
            inputs, targets = batch
            return Features(model(inputs), lambda out: (out.squeeze(-1) - targets) ** 2)

    task, lr, alpha, beta = Regression(), 0.1, 0.3, 2.0
    injection = Injection("module:1", model, task, (x, y))
    adjuster = GradientAdjuster(6, arch=(3,), alpha=alpha, beta=beta, policy="always", precision="float64").double()
    z, loss_fn, other_loss = injection.features_and_loss(task, model, (x, y))
    adjuster.backward(z, loss_fn, lr, other_loss=other_loss)
    got_model, got_h = gradients(model), {n: p.grad.clone() for n, p in adjuster.named_parameters()}

    # the reference: every quantity from the equations
    prefix, suffix = model[:2], model[2:]
    model.zero_grad(set_to_none=True)
    h = adjuster.h
    h.zero_grad(set_to_none=True)
    z_ref = prefix(x)
    zd = z_ref.detach().requires_grad_(True)
    loss = ((suffix(zd).squeeze(-1) - y) ** 2).mean()
    (grad,) = torch.autograd.grad(loss, zd)
    v = h(zd.detach())
    v_tilde = alpha * grad.norm(dim=-1, keepdim=True) * v / v.norm(dim=-1, keepdim=True)  # Eq. 4
    g = grad + v_tilde  # Eq. 5
    eta = beta * lr

    def l_detached(features):  # the loss with the suffix's weights fixed
        out = torch.func.functional_call(suffix, {k: p.detach() for k, p in suffix.named_parameters()}, (features,))
        return ((out.squeeze(-1) - y) ** 2).mean()

    remainder = l_detached(zd.detach() - eta * g) - loss.detach() + eta * (grad * g).sum(-1).mean()  # Eq. 7
    remainder.abs().backward()  # Eq. 6: h descends |r|
    want_h = {n: p.grad.clone() for n, p in adjuster.named_parameters()}
    z_ref.backward(g.detach())  # Alg. 1 line 8 ("always"): the layers up to z receive g
    ((suffix(z_ref.detach()).squeeze(-1) - y) ** 2).mean().backward()  # the layers after z: their own gradient
    want_model = gradients(model)
    for name in want_h:
        torch.testing.assert_close(got_h[name], want_h[name], rtol=1e-10, atol=1e-12)
    for name in want_model:
        torch.testing.assert_close(got_model[name], want_model[name], rtol=1e-10, atol=1e-12)


RUN = ["experiment=digits", "trainer.epochs=2", "trainer.progress=false", "task.global_batch_size=64"]


def metrics(cfg):
    train(cfg)
    return json.loads((Path(cfg.run_dir) / "metrics.json").read_text())["metrics"]


def test_policy_never_at_pre_logits_is_the_baseline_run(tmp_path):
    baseline = metrics(compose_config([*RUN, "gal=off", "name=off"], tmp_path))
    never = metrics(compose_config([*RUN, "gal=on", "gal.at=pre_logits", "gal.policy=never", "name=never"], tmp_path))
    assert never == baseline


def test_the_classifier_named_as_a_module_is_the_default_logits_run(tmp_path):
    logits = metrics(compose_config([*RUN, "gal=on", "name=logits"], tmp_path))
    named = metrics(compose_config([*RUN, "gal=on", "gal.at=module:8", "name=named"], tmp_path))  # Linear(64, 10)
    assert named == logits
    pre = metrics(compose_config([*RUN, "gal=on", "gal.at=pre_logits", "name=pre"], tmp_path))
    assert pre != logits  # another z, another h: the run differs (and is recorded as such)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_hidden_layer_trains_under_autocast(tmp_path, precision):
    """bf16 autocast, and fp16 with its GradScaler (whose scale multiplies the layers after z's gradient too)."""
    result = metrics(
        compose_config([*RUN, "gal=on", "gal.at=module:4", f"trainer.precision={precision}", "name=amp"], tmp_path)
    )
    assert 0 <= result["error"] < 90  # it learned (chance is 90% error)


# slow (~26 s): make test covers DDP at the logits (test_classification) and the split at every point
@pytest.mark.slow
def test_a_hidden_layer_run_on_two_processes_equals_one_process(tmp_path):
    """The digits CNN's pooled feature map (a 4-D z, h per position; the rest of the network re-run): 2 gloo
    processes (16 each) and 1 on the same global batch of 32, as tests/test_classification.py's logits check."""
    common = ["experiment=digits", "gal=on", "gal.at=module:4", "gal.alpha=1.0", "gal.beta=1e6", "optimizer.lr=0.005"]
    common += ["trainer.epochs=1", "trainer.progress=false", "task.global_batch_size=32", f"results_dir={tmp_path}"]
    launch([[*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "gal", *common, "name=ddp"]], tmp_path)
    launch([[sys.executable, "-m", "gal", *common, "name=single"]], tmp_path)
    runs = {name: tmp_path / "runs" / name / "digits/sgd/on/seed=0" for name in ("ddp", "single")}
    for part in ("model", "adjuster"):
        states = {name: torch.load(run / "last.pt", weights_only=True)[part] for name, run in runs.items()}
        for key in states["single"]:
            torch.testing.assert_close(states["ddp"][key], states["single"][key], rtol=1e-3, atol=1e-4)
    rows = {name: [json.loads(line) for line in open(run / "log.jsonl")] for name, run in runs.items()}
    decisions = {name: [row["adjusted_fraction"] for row in log if "loss" in row] for name, log in rows.items()}
    assert decisions["ddp"] == decisions["single"]


# slow (~26 s): make test covers kill -9 + resume at the logits (gpu_check --cpu)
@pytest.mark.slow
def test_a_hidden_layer_run_killed_and_resumed_equals_the_uninterrupted_one(tmp_path):
    job = [sys.executable, "-m", "gal", "task=diabetes", "gal=on", "gal.at=pre_logits", "gal.kind=uniform"]
    job += ["task.global_batch_size=8", "trainer.epochs=6", "trainer.progress=false", f"results_dir={tmp_path}"]
    launch([[*job, "name=straight"]], tmp_path)
    killed = subprocess.Popen([*job, "name=killed"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "runs/killed/diabetes/adam/on/seed=0"
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.01)
    killed.kill()
    killed.wait()
    assert (run / "last.pt").exists() and not (run / "metrics.json").exists(), "killed too late"
    launch([[*job, "name=killed", "trainer.if_exists=resume"]], tmp_path)
    assert_same_run(run, tmp_path / "runs/straight/diabetes/adam/on/seed=0")


class TwoOutputs(nn.Module):
    def forward(self, x):
        return x, x


class Awkward(nn.Module):
    """A tuple-valued module, an unused one, and one that runs twice."""

    def __init__(self) -> None:
        super().__init__()
        self.pair, self.unused, self.shared, self.fc = TwoOutputs(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)

    def forward(self, x):
        a, _ = self.pair(x)
        return self.fc(self.shared(self.shared(a)))


@pytest.mark.parametrize(
    ("at", "message"),
    [
        ("module:pari", "gal.at=module:pari: Awkward has no module 'pari'; the nearest: pair"),
        ("module:pair", "gal.at=module:pair (pair) gives a tuple, not one tensor"),
        ("module:unused", "gal.at=module:unused (unused): the model's forward never runs it"),
        ("module:shared", "gal.at=module:shared (shared) runs 2 times per forward"),
        ("features", "gal.at=features needs a model with forward_features and forward_head"),
    ],
)
def test_a_point_that_cannot_be_z_is_a_one_line_error_before_training(at, message):
    batch = (torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ConfigError) as error:
        Injection(at, Awkward(), ImageTask(), batch)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_layer_off_the_path_to_the_loss_is_refused():
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.side, self.fc = nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x + 0 * self.side(x).detach())

    with pytest.raises(ConfigError, match=r"module:side \(side\): no gradient reaches it from the loss"):
        Injection("module:side", Detached(), ImageTask(), (torch.randn(2, 4), torch.tensor([0, 1])))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["gal=on", "gal.at=penultimate"], "gal.at must be one of logits, pre_logits, features or module:<name"),
        (["gal=on", "gal.at=module:"], "gal.at must be one of"),
        (["experiment=table4_coco_detr_r50", "gal=on", "gal.at=pre_logits"], "on DETR GAL adjusts the predicted boxes"),
    ],
)
def test_gal_at_is_checked_by_validate(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(overrides))


def test_the_command_line_names_the_nearest_modules(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gal", "experiment=digits", "gal=on", "gal.at=module:9", f"results_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: gal.at=module:9: DigitsCNN has no module '9'" in result.stderr
    assert not any(tmp_path.rglob("*.pt"))
