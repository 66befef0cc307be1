"""One command that proves the CUDA path on one GPU, in phases that always finish inside the command's limit.

    python scripts/gpu_check.py --out-dir results/bench     # on a CUDA GPU: ~9 min; gpu_check.json + gpu_check.log
    python scripts/gpu_check.py --cpu --out-dir /tmp/check  # the same phases on tiny models on the CPU (make test)
    bash device_bundle/run.sh                               # on a borrowed GPU machine with no network (README)

Phases, in priority order (gal.device_check has the cases):
  a (<= 3 min)  every paper model (EfficientNet-B1 CIFAR-100, EfficientNet-B2 and ResNet-50 ImageNet, DETR-R50 and
                -R101 COCO) in bf16, eager: the trainer's step GAL off and on and a minimal loop, timed; host syncs
                counted over the trainer's steps and evaluation; GradientAdjuster.backward under sync errors;
  b (<= 3 min)  the real trainer, `python -m gal` on synthetic data: CIFAR-100 (fp32) and ImageNet ResNet-50 (fp16 +
                GradScaler, EMA, PrefetchLoader) killed after the first checkpoint and resumed, equal to an
                uninterrupted run; DETR-R50 with COCO evaluation; Lookahead and AdaBound;
  c (the rest)  fp32 and fp16 eager for every model, then torch.compile'd bf16.
Each phase runs in a worker process that this script kills (with its children) at the phase's deadline, inside a
case if need be (a compile, a warm-up); the report is rewritten after every case (atomically, "complete": false
until the end), so a kill at any time leaves the cases done so far.

Exit status: 0 when every case ran, met its targets and found no unexpected host sync; 1 otherwise (the report is
still written); 2 without a CUDA device (unless --cpu), with a torch older than 2.3, or on bad flags (then nothing is
written). This file imports only the standard library and torch, so a device without torchvision still gets a report.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # the budget counts the imports and CUDA's start-up

import argparse  # noqa: E402  (after the clock starts)
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TextIO  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIN_TORCH = (2, 3)  # torch.amp.GradScaler(device_type), torch.compile on Python 3.12, sync debug mode "warn"
PHASE_BUDGETS = {"a": 180.0, "b": 180.0, "c": None}  # seconds; None: whatever is left
BEST_EFFORT = ("c",)  # phases whose cases the deadline may leave out without failing the check
REPORT_S = 3.0  # kept back from the budget to write the last report
PACKAGES = ("timm", "hydra-core", "omegaconf", "pytorch-optimizer", "pycocotools", "numpy", "scipy", "torchvision")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "results" / "bench", help="gpu_check.json and .log")
    parser.add_argument("--budget-s", type=float, default=540.0, help="the whole check ends by then (from start-up)")
    parser.add_argument("--phases", nargs="+", choices=list(PHASE_BUDGETS), default=list(PHASE_BUDGETS))
    parser.add_argument(
        "--phase-s", nargs="+", default=[], metavar="PHASE=S", help="a phase's own limit, e.g. a=120 (a, b: 180 s)"
    )
    parser.add_argument("--cpu", action="store_true", help="the same phases on tiny models, on the CPU")
    parser.add_argument(
        "--no-torchvision", metavar="REASON", default=None, help="torchvision is missing or broken: skip what needs it"
    )
    parser.add_argument("--hang-in", default=None, help=argparse.SUPPRESS)  # fault injection, for the tests
    parser.add_argument("--crash-in", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.budgets = dict(PHASE_BUDGETS)
    for item in args.phase_s:
        phase, _, seconds = item.partition("=")
        if phase not in PHASE_BUDGETS or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--phase-s takes PHASE=SECONDS with PHASE one of {', '.join(PHASE_BUDGETS)}; got {item!r}")
        args.budgets[phase] = float(seconds)
    if args.budget_s <= REPORT_S:
        parser.error(f"--budget-s must be more than {REPORT_S:g} s")
    return args


def torch_problem(torch: Any, cpu: bool) -> str | None:
    """Why this torch cannot run the check (too old, no CUDA), or None."""
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version < MIN_TORCH:
        return f"torch {torch.__version__} is too old: the trainer needs torch >= {'.'.join(map(str, MIN_TORCH))}"
    if not cpu and not torch.cuda.is_available():
        return "no CUDA device is visible; this check must run on a machine with a GPU (or pass --cpu)"
    return None


def header(torch: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The machine, the software stack and the settings, for the report."""
    from gal.benchmarking import device_name  # torch only: no timm or torchvision in this process

    cuda = not args.cpu
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", *sys.argv]),
        "mode": "cpu" if args.cpu else "cuda",
        "device": device_name(torch.device("cuda" if cuda else "cpu")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "budget_s": args.budget_s,
        "phase_budgets_s": {phase: args.budgets[phase] for phase in args.phases},
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    """Atomically (temp file + rename): a kill mid-write leaves the previous report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


class Log:
    """Lines to the console and to gpu_check.log."""

    def __init__(self, file: TextIO) -> None:
        self.file, self.lock = file, threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            self.file.write(line + "\n")
            self.file.flush()


def pump(stream: TextIO, log: Log) -> None:
    for line in stream:
        log(line.rstrip("\n"))


def read_events(path: Path) -> list[dict[str, Any]]:
    """The worker's events; a line cut short by the kill is dropped."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return events


def run_phase(phase: str, deadline: float, args: argparse.Namespace, log: Log, save: Any, workdir: Path) -> dict:
    """Run ``phase`` in worker processes until it is done or ``deadline`` (time.monotonic()) passes; a worker that
    dies (a crash, a CUDA error) costs its case, and a new worker goes on with the next one."""
    started, events_file = time.monotonic(), workdir / f"events_{phase}.jsonl"
    record: dict[str, Any] = {"budget_s": round(deadline - started, 1), "ended": "finished"}
    start = 0

    def progress(events: list[dict[str, Any]]) -> None:
        save(phase, _assemble(record, events))

    while True:
        killed, code = run_worker(phase, start, deadline, args, log, workdir, progress)
        events = read_events(events_file)
        planned, running = _planned(events), _running(events)
        if planned is None:  # it died (or was killed) while importing
            record["ended"] = "deadline" if killed else f"error: the worker exited with code {code}"
            _append(events_file, {"planned": [f"phase {phase}"]})
            _close(events_file, f"phase {phase}", f"{record['ended']} before it listed its cases (see gpu_check.log)")
            break
        if killed:
            record["ended"] = "deadline"
            if running:
                _close(events_file, running, f"stopped: phase {phase}'s deadline passed during it")
            break
        if running:  # the worker died in this case; the next worker starts after it
            _close(events_file, running, f"error: the worker exited with code {code} during it (see gpu_check.log)")
        start = len([e for e in read_events(events_file) if "record" in e])
        if code == 0 or start >= len(planned):
            break
    record = _assemble(record, read_events(events_file))
    done = {r["case"] for r in record["records"]}
    record["records"] += [
        {"case": name, "status": "not run: deadline"} for name in record["planned"] if name not in done
    ]
    record["seconds"] = round(time.monotonic() - started, 1)
    return record


def run_worker(
    phase: str, start: int, deadline: float, args: argparse.Namespace, log: Log, workdir: Path, progress: Any
) -> tuple[bool, int]:
    """One worker from item ``start`` of the phase; (killed at the deadline, exit code). ``progress(events)`` is
    called whenever the worker has written a new event."""
    events_file = workdir / f"events_{phase}.jsonl"
    wall_deadline = time.time() + (deadline - time.monotonic())
    command = [sys.executable, "-m", "gal.device_check", "--phase", phase, "--events", str(events_file),
               "--deadline", f"{wall_deadline:.3f}", "--start", str(start), "--workdir", str(workdir)]  # fmt: skip
    command += ["--cpu"] * args.cpu
    command += [
        f"--{flag}={value}" for flag, value in (("hang-in", args.hang_in), ("crash-in", args.crash_in)) if value
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # a session of its own: the kill reaches its children too (phase b's trainer runs, DataLoader and compile workers)
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True)  # fmt: skip
    reader = threading.Thread(target=pump, args=(worker.stdout, log), daemon=True)
    reader.start()
    seen, killed = 0, False
    while worker.poll() is None:
        if time.monotonic() >= deadline:
            os.killpg(worker.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.2)
        events = read_events(events_file)
        if len(events) != seen:
            seen = len(events)
            progress(events)
    code = worker.wait()
    with contextlib.suppress(ProcessLookupError):  # what the worker left running (a grandchild), if anything
        os.killpg(worker.pid, signal.SIGKILL)
    reader.join(timeout=5)
    return killed, code


def _close(path: Path, case: str, status: str) -> None:
    """The record of a case the worker did not finish, written as the worker would have."""
    _append(path, {"record": {"case": case, "status": status}})


def _append(path: Path, event: dict[str, Any]) -> None:
    with path.open("a") as file:
        file.write(json.dumps(event) + "\n")


def _planned(events: list[dict[str, Any]]) -> list[str] | None:
    return next((e["planned"] for e in events if "planned" in e), None)


def _running(events: list[dict[str, Any]]) -> str | None:
    """The item the worker started last and has not finished."""
    started = [e["start"] for e in events if "start" in e]
    finished = {e["record"]["case"] for e in events if "record" in e}
    return started[-1] if started and started[-1] not in finished else None


def _assemble(record: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    return {**record, "planned": _planned(events) or [], "records": [e["record"] for e in events if "record" in e]}


def problems(report: dict[str, Any]) -> list[str]:
    """Everything that keeps the check from passing: cases not ok, targets missed (on a GPU), host syncs, a resumed
    run unlike the uninterrupted one."""
    found = []
    targets_count = report["mode"] == "cuda"  # tiny models on a CPU say nothing about a GPU's throughput
    for phase, record in report["phases"].items():
        if record.get("skipped"):
            found.append(f"phase {phase}: skipped ({record['skipped']})")
        for case in record["records"]:
            name = case["case"]
            cut_short = case["status"].startswith(("not run: deadline", "stopped: phase"))
            if case["status"] != "ok" and not (cut_short and phase in BEST_EFFORT):
                found.append(f"{name}: {case['status']}")
            for target, value in case.get("targets", {}).items():
                if targets_count and not value["met"]:
                    found.append(f"{name}: {target} {value['value']:.3f} below {value['target_min']}")
            if case.get("gal_step_host_syncs", "none") not in ("none", "not checked (needs CUDA)"):
                found.append(f"{name}: host sync in the GAL step: {case['gal_step_host_syncs']}")
            for site in case.get("step_host_syncs", {}).get("unexpected", []):
                found.append(f"{name}: unexpected host sync in the trainer's step at {site}")
            evaluation = case.get("evaluation_host_syncs", {})
            if evaluation.get("checked") and evaluation["count"] > evaluation["allowed"]:
                found.append(
                    f"{name}: {evaluation['count']} host syncs in evaluation ({evaluation['allowed']} allowed)"
                )
    return found


def format_table(report: dict[str, Any]) -> str:
    """images/s medians, the two ratios, peak memory and host syncs per case; phase b's verdicts."""
    columns = f"{'off img/s':>10}{'on img/s':>10}{'min img/s':>10}{'on/off':>8}{'off/min':>8}{'peak GiB':>9}"
    lines = [f"{'case':<42}{columns}  syncs/step"]
    for record in report["phases"].values():
        for c in record["records"]:
            if "images_per_s" not in c:
                lines.append(f"{c['case']:<42}{c['status']}{_trainer_verdict(c)}")
                continue
            ips, targets = c["images_per_s"], c["targets"]
            cells = [f"{ips[a]['median']:>10.1f}" if a in ips else f"{'-':>10}"
                     for a in ("trainer_gal_off", "trainer_gal_on", "minimal_loop")]  # fmt: skip
            for name in ("gal_on_vs_off", "trainer_vs_minimal"):
                t = targets.get(name)
                cells.append(f"{t['value']:>7.3f}{' ' if t['met'] else '!'}" if t else f"{'-':>8}")
            peaks = [p for p in c["peak_memory_mib"].values() if p is not None]
            cells.append(f"{max(peaks) / 1024:>9.1f}" if peaks else f"{'-':>9}")
            syncs = c["step_host_syncs"]
            per_step = sum(syncs["sites"].values()) / syncs["steps"] if syncs["checked"] else None
            lines.append(f"{c['case']:<42}{''.join(cells)}  {'-' if per_step is None else f'{per_step:.1f}'}")
    return "\n".join(lines)


def _trainer_verdict(record: dict[str, Any]) -> str:
    """Phase b's facts on the console: the resume comparison, the COCO AP, the runs' final metrics."""
    if "resume_equal" in record:
        killed = record.get("killed_after_epoch")
        same = "equal to" if record["resume_equal"] else f"differs by up to {record['max_abs_diff']:.3g} from"
        return f": killed after epoch {killed}, resumed {same} the uninterrupted run"
    finals = [m["metrics"] for m in record.get("metrics", []) if m.get("metrics")]
    return "".join(f"; {', '.join(f'{k} {v:.4g}' for k, v in list(m.items())[:3])}" for m in finals)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    problem = torch_problem(torch, args.cpu)
    if problem:
        print(f"gpu_check: {problem} (nothing written)", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report_path = args.out_dir / "gpu_check.json"
    report = {**header(torch, args), "phases": {}, "complete": False}
    deadline = STARTED + args.budget_s - REPORT_S

    def save(phase: str, record: dict[str, Any]) -> None:
        report["phases"][phase] = record
        write_report(report, report_path)

    with open(args.out_dir / "gpu_check.log", "w") as log_file, tempfile.TemporaryDirectory() as workdir:
        log = Log(log_file)
        log(f"{report['device']}: torch {torch.__version__} (CUDA {torch.version.cuda}), Python "
            f"{report['python']}; phases {', '.join(args.phases)} within {args.budget_s:.0f} s")  # fmt: skip
        for phase in args.phases:
            if args.no_torchvision:
                save(phase, {"ended": "skipped", "skipped": f"needs torchvision: {args.no_torchvision}", "records": []})
                continue
            budget = args.budgets[phase]
            phase_deadline = deadline if budget is None else min(deadline, time.monotonic() + budget)
            log(f"phase {phase}: until {phase_deadline - STARTED:.0f} s")
            save(phase, run_phase(phase, phase_deadline, args, log, save, Path(workdir)))
        report["problems"] = problems(report)
        report["passed"] = not report["problems"]
        report["seconds"] = round(time.monotonic() - STARTED, 1)
        report["complete"] = True
        write_report(report, report_path)
        log(format_table(report))
        verdict = "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["problems"])
        log(f"gpu_check {verdict} in {report['seconds']:.0f} s; wrote {report_path}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
