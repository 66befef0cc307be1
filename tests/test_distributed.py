"""Distributed jobs on the CPU with gloo: torchrun --multirun, two nodes on localhost, srun, per-rank randomness.

Every launch is a real one (torchrun, or processes with srun's variables) of ``python -m gal`` on
diabetes; each is given a timeout, so a hang fails the test instead of stalling the suite.
"""

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.utils import random_seed
from torchvision.transforms import v2

from gal.checkpoint import load_checkpoint
from gal.distributed import check_local_devices, check_nodes_alike
from gal.rng import rng_state, set_rng_state

RUN = ["task=diabetes", "gal=on", "trainer.epochs=2", "trainer.progress=false"]
TIMEOUT = 180  # seconds for one launch; a hung rendezvous fails here
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(commands: list[list[str]], cwd: Path, envs: list[dict[str, str]] | None = None) -> None:
    """Start ``commands`` side by side (the nodes or tasks of one job) and wait for all; each must succeed."""
    envs = envs or [{}] * len(commands)
    processes = [
        subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for command, env in zip(commands, envs)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, output.decode()[-3000:]


def run_dir(root: Path, name: str, seed: int) -> Path:
    return root / "runs" / name / f"diabetes/adam/on/seed={seed}"


def assert_same_run(a: Path, b: Path) -> None:
    """Equal metrics and weights, to float tolerance."""
    metrics = {run: json.loads((run / "metrics.json").read_text()) for run in (a, b)}
    assert metrics[a]["steps"] == metrics[b]["steps"]
    for key, value in metrics[b]["metrics"].items():
        assert metrics[a]["metrics"][key] == pytest.approx(value, rel=1e-6), key
    weights = {run: load_checkpoint(run / "last.pt")["model"] for run in (a, b)}
    for key in weights[b]:
        torch.testing.assert_close(weights[a][key], weights[b][key], rtol=1e-6, atol=1e-7)


def free_slurm_job_id() -> int:
    """A job id whose rendezvous port (drawn from it as gal.distributed draws it) is free here."""
    for job_id in range(1000, 2000):
        with socket.socket() as s:
            try:
                s.bind(("localhost", random.Random(job_id).randint(20000, 60000)))
                return job_id
            except OSError:
                continue
    raise RuntimeError("no free port")


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> Path:
    """The same runs launched four ways, two processes each; every seed of the --multirun is matched by
    another launch: seed 0 by srun's tasks, seed 1 by two torchrun nodes, seed 2 by torchrun alone."""
    root = tmp_path_factory.mktemp("jobs")
    out = f"results_dir={root}"
    single_node = [*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "gal"]
    launch([[*single_node, "--multirun", *RUN, "seed=0,1,2", "name=multirun", out]], root)
    launch([[*single_node, *RUN, "seed=2", "name=alone", out]], root)
    endpoint = f"localhost:{free_port()}"
    two_nodes = [
        [*TORCHRUN, "--nnodes=2", f"--node_rank={node}", "--nproc_per_node=1", "--rdzv_backend=c10d",
         f"--rdzv_endpoint={endpoint}", "--rdzv_id=gal-test", "-m", "gal", *RUN, "seed=1", "name=two_nodes", out]
        for node in (0, 1)
    ]  # fmt: skip
    launch(two_nodes, root)
    job = {"SLURM_JOB_ID": str(free_slurm_job_id()), "SLURM_JOB_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1"}
    tasks = [{**job, "SLURM_NTASKS": "2", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)} for rank in (0, 1)]
    launch([[sys.executable, "-m", "gal", *RUN, "seed=0", "name=srun", out]] * 2, root, tasks)
    return root


def test_a_torchrun_multirun_finishes_every_seed_as_if_each_were_launched_alone(jobs):
    assert_same_run(run_dir(jobs, "multirun", 2), run_dir(jobs, "alone", 2))
    summary = json.loads((run_dir(jobs, "multirun", 2) / "metrics.json").read_text())
    assert summary["steps"] == 2 * 12  # each rank sees 177 of 353 samples: 12 batches of 16 (global 32) per epoch
    assert not any(key.startswith("module.") for key in load_checkpoint(run_dir(jobs, "alone", 2) / "last.pt")["model"])


def test_two_nodes_on_localhost_match_two_processes_on_one(jobs):
    assert_same_run(run_dir(jobs, "two_nodes", 1), run_dir(jobs, "multirun", 1))


def test_srun_tasks_join_through_slurm_variables(jobs):
    assert_same_run(run_dir(jobs, "srun", 0), run_dir(jobs, "multirun", 0))


def test_the_checkpoint_keeps_every_ranks_own_generators(jobs):
    states = load_checkpoint(run_dir(jobs, "alone", 2) / "last.pt")["rng"]
    assert len(states) == 2
    assert not torch.equal(states[0]["torch"], states[1]["torch"])
    assert states[0]["python"] != states[1]["python"]


def test_ranks_draw_different_augmentations_and_a_rank_repeats_its_own():
    augment = v2.Compose([v2.RandomResizedCrop(16), v2.RandomHorizontalFlip(), v2.ColorJitter(0.4, 0.4, 0.4)])
    image = torch.rand(3, 32, 32)

    def first_draws(rank: int) -> torch.Tensor:
        random_seed(seed=7, rank=rank)
        return torch.stack([augment(image) for _ in range(4)])

    assert not torch.equal(first_draws(0), first_draws(1))
    assert torch.equal(first_draws(1), first_draws(1))


def test_saved_generators_restore_every_draw(tmp_path):
    device = torch.device("cpu")
    random_seed(3, rank=1)
    torch.save(rng_state(device), tmp_path / "rng.pt")

    def draw() -> tuple:
        return torch.rand(3).tolist(), np.random.rand(2).tolist(), random.random()

    drawn = draw()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), device)  # as a checkpoint holds them
    assert draw() == drawn


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process descended from it, read off /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        tree.update(children)
        frontier = children
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


# slow (~50 s): make test covers kill -9 + resume in one process (gpu_check --cpu, test_train) and DDP apart
@pytest.mark.slow
@pytest.mark.serial
def test_a_ddp_run_killed_and_resumed_equals_the_uninterrupted_one(tmp_path):
    # random adjustments draw from each rank's generator at every step: a rank resuming with another
    # rank's generators (or fresh ones) would train differently
    job = [*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "gal", "task=diabetes", "gal=on", "gal.kind=uniform"]
    job += ["task.global_batch_size=8", "trainer.epochs=8", "trainer.progress=false", f"results_dir={tmp_path}"]
    launch([[*job, "name=straight"]], tmp_path)
    killed = subprocess.Popen([*job, "name=killed"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = run_dir(tmp_path, "killed", 0) / "last.pt"
    deadline = time.monotonic() + TIMEOUT
    while not checkpoint.exists() and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.02)
    kill_tree(killed.pid)  # torchrun and its workers (which torchrun starts in sessions of their own)
    killed.wait()
    assert checkpoint.exists() and not (checkpoint.parent / "metrics.json").exists(), "killed too late"
    launch([[*job, "name=killed", "trainer.if_exists=resume"]], tmp_path)
    assert_same_run(run_dir(tmp_path, "killed", 0), run_dir(tmp_path, "straight", 0))


def test_more_processes_on_a_node_than_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(torch.cuda.device_count() + 1))
    with pytest.raises(ValueError, match=r"lower NPROC \(torchrun --nproc_per_node\)"):
        check_local_devices("cuda")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("SLURM_NTASKS", str(2 * (torch.cuda.device_count() + 1)))
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    with pytest.raises(ValueError, match="or tasks_per_node"):
        check_local_devices("cuda")


def test_nodes_started_with_different_process_counts_are_refused(monkeypatch):
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")  # torchrun: two nodes joined, this one with 2 processes
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    check_nodes_alike(4)
    with pytest.raises(ValueError, match="start every node with the same NPROC"):
        check_nodes_alike(3)  # the other node started 1
