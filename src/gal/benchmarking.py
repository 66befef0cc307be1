"""What the benchmark scripts (scripts/bench_*.py, scripts/gpu_check.py) share: the device and a record of the
machine, the arms they time (the shared trainer's epoch, a minimal loop), the timing, and the host-sync detectors.

Light at import (torch only): scripts/gpu_check.py's parent process imports it without timm or torchvision.
"""

import contextlib
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from shlex import join
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm


def pick_device(name: str = "auto") -> torch.device:
    """'auto' is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model (platform.processor() is often empty on Linux)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_record(device: torch.device) -> dict[str, Any]:
    """When, where and how a benchmark ran; the load average shows whether others shared the machine."""
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "device": device_name(device),
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "command": join(["python", *sys.argv]),
    }


# --- Arms: one epoch of training per call, over batches already on the device ---------------------------------------
Batches = list[Any]
Arm = Callable[[Batches], None]


class BenchTask:
    """The classification task's injection point and evaluation (z = logits, per-sample cross-entropy; top-1/top-5),
    without its data: what scripts/bench_throughput.py and gal.device_check train on random batches."""

    def __init__(self, label_smoothing: float = 0.0, num_classes: int = 1000) -> None:
        self.label_smoothing = label_smoothing  # the row's task.label_smoothing (ImageNet: 0.1)
        self.num_classes = num_classes

    def features_and_loss(self, model: nn.Module, batch: Any) -> Any:
        from gal.tasks.classification import ClassificationTask

        return ClassificationTask.features_and_loss(self, model, batch)

    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        from gal.tasks.classification import ClassificationTask

        return ClassificationTask.evaluate(self, model, loader)


def trainer_arm(trainee: Any, task: Any, log_every: int) -> Arm:
    """One epoch of the shared trainer (gal.train.train_one_epoch) per call on ``task``, logging disabled
    (no files, no progress bar); the step count carries over from call to call, as in a run."""
    from gal.runlog import RunLog
    from gal.train import train_one_epoch

    runlog, progress = RunLog(Path(os.devnull), enabled=False), tqdm(disable=True)
    state = {"epoch": 1, "step": 0}  # epochs numbered from 1, as the trainer numbers them

    def run(batches: Batches) -> None:
        state["step"] = train_one_epoch(
            trainee, task, batches, runlog, state["epoch"], state["step"], log_every, progress
        )
        state["epoch"] += 1

    return run


def minimal_arm(model: nn.Module, precision: Any, optimizer: torch.optim.Optimizer) -> Arm:
    """The hand-written loop (zero_grad, forward, cross-entropy, backward, step) with the trainer's autocast dtype
    and loss scaling (fp16 only)."""
    scaler = torch.amp.GradScaler(precision.device.type, enabled=precision.mode == "fp16")
    device_type, dtype = precision.device.type, precision.dtype

    def run(batches: Batches) -> None:
        model.train()
        for images, labels in batches:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(images).float(), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return run


def random_batches(
    n: int, batch: int, device: torch.device, channels_last: bool, image_size: int, num_classes: int
) -> Batches:
    """``n`` batches of random images and labels, already on the device in the trainer's memory format."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return [
        (
            torch.randn(batch, 3, image_size, image_size, device=device).contiguous(memory_format=layout),
            torch.randint(0, num_classes, (batch,), device=device),
        )
        for _ in range(n)
    ]


# --- Timing ----------------------------------------------------------------------------------------------------------
def epoch_seconds(run: Arm, batches: Batches, device: torch.device) -> float:
    """Wall time of one epoch; on CUDA, synchronized so queued kernels are counted."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    run(batches)
    sync()
    return time.perf_counter() - start


def quartiles(values: list[float]) -> dict[str, float]:
    """Median and quartiles: robust to the odd round hit by another process."""
    p25, p50, p75 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": p50, "p25": p25, "p75": p75}


def peak_memory_mib(device: torch.device) -> float | None:
    """torch.cuda.max_memory_allocated since the last reset, in MiB (None on the CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def time_rounds(
    arms: dict[str, Arm], batches: Batches, rounds: int, device: torch.device, deadline: float = math.inf
) -> tuple[dict[str, list[float]], dict[str, float | None]]:
    """Seconds per timed epoch of each arm, the arms interleaved with their order rotating (so no arm always
    follows the same one); and each arm's peak memory. Stops after any round past ``deadline`` (time.time())
    once two rounds, the fewest that give quartiles, have run."""
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    peaks: dict[str, float | None] = dict.fromkeys(arms)
    order = list(arms)
    for r in range(rounds):
        if r >= 2 and time.time() > deadline:
            break
        for arm in order[r % len(order) :] + order[: r % len(order)]:
            reset_peak_memory(device)
            seconds[arm].append(epoch_seconds(arms[arm], batches, device))
            peak = peak_memory_mib(device)
            peaks[arm] = peak if peaks[arm] is None else max(peaks[arm], peak)
    return seconds, peaks


# --- Host-device syncs -----------------------------------------------------------------------------------------------
SYNC_MESSAGE = "called a synchronizing CUDA operation"  # torch.cuda.set_sync_debug_mode's (c10/cuda/CUDAFunctions.cpp)


@contextlib.contextmanager
def counting_host_syncs(device: torch.device) -> Iterator[Counter]:
    """Within the block, every host-device sync on ``device`` is counted by where it was asked for: the yielded
    Counter maps 'gal/<module>.py:<line>' (or the library file, e.g. 'torch/amp/grad_scaler.py:<line>') to how
    often, filled when the block ends. CUDA's sync debug mode ("warn") raises one warning per sync; on the CPU
    there is no such mode and only warnings raised in the block with that message are counted."""
    sites: Counter = Counter()
    on_cuda = device.type == "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if on_cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            if on_cuda:
                torch.cuda.set_sync_debug_mode("default")
    sites.update(_short_path(w.filename, w.lineno) for w in caught if SYNC_MESSAGE in str(w.message))


def _short_path(filename: str, lineno: int) -> str:
    """'gal/runlog.py:91' or 'torch/amp/grad_scaler.py:460': the path from the package folder on."""
    parts = Path(filename).parts
    for package in ("gal", "torch", "timm", "torchvision", "pytorch_optimizer"):
        if package in parts:
            start = len(parts) - 1 - parts[::-1].index(package)
            return f"{'/'.join(parts[start:])}:{lineno}"
    return f"{filename}:{lineno}"


@contextlib.contextmanager
def sync_errors_in_gal_step(adjuster: Any) -> Iterator[None]:
    """Within the block, every ``adjuster.backward`` call (as train_one_epoch makes it) runs under
    ``torch.cuda.set_sync_debug_mode("error")``: a host sync inside it raises. The rest of the step is not checked."""
    plain = adjuster.backward

    def checked(*args: Any, **kwargs: Any) -> Any:
        torch.cuda.set_sync_debug_mode("error")
        try:
            return plain(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    adjuster.backward = checked  # an attribute of this instance only; the class keeps its method
    try:
        yield
    finally:
        del adjuster.backward


def gal_frame(error: BaseException) -> str | None:
    """The innermost frame of this project's code (the ``gal`` package) in the error's traceback, as
    'gal/<module>.py:<line> in <function>': where a host sync was asked for, or the call that hit it."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        parts = Path(frame.filename).parts
        if "gal" in parts:
            package = len(parts) - 1 - parts[::-1].index("gal")
            return f"{'/'.join(parts[package:])}:{frame.lineno} in {frame.name}"
    return None
