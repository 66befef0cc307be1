"""The command line, ``python -m gal`` (and ``gal-train``): Hydra's entry point, without torch until a run starts.

Composing the config needs only Hydra and the schemas (gal.config), so ``python -m gal --cfg job``, ``--help`` and
a refused typo answer before torch is imported; the task function imports gal.train when a run starts. The
launchers that pickle the task function (hydra-submitit-launcher) find it here by reference.
"""

import math
import os
from pathlib import Path

import hydra
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from gal.config import declared_keys_only  # importing gal.config registers the schemas that configs/ extends
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


main = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")(run)

if __name__ == "__main__":
    main()
