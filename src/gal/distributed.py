"""One process per device under torchrun (one node or several) or srun: NCCL on CUDA, gloo on CPU.

The process group is joined once per process, by the first run, and reused by every later run of
a ``--multirun`` in the same process (a group cannot be re-created under one torchrun rendezvous:
the second ``init_process_group`` fails or hangs); it is destroyed when the process exits.
Rank, local rank and world size come from timm's reading of the launcher's environment
(``timm.utils.distributed.world_info_from_env``: torchrun's RANK / LOCAL_RANK / WORLD_SIZE, srun's
SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS), and the group from timm's ``init_distributed_device_so``; a single
process needs neither, and starts without importing timm.
"""

import atexit
import logging
import os
import random
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gal.errors import ConfigError

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_joined: DistInfo | None = None  # this process's membership, once joined


def resolve_device_type(device: str) -> str:
    """``trainer.device`` as 'cpu' or 'cuda'; asking for CUDA where there is none is an error."""
    if device not in DEVICES:
        raise ConfigError(f"trainer.device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is visible here: use trainer.device=auto or cpu")
    return device


def local_world_size() -> int:
    """Processes on this node: torchrun's LOCAL_WORLD_SIZE, else srun's tasks per node, else 1."""
    if "LOCAL_WORLD_SIZE" in os.environ:
        return int(os.environ["LOCAL_WORLD_SIZE"])
    if "SLURM_NTASKS" in os.environ:
        return int(os.environ["SLURM_NTASKS"]) // int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    return 1


def check_local_devices(device_type: str) -> None:
    """One process per GPU: more processes on a node than visible GPUs is refused before any set-up."""
    if device_type != "cuda":
        return
    wanted, visible = local_world_size(), torch.cuda.device_count()
    if wanted > visible:
        raise ConfigError(
            f"{wanted} processes on this node but only {visible} visible CUDA device(s): lower NPROC "
            "(torchrun --nproc_per_node) or tasks_per_node to at most the GPU count"
        )


def check_nodes_alike(world_size: int) -> None:
    """Every node runs as many processes as this one (torchrun's GROUP_WORLD_SIZE counts the nodes that joined)."""
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", os.environ.get("SLURM_JOB_NUM_NODES", "1")))
    here = local_world_size()
    if world_size != nodes * here:
        raise ConfigError(
            f"{world_size} processes over {nodes} nodes, {here} of them on this node: start every node "
            "with the same NPROC (torchrun --nproc_per_node, SLURM tasks per node)"
        )


def _export_slurm_rendezvous() -> None:
    """Under srun (not torchrun), where the ranks meet: the job's first host, and a port drawn from its job id
    in [20000, 60000] as submitit's TorchDistributedEnvironment draws it (that class needs a submitit job)."""
    if "SLURM_PROCID" not in os.environ or "RANK" in os.environ:
        return
    from submitit.slurm.slurm import SlurmJobEnvironment  # parses SLURM_JOB_NODELIST, e.g. node[3-4],gpu7

    job = SlurmJobEnvironment()
    os.environ.setdefault("MASTER_ADDR", job.hostnames[0])
    os.environ.setdefault("MASTER_PORT", str(random.Random(job.job_id).randint(20000, 60000)))


def launched_as_several() -> bool:
    """Whether a launcher started several processes: timm.utils.distributed.is_distributed_env's test, torchrun's
    WORLD_SIZE or else srun's SLURM_NTASKS above 1."""
    for variable in ("WORLD_SIZE", "SLURM_NTASKS"):
        if variable in os.environ:
            return int(os.environ[variable]) > 1
    return False


def init_distributed(device: str = "auto") -> DistInfo:
    """This process's rank, world size and device; joins the process group on the first call only."""
    global _joined
    device_type = resolve_device_type(device)
    if _joined is not None:
        if _joined.device.type != device_type:
            raise ConfigError(
                f"this process trains on {_joined.device.type} and cannot switch to {device_type} between the "
                "runs of one --multirun: launch a separate job for each trainer.device"
            )
        return _joined
    check_local_devices(device_type)
    if not launched_as_several():  # what timm's init_distributed_device_so returns for one process
        _joined = DistInfo(0, 1, torch.device(device_type))
        return _joined
    from timm.utils.distributed import init_distributed_device_so

    _export_slurm_rendezvous()
    joined = init_distributed_device_so(device=device_type)
    rank, world, local_rank = joined["global_rank"], joined["world_size"], joined["local_rank"]
    _joined = DistInfo(rank, world, torch.device(joined["device"]), local_rank)
    if _joined.world_size > 1:
        check_nodes_alike(_joined.world_size)
        atexit.register(shutdown_distributed)
        log.info("rank %d of %d on %s", _joined.rank, _joined.world_size, _joined.device)
    return _joined


def world_size() -> int:
    """Number of processes in the default group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks, on the device (no host sync); identity in one process."""
    if world_size() == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor / world_size()


def broadcast_from_main(value: object) -> object:
    """Rank 0's ``value`` on every rank (a decision all ranks must share); ``value`` itself in one process."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_to_main(value: object) -> list[object] | None:
    """Every rank's ``value``, in rank order, on rank 0 (None elsewhere); ``[value]`` in one process."""
    if world_size() == 1:
        return [value]
    gathered = [None] * world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def shutdown_distributed() -> None:
    """Leave the process group (at exit: later runs in this process would need it)."""
    global _joined
    if dist.is_initialized():
        dist.destroy_process_group()
    _joined = None
