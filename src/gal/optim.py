"""Optimizer factory: the paper's optimizers from timm's registry and pytorch-optimizer; h joins as a param group.

A small registry in timm's style maps a config's ``name`` to a builder; adding an optimizer is one
decorated function. Each builder's keyword defaults are the values the paper's runs used, with their
source in its docstring; configs/optimizer/<name>.yaml repeats them so a run's config shows them.
timm and pytorch-optimizer are imported by the builders that use them: a run with torch's own optimizers
(Table V's Adam) starts without them (timm imports torchvision, seconds on a small CPU).
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from gal.adarem import AdaRem, AdaRemS, preceding_batchnorm
from gal.errors import ConfigError

ParamGroups = list[dict[str, Any]]
OptimizerBuilder = Callable[..., Optimizer]
OPTIMIZERS: dict[str, OptimizerBuilder] = {}


def register(name: str) -> Callable[[OptimizerBuilder], OptimizerBuilder]:
    """Add ``builder(param_groups, lr, weight_decay, **kwargs)`` to OPTIMIZERS under ``name``."""

    def add(builder: OptimizerBuilder) -> OptimizerBuilder:
        OPTIMIZERS[name] = builder
        return builder

    return add


def build_optimizer(
    model: nn.Module | ParamGroups,
    adjuster: nn.Module | None,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    gal_lr: float | None = None,
    filter_bias_and_bn: bool = False,
    **kwargs: Any,
) -> Optimizer:
    """Optimizer ``name`` over the model's parameters (the first groups) and h's (the last ones).

    h uses the same optimizer class and hyperparameters as the model (the authors' code),
    with its own learning rate when ``gal_lr`` is set (ImageNet: 0.016). ``kwargs`` are the
    config's other keys (momentum, betas, k, final_lr, ...) and reach the builder unchanged.

    ``filter_bias_and_bn`` (timm create_optimizer_v2's name) splits the model and h each into a group
    without weight decay (biases, 1-D params such as norm weights) and one with it: see :func:`decay_groups`.
    False keeps L2 on every parameter, one group for the model and one for h (the authors' CIFAR code).
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(sorted(OPTIMIZERS))}")
    if filter_bias_and_bn:
        if not isinstance(model, nn.Module):
            raise ConfigError(
                "filter_bias_and_bn needs the model as an nn.Module, to find its biases and 1-D params by name; "
                "it got param groups (a task's param_groups)"
            )
        groups = decay_groups(model, weight_decay)
        h_groups = decay_groups(adjuster, weight_decay) if adjuster is not None else []
        weight_decay = 0.0  # each group carries its own, as in timm's create_optimizer_v2 and the authors' fork
    else:
        if isinstance(model, nn.Module):
            groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
        else:  # a task's own groups, e.g. DETR's backbone with its own lr
            groups = list(model)
        h_params = list(adjuster.parameters()) if adjuster is not None else []
        h_groups = [{"params": h_params}] if h_params else []  # h of kind uniform / normal has none
    if gal_lr is not None:
        h_groups = [{**group, "lr": gal_lr} for group in h_groups]
    groups += h_groups
    if name == "adarem_s" and isinstance(model, nn.Module):
        kwargs.setdefault("bn_weights", preceding_batchnorm(model))  # the weights AdaRem-S keeps on a sphere
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])  # YAML gives a list; a checkpoint then keeps the tuple
    return OPTIMIZERS[name](groups, lr=lr, weight_decay=weight_decay, **kwargs)


def decay_groups(module: nn.Module, weight_decay: float) -> ParamGroups:
    """timm.optim.param_groups_weight_decay: ``[{params, weight_decay: 0.0}, {params, weight_decay}]``, empty
    groups left out; biases, params with ndim <= 1 and the names in ``module.no_weight_decay()`` go without decay.

    The authors' ImageNet runs: imagenet/train_gal.py calls create_optimizer_gal(args, model, regressor) with
    filter_bias_and_bn=True, which (imagenet/timm/optim/optim_factory.py, luoyan407/gradient_adjustment
    commit 77c431b) groups the model with add_weight_decay and h with add_weight_decay_lr(regressor, wd,
    gal_lr), both in this order, on ``len(param.shape) == 1 or name.endswith(".bias")``. timm's test also
    spares 0-d params and no_weight_decay() names; timm's resnet50 and efficientnet_b2 have neither.
    """
    no_weight_decay = module.no_weight_decay() if hasattr(module, "no_weight_decay") else ()
    # keywords: the third positional parameter is weight_decay_exclude_1d
    import timm.optim

    return timm.optim.param_groups_weight_decay(module, weight_decay=weight_decay, no_weight_decay_list=no_weight_decay)


@register("sgd")
def sgd(params: ParamGroups, lr: float, weight_decay: float, momentum: float = 0.9, **kwargs: Any) -> Optimizer:
    """SGD with classical momentum, not Nesterov: the authors' CIFAR code (lr 0.05, momentum 0.9, wd 1e-5).

    timm's registry entry "momentum" is this: torch.optim.SGD with nesterov=False bound (its "sgd" is Nesterov).
    """
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False, **kwargs)


@register("lookahead")
def lookahead(
    params: ParamGroups, lr: float, weight_decay: float, k: int = 5, alpha: float = 0.8, **sgd_kwargs: Any
) -> Optimizer:
    """:class:`AuthorsLookahead` around :func:`sgd`; k=5, alpha=0.8 are the authors' CIFAR code's defaults.

    Every k steps the slow weights move alpha of the way to the fast ones, and the fast weights
    restart from there (Zhang et al. 2019), in the authors' phase: syncs at steps 1, k+1, 2k+1, ...
    """
    from gal.lookahead import AuthorsLookahead

    return AuthorsLookahead(sgd(params, lr, weight_decay, **sgd_kwargs), alpha=alpha, k=k)


@register("adabound")
def adabound(
    params: ParamGroups,
    lr: float,
    weight_decay: float,
    final_lr: float = 0.1,
    gamma: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decouple: bool = False,
    ams_bound: bool = False,
) -> Optimizer:
    """pytorch-optimizer's AdaBound (Luo et al. 2019): Adam with per-coordinate step sizes clipped to bounds
    that close in on ``final_lr``. final_lr 0.1, gamma 1e-3, betas (0.9, 0.999) are the authors' CIFAR
    code's (their lr 1e-3 and wd 5e-4 come from the config); eps 1e-8 is the reference AdaBound's.

    weight_decouple=False: the reference AdaBound (Luolc/AdaBound; the authors' code imports an
    ``adabound.AdaBound``) adds weight decay to the gradient (L2); pytorch-optimizer defaults to decoupled.
    The keywords are spelled out because pytorch-optimizer's AdaBound takes ``**kwargs`` and would ignore
    a misspelt key.
    """
    import pytorch_optimizer

    return pytorch_optimizer.AdaBound(
        params,
        lr=lr,
        weight_decay=weight_decay,
        final_lr=final_lr,
        gamma=gamma,
        betas=betas,
        eps=eps,
        weight_decouple=weight_decouple,
        ams_bound=ams_bound,
    )


@register("rmsproptf")
def rmsproptf(
    params: ParamGroups,
    lr: float,
    weight_decay: float,
    eps: float = 1e-3,
    momentum: float = 0.9,
    alpha: float = 0.9,
    **kwargs: Any,
) -> Optimizer:
    """timm's TensorFlow-style RMSprop (Table III), with the authors' EfficientNet-B2 recipe's settings.

    eps 1e-3 is the recipe's --opt-eps (RMSpropTF's own default is 1e-10); momentum 0.9 is timm
    train.py's --momentum default; alpha (the decay) 0.9 is what timm's registry binds for "rmsproptf".
    The recipe's lr 0.016 and wd 1e-5 come from the config.
    """
    import timm.optim

    rmsprop_class = timm.optim.get_optimizer_class("rmsproptf")
    return rmsprop_class(params, lr=lr, weight_decay=weight_decay, eps=eps, momentum=momentum, alpha=alpha, **kwargs)


@register("adam")
def adam(params: ParamGroups, lr: float, weight_decay: float, **kwargs: Any) -> Optimizer:
    """torch's Adam, timm's registry entry "adam" (Table V); the paper gives no settings, so torch's defaults apply."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kwargs)


@register("adamw")
def adamw(params: ParamGroups, lr: float, weight_decay: float, **kwargs: Any) -> Optimizer:
    """torch's AdamW, timm's registry entry "adamw" (Table IV); DETR's lr 1e-4 and wd 1e-4 come from the config."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kwargs)


@register("adarem")
def adarem(params: ParamGroups, lr: float, weight_decay: float, **kwargs: Any) -> Optimizer:
    """AdaRem (papers/adarem_paper.txt, Alg. 1): SGD-M's lr (0.4 at batch 1024), lambda 0.999 decayed once per
    epoch via ``optimizer.epoch_end()`` (the trainer calls it); the step follows g, the momentum scales each
    coordinate's lr. The defaults live in :class:`gal.adarem.AdaRem`, whose explicit keywords reject a typo."""
    return AdaRem(params, lr=lr, weight_decay=weight_decay, **kwargs)


@register("adarem_s")
def adarem_s(params: ParamGroups, lr: float, weight_decay: float, **kwargs: Any) -> Optimizer:
    """AdaRem-S (Alg. 2): the ``bn_weights`` (found by :func:`gal.adarem.preceding_batchnorm` when a model is
    given) stay on the sphere of their initial norm with the SLR lr; the other params take AdaRem steps."""
    return AdaRemS(params, lr=lr, weight_decay=weight_decay, **kwargs)
