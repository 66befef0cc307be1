"""Where GAL adjusts dl/dz: the injection point, ``gal.at``, for any model, read by the trainer alone.

    logits          the model's output, the task's own z (the paper, the authors' code; the default)
    pre_logits      the classifier's input: timm's ``get_classifier()``, or a plain model's last nn.Linear
                    (the regression MLPs' and the digits CNN's penultimate layer)
    features        the unpooled feature map, ``forward_features``' output (timm models with ``forward_head``);
                    h works per position over its channels
    module:<name>   the output of any entry of ``model.named_modules()`` (``module:layer3.1``, ``module:2``)

At ``logits`` the task's ``features_and_loss`` is used as it is. Elsewhere the forward is still the model's own
(``model(x)``, through DDP when it is wrapped): a hook takes z where it is made and hands the layers after it
``z.detach()``, so those layers get their standard gradient (``other_loss``, in the same backward pass) and the
layers up to z the gradient GAL chooses (through z). GAL's own evaluations of the loss at z' (at z and at
z - eta~ g) run the layers after z on z' with their parameters detached (|r| trains h only), their buffers copied
(BatchNorm's running statistics move once per step, as without GAL) and the random state the training forward
had at z (the same dropout masks):

- ``pre_logits``: the classifier alone, when its output is the model's (timm's models, the MLPs, the digits CNN);
- ``features``: timm's ``forward_head`` (pooling, head dropout, classifier);
- any other point: the whole model again, with z' put in at the point and the layers before it run without a
  graph. That costs one more forward pass per evaluation, two per step (scripts/bench_gal_overhead.py measures
  it per point).

Only GAL-on runs go through here; a baseline run trains as it always has, whatever ``gal.at`` says.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gal.errors import ConfigError
from gal.features import Features

NAMED_POINTS = ("logits", "pre_logits", "features")
MODULE_PREFIX = "module:"


def check_point(at: str) -> None:
    """A ConfigError unless ``at`` is one of the names or ``module:<name>``."""
    if at in NAMED_POINTS or (at.startswith(MODULE_PREFIX) and len(at) > len(MODULE_PREFIX)):
        return
    raise ConfigError(f"gal.at must be one of {', '.join(NAMED_POINTS)} or module:<name of a module>; got {at!r}")


@dataclass(frozen=True)
class Site:
    """Where z is taken: a module's ``input`` or ``output``, or the model's ``forward_features`` result."""

    name: str  # the module's name in named_modules(), or "forward_features"
    module: nn.Module
    takes: str  # "input" | "output" | "forward_features"


def locate(at: str, model: nn.Module) -> Site:
    """The site of the injection point ``at`` (not ``logits``) in ``model``, or a ConfigError saying why not."""
    check_point(at)
    modules = dict(model.named_modules())
    if at == "pre_logits":
        classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
        if classifier is None:
            linears = [m for m in modules.values() if isinstance(m, nn.Linear)]
            classifier = linears[-1] if linears else None
        if not isinstance(classifier, nn.Module) or isinstance(classifier, nn.Identity):
            raise ConfigError(
                f"gal.at=pre_logits needs a classifier layer; {type(model).__name__} has none "
                "(timm's get_classifier() or a last nn.Linear): use gal.at=module:<name>"
            )
        name = next(n for n, m in modules.items() if m is classifier)
        return Site(name, classifier, "input")
    if at == "features":
        if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
            raise ConfigError(
                f"gal.at=features needs a model with forward_features and forward_head (timm's); "
                f"{type(model).__name__} has none: use gal.at=module:<name> ({_some_names(modules)})"
            )
        return Site("forward_features", model, "forward_features")
    name = at[len(MODULE_PREFIX) :]
    if name not in modules or name == "":
        near = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
        hint = f"the nearest: {', '.join(near)}" if near else _some_names(modules)
        raise ConfigError(f"gal.at={at}: {type(model).__name__} has no module {name!r}; {hint}")
    return Site(name, modules[name], "output")


def _some_names(modules: dict[str, nn.Module]) -> str:
    names = [n for n in modules if n]
    return f"its modules include {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"


def gal_layout(z: Tensor) -> Tensor:
    """z as h sees it, features last: an (N, C, H, W) map becomes (N, H, W, C); others stay."""
    return z.movedim(1, -1) if z.dim() == 4 else z


def model_layout(z: Tensor) -> Tensor:
    return z.movedim(-1, 1) if z.dim() == 4 else z


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@contextmanager
def _replaced(site: Site, replace: Callable[[Any], Any]) -> Iterator[None]:
    """While inside, the value at ``site`` is ``replace(value)`` in every forward of the model."""
    if site.takes == "output":
        handle = site.module.register_forward_hook(lambda _module, _args, output: replace(output))
    elif site.takes == "input":
        handle = site.module.register_forward_pre_hook(lambda _module, args: (replace(args[0]), *args[1:]))
    else:
        model, original = site.module, site.module.forward_features
        model.forward_features = lambda *args, **kwargs: replace(original(*args, **kwargs))
    try:
        yield
    finally:
        if site.takes == "forward_features":
            del site.module.forward_features  # the class's method again
        else:
            handle.remove()


class _Head(nn.Module):
    """timm's forward_head as a module's forward, for functional_call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor) -> Tensor:
        return self.model.forward_head(features)


def _detached_state(module: nn.Module) -> dict[str, Tensor]:
    """Parameters detached (no gradient from |r|) and buffers copied (no second update of running statistics)."""
    state = {name: p.detach() for name, p in module.named_parameters()}
    return state | {name: b.clone() for name, b in module.named_buffers()}


Forward = Callable[[nn.Module, Any], tuple]  # (model, batch) -> (output, loss_fn(output)[, other loss terms])


def _forward(task: Any) -> Forward:
    """A task's ``features_and_loss``, or a plain loop's own forward function (see :class:`Injection`)."""
    return task if callable(task) else task.features_and_loss


class Injection:
    """GAL's z at ``at`` in ``model`` (the unwrapped model; the trainer may run it through DDP).

    ``task`` is a trainer task (gal.tasks), or in a loop of one's own a function ``forward(model, batch)`` that runs
    the model and returns ``(output, loss_fn)``, loss_fn giving the loss of the model's output (examples/).
    Built from one dry forward of a training batch (eval mode, nothing changed), which checks the point and
    gives h's size, ``feature_dim`` (z's channels for a feature map, else its last dimension).
    """

    def __init__(self, at: str, model: nn.Module, task: Any, batch: Any) -> None:
        self.at, self.model = at, model
        self.site = locate(at, model)
        self.feature_dim, self.suffix = self._dry_forward(task, batch)

    def _dry_forward(self, task: Any, batch: Any) -> tuple[int, str]:
        seen: list[Any] = []
        made: list[Tensor] = []

        def take(value: Any) -> Any:
            seen.append(value)
            return value

        hooks = []
        if self.site.takes == "input":  # does the classifier make the model's output (its suffix is it alone)?
            hooks.append(self.site.module.register_forward_hook(lambda _m, _a, output: made.append(output)))
        training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.enable_grad(), _replaced(self.site, take):
                output, output_loss, *_ = _forward(task)(self.model, batch)
                if len(seen) == 1 and isinstance(seen[0], Tensor) and seen[0].requires_grad:
                    reached = torch.autograd.grad(output_loss(output).float().sum(), seen[0], allow_unused=True)[0]
                else:
                    reached = None
        finally:
            self.model.train(training)
            for hook in hooks:
                hook.remove()
        where = f"gal.at={self.at} ({self.site.name})"
        if not seen:
            raise ConfigError(f"{where}: the model's forward never runs it: pick a module on the forward path")
        if len(seen) > 1:
            raise ConfigError(f"{where} runs {len(seen)} times per forward: pick a module that runs once")
        if not isinstance(seen[0], Tensor):
            raise ConfigError(f"{where} gives a {type(seen[0]).__name__}, not one tensor: pick a module with one")
        if reached is None:
            raise ConfigError(f"{where}: no gradient reaches it from the loss: pick a layer on the path to the loss")
        if self.site.takes == "input" and made and made[0] is output:
            suffix = "classifier"
        elif self.site.takes == "forward_features":
            suffix = "head"
        else:
            suffix = "rerun"
        return gal_layout(seen[0]).shape[-1], suffix

    def features_and_loss(self, task: Any, trained: nn.Module, batch: Any) -> Features:
        """z in GAL's layout, loss_fn(z'), and as other_loss the loss of the layers after z with the task's own
        other terms: the arguments of GradientAdjuster.backward."""
        taken: dict[str, Any] = {}
        inputs: dict[str, Any] = {}

        def take(value: Tensor) -> Tensor:
            taken["z"], taken["rng"] = value, _rng_state(value.device)
            return value.detach()

        keep_inputs = self.suffix == "rerun"
        hook = (
            self.model.register_forward_pre_hook(
                lambda _m, args, kwargs: inputs.update(args=args, kwargs=kwargs), with_kwargs=True
            )
            if keep_inputs
            else None
        )
        try:
            with _replaced(self.site, take):
                output, output_loss, *other = _forward(task)(trained, batch)
        finally:
            if hook is not None:
                hook.remove()
        z, rng = taken["z"], taken["rng"]
        after = output_loss(output).float().mean()  # the layers after z: their standard gradient
        other_loss = after if not other or other[0] is None else after + other[0]

        def loss_fn(z_new: Tensor) -> Tensor:
            return output_loss(self._rest(model_layout(z_new), rng, inputs))

        return Features(gal_layout(z), loss_fn, other_loss)

    def _rest(self, z_new: Tensor, rng: tuple[Tensor, Tensor | None], inputs: dict[str, Any]) -> Tensor:
        """The model's output from z' at the point: the layers after it, parameters detached, random state as the
        training forward had it there."""
        device = z_new.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if self.suffix == "classifier":
                _set_rng_state(rng, device)
                return functional_call(self.site.module, _detached_state(self.site.module), (z_new,))
            if self.suffix == "head":
                _set_rng_state(rng, device)
                head = _Head(self.model)
                return functional_call(head, _detached_state(head), (z_new,))

            def put(_value: Any) -> Tensor:  # the layers before the point ran without a graph
                torch.set_grad_enabled(True)
                _set_rng_state(rng, device)
                return z_new

            with torch.no_grad(), _replaced(self.site, put):
                return functional_call(self.model, _detached_state(self.model), inputs["args"], inputs["kwargs"])
