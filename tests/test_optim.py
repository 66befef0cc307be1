"""The optimizer registry: every entry trains a toy problem with h as a second param group, resumes
exactly from a weights_only checkpoint, and matches hand computations of AdaBound and SGD; Lookahead matches
the authors' CIFAR Lookahead step by step; filter_bias_and_bn spares biases and 1-D params weight decay."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from gal import GradientAdjuster
from gal.adarem import preceding_batchnorm
from gal.optim import OPTIMIZERS, build_optimizer

from .conftest import CONFIG_DIR

GAL_LR = 0.01  # h's own lr, distinct from every config's lr


def optimizer_config(name: str) -> dict:
    """configs/optimizer/<name>.yaml as build_optimizer's keyword arguments."""
    return OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR, "optimizer", f"{name}.yaml")))


def toy_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(16, 3, generator=generator), torch.randn(16, 4, generator=generator)


def toy_model(seed: int) -> tuple[nn.Module, GradientAdjuster]:
    torch.manual_seed(seed)
    return nn.Linear(3, 4), GradientAdjuster(4, arch=(8,), alpha=0.01, beta=1.0)


def train(model, adjuster, optimizer, data, steps: int) -> list[float]:
    """Full-batch steps on a least-squares problem, with GAL when ``adjuster`` is given; the losses."""
    x, y = data
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        if adjuster is None:
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
        else:
            loss = adjuster.backward(model(x), lambda z: ((z - y) ** 2).mean(), optimizer.param_groups[0]["lr"]).loss
        optimizer.step()
        losses.append(loss.item())
    return losses


def linear_loss_model(scale: torch.Tensor) -> tuple[nn.ParameterList, nn.Parameter]:
    """One parameter p = 0 (scale's dtype) whose loss (scale * p).sum() has the constant gradient ``scale``."""
    model = nn.ParameterList([nn.Parameter(torch.zeros_like(scale))])
    return model, model[0]


def test_the_registry_and_the_config_folder_match():
    stems = sorted(p.stem for p in Path(CONFIG_DIR, "optimizer").glob("*.yaml"))
    assert sorted(OPTIMIZERS) == stems
    assert all(optimizer_config(stem)["name"] == stem for stem in stems)
    assert all(optimizer_config(stem)["filter_bias_and_bn"] is False for stem in stems)  # the experiments opt in


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains_a_toy_problem_with_h_as_a_second_group(name):
    config = optimizer_config(name)
    model, adjuster = toy_model(seed=0)
    optimizer = build_optimizer(model, adjuster, gal_lr=GAL_LR, **config)
    assert [g["lr"] for g in optimizer.param_groups] == [config["lr"], GAL_LR]
    assert [g["params"] for g in optimizer.param_groups] == [list(model.parameters()), list(adjuster.parameters())]
    if "betas" in config:
        assert all(isinstance(g["betas"], tuple) for g in optimizer.param_groups)
    h_before = [p.detach().clone() for p in adjuster.parameters()]
    losses = train(model, adjuster, optimizer, toy_data(), steps=20)
    assert losses[-1] < losses[0]
    assert all(not torch.equal(b, p) for b, p in zip(h_before, adjuster.parameters()))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_resumed_optimizer_continues_like_an_uninterrupted_one(name, tmp_path):
    config, data = optimizer_config(name), toy_data()
    model, adjuster = toy_model(seed=0)
    optimizer = build_optimizer(model, adjuster, gal_lr=GAL_LR, **config)
    train(model, adjuster, optimizer, data, steps=7)  # mid-way through Lookahead's second cycle (k=5)
    state = {"model": model.state_dict(), "adjuster": adjuster.state_dict(), "optimizer": optimizer.state_dict()}
    torch.save(state, tmp_path / "last.pt")
    train(model, adjuster, optimizer, data, steps=6)

    state = torch.load(tmp_path / "last.pt", weights_only=True)
    resumed_model, resumed_adjuster = toy_model(seed=1)
    resumed_model.load_state_dict(state["model"])
    resumed_adjuster.load_state_dict(state["adjuster"])
    resumed = build_optimizer(resumed_model, resumed_adjuster, gal_lr=GAL_LR, **config)
    resumed.load_state_dict(state["optimizer"])
    train(resumed_model, resumed_adjuster, resumed, data, steps=6)

    assert [g["lr"] for g in resumed.param_groups] == [config["lr"], GAL_LR]
    uninterrupted = [*model.parameters(), *adjuster.parameters()]
    resumed_params = [*resumed_model.parameters(), *resumed_adjuster.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed_params))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_misspelt_key_fails_instead_of_being_ignored(name):
    config = {**optimizer_config(name), "momentun": 0.9}
    with pytest.raises(TypeError, match="momentun"):
        build_optimizer(nn.Linear(3, 4), None, **config)


class AuthorsLookaheadReference:
    """cifar/src/lookahead.py (luoyan407/gradient_adjustment commit 77c431b) around torch's SGD, as
    cifar/train_cifar.py builds it, written out: after the inner step, a group whose counter is 0 syncs (the
    first sync copies the fast weights into new slow weights), then the counter goes up and wraps to 0 at k."""

    def __init__(self, params, k: int, alpha: float, **sgd_settings) -> None:
        self.inner = torch.optim.SGD(params, **sgd_settings)
        self.param_groups = self.inner.param_groups
        self.k, self.alpha = k, alpha
        self.counters = [0] * len(self.param_groups)
        self.slow: dict[int, torch.Tensor] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.inner.step()
        for i, group in enumerate(self.param_groups):
            if self.counters[i] == 0:
                for fast in group["params"]:
                    slow = self.slow.setdefault(id(fast), fast.clone())
                    slow += (fast - slow) * self.alpha
                    fast.copy_(slow)
            self.counters[i] += 1
            if self.counters[i] >= self.k:
                self.counters[i] = 0


def all_params(model: nn.Module, adjuster: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *adjuster.parameters()]


def test_lookahead_follows_the_authors_phase_step_by_step():
    """Syncs at steps 1 (a no-op that creates the slow weights), k+1, 2k+1: every weight equal after every step."""
    config, data = optimizer_config("lookahead"), toy_data()
    k, alpha = config["k"], config["alpha"]
    sgd_settings = {key: config[key] for key in ("lr", "momentum", "weight_decay")}
    model, adjuster = toy_model(seed=0)
    optimizer = build_optimizer(model, adjuster, gal_lr=GAL_LR, **config)
    ref_model, ref_adjuster = toy_model(seed=0)
    groups = [{"params": list(ref_model.parameters())}, {"params": list(ref_adjuster.parameters()), "lr": GAL_LR}]
    reference = AuthorsLookaheadReference(groups, k=k, alpha=alpha, **sgd_settings)
    sgd_model, sgd_adjuster = toy_model(seed=0)
    plain_sgd = build_optimizer(sgd_model, sgd_adjuster, "sgd", gal_lr=GAL_LR, **sgd_settings)
    for step in range(1, 2 * k + 4):
        for twin, twin_adjuster, twin_optimizer in (
            (model, adjuster, optimizer),
            (ref_model, ref_adjuster, reference),
            (sgd_model, sgd_adjuster, plain_sgd),
        ):
            train(twin, twin_adjuster, twin_optimizer, data, steps=1)
        ours, authors = all_params(model, adjuster), all_params(ref_model, ref_adjuster)
        assert all(torch.equal(a, b) for a, b in zip(ours, authors)), f"step {step}"
        assert [g["lookahead_step"] for g in optimizer.param_groups] == [step, step]
        same_as_sgd = all(torch.equal(a, b) for a, b in zip(ours, all_params(sgd_model, sgd_adjuster)))
        assert same_as_sgd == (step <= k), f"step {step}"  # the sync at step 1 moves nothing; k + 1's does
        if step == 1:  # phi_0 = theta_1; the state is numbered by the params' order in the groups
            slow = [s["lookahead_slow_buff"] for s in optimizer.state_dict()["state"].values()]
            assert len(slow) == len(ours) and all(torch.equal(phi, p) for phi, p in zip(slow, ours))


def test_lookahead_resumed_mid_cycle_continues_step_by_step(tmp_path):
    """A checkpoint at step k + 2 holds the slow weights and the step count; the resumed run stays bitwise equal."""
    config, data = optimizer_config("lookahead"), toy_data()
    k = config["k"]
    model, adjuster = toy_model(seed=0)
    optimizer = build_optimizer(model, adjuster, gal_lr=GAL_LR, **config)
    train(model, adjuster, optimizer, data, steps=k + 2)
    state = {"model": model.state_dict(), "adjuster": adjuster.state_dict(), "optimizer": optimizer.state_dict()}
    torch.save(state, tmp_path / "last.pt")

    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert [g["lookahead_step"] for g in state["optimizer"]["param_groups"]] == [k + 2, k + 2]
    assert all("lookahead_slow_buff" in s for s in state["optimizer"]["state"].values())
    assert len(state["optimizer"]["state"]) == len(all_params(model, adjuster))
    resumed_model, resumed_adjuster = toy_model(seed=1)
    resumed_model.load_state_dict(state["model"])
    resumed_adjuster.load_state_dict(state["adjuster"])
    resumed = build_optimizer(resumed_model, resumed_adjuster, gal_lr=GAL_LR, **config)
    resumed.load_state_dict(state["optimizer"])
    for step in range(k + 3, 2 * k + 4):
        train(model, adjuster, optimizer, data, steps=1)
        train(resumed_model, resumed_adjuster, resumed, data, steps=1)
        ours, theirs = all_params(model, adjuster), all_params(resumed_model, resumed_adjuster)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs)), f"step {step}"
    slow, resumed_slow = optimizer.state_dict()["state"], resumed.state_dict()["state"]
    assert all(torch.equal(slow[i]["lookahead_slow_buff"], resumed_slow[i]["lookahead_slow_buff"]) for i in slow)


def test_adabound_clips_every_coordinates_step_size_to_its_bounds():
    """Luo et al. 2019, Alg. 2: the update is eta_t * m_t with eta_t = Clip(lr / sqrt(V_t), eta_l(t), eta_u(t)),
    eta_l(t) = final_lr (1 - 1 / (gamma t + 1)) and eta_u(t) = final_lr (1 + 1 / (gamma t)), per coordinate.

    Gradients from 1e-6 to 1e3 put Adam's step sizes outside the bounds at both ends.
    """
    final_lr, gamma = 0.1, 1e-3
    scale = torch.logspace(-6, 3, 10, dtype=torch.float64)
    model, p = linear_loss_model(scale)
    optimizer = build_optimizer(model, None, "adabound", lr=1e-3, final_lr=final_lr, gamma=gamma)
    for t in range(1, 4):
        before = p.detach().clone()
        optimizer.zero_grad()
        (scale * p).sum().backward()
        optimizer.step()
        step_size = (before - p.detach()) / optimizer.state[p]["exp_avg"]
        lower, upper = final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t))
        assert ((step_size >= lower * (1 - 1e-9)) & (step_size <= upper * (1 + 1e-9))).all()
        torch.testing.assert_close(step_size[[0, -1]], torch.tensor([upper, lower], dtype=torch.float64))


@pytest.mark.parametrize("name", ["sgd", "lookahead"])
def test_sgd_uses_heavy_ball_momentum_not_nesterov(name):
    """Constant gradient c, momentum 0.9: heavy ball moves lr c, then lr 1.9 c; Nesterov would move 1.9 lr c first."""
    lr, scale = 0.1, torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    model, p = linear_loss_model(scale)
    optimizer = build_optimizer(model, None, name, lr=lr, momentum=0.9)  # Lookahead: step 1's sync moves nothing
    assert all(group["nesterov"] is False for group in optimizer.param_groups)
    for expected in (-lr * scale, -lr * (1 + 1.9) * scale):
        optimizer.zero_grad()
        (scale * p).sum().backward()
        optimizer.step()
        torch.testing.assert_close(p.detach(), expected)


def test_an_unknown_name_lists_the_registered_optimizers():
    with pytest.raises(ValueError) as error:
        build_optimizer(nn.Linear(3, 4), None, "adamm", lr=1e-3)
    names = "adabound, adam, adamw, adarem, adarem_s, lookahead, rmsproptf, sgd"
    assert str(error.value) == f"unknown optimizer 'adamm'; choose one of: {names}"


def conv_bn_model(seed: int) -> tuple[nn.Module, GradientAdjuster, tuple[torch.Tensor, torch.Tensor]]:
    """Conv -> BN -> linear with 5 outputs, h on them, and a batch: biases and BN's weight are the 1-D params."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(8, 3, 6, 6, generator=generator), torch.randn(8, 5, generator=generator)
    return model, GradientAdjuster(5, arch=(8,), alpha=0.01, beta=1.0), batch


def gal_step(model, adjuster, optimizer, batch) -> None:
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    adjuster.backward(model(x), lambda z: ((z - y) ** 2).mean(), optimizer.param_groups[0]["lr"])
    optimizer.step()


def test_filter_bias_and_bn_groups_the_model_and_h_as_the_authors_imagenet_fork():
    """optim_factory.create_optimizer_gal (commit 77c431b): model [no decay, decay], then h's, both at gal_lr."""
    model, adjuster, _ = conv_bn_model(seed=0)
    conv, bn, linear = model[0], model[1], model[4]
    h_in, h_out = adjuster.h[0], adjuster.h[1]
    optimizer = build_optimizer(
        model, adjuster, "rmsproptf", lr=0.016, weight_decay=1e-5, gal_lr=GAL_LR, filter_bias_and_bn=True
    )
    expected = [
        ([conv.bias, bn.weight, bn.bias, linear.bias], 0.0, 0.016),
        ([conv.weight, linear.weight], 1e-5, 0.016),
        ([h_in.bias, h_out.bias], 0.0, GAL_LR),
        ([h_in.weight, h_out.weight], 1e-5, GAL_LR),
    ]
    got = [(g["params"], g["weight_decay"], g["lr"]) for g in optimizer.param_groups]
    assert len(got) == len(expected)
    for (params, decay, lr), (want_params, want_decay, want_lr) in zip(got, expected):
        assert [id(p) for p in params] == [id(p) for p in want_params]
        assert (decay, lr) == (want_decay, want_lr)


def test_filter_bias_and_bn_skips_frozen_params_and_names_in_no_weight_decay():
    model, adjuster, _ = conv_bn_model(seed=0)
    model[0].bias.requires_grad_(False)
    model.no_weight_decay = lambda: {"4.weight"}  # timm models name such params (e.g. ViT's pos_embed)
    optimizer = build_optimizer(model, None, "sgd", lr=0.1, weight_decay=1e-4, filter_bias_and_bn=True)
    no_decay, decay = (list(g["params"]) for g in optimizer.param_groups)
    assert [id(p) for p in no_decay] == [
        id(p) for p in (model[1].weight, model[1].bias, model[4].weight, model[4].bias)
    ]
    assert [id(p) for p in decay] == [id(model[0].weight)]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_with_filter_bias_and_bn_a_1d_param_moves_as_without_weight_decay(name):
    """Every builder honours each group's weight_decay: a 1-D param's first step equals a run with no decay
    at all, a weight's differs (the optimizer's default weight_decay is 0.0, as in timm's factory)."""
    config = {**optimizer_config(name), "weight_decay": 0.1, "filter_bias_and_bn": True}
    runs = {}
    for decay in (0.1, 0.0):
        model, adjuster, batch = conv_bn_model(seed=0)
        optimizer = build_optimizer(model, adjuster, gal_lr=GAL_LR, **{**config, "weight_decay": decay})
        gal_step(model, adjuster, optimizer, batch)
        runs[decay] = (model, adjuster, optimizer)
    (model, adjuster, optimizer), (no_decay_model, no_decay_adjuster, _) = runs[0.1], runs[0.0]
    assert all(g["weight_decay"] in (0.0, 0.1) for g in optimizer.param_groups)
    assert optimizer.defaults["weight_decay"] == 0.0
    pairs = zip(all_params(model, adjuster), all_params(no_decay_model, no_decay_adjuster))
    for p, twin in pairs:
        assert torch.equal(p, twin) == (p.ndim <= 1)


def test_with_filter_bias_and_bn_sgd_decays_weights_but_not_1d_params():
    """First SGD step, heavy ball: p <- p - lr (grad + wd p) for a weight, p <- p - lr grad for BN's weight."""
    lr, weight_decay = 0.1, 0.5
    model, adjuster, batch = conv_bn_model(seed=0)
    optimizer = build_optimizer(model, adjuster, "sgd", lr=lr, weight_decay=weight_decay, filter_bias_and_bn=True)
    conv_weight, bn_weight = model[0].weight, model[1].weight
    before = {p: p.detach().clone() for p in (conv_weight, bn_weight)}
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    adjuster.backward(model(x), lambda z: ((z - y) ** 2).mean(), lr)
    grads = {p: p.grad.clone() for p in before}
    optimizer.step()
    torch.testing.assert_close(bn_weight.detach(), before[bn_weight] - lr * grads[bn_weight], rtol=0, atol=1e-7)
    decayed = before[conv_weight] - lr * (grads[conv_weight] + weight_decay * before[conv_weight])
    torch.testing.assert_close(conv_weight.detach(), decayed, rtol=0, atol=1e-7)


def test_adarem_s_with_filter_bias_and_bn_keeps_the_bn_weights_on_a_sphere_with_decay():
    model, adjuster, batch = conv_bn_model(seed=0)
    config = {**optimizer_config("adarem_s"), "filter_bias_and_bn": True}
    optimizer = build_optimizer(model, adjuster, gal_lr=GAL_LR, **config)
    spheres = [g for g in optimizer.param_groups if g["sphere"]]
    assert [id(p) for g in spheres for p in g["params"]] == [id(p) for p in preceding_batchnorm(model)]
    assert [(g["weight_decay"], g["lr"]) for g in spheres] == [(config["weight_decay"], config["lr"])]
    radius = torch.linalg.vector_norm(model[0].weight.detach())
    gal_step(model, adjuster, optimizer, batch)
    torch.testing.assert_close(torch.linalg.vector_norm(model[0].weight.detach()), radius)


def test_filter_bias_and_bn_refuses_a_tasks_own_param_groups():
    model = nn.Linear(3, 4)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 1e-5}]  # as DETR's task gives them
    with pytest.raises(ValueError, match="filter_bias_and_bn needs the model as an nn.Module"):
        build_optimizer(groups, None, "adamw", lr=1e-4, weight_decay=1e-4, filter_bias_and_bn=True)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_without_filter_bias_and_bn_the_model_and_h_are_one_group_each_with_weight_decay(name):
    """The groups build_optimizer gave before the flag existed: L2 on every param, as the authors' CIFAR code."""
    config = {**optimizer_config(name), "weight_decay": 1e-3}
    model, adjuster, _ = conv_bn_model(seed=0)
    optimizer = build_optimizer(model, adjuster, gal_lr=GAL_LR, **config)
    *model_groups, h_group = optimizer.param_groups
    model_params = list(model.parameters())
    if name == "adarem_s":  # AdaRem-S moves the conv weight that feeds the BN to a sphere group of its own
        assert [g["sphere"] for g in model_groups] == [False, True]
        assert model_groups[1]["params"] == [model[0].weight]
        model_params.remove(model[0].weight)
    assert model_groups[0]["params"] == model_params
    assert h_group["params"] == list(adjuster.parameters())
    assert all((g["weight_decay"], g["lr"]) == (1e-3, config["lr"]) for g in model_groups)
    assert (h_group["weight_decay"], h_group["lr"]) == (1e-3, GAL_LR)
    assert optimizer.defaults["weight_decay"] == 1e-3
    without_the_key = {key: value for key, value in config.items() if key != "filter_bias_and_bn"}
    assert optimizer.state_dict() == build_optimizer(model, adjuster, gal_lr=GAL_LR, **without_the_key).state_dict()


@pytest.mark.parametrize(("name", "timm_name"), [("sgd", "momentum"), ("adam", "adam"), ("adamw", "adamw")])
def test_torchs_own_optimizers_are_timms_registry_entries(name, timm_name):
    """sgd, adam and adamw are built from torch directly (no timm import for them): the classes and settings that
    timm's registry names, so runs made through timm's registry are the same runs."""
    import timm.optim

    model = torch.nn.Linear(3, 2)
    ours = build_optimizer(model, None, name, lr=0.1)
    theirs = timm.optim.get_optimizer_class(timm_name)
    theirs_class = getattr(theirs, "func", theirs)
    assert type(ours) is theirs_class
    for key, value in getattr(theirs, "keywords", {}).items():  # "momentum": nesterov=False
        assert ours.defaults[key] == value
