"""Start-up time of the command line, wall seconds: ``python -m gal --cfg job`` (compose and print the config) and a
one-epoch Table V diabetes run, each the median of 5, with a cold page cache (dropped before each run, which needs
root; otherwise recorded as not measured) and a warm one (after one unmeasured run), for this checkout and, with
``--against REF``, the project at a git ref, the two interleaved run by run so that both see the same machine.

    python scripts/bench_startup.py                        # this checkout: results/bench/startup.json
    python scripts/bench_startup.py --against b2831e2      # ... and the project at b2831e2, side by side

The ref is checked out into a temporary git worktree and its code runs with this Python (its src/ first on
PYTHONPATH, its configs/), so only the code differs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {  # name: (arguments after `python`, target seconds on a 2-core CPU)
    "cfg_job": (["-m", "gal", "--cfg", "job"], 3.0),
    "table5_diabetes_1_epoch": (["-m", "gal", "experiment=table5_diabetes", "trainer.epochs=1"], 5.0),
}
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> bool:
    """Write back and drop the page cache (Linux, root); False when not allowed."""
    try:
        os.sync()
        DROP_CACHES.write_text("3\n")
        return True
    except OSError:
        return False


def wall_seconds(argv: list[str], repo: Path, results_dir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "HF_HUB_OFFLINE": "1"}
    extra = [f"results_dir={results_dir}", "trainer.progress=false"]
    command = [sys.executable, *argv, *(extra if "--cfg" not in argv else [])]
    started = time.perf_counter()
    subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def measure(argv: list[str], repos: dict[str, Path], repeats: int, scratch: Path) -> dict[str, dict]:
    """Per checkout: the median and every run, cold (page cache dropped before each) and warm (after one
    unmeasured run); the checkouts take turns, run by run. Each run trains into a fresh results folder."""
    cold: dict[str, list[float] | None] = {label: [] for label in repos}
    warm: dict[str, list[float]] = {label: [] for label in repos}
    count = iter(range(1_000_000))
    for _ in range(repeats):
        for label, repo in repos.items():
            if cold[label] is not None and drop_page_cache():
                cold[label].append(wall_seconds(argv, repo, scratch / str(next(count))))
            else:
                cold[label] = None
    for repo in repos.values():
        wall_seconds(argv, repo, scratch / str(next(count)))
    for _ in range(repeats):
        for label, repo in repos.items():
            warm[label].append(wall_seconds(argv, repo, scratch / str(next(count))))
    return {
        label: {
            "cold_median_s": statistics.median(cold[label]) if cold[label] else None,
            "warm_median_s": statistics.median(warm[label]),
            "cold_s": cold[label],
            "warm_s": warm[label],
        }
        for label in repos
    }


def worktree(ref: str, folder: Path) -> Path:
    """The project at ``ref``, checked out (detached) into ``folder``."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), ref], check=True,
                   capture_output=True)  # fmt: skip
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REF", help="also time the project at this git ref (commit, tag)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "startup.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from gal.benchmarking import machine_record

    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    here = f"this checkout (HEAD {head.stdout.strip() or '?'}, with its uncommitted changes)"
    with tempfile.TemporaryDirectory() as scratch:
        repos = {here: ROOT}
        if args.against:
            repos[args.against] = worktree(args.against, Path(scratch) / "against")
        try:
            results = {}
            for name, (argv, target) in COMMANDS.items():
                record = measure(argv, repos, args.repeats, Path(scratch) / name)
                results[name] = {"command": " ".join(["python", *argv]), "target_s": target, "checkouts": record}
                for label, times in record.items():
                    cold = times["cold_median_s"]
                    print(f"{name:<26} {label[:40]:<40} warm {times['warm_median_s']:6.2f} s   "
                          f"cold {'-' if cold is None else f'{cold:6.2f}'} s   (target {target} s)")  # fmt: skip
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(repos[args.against])])
    report = {**machine_record(torch.device("cpu")), "repeats": args.repeats, "commands": results}
    report["made_by"] = " ".join(["python", "scripts/bench_startup.py", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
