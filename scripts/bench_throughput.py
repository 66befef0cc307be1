"""Throughput (images/s) of the shared trainer with GAL off and on, against a minimal PyTorch loop.

Three arms train copies of one timm model (same initial weights) on the same in-memory batches of
random 224 px images with 100 classes: ``trainer_gal_off`` and ``trainer_gal_on`` call
``gal.train.train_one_epoch`` (the real step: to_device, autocast, GradientAdjuster.backward or
loss.backward, optimizer step, step logs buffered on the device and read back every log_every
steps); ``minimal_loop`` is zero_grad, forward, cross-entropy backward, optimizer.step under the
same autocast and loss scaling. gal_off / minimal is the trainer's own overhead, gal_on / gal_off
GAL's. Whole epochs are timed, the arms interleaved in rounds (their order rotating), medians kept.

    python scripts/bench_throughput.py            # writes results/bench/throughput.json
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

import timm
import torch
from omegaconf import OmegaConf
from torch import nn

from gal.adjuster import GradientAdjuster
from gal.benchmarking import (
    BenchTask,
    machine_record,
    minimal_arm,
    pick_device,
    quartiles,
    random_batches,
    time_rounds,
    trainer_arm,
)
from gal.optim import build_optimizer
from gal.precision import Precision
from gal.results import write_json
from gal.train import Trainee, configure_backends

ROOT = Path(__file__).resolve().parents[1]

MODELS = ("resnet50", "efficientnet_b1")
NUM_CLASSES, IMAGE_SIZE = 100, 224
SGD = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-5}
TARGETS = {"trainer_overhead": 0.97, "gal_overhead": 0.98}  # minimum images/s ratios
LOG_EVERY = OmegaConf.load(ROOT / "configs" / "trainer" / "default.yaml").log_every


def build_trainee(model: nn.Module, adjuster: GradientAdjuster | None, channels_last: bool) -> Trainee:
    """The step's objects as gal.train._build_trainee makes them for SGD, without a scheduler or EMA."""
    optimizer = build_optimizer(model, adjuster, name="sgd", **SGD)
    device = next(model.parameters()).device
    return Trainee(model, optimizer, adjuster, precision=Precision(device, "auto"), channels_last=channels_last)


def bench(name: str, device: torch.device, batch: int, steps: int, rounds: int, warmup: int) -> dict:
    """images/s of the three arms on model ``name``, one timed epoch of ``steps`` per arm and round."""
    torch.manual_seed(0)
    channels_last = device.type == "cuda"  # configs/trainer/default.yaml: channels_last for image models on CUDA
    model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = random_batches(steps, batch, device, channels_last, IMAGE_SIZE, NUM_CLASSES)
    adjuster = GradientAdjuster(NUM_CLASSES, arch=(256, 64, 32), alpha=0.01, beta=1.0).to(device)
    task = BenchTask(num_classes=NUM_CLASSES)
    minimal = copy.deepcopy(model)
    arms = {  # each arm its own copy of the same initial weights
        "trainer_gal_off": trainer_arm(build_trainee(model, None, channels_last), task, LOG_EVERY),
        "trainer_gal_on": trainer_arm(build_trainee(copy.deepcopy(model), adjuster, channels_last), task, LOG_EVERY),
        "minimal_loop": minimal_arm(minimal, Precision(device, "auto"), torch.optim.SGD(minimal.parameters(), **SGD)),
    }
    for run in arms.values():
        run(batches[:warmup])
    seconds, _ = time_rounds(arms, batches, rounds, device)  # interleaved, the order rotating
    throughput = {arm: quartiles([batch * steps / s for s in times]) for arm, times in seconds.items()}
    median = {arm: q["median"] for arm, q in throughput.items()}
    ratios = {
        "trainer_overhead": median["trainer_gal_off"] / median["minimal_loop"],
        "gal_overhead": median["trainer_gal_on"] / median["trainer_gal_off"],
    }
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "image_size": IMAGE_SIZE,
        "steps_per_epoch": steps,
        "rounds": rounds,
        "warmup_steps": warmup,
        "images_per_s": throughput,
        "ratios": {k: {"value": v, "target_min": TARGETS[k], "met": v >= TARGETS[k]} for k, v in ratios.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: 64 on CUDA, 8 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed epoch (default: 20 on CUDA, 3 on CPU)")
    parser.add_argument("--rounds", type=int, default=9, help="timed epochs per arm and model")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per arm and model")
    parser.add_argument("--out", default="results/bench/throughput.json")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    batch = args.batch or (64 if on_cuda else 8)
    steps = args.steps or (20 if on_cuda else 3)
    configure_backends(device, input_sizes_vary=False, tf32=False, deterministic=False)  # the trainer's defaults

    load_start = os.getloadavg()  # other processes on the machine slow every arm and widen the quartiles
    cases = [bench(name, device, batch, steps, args.rounds, args.warmup) for name in MODELS]
    precision = Precision(device, "auto")
    report = {
        **machine_record(device),
        "load_avg_1m_5m_15m": {"start": list(load_start), "end": list(os.getloadavg())},
        "precision": {
            "trainer": f"Precision({device.type!r}, 'auto'): {precision.mode}",
            "minimal_loop": f"the trainer's: autocast {precision.dtype or 'off'}, GradScaler "
            f"{'on' if precision.mode == 'fp16' else 'off'}",
        },
        "cases": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(report, Path(args.out))

    print(f"{'model':<17}{'gal_off img/s':>14}{'gal_on img/s':>14}{'minimal img/s':>15}{'off/min':>9}{'on/off':>8}")
    for case in cases:
        ips, ratios = case["images_per_s"], case["ratios"]
        print(
            f"{case['model']:<17}{ips['trainer_gal_off']['median']:>14.2f}{ips['trainer_gal_on']['median']:>14.2f}"
            f"{ips['minimal_loop']['median']:>15.2f}{ratios['trainer_overhead']['value']:>9.3f}"
            f"{ratios['gal_overhead']['value']:>8.3f}"
        )
    met = all(r["met"] for case in cases for r in case["ratios"].values())
    print(
        f"targets off/min >= {TARGETS['trainer_overhead']}, on/off >= {TARGETS['gal_overhead']}: "
        f"{'met' if met else 'NOT met'}; load avg {load_start[0]:.2f} -> {report['load_avg_1m_5m_15m']['end'][0]:.2f}; "
        f"wrote {args.out}"
    )


if __name__ == "__main__":
    main()
