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

Importing this module registers the schemas and the resolvers the configs use (``${join:...}``, ...), and gives
CONFIG_DIR, where the configs are: anything that composes them imports it. It imports no torch (``python -m gal
--cfg job`` composes without it). The ranges are checked in gal.validate, the keys given on the command line in
gal.keys.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import MISSING, OmegaConf

from gal.settings import GALSettings

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


# configs/gal/on.yaml: the trainer's ``enabled``, the injection point ``at`` and h's own ``lr``, then
# GradientAdjuster's settings (gal.settings.GALSettings: their defaults and ranges), in that order (a subclass
# would list the settings first)
GalConfig = dataclasses.make_dataclass(
    "GalConfig",
    [("enabled", bool, MISSING), ("at", str, MISSING), ("lr", float | None, MISSING)]
    + [(f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory))
       for f in dataclasses.fields(GALSettings)],
)  # fmt: skip
GalConfig.__module__ = __name__  # unpickled configs (submitit's jobs) find it here; make_dataclass leaves it unset


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


def config_dir() -> str:
    """Where the configs are: gal/configs, which in a clone is a link to configs/ at the top of the repo and in an
    installed package (``pip install .``) the copy pyproject.toml ships; configs/ itself when the link is missing
    (a checkout made without symlinks).

    An absolute path: Hydra would look for a relative one inside the package when the entry point is a module
    (python -m gal, gal-train, submitit's unpickled task function).
    """
    here = Path(__file__).resolve().parent
    packaged = here / "configs"
    return str(packaged if (packaged / "config.yaml").is_file() else here.parents[1] / "configs")


CONFIG_DIR = config_dir()


def config_groups() -> str:
    """``--help``'s config groups: each folder of configs/ with its options, one per line (Hydra's own list would
    add the schema/* groups, which only type the files: gal.config)."""
    root = Path(CONFIG_DIR)
    folders = sorted({path.parent for path in root.rglob("*.yaml")} - {root})
    return "\n".join(f"{f.relative_to(root)}: {', '.join(sorted(p.stem for p in f.glob('*.yaml')))}" for f in folders)


# ${gal_config_groups:} in configs/config.yaml's hydra.help.template
OmegaConf.register_new_resolver("gal_config_groups", config_groups, replace=True)
# ${join:${gal.arch}} -> "256-64": list-valued settings in run-dir names (configs/ablation/arch.yaml).
OmegaConf.register_new_resolver("join", lambda items, sep="-": sep.join(map(str, items)), replace=True)
# ${objective_direction:${task._target_}}: an Optuna search's direction follows the task (configs/hparams_search/)
OmegaConf.register_new_resolver("objective_direction", lambda target: task_objective(target)[1], replace=True)
# ${zero_padded:${hydra.job.num}} -> "007": a search's trial folders list in trial order (configs/hparams_search/)
OmegaConf.register_new_resolver("zero_padded", lambda number, width=3: f"{int(number):0{int(width)}d}", replace=True)


def task_objective(task_target: str) -> tuple[str, str]:
    """(metric, direction) that a search over ``task._target_`` optimises, read off the task class."""
    return get_class(task_target).objective
