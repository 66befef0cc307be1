"""SLURM sweeps through hydra-submitit-launcher (``hydra/launcher=slurm``), checked before anything is submitted.

The preset (configs/hydra/launcher/slurm.yaml) asks for one srun task per GPU; each task runs the
trainer, which joins the job's process group from srun's variables (gal.distributed). The preset's
launcher is the plugin's, checking its request first (hydra_plugins/gal_cluster: Hydra takes launchers
from that namespace only), so that what the cluster would refuse is a one-line error on the login
node, not a failed job in the queue.
"""

import shutil
import subprocess
from typing import Any


def slurm_partitions() -> tuple[list[str], str | None]:
    """The cluster's partitions and its default one (``sinfo`` marks it with '*'), or None without a default."""
    listed = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, check=True)
    names = sorted({line.strip() for line in listed.stdout.splitlines() if line.strip()})
    default = next((name.rstrip("*") for name in names if name.endswith("*")), None)
    return [name.rstrip("*") for name in names], default


def check_slurm_request(params: dict[str, Any]) -> None:
    """Refuse, naming the setting to change, what sbatch would refuse or what would not give one task per GPU."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise ValueError(
            "hydra/launcher=slurm submits with sbatch, which is not on PATH here: run from a SLURM login node "
            "(hydra/launcher=submitit_local runs the same jobs on this machine)"
        )
    gpus, tasks = params.get("gpus_per_node"), params.get("tasks_per_node")
    if gpus and tasks != gpus:
        raise ValueError(
            f"hydra.launcher.tasks_per_node={tasks} but gpus_per_node={gpus}: the trainer runs one process per GPU, "
            "so set them equal"
        )
    partitions, default = slurm_partitions()
    wanted = params.get("partition")
    if wanted is None:
        if default is None:
            raise ValueError(
                "this cluster has no default partition: pass hydra.launcher.partition=<one of "
                f"{', '.join(partitions)}> or export SBATCH_PARTITION"
            )
        return
    unknown = [name for name in str(wanted).split(",") if name not in partitions]
    if unknown:
        raise ValueError(
            f"hydra.launcher.partition={wanted}: no partition {', '.join(unknown)} on this cluster; "
            f"choose from {', '.join(partitions)}"
        )
