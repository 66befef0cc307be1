"""The command line, ``python -m gal`` (and ``gal-train``): Hydra's entry point, without torch until a run starts.

Composing the config needs only Hydra and the schemas (gal.config), so ``python -m gal --cfg job``, ``--help`` and
a refused typo answer before torch is imported; the task function imports gal.train when a run starts. The
launchers that pickle the task function (hydra-submitit-launcher) find it here by reference.
"""

import math
import os
import sys

import hydra
from omegaconf import DictConfig

from gal.config import CONFIG_DIR, config_dir, task_objective  # noqa: F401 (importing it registers the schemas)
from gal.errors import ConfigError, SetupError
from gal.keys import declared_keys_only, gal_off_warning, refusal


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
    if problem := refusal(sys.argv[1:] if argv is None else argv):
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise ConfigError(problem)
        raise SystemExit(f"error: {problem}")
    hydra_main()


if __name__ == "__main__":
    main()
