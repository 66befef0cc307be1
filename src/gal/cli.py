"""The command line, ``python -m gal`` (and ``gal-train``): Hydra's entry point, without torch until a run starts.

Composing the config needs only Hydra and the schemas (gal.config), so ``python -m gal --cfg job``, ``--help`` and
a refused typo answer before torch is imported; the task function imports gal.train when a run starts. The
launchers that pickle the task function (hydra-submitit-launcher) find it here by reference.
"""

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from gal.config import (  # importing gal.config registers the schemas that configs/ extends
    declared_keys_only,
    gal_off_warning,
    schema_varies,
    undeclared_override,
)
from gal.errors import ConfigError, SetupError


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


def task_objective(task_target: str) -> tuple[str, str]:
    """(metric, direction) that a search over ``task._target_`` optimises, read off the task class."""
    return get_class(task_target).objective


def run(cfg: DictConfig) -> float:
    """Hydra's task function: train one run and return the task's objective metric (for sweepers).

    A :class:`gal.errors.SetupError` (a setting or file to fix) ends the command with one line, ``error: ...``;
    in a ``--multirun`` it refuses this job only, and the sweep ends with status 1 after its summary (gal.sweep).
    A diverged or refused run returns the worst value for the task's direction (inf when minimising). A key no
    schema declares is refused before torch is imported; the trainer (gal.train) is imported to train.
    """
    from gal import sweep

    try:
        declared_keys_only(cfg)
        _warn_if_gal_settings_unused(cfg)
        if sweep.searching() and not cfg.task.get("val_size"):
            raise ConfigError(
                "a search scores each trial on the validation split, and this task has none: set task.val_size "
                "(e.g. 0.2; regression and digits), so the trials are not chosen on the test split"
            )
        from gal.runlog import NonFiniteLossError
        from gal.train import train

        try:
            metrics = train(cfg)
        except NonFiniteLossError as error:  # trainer.on_nonfinite=error: the step and the checkpoint kept, one line
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if not sweep.goes_on():
                raise SystemExit(f"error: {error}" if sweep.first_process() else 1) from None
            sweep.refuse(cfg.run_dir, error, status="failed")  # the sweep goes on; its summary lists this job
            metrics = {}
    except SetupError as error:  # a setting or file the user can fix: one line, not a traceback
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if not sweep.goes_on():
            # every process of a torchrun job meets the same error: the first one says it
            raise SystemExit(f"error: {error}" if sweep.first_process() else 1) from None
        sweep.refuse(cfg.run_dir, error)  # a --multirun runs its other jobs; gal.sweep.SweepSummary lists this one
        metrics = {}
    metric, direction = task_objective(cfg.task._target_)
    # a search scores each trial on the validation split, never on the test split its numbers are reported on
    value = float(metrics.get(f"val/{metric}" if sweep.searching() else metric, math.nan))
    # a diverged or refused run scores the worst value: hydra-optuna-sweeper stops the whole search on a NaN
    return value if not math.isnan(value) else math.inf if direction == "minimize" else -math.inf


def _warn_if_gal_settings_unused(cfg: DictConfig) -> None:
    """A single run with GAL off whose command line sets gal.* says, in one line, that it trains the baseline (a
    sweep says it once, before its jobs: gal.sweep.SweepSummary)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gal import sweep

    if cfg.gal.enabled or not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.MULTIRUN:
        return
    if (warning := gal_off_warning(list(HydraConfig.get().overrides.task))) and sweep.first_process():
        print(warning, file=sys.stderr, flush=True)


hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")(run)


def main(argv: list[str] | None = None) -> None:
    """``python -m gal`` and ``gal-train``: Hydra's main, once the plain overrides' keys are known to be settings.

    A ``key=value`` whose key no schema declares (``gal.alpah=0.1``, or ``optimizer.momentum`` with adam) is refused
    in one line naming the nearest declared keys, before Hydra composes (its own message names none) and before
    anything is written.
    """
    overrides = plain_overrides(sys.argv[1:] if argv is None else argv)
    keys = [override.key_or_group for override in overrides if _is_setting(override)]
    chosen = chosen_schemas(overrides) if any(schema_varies(key) for key in keys) else None
    for key in keys:
        if problem := undeclared_override(key, chosen):
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise ConfigError(problem)
            raise SystemExit(f"error: {problem}")
    hydra_main()


def plain_overrides(argv: list[str]) -> list[Any]:
    """The command line's overrides, parsed as Hydra parses them (hydra.core.override_parser's ``Override``s); none
    for a command line Hydra cannot read (Hydra's own error says what is wrong)."""
    from hydra._internal.utils import get_args_parser  # Hydra's parser of its command line (hydra.main uses it)
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = get_args_parser()
    parser.exit_on_error = False  # argparse raises instead of exiting (Python >= 3.9)
    try:
        return OverridesParser.create().parse_overrides(parser.parse_known_args(argv)[0].overrides)
    except (argparse.ArgumentError, HydraException, SystemExit):
        return []


def _is_setting(override: Any) -> bool:
    """Whether ``override`` sets a key, ``key=value`` or a sweep ``key=a,b``: not a config group's choice
    (``task=diabetes``, ``hydra/launcher=slurm``), Hydra's own ``hydra.*``, nor ``+``/``++``/``~`` (the keys these
    add or delete are gal.config.validate's to check)."""
    from hydra.core.override_parser.types import OverrideType

    key = override.key_or_group
    return (
        override.type == OverrideType.CHANGE
        and override.package is None
        and "/" not in key
        and key not in _group_names()
        and key.split(".")[0] != "hydra"
    )


def _group_names() -> set[str]:
    return {path.name for path in Path(CONFIG_DIR).iterdir() if path.is_dir()}


def plain_override_keys(argv: list[str]) -> list[str]:
    """The keys the command line's plain overrides set (:func:`_is_setting`)."""
    return [override.key_or_group for override in plain_overrides(argv) if _is_setting(override)]


def chosen_schemas(overrides: list[Any]) -> dict[str, Any] | None:
    """The schema of each config group's choice (task, optimizer, scheduler: gal.config.SCHEMAS), learnt by composing
    the command line's config choices; None where that cannot be known before the sweep (a group swept over,
    ``optimizer=sgd,adam``) or composing fails (Hydra says why when it composes)."""
    from hydra import compose, initialize_config_dir

    from gal.config import SCHEMAS

    groups = _group_names()
    if any(o.is_sweep_override() and o.key_or_group.split("/")[0] in groups for o in overrides):
        return None
    kept = [o.input_line for o in overrides if not _is_setting(o) and not o.is_sweep_override()]
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", overrides=[line for line in kept if not line.startswith("hydra")])
    except Exception:  # noqa: BLE001 (any composing error is Hydra's to report, with its own message)
        return None
    return {group: OmegaConf.get_type(cfg[group]) for group in SCHEMAS if group in cfg}


if __name__ == "__main__":
    main()
