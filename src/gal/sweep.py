"""Sweeps that finish: a ``--multirun`` goes past a job that cannot start, and ends with one table.

    python -m gal --multirun task=diabetes gal=off,on seed=0,1,2

A job that meets a :class:`gal.errors.SetupError` (its run exists and ``trainer.if_exists=error``, another
process holds it, a setting out of range) is refused: ``error: <run dir>: <reason>`` on one line, and the
sweep goes on with the next job (``gal.cli.run`` calls :func:`refuse`). A setting that every job shares
is thus said once per job, each job stopping before any data is loaded. At the end :class:`SweepSummary`
(a Hydra callback, ``hydra.callbacks.summary`` in configs/config.yaml) prints one table, per arm (the jobs
whose overrides agree but for ``seed``, named by the overrides that differ between arms), of the last
evaluation's metrics (metrics.json's ``metrics``) as mean ± sample std over the seeds that finished, the
task's objective first, with the diverged seeds and the refused and failed jobs counted; a search (the
Optuna sweeper) lists its trials best first. Then, if a job was refused or failed, it lists them and the
command exits with status 1. A single run (no ``--multirun``) stops at its error, as before. A NaN loss
under ``trainer.on_nonfinite=error`` stops its job with one line too (``failed``, the step and the checkpoint
kept named), and the sweep goes on (every rank meets the same loss: DDP averages it). Any other error (a bug)
fails its job as Hydra has it: the sweeper stops with its traceback once the job's batch is done (a crash
differs between torchrun's ranks, which must not go on apart); its record says so (``failed``).

Where it is written: ``<hydra.sweep.dir>/sweeps/<start time>/`` (``summary.md``, ``summary.json`` and
``jobs/<n>.json``, each job's record), e.g. results/runs/sweeps/2026-12-03_08-44-30/. A folder per sweep,
named by its start as Hydra names its own multirun folders (with ``-2``, ``-3`` ... when sweeps start in
the same second: ``make -j`` starts several): every sweep of the project shares hydra.sweep.dir
(results/runs), and sweeps over the same arms share the runs' common folder, so a fixed file name there
would be overwritten by the next sweep; a folder of its own beside the runs' experiment folders is never
read as one (make_tables lists the folders under runs/<experiment>/). ``hydra.callbacks.summary.folder=...``
moves it.

Under submitit (hydra/launcher=slurm) each job's ``on_job_end`` runs in the job's process: it writes the
job's record into the sweep's folder (a shared file system, as submitit's own folder needs), and
``on_multirun_end``, on the submitting host, reads the records and each run's metrics.json. Under torchrun or
srun every process runs the sweep; the first one (RANK or SLURM_PROCID 0) prints and writes.
"""

import atexit
import json
import math
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from gal.keys import gal_off_warning
from gal.storage import write_atomically

# run dir -> (status, reason), from refuse() to SweepSummary.on_job_end, in the job's process
_refused: dict[str, tuple[str, str]] = {}


def searching(hydra_cfg: DictConfig | None = None) -> bool:
    """Whether a job of this process (or the sweep of ``hydra_cfg``) is a search: a sweeper other than Hydra's basic
    one (Optuna's), whose trials score on the validation split (gal.cli.run)."""
    if hydra_cfg is None:
        if not HydraConfig.initialized():
            return False
        hydra_cfg = HydraConfig.get()
    return "BasicSweeper" not in str(OmegaConf.select(hydra_cfg, "sweeper._target_"))


def first_process() -> bool:
    """Whether this is the process that speaks for a torchrun or srun job (rank 0, or a single process)."""
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def goes_on() -> bool:
    """Whether a job of this process may be refused without stopping its sweep: a ``--multirun`` whose end
    :class:`SweepSummary` reports (and sets the exit status of)."""
    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    targets = [callback.get("_target_") for callback in (hydra_cfg.callbacks or {}).values()]
    return hydra_cfg.mode == RunMode.MULTIRUN and f"{__name__}.SweepSummary" in targets


def refuse(run_dir: str, error: Exception, status: str = "refused") -> None:
    """Say why the job of ``run_dir`` does not run, or stopped (``status="failed"``: a NaN loss under
    trainer.on_nonfinite=error), in one line, keep the reason for the sweep's summary, and remove the empty
    folders Hydra made for it (a run's own files are never touched)."""
    reason = _reason(run_dir, error)
    _refused[str(run_dir)] = (status, reason)
    if first_process():
        print(f"error: {run_dir}: {reason}", file=sys.stderr, flush=True)
        _remove_empty(Path(run_dir), Path(HydraConfig.get().sweep.dir))


def _reason(run_dir: str, error: Exception) -> str:
    """The error's message without its leading run dir (the line names it already)."""
    message, prefix = str(error), str(Path(run_dir))
    return message.removeprefix(f"{prefix}/").removeprefix(f"{prefix} ") or type(error).__name__


def _search_overrides(sweeper: DictConfig) -> list[str]:
    """A search's (hydra-optuna-sweeper's) swept settings as overrides, ``key=choice(...)``; none for Hydra's own."""
    return [f"{key}={value}" for key, value in (OmegaConf.select(sweeper, "params") or {}).items()]


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents below ``stop`` while they are empty."""
    stop = stop.resolve()
    folder = folder.resolve()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (a run's files, or another sweep's job), or gone
            return
        folder = folder.parent


BUDGET_FILE = "budget.json"  # an equal-budget search's trials, sampler seed and ranges, in its sweep folder
ARMS = ("off", "on")  # the two arms of an equal-budget tuning, as their GAL choice names them


def check_equal_budget(sweep_dir: Path, arm: str, sweeper: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """The budget of one arm's search (``arm`` off | on, its folder ``sweep_dir`` beside the other arm's), checked
    against the other arm's budget.json: the same trial count, sampler seed and ranges for every key the baseline
    searches (the GAL arm adds only gal.* keys). The ranges are hydra.sweeper.params with the command line's sweep
    ``overrides`` over them, as the Optuna sweeper takes them. A mismatch is a one-line ConfigError, raised before
    any trial."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gal.errors import ConfigError

    if arm not in ARMS:
        raise ConfigError(f"an equal-budget search compares gal=off with gal=on; this one is gal={arm}")
    params = {str(key): str(value) for key, value in (sweeper.params or {}).items()}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_sweep_override():
            params[override.get_key_element()] = override.input_line.split("=", 1)[1]  # as typed: "interval(1, 9)"
    budget = {"arm": arm, "n_trials": int(sweeper.n_trials), "sampler_seed": sweeper.sampler.seed, "params": params}
    other_file = Path(sweep_dir).parent / ARMS[1 - ARMS.index(arm)] / BUDGET_FILE
    if not other_file.exists():
        return budget
    other = json.loads(other_file.read_text())
    baseline, gal = (budget, other) if arm == "off" else (other, budget)
    problems = [
        f"{key} {budget[key]} here, {other[key]} in {other_file}"
        for key in ("n_trials", "sampler_seed")
        if budget[key] != other[key]
    ]
    problems += [
        f"{key}: {baseline['params'].get(key)} (baseline) vs {gal['params'].get(key)} (GAL)"
        for key in sorted(baseline["params"].keys() | gal["params"].keys())
        if not key.startswith("gal.") and baseline["params"].get(key) != gal["params"].get(key)
    ]
    if problems:
        raise ConfigError(
            f"the two arms of an equal-budget search would differ ({'; '.join(problems)}): run both with the same "
            "hydra.sweeper.n_trials (make tuned TUNE_TRIALS=N) and ranges, or move the other arm's folder away"
        )
    return budget


class SweepSummary(Callback):
    """Records each job of a ``--multirun`` and prints and writes the sweep's table at its end (module docstring).

    ``folder``: where each sweep makes its own folder, named by its start time. ``arm`` (off | on, set by the
    equal-budget searches, configs/hparams_search/tune_*.yaml): the search first checks that it has the other arm's
    budget (:func:`check_equal_budget`) and records its own in budget.json.
    """

    def __init__(self, folder: str, arm: str | None = None) -> None:
        self.folder = Path(folder)
        self.arm = arm
        self.sweep_folder: Path | None = None  # made by on_multirun_start; travels to submitit's jobs with self
        self.refused_here = 0  # this process's refused jobs (every torchrun rank counts its own)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.arm is not None:  # before any file is written: a refused search leaves nothing behind
            from gal.errors import ConfigError

            sweep_dir = Path(config.hydra.sweep.dir)
            try:
                budget = check_equal_budget(sweep_dir, self.arm, config.hydra.sweeper, config.hydra.overrides.task)
            except ConfigError as error:
                raise SystemExit(f"error: {error}") from None
            if first_process():
                _write_json(budget, sweep_dir / BUDGET_FILE)
        if first_process():
            overrides = [*config.hydra.overrides.task, *_search_overrides(config.hydra.sweeper)]
            if warning := gal_off_warning(overrides, [str(OmegaConf.select(config, "hydra.runtime.choices.gal"))]):
                print(warning, file=sys.stderr, flush=True)
            self.sweep_folder = _new_folder(self.folder, datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
            # a sweep stopped before its first job (a launcher's error, Ctrl-C) leaves no empty folder
            atexit.register(_remove_empty, self.sweep_folder, self.folder.parent)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        run_dir = str(config.run_dir)
        status, reason = _refused.pop(run_dir, ("done", None))
        self.refused_here += reason is not None
        if self.sweep_folder is None or not first_process():
            return
        record = {
            "job": int(config.hydra.job.num),
            "overrides": list(job_return.overrides or []),
            "run_dir": run_dir,
            "path": os.path.abspath(run_dir),
            "objective": _objective(config.task._target_),
            "status": status,
            "reason": reason,
        }
        if job_return.status == JobStatus.FAILED:  # raised (not a SetupError): Hydra's sweepers stop after it
            try:
                job_return.return_value  # noqa: B018  (re-raises the job's error)
            except Exception as error:  # noqa: BLE001
                record.update(status="failed", reason=f"{type(error).__name__}: {error}".splitlines()[0])
        _write_json(record, self.sweep_folder / "jobs" / f"{record['job']}.json")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not first_process():
            if self.refused_here:
                raise SystemExit(1)  # every process of the job met the same refusals; the first one says them
            return
        if self.sweep_folder is None:
            return
        records = [json.loads(p.read_text()) for p in (self.sweep_folder / "jobs").glob("*.json")]
        if not records:
            print(f"no job of this sweep left a record in {self.sweep_folder / 'jobs'}")
            return
        search = searching(config.hydra)
        summary = summarise(sorted(records, key=lambda r: r["job"]), search)
        text = table(summary)
        _write_json(summary, self.sweep_folder / "summary.json")
        write_atomically(self.sweep_folder / "summary.md", lambda file: file.write(f"{text}\n".encode()))
        print(f"\n{text}\n\nsummary: {self.sweep_folder / 'summary.md'}", flush=True)
        stopped = [job for job in summary["jobs"] if job["status"] in ("refused", "failed")]
        if stopped:
            for job in stopped:
                print(f"{job['status']}: {job['run_dir']}: {job['reason']}", file=sys.stderr)
            raise SystemExit(f"error: {len(stopped)} of {len(records)} jobs did not finish (listed above)")


def _new_folder(parent: Path, name: str) -> Path:
    """``parent/name``, or ``name-2``, ``name-3`` ... when another sweep took it first."""
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        folder = parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent / name}: too many sweeps started in that second")


def _objective(task_target: str) -> list[str] | None:
    """[metric, direction] the task's class optimises (gal.cli.task_objective), None if it cannot be read."""
    try:
        return list(get_class(task_target).objective)
    except Exception:  # noqa: BLE001  (a job whose task does not load is refused or failed already)
        return None


def _write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (json.dumps(data, indent=2) + "\n").encode()
    write_atomically(path, lambda file: file.write(text))


def _outcome(record: dict[str, Any]) -> dict[str, Any]:
    """The job's record with what its run dir holds now: status done | diverged | refused | failed, metrics."""
    from gal.results import METRICS_FILE, run_result

    job = {**record, "metrics": {}}
    if job["status"] != "done":
        return job
    metrics_file = Path(job["path"]) / METRICS_FILE
    if not metrics_file.exists():
        return {**job, "status": "failed", "reason": f"no {METRICS_FILE} after the job"}
    saved = json.loads(metrics_file.read_text())
    if "diverged" in saved:
        return {**job, "status": "diverged", "reason": saved["diverged"]}
    return {**job, "metrics": run_result(saved)}  # trainer.select's test metrics, and validation's as val/<name>


def _arm_key(overrides: list[str]) -> tuple[str, ...]:
    return tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed")


def summarise(records: list[dict[str, Any]], search: bool = False) -> dict[str, Any]:
    """Per arm: n (seeds that finished), mean and std (ddof=1, gal.results.mean_std) of each metric over them,
    diverged, refused and failed counts; ``search``: one arm per job (trial), best first by the objective."""
    import numpy as np

    from gal.results import mean_std

    jobs = [_outcome(record) for record in records]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault((job["job"],) if search else _arm_key(job["overrides"]), []).append(job)
    names = _arm_names([_arm_key(members[0]["overrides"]) for members in groups.values()])
    arms = []
    for name, members in zip(names, groups.values()):
        finished = [job for job in members if job["status"] == "done"]
        metric_names = list(dict.fromkeys(key for job in finished for key in job["metrics"]))
        stats = {}
        for metric in metric_names:
            values = np.array([job["metrics"].get(metric, math.nan) for job in finished], dtype=float)
            mean, std = mean_std(values)
            stats[metric] = {"mean": mean, "std": std, "values": values.tolist()}
        status = [job["status"] for job in members]
        arms.append(
            {
                "arm": f"trial={members[0]['job']:03d} {name}".strip() if search else name,
                "overrides": list(_arm_key(members[0]["overrides"])),
                "objective": next((job["objective"] for job in members if job["objective"]), None),
                "n": len(finished),
                "metrics": stats,
                **{count: status.count(count) for count in ("diverged", "refused", "failed")},
                "run_dirs": [job["run_dir"] for job in members],
            }
        )
    if search:
        arms.sort(key=_rank)
    return {"search": search, "arms": arms, "jobs": jobs}


def _rank(arm: dict[str, Any]) -> tuple[bool, float]:
    """Sort key, best first: the objective's mean in its direction, on the validation split (what a search
    scores, ``val/<metric>``) where the runs have one; arms without it last."""
    metric, direction = arm["objective"] or (None, "minimize")
    scored = arm["metrics"].get(f"val/{metric}") or arm["metrics"].get(metric, {})
    value = scored.get("mean", math.nan)
    return math.isnan(value), value if direction == "minimize" else -value


def _arm_names(keys: list[tuple[str, ...]]) -> list[str]:
    """Each arm by the overrides that differ between arms ("gal=on", "gal.alpha=0.1"); "all" for a single arm."""
    parsed = [dict(o.split("=", 1) if "=" in o else (o, "") for o in key) for key in keys]
    order = list(dict.fromkeys(name for overrides in parsed for name in overrides))
    differing = [name for name in order if len({overrides.get(name) for overrides in parsed}) > 1]
    names = [" ".join(f"{k}={_short(o[k])}" for k in differing if k in o) for o in parsed]
    return [name or "all" for name in names]


def _short(value: str) -> str:
    """A float as 4 significant digits (an Optuna trial's 0.010716295704927558 -> 0.01072); others unchanged."""
    if not any(c in value for c in ".eE") or value.lower() in ("nan", "inf", "-inf"):
        return value
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def table(summary: dict[str, Any]) -> str:
    """The summary as a markdown table, values to 4 significant digits."""
    arms = summary["arms"]
    objectives = list(dict.fromkeys(arm["objective"][0] for arm in arms if arm["objective"]))
    metrics = list(dict.fromkeys([*objectives, *(metric for arm in arms for metric in arm["metrics"])]))
    header = ["trial" if summary["search"] else "arm", "n", *metrics, "diverged", "refused", "failed"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for arm in arms:
        cells = [_cell(arm["metrics"].get(metric), arm["n"]) for metric in metrics]
        counts = [str(arm[count]) for count in ("diverged", "refused", "failed")]
        lines.append("| " + " | ".join([arm["arm"], str(arm["n"]), *cells, *counts]) + " |")
    goal = ", ".join(f"{a['objective'][0]} ({a['objective'][1]})" for a in _unique_objectives(arms))
    note = (
        f"Objective: {goal or 'unknown'}{', ranked on val/ (the validation split)' if summary['search'] else ''}. "
        "Each run's evaluation by trainer.select (its last unless best_val; val/: the validation split's), "
        "mean ± sample std (ddof=1) "
        "over the seeds that finished (n); diverged seeds, refused and failed jobs are counted apart."
    )
    return "\n".join([*lines, "", note])


def _unique_objectives(arms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for arm in arms:
        if arm["objective"]:
            seen.setdefault(arm["objective"][0], arm)
    return list(seen.values())


def _cell(stats: dict[str, Any] | None, n: int) -> str:
    if not stats:
        return ""
    return f"{stats['mean']:.4g}" if n == 1 else f"{stats['mean']:.4g} ± {stats['std']:.4g}"
