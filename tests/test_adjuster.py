"""The GAL maths (Eq. 3-7, Algorithm 1) pinned against hand computations and autograd."""

import os
import socket
from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gal import GradientAdjuster


def _cross_entropy(targets):
    return lambda z: nn.functional.cross_entropy(z, targets)


def _setup(seed=0, batch=8, dim=5):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, dim))
    x = torch.randn(batch, 3)
    targets = torch.randint(0, dim, (batch,))
    return model, x, targets


def _model_grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_alpha_zero_gives_exactly_the_standard_gradients():
    model, x, targets = _setup()
    loss_fn = _cross_entropy(targets)
    loss_fn(model(x)).backward()
    standard = _model_grads(model)
    model.zero_grad()
    adj = GradientAdjuster(5, arch=(8,), alpha=0.0, beta=1.0, policy="always")
    stats = adj.backward(model(x), loss_fn, lr=0.1)
    assert bool(stats.adjusted)
    for ours, ref in zip(_model_grads(model), standard):
        assert torch.equal(ours, ref)


@pytest.mark.parametrize("alpha", [0.001, 0.3, 1.0])
def test_adjustment_norm_is_alpha_times_grad_norm_per_sample(alpha):
    model, x, targets = _setup()
    adj = GradientAdjuster(5, arch=(16, 4), alpha=alpha)
    stats = adj.backward(model(x), _cross_entropy(targets), lr=0.1)
    expected = alpha * stats.grad.norm(dim=-1)
    torch.testing.assert_close(stats.adjustment.norm(dim=-1), expected, rtol=1e-5, atol=1e-9)


def test_random_adjustment_without_grad_scaling_has_norm_alpha():
    model, x, targets = _setup()
    adj = GradientAdjuster(5, alpha=0.2, kind="uniform", scale_by_grad=False)
    stats = adj.backward(model(x), _cross_entropy(targets), lr=0.1)
    torch.testing.assert_close(stats.adjustment.norm(dim=-1), torch.full((8,), 0.2))
    assert list(adj.parameters()) == []


def test_remainder_matches_eq7_by_hand():
    model, x, targets = _setup()
    adj = GradientAdjuster(5, arch=(7, 3), alpha=0.5, beta=2.0)
    lr = 0.3
    z = model(x)
    zd = z.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(zd, targets)
    (grad,) = torch.autograd.grad(loss, zd)
    v = adj.h(zd.detach())
    v_tilde = 0.5 * grad.norm(dim=1, keepdim=True) * v / v.norm(dim=1, keepdim=True)
    g = grad + v_tilde
    eta = 2.0 * lr
    tentative = nn.functional.cross_entropy(zd.detach() - eta * g, targets)
    remainder = tentative - loss + eta * (grad * g).sum(1).mean()

    stats = adj.backward(z, _cross_entropy(targets), lr=lr)
    torch.testing.assert_close(stats.loss, loss.detach())
    torch.testing.assert_close(stats.tentative_loss, tentative.detach())
    torch.testing.assert_close(stats.remainder, remainder.detach())
    torch.testing.assert_close(stats.adjustment, v_tilde.detach())


def test_h_gets_gradient_only_from_abs_remainder_and_model_gets_chosen_gradient():
    model, x, targets = _setup()
    adj = GradientAdjuster(5, arch=(6,), alpha=0.4, beta=1.0, policy="always")
    lr = 0.5
    # Reference: |r| by autograd into h, g by the chain rule into the model.
    z = model(x)
    zd = z.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(zd, targets)
    (grad,) = torch.autograd.grad(loss, zd)
    v = adj.h(zd.detach())
    g = grad + 0.4 * grad.norm(dim=1, keepdim=True) * v / v.norm(dim=1, keepdim=True)
    tentative = nn.functional.cross_entropy(zd.detach() - lr * g, targets)
    remainder = tentative - loss.detach() + lr * (grad * g).sum(1).mean()
    h_ref = torch.autograd.grad(remainder.abs(), list(adj.parameters()))
    model_ref = torch.autograd.grad(z, list(model.parameters()), grad_outputs=g.detach())

    adj.zero_grad()
    model.zero_grad()
    adj.backward(model(x), _cross_entropy(targets), lr=lr)
    for p, ref in zip(adj.parameters(), h_ref):
        torch.testing.assert_close(p.grad, ref)
    for p, ref in zip(model.parameters(), model_ref):
        torch.testing.assert_close(p.grad, ref)


@pytest.mark.parametrize("policy", ["le", "lt", "always", "never"])
def test_policies_pick_what_algorithm_1_says(policy):
    model, x, targets = _setup()
    loss_fn = _cross_entropy(targets)
    adj = GradientAdjuster(5, arch=(8,), alpha=1.0, beta=1.0, policy=policy)
    stats = adj.backward(model(x), loss_fn, lr=0.1)
    better_or_equal = bool(stats.tentative_loss <= stats.loss)
    expected = {
        "le": better_or_equal,
        "lt": bool(stats.tentative_loss < stats.loss),
        "always": True,
        "never": False,
    }[policy]
    assert bool(stats.adjusted) == expected
    # The model must have received exactly the gradient the decision names.
    chosen = stats.grad + stats.adjustment if expected else stats.grad
    reference = torch.autograd.grad(model(x), list(model.parameters()), grad_outputs=chosen)
    for p, ref in zip(model.parameters(), reference):
        torch.testing.assert_close(p.grad, ref)


def test_le_and_lt_differ_on_a_tie():
    # A loss flat in z makes the tentative loss equal the loss: line 7 (<=) takes g, '<' does not.
    z = torch.zeros(4, 3, requires_grad=True)
    flat = lambda f: (f * 0).sum()  # noqa: E731
    assert bool(GradientAdjuster(3, arch=(4,), policy="le").backward(z, flat, 0.1).adjusted)
    assert not bool(GradientAdjuster(3, arch=(4,), policy="lt").backward(z, flat, 0.1).adjusted)


def test_per_sample_policy_decides_each_sample():
    # Squared error on a 1-d output: the tentative step scales each residual by
    # 1 - c (1 +- alpha); with c = 1.9 and alpha = 0.5 the '+' samples overshoot and the '-' ones improve.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    adj = GradientAdjuster(1, arch=(8,), alpha=0.5, beta=1.9 * 32 / 2, per_sample=True)
    per_sample_loss = lambda z: ((z - y) ** 2).squeeze(-1)  # noqa: E731
    z = model(x)
    stats = adj.backward(z, per_sample_loss, lr=1.0)
    assert stats.adjusted.shape == (32,)
    g = stats.grad + stats.adjustment
    tentative = per_sample_loss(z.detach() - adj.beta * g)
    assert torch.equal(stats.adjusted, tentative <= per_sample_loss(z.detach()))
    assert 0 < int(stats.adjusted.sum()) < 32, "the test needs a mixed decision to mean anything"
    chosen = torch.where(stats.adjusted[:, None], g, stats.grad)
    reference = torch.autograd.grad(model(x), list(model.parameters()), grad_outputs=chosen)
    for p, ref in zip(model.parameters(), reference):
        torch.testing.assert_close(p.grad, ref)


def test_zero_gradient_gives_zero_adjustment_without_nan():
    z = torch.zeros(2, 4, requires_grad=True)
    adj = GradientAdjuster(4, arch=(3,), alpha=0.5)
    stats = adj.backward(z, lambda f: (f * 0).sum(), lr=0.1)
    assert torch.equal(stats.adjustment, torch.zeros(2, 4))
    assert all(torch.isfinite(p.grad).all() for p in adj.parameters())


def test_extra_dims_are_samples_of_the_feature_dim():
    # DETR-like z: (batch, queries, 4); norms are per query over the 4 box floats.
    z = torch.randn(2, 3, 4, requires_grad=True)
    target = torch.rand(2, 3, 4)
    adj = GradientAdjuster(4, arch=(8,), alpha=0.1)
    stats = adj.backward(z, lambda f: (f - target).abs().mean(), lr=0.1)
    torch.testing.assert_close(stats.adjustment.norm(dim=-1), 0.1 * stats.grad.norm(dim=-1))
    assert z.grad.shape == (2, 3, 4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"beta": 0.0}, "beta"),
        ({"arch": ()}, "arch"),
        ({"policy": "sometimes"}, "policy"),
        ({"kind": "rnn"}, "kind"),
        ({"first_order": "exact"}, "first_order"),
        ({"precision": "float16"}, "precision"),
        ({"ddp": "local"}, "ddp"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GradientAdjuster(**{"dim": 5, **kwargs})


def test_dim_mismatch_is_a_clear_error():
    adj = GradientAdjuster(5, arch=(4,))
    with pytest.raises(ValueError, match="dim=5"):
        adj.backward(torch.randn(2, 6, requires_grad=True), lambda f: f.sum(), 0.1)


def test_weight_counts_match_the_paper():
    assert GradientAdjuster(100, arch=(256, 64, 32)).count_weights() == 47_232  # "47.2K"
    assert GradientAdjuster(4, arch=(64, 16)).count_weights() == 1_344  # DETR
    assert GradientAdjuster(100, arch=(256,)).count_weights() == 51_200  # "51.2K"


def test_default_h_is_linear_layers_with_bias_and_no_activation():
    adj = GradientAdjuster(10, arch=(100, 32, 16))
    layers = list(adj.h)
    assert [type(m) for m in layers] == [nn.Linear] * 4
    assert [(m.in_features, m.out_features) for m in layers] == [(10, 100), (100, 32), (32, 16), (16, 10)]
    assert all(m.bias is not None for m in layers)


@pytest.mark.parametrize("dim, side", [(16, 4), (10, 4), (1, 1), (100, 10)])
def test_cnn_kind_pads_z_to_the_next_square(dim, side):
    adj = GradientAdjuster(dim, arch=(8, 4), kind="cnn", alpha=0.1)
    assert adj.h.side == side
    z = torch.randn(3, dim, requires_grad=True)
    stats = adj.backward(z, lambda f: (f**2).mean(), lr=0.1)
    assert stats.adjustment.shape == (3, dim)
    assert all(p.grad is not None for p in adj.parameters())


def test_cnn_padding_is_zeros_not_wraparound():
    adj = GradientAdjuster(10, arch=(2,), kind="cnn", bias=False)
    with torch.no_grad():
        adj.h.convs[0].weight.zero_()
        adj.h.convs[0].weight[0, 0, 1, 1] = 1.0  # the centre tap copies the map
    maps = []
    adj.h.convs.register_forward_pre_hook(lambda module, args: maps.append(args[0]))
    adj(torch.arange(1.0, 11.0).view(1, 10))
    assert maps[0].flatten().tolist() == [*range(1, 11), 0, 0, 0, 0, 0, 0]


# Table VIII counts at CIFAR-100's d = 100: the MLPs' weights only (51.2K, 48.3K, 47.2K, 46.1K).
@pytest.mark.parametrize(
    "arch, weights", [((256,), 51_200), ((256, 64), 48_384), ((256, 64, 32), 47_232), ((256, 64, 32, 16), 46_144)]
)
def test_weight_count_matches_table_viii_for_the_mlps(arch, weights):
    assert GradientAdjuster(100, arch=arch).count_weights() == weights


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_runs_under_autocast(dtype):
    model, x, targets = _setup()
    adj = GradientAdjuster(5, arch=(8,), alpha=0.1)
    with torch.autocast("cpu", dtype=dtype):
        z = model(x)
        stats = adj.backward(z, _cross_entropy(targets), lr=0.1)
    assert z.dtype == dtype
    assert torch.isfinite(stats.remainder)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in adj.parameters())


def test_grad_scale_multiplies_every_gradient():
    model, x, targets = _setup()
    adj = GradientAdjuster(5, arch=(8,), alpha=0.3, policy="always")
    adj.backward(model(x), _cross_entropy(targets), lr=0.1)
    plain = _model_grads(model) + [p.grad.clone() for p in adj.parameters()]
    model.zero_grad()
    adj.zero_grad()
    adj.backward(model(x), _cross_entropy(targets), lr=0.1, grad_scale=8.0)
    scaled = _model_grads(model) + [p.grad.clone() for p in adj.parameters()]
    for s, p in zip(scaled, plain):
        torch.testing.assert_close(s, 8.0 * p)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toy_run(batches, rank=None, world_size=1, gal=None):
    """5 SGD steps of a small model with GAL; with ``rank`` each process takes its slice of every batch."""
    gal = gal or {}
    torch.manual_seed(0)  # the same initial model and h everywhere, as the trainer does
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 5))
    if rank is not None:
        model = nn.parallel.DistributedDataParallel(model)
    adj = GradientAdjuster(5, arch=(8, 4), alpha=0.5, beta=20.0, **gal)
    opt = torch.optim.SGD([{"params": model.parameters()}, {"params": adj.parameters()}], lr=0.1)
    reduction = "none" if gal.get("per_sample") else "mean"
    for x, y in batches:
        if rank is not None:
            x, y = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
        opt.zero_grad()
        adj.backward(model(x), partial(nn.functional.cross_entropy, target=y, reduction=reduction), lr=0.1)
        opt.step()
    model = model.module if rank is not None else model
    return {
        **{f"model.{k}": v for k, v in model.state_dict().items()},
        **{f"h.{k}": v for k, v in adj.state_dict().items()},
    }


def _toy_batches():
    generator = torch.Generator().manual_seed(100)
    return [
        (torch.randn(16, 3, generator=generator), torch.randint(0, 5, (16,), generator=generator)) for _ in range(5)
    ]


def _ddp_worker(rank, world_size, port, out_dir, gal):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    state = _toy_run(_toy_batches(), rank, world_size, gal)
    torch.save({k: v.clone() for k, v in state.items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()  # both ranks done before gloo tears down: a rank leaving first could abort the other
    dist.destroy_process_group()


# the Taylor term's scale (global batch in per-batch mode, each sample's own loss) must survive the split
@pytest.mark.parametrize(
    "gal", [{}, {"first_order": "taylor"}, {"first_order": "taylor", "per_sample": True, "precision": "float64"}]
)
def test_ddp_keeps_h_identical_and_matches_one_process_on_the_global_batch(tmp_path, gal):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), gal), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = _toy_run(_toy_batches(), gal=gal)
    torch.manual_seed(0)
    nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 5))
    initial = GradientAdjuster(5, arch=(8, 4)).state_dict()
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], single[name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(ranks[0][f"h.{n}"], initial[n]) for n in initial), "h must have been trained"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-sync detection needs a CUDA device")
def test_backward_makes_no_host_device_sync_on_cuda():
    model, x, targets = _setup()
    model, x, targets = model.cuda(), x.cuda(), targets.cuda()
    adj = GradientAdjuster(5, arch=(8,), alpha=0.1).cuda()
    adj.backward(model(x), _cross_entropy(targets), lr=0.1)  # warm-up: lazy CUDA init may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        for policy, per_sample in [("le", False), ("lt", True), ("always", False)]:
            adj.policy, adj.per_sample = policy, per_sample
            loss_fn = lambda z: nn.functional.cross_entropy(z, targets, reduction="none")  # noqa: E731
            adj.backward(model(x), loss_fn, lr=0.1)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_other_loss_gets_its_standard_gradient_in_the_same_pass():
    # Two heads: GAL acts on z = head_a(x); head_b's loss does not pass through z (like DETR's class terms).
    torch.manual_seed(0)
    trunk, head_a, head_b = nn.Linear(3, 8), nn.Linear(8, 5), nn.Linear(8, 2)
    x, targets, other_targets = torch.randn(6, 3), torch.randint(0, 5, (6,)), torch.randn(6, 2)
    params = [*trunk.parameters(), *head_a.parameters(), *head_b.parameters()]

    def forward():
        features = torch.tanh(trunk(x))
        return head_a(features), ((head_b(features) - other_targets) ** 2).mean()

    z, other = forward()
    (nn.functional.cross_entropy(z, targets) + other).backward()
    standard = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    z, other = forward()
    GradientAdjuster(5, arch=(4,), alpha=0.0).backward(z, _cross_entropy(targets), lr=0.1, other_loss=other)
    for p, ref in zip(params, standard):
        torch.testing.assert_close(p.grad, ref)


@pytest.mark.parametrize("policy", ["le", "never"])
def test_g_wins_is_line_7_per_sample_whatever_the_policy(policy):
    torch.manual_seed(0)
    z, y = torch.randn(8, 1, requires_grad=True), torch.randn(8)
    per_sample_loss = lambda features: (features.squeeze(-1) - y) ** 2  # noqa: E731
    torch.manual_seed(1)
    # d = 1: g = (1 +- alpha) dl/dz per sample, and a tentative step of 2x the optimal one overshoots where it is 1.5x
    adj = GradientAdjuster(1, arch=(8,), alpha=0.5, beta=80.0, policy=policy)
    stats = adj.backward(z, per_sample_loss, lr=0.1)
    tentative = per_sample_loss(z.detach() - 80.0 * 0.1 * (stats.grad + stats.adjustment))
    assert stats.g_wins.shape == (8,) and stats.adjusted.shape == ()  # one decision per batch, 8 per-sample tests
    assert torch.equal(stats.g_wins, tentative <= per_sample_loss(z.detach()))
    assert 0 < int(stats.g_wins.sum()) < 8


def test_g_wins_falls_back_to_the_batch_test_for_a_scalar_loss():
    model, x, targets = _setup()
    stats = GradientAdjuster(5, arch=(8,), alpha=0.1).backward(model(x), _cross_entropy(targets), lr=0.1)
    assert stats.g_wins.shape == () and torch.equal(stats.g_wins, stats.adjusted)


# Eq. 7's first-order term ("first_order") and the GAL step's precision ("precision").


def _constant_h(adj, c):
    """Make h output the known vector c for every input: zero weights, c as the last bias."""
    with torch.no_grad():
        for layer in adj.h:
            layer.weight.zero_()
            layer.bias.zero_()
        adj.h[-1].bias.copy_(c)
    return adj


def _eq7_reference(z, sample_loss, c, alpha, eta, per_sample):
    """Eq. 7 literally in float64: r = l(z - eta g) - l(z) + eta <dl/dz, g>, l the loss r is of.

    g is built from the gradient of the batch-mean loss (what the backbone receives); per sample, r_i uses
    l_i and its own gradient dl_i/dz_i.
    """
    z = z.detach().double().requires_grad_(True)
    (grad,) = torch.autograd.grad(sample_loss(z).mean(), z)
    c = c.double()
    g = grad + alpha * grad.norm(dim=-1, keepdim=True) * c / c.norm()
    z = z.detach()
    if per_sample:
        z.requires_grad_(True)
        (own_grad,) = torch.autograd.grad(sample_loss(z).sum(), z)  # row i is dl_i/dz_i
        z = z.detach()
        return sample_loss(z - eta * g) - sample_loss(z) + eta * (own_grad * g).flatten(1).sum(1)
    return sample_loss(z - eta * g).mean() - sample_loss(z).mean() + eta * (grad * g).sum()


def _ce_per_sample(targets):
    return lambda z: nn.functional.cross_entropy(z, targets, reduction="none")


def _boxes_per_sample(targets):
    """A smooth DETR-like box loss on (B, queries, 4): each image's mean over its queries and coordinates."""
    return lambda z: (nn.functional.softplus(z - targets) ** 2).mean((1, 2))


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("shape", [(8, 5), (3, 6, 4)])
def test_taylor_remainder_is_eq7_literally_in_float64(shape, per_sample):
    torch.manual_seed(0)
    z = torch.randn(*shape, requires_grad=True)
    if len(shape) == 2:
        sample_loss = _ce_per_sample(torch.randint(0, shape[-1], shape[:1]))
    else:
        sample_loss = _boxes_per_sample(torch.rand(*shape))
    c = torch.randn(shape[-1])
    taylor64 = {"first_order": "taylor", "precision": "float64"}
    adj = GradientAdjuster(shape[-1], arch=(4,), alpha=0.5, beta=2.0, per_sample=per_sample, **taylor64)
    _constant_h(adj, c)
    loss_fn = sample_loss if per_sample else lambda f: sample_loss(f).mean()
    stats = adj.backward(z, loss_fn, lr=0.3)
    reference = _eq7_reference(z, sample_loss, c, alpha=0.5, eta=0.6, per_sample=per_sample)
    assert stats.remainder.dtype == torch.float64 and stats.remainder.shape == reference.shape
    torch.testing.assert_close(stats.remainder, reference, rtol=1e-10, atol=1e-15)
    assert z.grad.dtype == torch.float32


@pytest.mark.parametrize("shape", [(8, 5), (2, 3, 4)])
def test_quadratic_loss_remainders_in_closed_form(shape):
    # l = mean over the N = B (x queries) vectors of 0.5 ||z - t||^2: grad = (z - t) / N, and
    # l(z - eta g) - l(z) = -eta <grad, g> + eta^2 ||g||^2 / (2N). Taylor's r is the second-order term alone;
    # the authors' first-order term is 1/N of Taylor's, so theirs keeps -(1 - 1/N) eta <grad, g>.
    torch.manual_seed(0)
    z, target = torch.randn(*shape, requires_grad=True), torch.randn(*shape)
    n = z[..., 0].numel()
    loss_fn = lambda f: 0.5 * ((f - target) ** 2).sum(-1).mean()  # noqa: E731
    remainders = {}
    for first_order in ("authors", "taylor"):
        torch.manual_seed(1)
        adj = GradientAdjuster(shape[-1], arch=(6,), alpha=0.3, first_order=first_order, precision="float64")
        stats = adj.backward(z, loss_fn, lr=0.5)
        remainders[first_order] = stats.remainder
    g = stats.grad + stats.adjustment
    second_order = 0.5**2 * (g**2).sum() / (2 * n)
    torch.testing.assert_close(remainders["taylor"], second_order, rtol=1e-9, atol=1e-15)
    authors = second_order - (1 - 1 / n) * 0.5 * (stats.grad * g).sum()
    torch.testing.assert_close(remainders["authors"], authors, rtol=1e-9, atol=1e-15)


def test_per_sample_taylor_remainder_of_a_quadratic_is_half_eta_squared_g_squared():
    torch.manual_seed(0)
    z, target = torch.randn(6, 3, requires_grad=True), torch.randn(6, 3)
    adj = GradientAdjuster(3, arch=(5,), alpha=0.4, per_sample=True, first_order="taylor", precision="float64")
    stats = adj.backward(z, lambda f: 0.5 * ((f - target) ** 2).sum(-1), lr=0.2)
    g = stats.grad + stats.adjustment  # built from the batch mean's gradient; r_i uses l_i's own
    torch.testing.assert_close(stats.remainder, 0.2**2 * (g**2).sum(-1) / 2, rtol=1e-9, atol=1e-15)


def test_taylor_remainder_shrinks_quadratically_with_lr_and_the_authors_linearly():
    torch.manual_seed(0)
    z, targets = torch.randn(32, 10, requires_grad=True), torch.randint(0, 10, (32,))
    remainders = {}
    for first_order in ("authors", "taylor"):
        torch.manual_seed(1)
        adj = GradientAdjuster(10, arch=(16,), alpha=0.1, first_order=first_order, precision="float64")
        remainders[first_order] = [float(adj.backward(z, _cross_entropy(targets), lr).remainder) for lr in (0.1, 0.01)]
        remainders[first_order].append(float(adj.backward(z, _cross_entropy(targets), 0.005).remainder))
    authors, taylor = remainders["authors"], remainders["taylor"]
    assert authors[0] / authors[1] == pytest.approx(10, rel=0.02)  # first order: -(1 - 1/B) eta~ grad^T g
    assert taylor[0] / taylor[1] == pytest.approx(100, rel=0.05)  # second order
    assert taylor[1] / taylor[2] == pytest.approx(4, rel=0.05)  # halving lr divides r by 4
    assert abs(taylor[0]) < abs(authors[0]) / 10


def _squared_error(targets):
    """A loss whose tentative step overshoots for a large eta~ (cross-entropy keeps falling along -grad)."""
    one_hot = nn.functional.one_hot(targets, 5).double()
    return lambda z: 0.5 * ((z - one_hot) ** 2).sum(1).mean()


def _float64_reference_step(model, adj, x, loss_fn, lr):
    """Decision and remainder of one GAL step computed by hand in float64 (h in its own dtype)."""
    z = model(x).detach().requires_grad_(True)
    loss = loss_fn(z)
    (grad,) = torch.autograd.grad(loss, z)
    with torch.no_grad():
        v = adj.h(z.to(adj.h[0].weight.dtype)).double()
        g = grad + adj.alpha * grad.norm(dim=1, keepdim=True) * v / v.norm(dim=1, keepdim=True)
        tentative = loss_fn(z - adj.beta * lr * g)
        remainder = tentative - loss + adj.beta * lr * (grad * g).sum(1).mean()
    return tentative <= loss, remainder


@pytest.mark.parametrize("h_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_a_float64_model_trains_with_gal_in_float64(precision, h_dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 5)).double()
    adj = GradientAdjuster(5, arch=(8, 4), alpha=0.5, beta=250.0, precision=precision).to(h_dtype)
    opt = torch.optim.SGD([{"params": model.parameters()}, {"params": adj.parameters()}], lr=0.1)
    decisions = []
    for x, y in _toy_batches():
        x, loss_fn = x.double(), _squared_error(y)
        expected_decision, expected_remainder = _float64_reference_step(model, adj, x, loss_fn, lr=0.1)
        opt.zero_grad()
        stats = adj.backward(model(x), loss_fn, lr=0.1)
        opt.step()
        assert stats.remainder.dtype == torch.float64  # a float64 z is never rounded to float32
        assert torch.equal(stats.adjusted, expected_decision)
        torch.testing.assert_close(stats.remainder, expected_remainder, rtol=1e-9, atol=1e-12)
        decisions.append(bool(stats.adjusted))
    assert all(torch.isfinite(p).all() and p.dtype == torch.float64 for p in model.parameters())
    assert all(torch.isfinite(p).all() and p.dtype == h_dtype for p in adj.parameters())
    assert set(decisions) == {True, False}, "the test needs both decisions to mean anything"


def test_float64_precision_resolves_a_remainder_below_the_float32_spacing_of_the_loss():
    # ImageNet's beta = 0.001 on a 100-class step: l(z - eta~ g) - l(z) ~ -1.6e-7 is below the float32
    # spacing of l ~ 4.6 (4.8e-7), so float32 sees l(z - eta~ g) == l(z) (or one spacing off).
    torch.manual_seed(0)
    z, targets = (0.1 * torch.randn(100, 100)).requires_grad_(True), torch.randint(0, 100, (100,))
    stats = {}
    for precision in ("float32", "float64"):
        torch.manual_seed(1)
        adj = GradientAdjuster(100, arch=(32,), alpha=0.001, beta=0.001, precision=precision)
        stats[precision] = adj.backward(z, _cross_entropy(targets), lr=0.016)
    torch.manual_seed(1)
    adj = GradientAdjuster(100, arch=(32,), alpha=0.001, beta=0.001)
    reference = _eq7_authors_float64(z, targets, adj, eta=0.001 * 0.016)
    spacing = torch.finfo(torch.float32).eps * 4  # the loss lies in [4, 8)
    assert 4 <= float(stats["float32"].loss) < 8
    assert abs(float(stats["float32"].tentative_loss - stats["float32"].loss)) <= spacing
    assert abs(reference) > 1e-7
    torch.testing.assert_close(stats["float64"].remainder, reference, rtol=1e-6, atol=0)
    assert abs(float(stats["float32"].remainder) - float(reference)) > 0.5 * abs(float(reference))


def _eq7_authors_float64(z, targets, adj, eta):
    """The authors' remainder computed by hand in float64 (h's output cast up)."""
    z = z.detach().double().requires_grad_(True)
    loss = nn.functional.cross_entropy(z, targets)
    (grad,) = torch.autograd.grad(loss, z)
    with torch.no_grad():
        v = adj.h(z.float()).double()
        g = grad + adj.alpha * grad.norm(dim=1, keepdim=True) * v / v.norm(dim=1, keepdim=True)
        return nn.functional.cross_entropy(z - eta * g, targets) - loss + eta * (grad * g).sum(1).mean()


def test_mean_first_order_is_the_authors_toy_term():
    """first_order='mean' (the authors' 3D toy): r = l(z - eta g) - l(z) + eta * mean(dl/dz * g), by hand."""
    z = torch.tensor([0.75, 1.0], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0.3, -0.8], dtype=torch.float64)

    def toy(p):
        x, y = p[..., 0], p[..., 1]
        return -torch.sin(x**2) * torch.cos(3 * y**2) * torch.exp(-((x * y) ** 2)) - torch.exp(-((x + y) ** 2))

    alpha, eta = 0.4, 0.02
    (grad,) = torch.autograd.grad(toy(z), z)
    g = grad + alpha * grad.norm() * c / c.norm()
    expected = toy(z.detach() - eta * g) - toy(z.detach()) + eta * (grad * g).mean()
    remainders = {}
    for first_order in ("mean", "authors"):
        adj = _constant_h(GradientAdjuster(2, arch=(4,), alpha=alpha, first_order=first_order).double(), c)
        remainders[first_order] = adj.backward(z, toy, eta).remainder
    torch.testing.assert_close(remainders["mean"], expected, rtol=0, atol=1e-15)
    # the authors' CIFAR term sums over the two coordinates: twice the toy's first-order term
    torch.testing.assert_close(remainders["authors"] - remainders["mean"], eta * (grad * g).mean(), rtol=1e-12, atol=0)


def _per_rank_reference(batches, world_size, gal):
    """The authors' multi-GPU step written out in one process: each rank's GAL step on its own slice, then
    the model's and h's gradients averaged over the ranks (what DDP and h's all-reduce do)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 5))
    adj = GradientAdjuster(5, arch=(8, 4), alpha=0.5, beta=20.0, **{**gal, "ddp": "global"})
    params = [*model.parameters(), *adj.parameters()]
    opt = torch.optim.SGD([{"params": model.parameters()}, {"params": adj.parameters()}], lr=0.1)
    for x, y in batches:
        total = [torch.zeros_like(p) for p in params]
        for xs, ys in zip(x.chunk(world_size), y.chunk(world_size)):
            opt.zero_grad()
            adj.backward(model(xs), partial(nn.functional.cross_entropy, target=ys), lr=0.1)  # one process alone
            for t, p in zip(total, params):
                t += p.grad / world_size
        for t, p in zip(total, params):
            p.grad = t
        opt.step()
    return {
        **{f"model.{k}": v for k, v in model.state_dict().items()},
        **{f"h.{k}": v for k, v in adj.state_dict().items()},
    }


@pytest.mark.parametrize("gal", [{}, {"first_order": "taylor"}])
def test_per_rank_ddp_is_the_authors_step_on_each_process(tmp_path, gal):
    gal = {**gal, "ddp": "per_rank"}
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), gal), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    reference = _per_rank_reference(_toy_batches(), 2, gal)
    global_batch = _toy_run(_toy_batches(), gal={**gal, "ddp": "global"})
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], reference[name], rtol=1e-5, atol=1e-6)
    # and it is another step than the global one (local dl/dz norms and decisions)
    assert any(not torch.allclose(ranks[0][n], global_batch[n], rtol=1e-4, atol=1e-5) for n in ranks[0])


def test_settings_are_declared_once_and_given_either_way():
    """GradientAdjuster takes GALSettings or its fields as keywords; the config's gal node is those fields plus the
    trainer's enabled, at and lr, with the same defaults; an unknown keyword names the nearest setting."""
    import dataclasses

    from gal.config import GalConfig
    from gal.settings import GALSettings

    by_object = GradientAdjuster(5, GALSettings(alpha=0.2, arch=[4]))
    by_keywords = GradientAdjuster(5, alpha=0.2, arch=[4])
    assert by_object.settings == by_keywords.settings == GALSettings(alpha=0.2, arch=[4])
    assert GradientAdjuster(5, GALSettings(alpha=0.2), beta=3.0).settings == GALSettings(alpha=0.2, beta=3.0)
    settings = {f.name: f for f in dataclasses.fields(GALSettings)}
    schema = {f.name: f for f in dataclasses.fields(GalConfig)}
    assert list(schema) == ["enabled", "at", "lr", *settings]
    assert all(schema[n].default == f.default and schema[n].default_factory == f.default_factory
               for n, f in settings.items())  # fmt: skip
    with pytest.raises(ValueError, match=r"alpah is not a GAL setting \(did you mean alpha\?\)"):
        GradientAdjuster(5, alpah=0.1)
