"""The config's schema (gal.config): a wrong type fails as Hydra composes, a value out of range in validate(),
each naming its key, and every config file in configs/ still composes and passes."""

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class
from omegaconf import MISSING, OmegaConf

from gal.config import SCHEMAS
from gal.errors import ConfigError
from gal.settings import GALSettings
from gal.validate import validate

from .conftest import CONFIG_DIR, compose_config

EXPERIMENTS = sorted(p.stem for p in Path(CONFIG_DIR, "experiment").glob("*.yaml"))
TASKS = sorted(p.stem for p in Path(CONFIG_DIR, "task").glob("*.yaml"))
# groups whose files set every key their schema has: the schema adds no value of its own
PLAIN_GROUPS = ("optimizer", "scheduler", "gal", "trainer", "logger")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["optimizer.lr=abc"], "optimizer.lr"),
        (["trainer.epochs=2.5"], "trainer.epochs"),
        (["seed=abc"], "seed"),
        (["gal.per_sample=maybe"], "gal.per_sample"),
        (["trainer.checkpoint=maybe"], "trainer.checkpoint"),
        (["task.hidden=[64,wide]"], "task.hidden[1]"),
        (["optimizer=lookahead", "optimizer.k=2.5"], "optimizer.k"),
        (["optimizer=adabound", "optimizer.weight_decouple=maybe"], "optimizer.weight_decouple"),
        (["task=cifar10", "task.drop_last=maybe"], "task.drop_last"),
        (["optimizer=adam", "optimizer.momentum=0.9"], "optimizer.momentum"),  # SGD's key, not Adam's
    ],
)
def test_a_wrong_type_or_key_is_refused_at_compose_time_naming_the_key(overrides, key):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(overrides)
    assert f"full_key: {key}\n" in str(error.value.__cause__)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.epochs=-1"], "trainer.epochs must be an integer >= 0; got -1"),
        (["trainer.eval_every=0"], "trainer.eval_every must be an integer >= 1; got 0"),
        (["trainer.log_every=0"], "trainer.log_every must be an integer >= 1; got 0"),
        (["optimizer.lr=0"], "optimizer.lr must be > 0; got 0.0"),
        (["optimizer=sgd", "optimizer.lr=-0.1"], "optimizer.lr must be > 0; got -0.1"),
        (["gal=on", "gal.lr=0"], "gal.lr must be > 0; got 0.0"),
        (["task.hidden=[64,0]"], "task.hidden must list layer widths >= 1; got [64, 0]"),
        (["gal=on", "gal.arch=[256,0]"], "gal.arch must list layer widths >= 1; got [256, 0]"),
        (["task.global_batch_size=0"], "task.global_batch_size must be an integer >= 1; got 0"),
        (["task=coco", "task.global_batch_size=-2"], "task.global_batch_size must be an integer >= 1; got -2"),
        (["trainer.if_exists=overwrite"], "trainer.if_exists must be one of error, skip, resume; got 'overwrite'"),
        (["trainer.on_nonfinite=ignore"], "trainer.on_nonfinite must be one of error, record; got 'ignore'"),
        (["trainer.precision=fp32"], "trainer.precision must be one of auto, off, bf16, fp16; got 'fp32'"),
        (["trainer.device=tpu"], "trainer.device must be one of auto, cpu, cuda; got 'tpu'"),
        (["gal.first_order=exact"], "gal.first_order must be one of authors, taylor, mean; got 'exact'"),
        (["gal.precision=float16"], "gal.precision must be one of float32, float64; got 'float16'"),
        (["gal.ddp=local"], "gal.ddp must be one of global, per_rank; got 'local'"),
    ],
)
def test_a_value_out_of_range_is_refused_by_validate_naming_the_key_and_what_is_allowed(overrides, message):
    cfg = compose_config(overrides)  # the type is right: composing succeeds
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("overrides", "epochs"),
    [
        (["task=diabetes"], 30),
        (["task=boston"], 100),
        (["experiment=table2_cifar100_sgd"], 300),
        (["experiment=table3_imagenet_resnet50"], 90),
        (["experiment=table4_coco_detr_r50"], 150),
        (["task=digits", "trainer.epochs=2"], 2),
        (["trainer.epochs=3", "task=california"], 3),  # the command line wins wherever it stands
    ],
)
def test_one_epochs_key_the_tasks_recipe_unless_the_command_line_says_otherwise(overrides, epochs):
    cfg = compose_config(overrides)
    assert cfg.trainer.epochs == epochs and "epochs" not in cfg.task
    validate(cfg)


def test_task_epochs_is_not_a_key_any_more(tmp_path):
    with pytest.raises(ConfigCompositionException, match="epochs"):
        compose_config(["task.epochs=5"])


@pytest.mark.parametrize("gal", ["off", "on"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes_validate(experiment, gal):
    validate(compose_config([f"experiment={experiment}", f"gal={gal}"]))


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.epochs=0"],  # evaluate only: make coco-detr-*-eval
        ["experiment=table4_coco_detr_r50", "trainer.epochs=0", "task.checkpoint=detr.pth"],
        ["trainer.if_exists=resume", "trainer.on_nonfinite=record", "trainer.precision=bf16", "trainer.device=cpu"],
        ["experiment=table3_imagenet_resnet50", "gal=on"],  # gal.lr set (0.016)
        ["hparams_search=gal_alpha_beta", "gal.alpha=0.0123", "gal.beta=4.5"],  # an Optuna trial
        ["ablation=arch", "gal=on", "gal.kind=cnn", "gal.arch=[256,64,32,16]"],  # a sweep's job
    ],
)
def test_good_settings_pass_validate(overrides):
    validate(compose_config(overrides))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_schema_has_its_classs_arguments_and_defaults(task):
    """A key a task file leaves out gets the schema's default: it must be the one the task class would use."""
    cfg = compose_config([f"task={task}"])
    schema, parameters = OmegaConf.get_type(cfg.task), inspect.signature(get_class(cfg.task._target_)).parameters
    fields = {field.name: field.default for field in dataclasses.fields(schema)}
    passed = {"seed"} if "split" in fields else set()  # the training seed, passed by gal.train.build_task
    assert set(fields) == {"_target_", *parameters} - {"self", *passed}
    for name, default in fields.items():
        if default is not MISSING and name != "_target_":
            assert default == parameters[name].default, f"{schema.__name__}.{name}"


@pytest.mark.parametrize("group", PLAIN_GROUPS)
def test_the_schema_adds_no_key_to_the_plain_groups(group):
    """Their files hold every value: each composed node has exactly its file's keys."""
    for path in sorted(Path(CONFIG_DIR, group).glob("*.yaml")):
        own = {key for key in yaml.safe_load(path.read_text()) if key != "defaults"}
        if group == "gal":  # h's and the step's settings come from their schema (gal.settings), the rest from on.yaml
            own |= {field.name for field in dataclasses.fields(GALSettings)}
            own |= set(yaml.safe_load(Path(CONFIG_DIR, "gal", "on.yaml").read_text())) - {"defaults"}
        if group == "trainer":
            own.add("epochs")  # the task's file gives it (its recipe's length)
        cfg = compose_config([f"{group}={path.stem}"])
        assert set(cfg[group]) == own, path


def test_every_optimizer_file_has_its_own_schema():
    optimizers = sorted(p.stem for p in Path(CONFIG_DIR, "optimizer").glob("*.yaml"))
    assert optimizers == sorted(SCHEMAS["optimizer"])
    for name in optimizers:
        assert OmegaConf.get_type(compose_config([f"optimizer={name}"]).optimizer) is SCHEMAS["optimizer"][name]


BAD_VALUES = {  # one value out of range per optimizer hyperparameter (lr has its own test above)
    "weight_decay": "-1", "momentum": "1.5", "momentum_beta": "1.5", "lam": "-0.1", "eps": "0", "final_lr": "0",
    "gamma": "-1", "k": "0", "alpha": "1.5", "betas": "[0.9]",
}  # fmt: skip
OPTIMIZER_KEYS = [
    (name, field.name)
    for name, schema in SCHEMAS["optimizer"].items()
    for field in dataclasses.fields(schema)
    if field.name not in ("name", "lr", "filter_bias_and_bn", "weight_decouple")
]


@pytest.mark.parametrize(("optimizer", "key"), OPTIMIZER_KEYS, ids=[f"{o}.{k}" for o, k in OPTIMIZER_KEYS])
def test_every_optimizer_hyperparameter_out_of_range_is_refused_naming_it(optimizer, key):
    cfg = compose_config([f"optimizer={optimizer}", f"optimizer.{key}={BAD_VALUES[key]}"])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value).startswith(f"optimizer.{key} of {optimizer} must be ")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["seed=-1"], "seed must be an integer in [0, 4294967295]"),
        (["task=california", "task.test_size=1.5"], "task.test_size must be a fraction in (0, 1)"),
        (["task=boston", "task.test_size=0"], "task.test_size must be a fraction in (0, 1)"),
    ],
)
def test_a_seed_or_split_out_of_range_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_config(overrides))


@pytest.mark.parametrize("optimizer", sorted(SCHEMAS["optimizer"]))
def test_every_optimizers_own_values_pass(optimizer):
    validate(compose_config([f"optimizer={optimizer}"]))
