"""A key no schema declares, added with ``+`` or ``++`` (which Hydra lets into a typed node), is refused by
validate() before any data, naming the key and the nearest declared ones; the open nodes (task.model, ...) take any.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gal.device_check import CPU_MODELS, GPU_MODELS, compose_row
from gal.errors import ConfigError
from gal.keys import chosen_schemas, plain_override_keys, plain_overrides, undeclared_override
from gal.validate import validate

from .conftest import CONFIG_DIR, compose_config

NODE_GROUPS = ("optimizer", "gal", "trainer", "logger", "scheduler")  # each file fills the node of its name
# `# @package _global_`: each file sets keys anywhere (a task's: task.* and its length, trainer.epochs)
GLOBAL_GROUPS = ("task", "experiment", "ablation", "hparams_search")
CONFIG_FILES = [
    (group, path.stem)
    for group in (*NODE_GROUPS, *GLOBAL_GROUPS)
    for path in sorted(Path(CONFIG_DIR, group).glob("*.yaml"))
]


def first_setting(group: str, name: str) -> str:
    """The full key of the first value the file sets, below a node typed by a schema (task.model is open)."""
    settings = yaml.safe_load(Path(CONFIG_DIR, group, f"{name}.yaml").read_text())
    settings.pop("defaults", None)
    if group in NODE_GROUPS:
        return f"{group}.{next(iter(settings))}"
    settings.pop("hydra", None)
    for key, value in settings.items():
        if not isinstance(value, dict):
            return key
        scalars = [sub for sub, sub_value in value.items() if not isinstance(sub_value, dict)]
        if scalars:
            return f"{key}.{scalars[0]}"
    return "name"  # a file of defaults only (experiment/ablation_*.yaml): the top-level key every run has


@pytest.mark.parametrize(("group", "name"), CONFIG_FILES, ids=[f"{g}/{n}" for g, n in CONFIG_FILES])
def test_a_typo_added_with_plus_is_refused_naming_the_key_and_the_one_meant(group, name):
    key = first_setting(group, name)
    node, _, _ = key.rpartition(".")
    cfg = compose_config([f"{group}={name}", f"+{key}x=1"])  # Hydra's own advice for `key=1` on a key it lacks
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    message = str(error.value)
    assert message.startswith(f"{key}x is not a setting of {node or 'the top level'} (did you mean {key}"), message
    assert "\n" not in message


def test_a_key_with_no_near_match_lists_the_nodes_settings():
    with pytest.raises(ConfigError) as error:
        validate(compose_config(["++trainer.zzz=1"]))
    assert str(error.value).startswith("trainer.zzz is not a setting of trainer; the settings of trainer are: epochs, ")


@pytest.mark.parametrize(
    "overrides",
    [
        ["task=cifar10", "+task.model.in_chans=3", "+task.model.global_pool=avg"],  # timm.create_model's kwargs
        ["task=coco", "+task.model.dilation=true"],  # build_detr's
        ["task=coco", "++task.cost.cost_class=2.0"],
        ["gal=on", "++gal.alpha=0.2"],  # ++ on a declared key sets it
    ],
)
def test_a_key_added_to_an_open_node_or_a_declared_key_set_with_plus_plus_passes(overrides):
    validate(compose_config(overrides))


@pytest.mark.parametrize("row", [*GPU_MODELS, *(f"cpu/{name}" for name in CPU_MODELS)])
def test_every_device_check_row_validates(row):
    """gal.device_check's rows (on the CPU, its tiny CNN adds task.model.in_chans and image_size with `+`)."""
    models, name = (CPU_MODELS, row[4:]) if row.startswith("cpu/") else (GPU_MODELS, row)
    validate(compose_row(models[name]))


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("+gal.alpah=0.1", "gal.alpha"),
        ("gal.alpah=0.1", "gal.alpha"),  # without +: Hydra's own message would name no nearest key
        ("trainer.epochz=1", "trainer.epochs"),
        ("optimizer.lrr=1", "optimizer.lr"),  # the optimizer's schema follows its file: any optimizer's keys
        ("task.val_sise=0.2", "task.val_size"),
        ("gal.alpah=0.1,0.2", "gal.alpha"),  # a sweep's key, before any job starts
    ],
)
def test_command_line_says_the_unknown_key_in_one_line_and_writes_nothing(tmp_path, typo, meant):
    key = typo.lstrip("+").partition("=")[0]
    multirun = ["--multirun"] if "," in typo else []
    command = [sys.executable, "-m", "gal", *multirun, "task=diabetes", typo, "trainer.epochs=1"]
    command += [f"results_dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    node = key.rpartition(".")[0]
    assert line.startswith(f"error: {key} is not a setting of {node} (did you mean {meant}"), line
    # with +, Hydra makes the (empty) run directory before the task function runs; no file lands in it
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]


@pytest.mark.parametrize(
    "key",
    ["gal.alpha", "optimizer.momentum", "task.model.drop_rate", "task.cost.cost_class", "seed", "hydra.job.chdir"],
)
def test_a_declared_key_or_one_below_an_open_node_is_left_to_hydra(key):
    assert undeclared_override(key) is None
    assert plain_override_keys([key + "=1"]) == ([] if key.startswith("hydra.") else [key])


def test_only_plain_overrides_of_settings_are_checked_before_hydra():
    argv = ["--multirun", "task=diabetes", "gal=off,on", "hydra/launcher=slurm", "+gal.x=1", "~gal.bias", "seed=0,1"]
    assert plain_override_keys([*argv, "--cfg", "job"]) == ["seed"]
    assert plain_override_keys(["gal.alpha=[unclosed"]) == []  # Hydra's own error says what is wrong


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (["task=diabetes", "optimizer.momentum=0.9"],
         "error: optimizer.momentum is not a setting of optimizer; the settings of optimizer are: name, lr, "
         "weight_decay, filter_bias_and_bn, betas"),  # adam's, config.yaml's default
        (["task=diabetes", "task.num_classes=3"],
         "error: task.num_classes is not a setting of task; the settings of task are: "),
        (["task=diabetes", "optimizer=sgd", "optimizer.momentum=0.9"], None),
        (["experiment=digits", "task.num_classes=10"], None),
        (["--multirun", "optimizer=sgd,adam", "optimizer.momentum=0.9"], None),  # each job's schema: Hydra's to check
    ],
)  # fmt: skip
def test_a_key_of_another_choices_schema_is_refused_for_the_choice_made(tmp_path, args, refusal):
    command = [sys.executable, "-m", "gal", *args, "--cfg", "job"]
    if "--multirun" in args:
        assert chosen_schemas(plain_overrides(args)) is None
        return
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    if refusal is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(refusal), line
