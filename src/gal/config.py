"""The config's schema: the type of every key in configs/, checked as Hydra composes, and its ranges, in validate().

The YAML files hold the values; the dataclasses here hold the types, registered in Hydra's ConfigStore as
``schema/<group>/<name>`` and extended by the files through their defaults lists (Hydra's "Structured Config
schema" pattern), e.g. configs/trainer/default.yaml starts with ``- /schema/trainer/default@_here_``. The
optimizer files stay plain (they are also read on their own as build_optimizer's arguments): config.yaml's
defaults list picks their schema by the optimizer's name, ``- schema/optimizer@optimizer: ${optimizer}``. A wrong
type (``optimizer.lr=abc``, ``trainer.epochs=2.5``) or a key no schema declares fails at compose time, naming
the key; a key added with ``+`` or ``++`` (which Hydra lets into a typed node) fails in validate(). The nodes typed
``dict[str, Any]`` (task.model: timm's or DETR's kwargs; task.augment, task.cost, task.loss_weights) stay open. A
key that every file of its group sets is MISSING here; one that some files leave out defaults to
what the code that takes it defaults to (tests/test_config_schema.py checks that they agree).

Importing this module registers the schemas: gal.cli and gal.train import it, and so must anything that
composes the configs without them. It imports no torch (``python -m gal --cfg job`` composes without it);
validate() imports the modules whose names it checks against.
"""

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from gal.errors import ConfigError

IF_EXISTS = ("error", "skip", "resume")  # what a run does when its run directory holds a run
SELECT = ("last", "best_val")  # the evaluation a run reports: its last, or the one best on the validation split
SCALINGS = {"feature_scaling": ("standard", "minmax", "none"), "target_scaling": ("standard", "none")}
SPLITS = ("fixed", "per_seed")  # task.split: the test split fixed by task.split_seed, or drawn from the seed
# rows of the data sets whose test split the task draws (task.test_size of them; task.split), which validate() sizes
# before any data is read (a Boston CSV of one's own is checked again once read)
DATASET_ROWS = {"boston": 506, "diabetes": 442, "california": 20640, "digits": 1797}
VALIDATION_DATASETS = (*DATASET_ROWS, "cifar10", "cifar100")  # where task.val_size applies (CIFAR: from its train set)
ON_NONFINITE = ("error", "record")  # what a run does when the loss is NaN or inf


@dataclass
class TaskConfig:
    """Every task: Hydra instantiates ``_target_`` with the other keys."""

    _target_: str = MISSING
    global_batch_size: int = MISSING  # over all processes
    val_size: float = 0.0  # the fraction of the training split held out for validation (0: none; see validate)


@dataclass
class RegressionTaskConfig(TaskConfig):
    """gal.tasks.regression.RegressionTask (configs/task/boston.yaml, california.yaml, diabetes.yaml)."""

    dataset: str = MISSING
    hidden: list[int] = MISSING  # the MLP's hidden widths
    test_size: float = MISSING
    split_seed: int = MISSING
    data_home: str | None = MISSING
    csv_path: str | None = MISSING
    feature_scaling: str = "standard"  # standard | minmax | none (statistics of the training rows)
    target_scaling: str = "standard"  # standard | none (the loss on the raw target; metrics in its units always)
    split: str = "fixed"  # fixed (split_seed) | per_seed (the training seed draws the test split)


@dataclass
class ClassificationTaskConfig(TaskConfig):
    """gal.tasks.classification.ClassificationTask (configs/task/cifar10.yaml, cifar100.yaml, digits.yaml, ...)."""

    dataset: str = MISSING
    num_classes: int = MISSING
    model: dict[str, Any] = MISSING  # name, pretrained, pretrained_file, drop_rate, ... : timm.create_model's kwargs
    eval_batch_size: int | None = MISSING  # per process
    num_workers: int = MISSING
    root: str | None = None
    image_size: int | None = 224
    crop_pct: float | None = None
    interpolation: str | None = None
    download: bool = True
    verify: bool = True
    drop_last: bool = True
    label_smoothing: float = 0.0
    augment: dict[str, Any] | None = None
    split_seed: int = 0
    split: str = "fixed"  # digits: fixed (split_seed) | per_seed (the training seed draws the test split)


@dataclass
class DetectionTaskConfig(TaskConfig):
    """gal.tasks.detection.DetectionTask (configs/task/coco.yaml)."""

    root: str = MISSING
    num_classes: int = MISSING
    model: dict[str, Any] = MISSING  # DETR's: backbone, num_queries, hidden_dim, ...
    lr_backbone: float = MISSING
    eval_batch_size: int | None = MISSING  # per process
    scales: list[int] | None = MISSING
    max_size: int = MISSING
    eos_coef: float = MISSING
    cost: dict[str, float] = MISSING  # the matcher's
    loss_weights: dict[str, float] = MISSING
    num_workers: int = MISSING
    augment: bool = MISSING
    checkpoint: str | None = MISSING


@dataclass
class OptimizerConfig:
    """Every optimizer: gal.optim.build_optimizer takes these keys as arguments."""

    name: str = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    filter_bias_and_bn: bool = MISSING


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = MISSING


@dataclass
class LookaheadConfig(SGDConfig):
    k: int = MISSING
    alpha: float = MISSING


@dataclass
class AdamConfig(OptimizerConfig):
    betas: list[float] = MISSING


@dataclass
class AdaBoundConfig(AdamConfig):
    final_lr: float = MISSING
    gamma: float = MISSING
    weight_decouple: bool = MISSING


@dataclass
class RMSpropTFConfig(SGDConfig):
    eps: float = MISSING
    alpha: float = MISSING


@dataclass
class AdaRemConfig(OptimizerConfig):
    momentum_beta: float = MISSING
    lam: float = MISSING
    eps: float = MISSING


@dataclass
class SchedulerConfig:
    """Every scheduler: gal.schedule.build_scheduler takes these keys (name null = a constant lr)."""

    name: str | None = MISSING


@dataclass
class MultiStepSchedulerConfig(SchedulerConfig):
    decay_milestones: list[int] = MISSING
    decay_rate: float = MISSING
    warmup_epochs: int = MISSING


@dataclass
class StepSchedulerConfig(SchedulerConfig):
    decay_epochs: float = MISSING
    decay_rate: float = MISSING
    warmup_epochs: int = MISSING
    warmup_lr: float = MISSING


@dataclass
class GalConfig:
    """configs/gal/on.yaml: GradientAdjuster's arguments, plus ``enabled``, the injection point ``at`` and h's own
    ``lr``."""

    enabled: bool = MISSING
    at: str = MISSING
    lr: float | None = MISSING
    arch: list[int] = MISSING
    alpha: float = MISSING
    beta: float = MISSING
    policy: str = MISSING
    per_sample: bool = MISSING
    kind: str = MISSING
    scale_by_grad: bool = MISSING
    bias: bool = MISSING
    activation: str | None = MISSING
    first_order: str = MISSING  # Eq. 7's first-order term: authors | taylor | mean
    precision: str = MISSING  # the GAL step's own arithmetic: float32 | float64
    ddp: str = MISSING  # under DDP: global (one step on the global batch) | per_rank (the authors')


@dataclass
class TrainerConfig:
    """configs/trainer/default.yaml; ``epochs`` comes from the task's file (its recipe), the one epochs key."""

    epochs: int = MISSING
    device: str = MISSING
    log_every: int = MISSING
    eval_every: int = MISSING
    progress: bool = MISSING
    checkpoint: bool = MISSING
    if_exists: str = MISSING
    precision: str = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING
    ema_decay: float | None = MISSING
    clip_grad_norm: float | None = MISSING
    oscillation: bool = MISSING
    on_nonfinite: str = MISSING
    tf32: bool = MISSING
    deterministic: bool = MISSING
    select: str = MISSING  # last | best_val: which evaluation metrics.json's "selected" holds


@dataclass
class LoggerConfig:
    """configs/logger/*.yaml."""

    wandb: bool = MISSING
    project: str = MISSING
    mode: str = MISSING


@dataclass
class Config:
    """configs/config.yaml: the top-level keys, and one node per config group (each typed by its own schema)."""

    name: str = MISSING
    seed: int = MISSING
    results_dir: str = MISSING
    run_dir: str = MISSING
    task: TaskConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    gal: GalConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING


SCHEMAS = {  # config group: {schema name: schema}, stored as schema/<group>/<name>
    "task": {
        "regression": RegressionTaskConfig,
        "classification": ClassificationTaskConfig,
        "detection": DetectionTaskConfig,
    },
    # one per configs/optimizer/<name>.yaml, same name: config.yaml picks the one its optimizer choice names
    "optimizer": {
        "sgd": SGDConfig,
        "lookahead": LookaheadConfig,
        "adam": AdamConfig,
        "adamw": OptimizerConfig,  # DETR's settings: torch's default betas
        "adabound": AdaBoundConfig,
        "rmsproptf": RMSpropTFConfig,
        "adarem": AdaRemConfig,
        "adarem_s": AdaRemConfig,
    },
    "scheduler": {"none": SchedulerConfig, "multistep": MultiStepSchedulerConfig, "step": StepSchedulerConfig},
    "gal": {"gal": GalConfig},
    "trainer": {"default": TrainerConfig},
    "logger": {"logger": LoggerConfig},
}


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore: schema/config (config.yaml's) and schema/<group>/<name>."""
    store = ConfigStore.instance()
    store.store(group="schema", name="config", node=Config)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)


register_schemas()


def validate(cfg: DictConfig) -> None:
    """Refuse a setting out of its range before any data is loaded: a ConfigError naming the key and what it may be.

    The types were checked when Hydra composed ``cfg``; these are the ranges a type cannot say, and the keys that
    ``+key=value`` added to a node whose schema lacks them.
    """
    from gal.adjuster import DDP_MODES, FIRST_ORDERS, STEP_PRECISIONS, check_settings
    from gal.distributed import DEVICES
    from gal.inject import check_point
    from gal.precision import MODES as PRECISIONS

    declared_keys_only(cfg)
    trainer, task, gal = cfg.trainer, cfg.task, cfg.gal
    _one_of("trainer.if_exists", trainer.if_exists, IF_EXISTS)
    _one_of("trainer.on_nonfinite", trainer.on_nonfinite, ON_NONFINITE)
    _one_of("trainer.precision", trainer.precision, PRECISIONS)
    _one_of("trainer.device", trainer.device, DEVICES)
    if OmegaConf.is_missing(trainer, "epochs"):  # a task file of one's own that gives no recipe length
        raise ConfigError("trainer.epochs is not set: pass trainer.epochs=N, or set trainer.epochs in the task file")
    _at_least("trainer.epochs", trainer.epochs, 0)  # 0 = evaluate only (a checkpoint, e.g. make coco-detr-r50-eval)
    _at_least("trainer.eval_every", trainer.eval_every, 1)
    _at_least("trainer.log_every", trainer.log_every, 1)
    _at_least("task.global_batch_size", task.global_batch_size, 1)
    _positive("optimizer.lr", cfg.optimizer.lr)
    _optimizer_ranges(cfg.optimizer)
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, {MAX_SEED}] (NumPy's seed range); got {cfg.seed}")
    if "test_size" in task and not 0 < task.test_size < 1:
        raise ConfigError(f"task.test_size must be a fraction in (0, 1) (the test split); got {task.test_size}")
    _splits(task)
    _one_of("trainer.select", trainer.select, SELECT)
    if trainer.select == "best_val" and not task.get("val_size"):
        raise ConfigError(
            "trainer.select=best_val picks an epoch on the validation split, and this run has none: set "
            "task.val_size (e.g. 0.2), or trainer.select=last"
        )
    _positive("gal.lr", gal.lr)
    _widths("gal.arch", gal.arch)
    _one_of("gal.first_order", gal.first_order, FIRST_ORDERS)
    _one_of("gal.precision", gal.precision, tuple(STEP_PRECISIONS))
    _one_of("gal.ddp", gal.ddp, DDP_MODES)
    if "hidden" in task:  # the regression MLP
        _widths("task.hidden", task.hidden)
    # GradientAdjuster's own checks (alpha in [0, 1], beta > 0, policy, kind, activation), with GAL on or off: a
    # value out of range is refused either way, never trained past as a baseline
    check_settings(1, gal.arch, gal.alpha, gal.beta, gal.policy, gal.kind, gal.activation)
    check_point(gal.at)
    if gal.at != "logits" and task._target_.endswith("DetectionTask"):
        raise ConfigError(
            f"gal.at={gal.at}: on DETR GAL adjusts the predicted boxes only (gal.at=logits, which means the boxes "
            "there); the class scores and auxiliary layers get their standard gradient"
        )


MAX_SEED = 2**32 - 1
# Every optimizer hyperparameter but lr (checked apart) and its range: (test, what it may be), per key, and where
# two optimizers give a key different meanings, per "<optimizer name>.<key>".
OPTIMIZER_RANGES: dict[str, tuple[Any, str]] = {
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "momentum_beta": (lambda v: 0 <= v <= 1, "in [0, 1]"),  # AdaRem's own check
    "lam": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "eps": (lambda v: v > 0, "> 0"),
    "final_lr": (lambda v: v > 0, "> 0"),
    "gamma": (lambda v: v > 0, "> 0"),
    "k": (lambda v: v >= 1, "an integer >= 1"),
    "lookahead.alpha": (lambda v: 0 < v <= 1, "in (0, 1] (the slow weights' step toward the fast ones)"),
    "rmsproptf.alpha": (lambda v: 0 <= v < 1, "in [0, 1) (the squared gradients' decay)"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two values in [0, 1), e.g. [0.9, 0.999]"),
}


def _splits(task: DictConfig) -> None:
    """The split and scaling keys of the tasks that have them (regression, digits): names, and a validation
    split that leaves at least one batch of training rows, from the data set's known size."""
    for key, names in SCALINGS.items():
        if key in task:
            _one_of(f"task.{key}", task[key], names)
    if "split" in task:
        _one_of("task.split", task.split, SPLITS)
    val_size, dataset = task.val_size, task.get("dataset", task._target_.rsplit(".", 1)[-1])
    if not 0 <= val_size < 1:
        raise ConfigError(f"task.val_size must be a fraction in [0, 1) of the training split; got {val_size}")
    if val_size and dataset not in VALIDATION_DATASETS:
        raise ConfigError(
            f"task.val_size applies to {', '.join(VALIDATION_DATASETS)}, not {dataset}: set task.val_size=0 (its "
            "evaluation split is the data set's own)"
        )
    if task.get("split", "fixed") != "fixed" and dataset not in DATASET_ROWS:
        raise ConfigError(f"task.split=per_seed applies to {', '.join(DATASET_ROWS)}, not {dataset}: its test split "
                          "is the data set's own; set task.split=fixed")  # fmt: skip
    if dataset not in DATASET_ROWS:
        return
    rows = DATASET_ROWS[dataset]
    training = rows - math.ceil(task.get("test_size", 0.2) * rows)  # scikit-learn's train_test_split sizes
    left = training - math.ceil(val_size * training)
    if val_size and left < task.global_batch_size:
        raise ConfigError(
            f"task.val_size={val_size} leaves {left} of {dataset}'s {training} training rows, fewer than one batch "
            f"(task.global_batch_size={task.global_batch_size}): lower task.val_size or the batch"
        )


def _optimizer_ranges(optimizer: DictConfig) -> None:
    """Each hyperparameter the chosen optimizer takes within its range (the keys it does not take are refused
    at compose time by its schema)."""
    for key in optimizer:
        rule = OPTIMIZER_RANGES.get(f"{optimizer.name}.{key}") or OPTIMIZER_RANGES.get(str(key))
        value = optimizer[key]
        if rule is not None and value is not None:
            plain = list(value) if isinstance(value, ListConfig) else value
            if not rule[0](plain):
                raise ConfigError(f"optimizer.{key} of {optimizer.name} must be {rule[1]}; got {plain}")


def declared_keys_only(node: DictConfig, path: str = "") -> None:
    """Refuse a key of a schema-typed node that its schema does not declare, naming the nearest declared ones.

    Hydra's ``+key=value`` adds a key even to a struct node (``++`` too, where the key is new). A dict-typed node
    (task.model, ...) has no dataclass type: any key passes there, as it should.
    """
    schema = OmegaConf.get_type(node)
    declared = [field.name for field in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node:
        if not path and key == "hydra":  # Hydra's own node (compose(return_hydra_config=True)): Hydra checks it
            continue
        if declared is not None and key not in declared:
            raise ConfigError(_not_a_setting(path, str(key), declared))
        if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            continue
        if isinstance(child := node[key], DictConfig):
            declared_keys_only(child, f"{path}{key}.")


def undeclared_override(key: str, chosen: dict[str, Any] | None = None) -> str | None:
    """The refusal, in one line naming the nearest declared keys, of a plain override ``key=value`` whose key no
    schema declares; None for a declared key (or one below an open node such as task.model).

    Hydra refuses such a key while composing, with ``Key 'alpah' not in 'GalConfig'`` and no nearest key; gal.cli
    asks this first. The schema of task, optimizer and scheduler follows the file chosen: ``chosen`` maps a group
    to the schema of its choice (gal.cli composes to learn it, for a key that :func:`schema_varies` for); without
    it, a key of any of the group's schemas passes.
    """
    parts = key.split(".")
    if parts[0] == "hydra":  # Hydra's own node: Hydra checks it
        return None
    schemas: list[Any] = [Config]
    for depth, part in enumerate(parts):
        declared = list(dict.fromkeys(f.name for schema in schemas for f in dataclasses.fields(schema)))
        if part not in declared:
            return _not_a_setting("".join(f"{name}." for name in parts[:depth]), part, declared)
        if depth == 0 and part in SCHEMAS:
            schema = (chosen or {}).get(part)
            schemas = [schema] if dataclasses.is_dataclass(schema) else list(dict.fromkeys(SCHEMAS[part].values()))
        else:  # a field typed by a schema is walked into; any other (a value, an open dict) ends the check
            hints = [typing.get_type_hints(schema).get(part) for schema in schemas]
            schemas = [hint for hint in hints if dataclasses.is_dataclass(hint)]
        if not schemas:
            return None
    return None


def schema_varies(key: str) -> bool:
    """Whether ``key`` (``optimizer.momentum``) is a setting of some but not all of its group's schemas, so that
    whether it is one depends on the file chosen (sgd's, not adam's)."""
    group, _, rest = key.partition(".")
    names = [{f.name for f in dataclasses.fields(schema)} for schema in SCHEMAS.get(group, {}).values()]
    setting = rest.partition(".")[0]
    return bool(rest) and any(setting in n for n in names) and not all(setting in n for n in names)


def gal_off_warning(overrides: list[str], choices: list[str] | None = None) -> str | None:
    """The warning for ``gal.*`` settings given where GAL stays off: one line naming them, or None.

    ``overrides``: a run's or a sweep's command line (hydra.overrides.task). A single run asks once it knows that
    its GAL is off (``choices`` None); a sweep asks before its jobs, ``choices`` being its gal choice where no override
    sweeps it (hydra.runtime.choices.gal): it warns only if no choice of the sweep is other than off, since
    ``gal=off,on gal.alpha=0.1`` sets the GAL arm's alpha. An explicit ``gal.enabled`` is the user's own: no warning.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        for override in parsed:
            if override.key_or_group == "gal" and override.package is None and choices is not None:
                sweep = override.is_sweep_override()
                choices = list(override.sweep_string_iterator()) if sweep else [str(override.value())]
    except Exception:  # noqa: BLE001 (a glob or range over choices: Hydra expands it; say nothing rather than guess)
        return None
    given = [o.input_line for o in parsed if o.key_or_group.startswith("gal.") and o.type != OverrideType.DEL]
    if not given or any(o.key_or_group == "gal.enabled" for o in parsed) or set(choices or ["off"]) != {"off"}:
        return None
    settings = " ".join(given)
    return (
        f"warning: {settings} {'is' if len(given) == 1 else 'are'} set but GAL is off (gal=off): "
        f"{'this run trains' if choices is None else 'every job of this sweep trains'} the baseline; add gal=on"
    )


def _not_a_setting(path: str, key: str, declared: list[str]) -> str:
    """One line: ``path + key`` is not a setting of the node at ``path``, the nearest declared keys, and all of them."""
    node = path.rstrip(".") or "the top level"
    close = difflib.get_close_matches(key, declared, n=3)
    hint = f" (did you mean {' or '.join(path + name for name in close)}?)" if close else ""
    return f"{path}{key} is not a setting of {node}{hint}; the settings of {node} are: {', '.join(declared)}"


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _at_least(key: str, value: int | None, low: int) -> None:
    """``value`` >= ``low``; None (not set) passes."""
    if value is not None and value < low:
        raise ConfigError(f"{key} must be an integer >= {low}; got {value}")


def _positive(key: str, value: float | None) -> None:
    """``value`` > 0; None (not set) passes."""
    if value is not None and not value > 0:
        raise ConfigError(f"{key} must be > 0; got {value}")


def _widths(key: str, widths: list[int]) -> None:
    if any(width < 1 for width in widths):
        raise ConfigError(f"{key} must list layer widths >= 1; got {list(widths)}")
