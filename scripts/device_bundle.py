"""Write device_bundle/: the wheels and the one command that run scripts/gpu_check.py on a lent GPU machine.

That machine has its own torch, torchvision, numpy, scipy, scikit-learn and pillow, and no network. Everything else
the check and the trainer import travels here as wheels, at the versions installed in .venv (the ones `make test`
tested), for those of CPython 3.10-3.13 that every carried release allows, on manylinux x86_64, so the device
installs them with `pip --no-index` and never builds anything. Wheels already in device_bundle/wheels/ at the
right version are kept, not fetched again.

    python scripts/device_bundle.py                           # from the package index (PyPI)
    python scripts/device_bundle.py --find-links DIR          # offline, from a folder of wheels and sdists
    python scripts/device_bundle.py --packages timm==1.0.31   # another set of pins than .venv's

Then, on the device, from the repo root with device_bundle/ carried: ``bash device_bundle/run.sh [gpu_check args]``.
"""

from __future__ import annotations

import argparse
import datetime
import email
import importlib.metadata
import json
import platform
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "device_bundle"
MAX_MIB = 40.0  # the device tool carries 64 MiB in all, the repo's own files included
PYTHONS = ("3.10", "3.11", "3.12", "3.13")  # each gets a wheel of each compiled package, unless a release leaves it out
DEVICE_PYTHON = "3.12"  # the lent H200 machine's: a bundle that cannot install there is an error
# pip matches platform tags exactly; oldest glibc first, as pip prefers the earlier tags
PLATFORMS = (
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_28_x86_64",
)
# What `import gal.train, timm, hydra, omegaconf, pytorch_optimizer, pycocotools.coco` and scripts/gpu_check.py load
# beyond the device's own packages (found from sys.modules after those imports in .venv; tests/test_device_bundle.py
# imports them with only these and the device's). huggingface_hub and its HTTP stack are optional to timm, but
# carried so that timm runs there as it ran in `make test`.
CARRIED = (
    "timm",  # models, optimizers, schedulers, ModelEmaV3, init_distributed_device
    "huggingface-hub",  # imported by timm.models._hub (timm's pretrained weights; nothing is downloaded)
    "safetensors",  # timm's checkpoint format; compiled (one abi3 wheel)
    "PyYAML",  # timm, omegaconf; compiled (a wheel per Python)
    "hydra-core",  # configs: compose, instantiate
    "omegaconf",  # Hydra's config objects
    "antlr4-python3-runtime",  # Hydra's and OmegaConf's grammar, 4.9.x; published as an sdist only: built here
    "packaging",  # hydra, huggingface_hub
    "pytorch-optimizer",  # the optimizers timm lacks (gal.optim)
    "pycocotools",  # COCO evaluation (DETR rows); compiled (abi3 wheels from cp312, a wheel per Python before)
    "tqdm",  # the trainer's progress bars; huggingface_hub
    "filelock",  # huggingface_hub (torch brings one too: this is the version `make test` ran)
    "httpx2",  # huggingface_hub's HTTP client, imported with it; needs Python >= 3.11
    "httpcore2",  # httpx2
    "anyio",  # httpx2's requirement (httpcore2 imports it when it is there)
    "h11",  # httpcore2
    "idna",  # httpx2, anyio
    "truststore",  # httpx2, httpcore2
    "typing-extensions",  # anyio, huggingface_hub (torch brings one too: this is the tested version)
)
# Not carried: torch, torchvision, numpy, scipy, scikit-learn, pillow (the device's own: its torch is the one to
# test); hf-xet, click, fsspec (huggingface_hub's downloads, CLI and HfFileSystem, never imported by the check);
# wandb, attrs, sniffio (optional imports of timm.utils.summary, omegaconf and httpcore2, skipped when missing).
BOOTSTRAP = ("pip",)  # carried but not installed: run.sh runs pip from its wheel where the device's Python has none
PIP_LIMITS = ("--timeout", "15", "--retries", "1")  # an unreachable index fails in seconds, not minutes

RUN_SH = r"""#!/usr/bin/env bash
# Written by scripts/device_bundle.py. On a CUDA machine, from the repo root, with device_bundle/ beside src/:
#   bash device_bundle/run.sh [scripts/gpu_check.py arguments, e.g. --cpu]
# Installs the bundle's wheels into $GAL_SITE (no network), prints the Python/torch/GPU it found, then runs the
# check with the seconds left of $GAL_DEVICE_LIMIT_S; its JSON and log go to $OUT. Exits with the check's status
# (0 pass, 1 fail, 2 no CUDA or bad flags), or 3 when the wheels did not install.
set -euo pipefail
start=$(date +%s)
bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$bundle/.."
python=${GAL_PYTHON:-python3}
site=${GAL_SITE:-/tmp/gal-site}
# 480 s: phases a and b whole, c in part, and room in a lent machine's 15 minutes (its start-up included) to run
# again, e.g. GAL_DEVICE_LIMIT_S=240 bash device_bundle/run.sh --phases c
limit=${GAL_DEVICE_LIMIT_S:-480}
check=${GAL_GPU_CHECK:-scripts/gpu_check.py}
out=${OUT:-$PWD/device_out}
mkdir -p "$out"

pip=("$python" -m pip)
if ! "$python" -m pip --version >/dev/null 2>&1; then
  pip_wheels=("$bundle"/wheels/pip-*.whl)
  pip=("$python" "${pip_wheels[0]}/pip")  # pip runs from its own wheel
  echo "no pip in $python: using ${pip[1]}"
fi
# PIP_CONFIG_FILE=/dev/null: the device's pip config (indexes, constraints) has no say in an offline install
install() {
  PIP_CONFIG_FILE=/dev/null "${pip[@]}" install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --disable-pip-version-check --find-links "$bundle/wheels" --target "$site" "$@"
}
if ! install -r "$bundle/requirements.txt" 2>/dev/null; then
  # a release with no wheel for this Python (say 3.10): install the others, and use the machine's own copy of it
  pins=($(grep -v '^#' "$bundle/requirements.txt"))
  skipped=()
  for pin in "${pins[@]}"; do
    install "$pin" 2>/dev/null || skipped+=("$pin")
  done
  echo "no wheel for $("$python" -V 2>&1) in the bundle: ${skipped[*]}; the machine's own copies are used"
  if [[ ${#skipped[@]} -eq ${#pins[@]} ]]; then
    echo "error: none of the bundle installed into $site with $python"
    exit 3
  fi
fi
export PYTHONPATH="$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}  # no network here: fail at once rather than retry
echo "installed the bundle into $site in $(( $(date +%s) - start )) s"

"$python" - <<'EOF' || echo "torch: import failed (see above)"
import platform
print("python", platform.python_version())
import torch
print("torch", torch.__version__)
print("torch.version.cuda", torch.version.cuda)
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
EOF

# A torchvision built for another torch imports, then fails: "operator torchvision::nms does not exist".
no_torchvision=()
reason=$("$python" - 2>/dev/null <<'EOF'
try:
    import torch
    import torchvision

    torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
except Exception as error:
    print(f"{type(error).__name__}: {error}".splitlines()[0][:160])
EOF
) || reason=${reason:-"torchvision check crashed"}
if [[ -n $reason ]]; then
  echo "torchvision unusable, checking without it: $reason"
  no_torchvision=(--no-torchvision "$reason")
fi

budget=$(( limit - ($(date +%s) - start) ))
(( budget > 0 )) || budget=1
echo "running $check with --budget-s $budget"
status=0
"$python" "$check" --out-dir "$out" --budget-s "$budget" ${no_torchvision[@]+"${no_torchvision[@]}"} "$@" || status=$?
echo "gpu_check exit status $status ($(( $(date +%s) - start )) s in all)"
exit "$status"
"""


def venv_pins(names: tuple[str, ...]) -> list[str]:
    """``name==version`` of each package as installed here (the versions `make test` tested)."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(f"error: {name} is not installed in {sys.prefix} (make venv)") from None
    return pins


@cache
def python_tags(python: str) -> frozenset[Tag]:
    """The wheel tags CPython ``python`` (e.g. "3.12") accepts on manylinux x86_64, abi3 and pure wheels included."""
    version = tuple(int(part) for part in python.split("."))
    interpreter = f"cp{version[0]}{version[1]}"
    return frozenset(cpython_tags(version, [interpreter], PLATFORMS)) | frozenset(
        compatible_tags(version, interpreter, PLATFORMS)
    )


@cache
def requires_python(wheel: Path) -> SpecifierSet:
    """The wheel's Requires-Python (its METADATA inside the zip)."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        return SpecifierSet(email.message_from_bytes(archive.read(metadata)).get("Requires-Python") or "")


def wheels_of(wheels_dir: Path, pin: str) -> list[Path]:
    """The wheels of exactly ``pin`` in ``wheels_dir``."""
    name, version = pin.split("==")
    return [
        wheel
        for wheel in sorted(wheels_dir.glob("*.whl"))
        if parse_wheel_filename(wheel.name)[:2] == (canonicalize_name(name), Version(version))
    ]


def wheel_for(wheels_dir: Path, pin: str, python: str) -> Path | None:
    """The wheel in ``wheels_dir`` that pip would install for ``pin`` on CPython ``python``, if there is one."""
    for wheel in wheels_of(wheels_dir, pin):
        if parse_wheel_filename(wheel.name)[3] & python_tags(python) and requires_python(wheel).contains(python):
            return wheel
    return None


def pip(*args: str) -> str | None:
    """Runs this Python's pip; None when it worked, else its last line of output."""
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    last = lines[-1] if lines else f"pip exited with {result.returncode}"
    if any("connection broken by" in line or "Could not fetch URL" in line for line in lines):
        last += " (the package index could not be reached)"  # pip's words for that come earlier, on retries
    return last


def download(pin: str, python: str, wheels_dir: Path, source: list[str]) -> str | None:
    """Fetches the wheel of ``pin`` for CPython ``python``; None when it worked, else pip's last line."""
    abi = "cp" + python.replace(".", "")
    platforms = [arg for platform_tag in PLATFORMS for arg in ("--platform", platform_tag)]
    return pip(
        "download", "--no-deps", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
        "--abi", abi, *platforms, "-d", str(wheels_dir), *source, pin,
    )  # fmt: skip


def build_from_sdist(pin: str, wheels_dir: Path, source: list[str]) -> str | None:
    """Builds a wheel of ``pin`` from its sdist with .venv's setuptools (no build isolation: works offline)."""
    return pip("wheel", "--no-deps", "--no-build-isolation", "--no-binary=:all:", "-w", str(wheels_dir), *source, pin)


def fetch(pin: str, python: str, wheels_dir: Path, source: list[str]) -> str | None:
    """Puts the wheel of ``pin`` for CPython ``python`` into ``wheels_dir`` unless one is there (a pure or abi3 wheel
    serves several Pythons); None when it is there, else pip's reason. Stops at once without one for DEVICE_PYTHON."""
    if wheel_for(wheels_dir, pin, python) is not None:
        return None
    error = download(pin, python, wheels_dir, source)
    if error is not None and python == DEVICE_PYTHON:
        built = build_from_sdist(pin, wheels_dir, source)  # e.g. antlr4-python3-runtime 4.9.3: no wheel at all
        if wheel_for(wheels_dir, pin, python) is None:
            detail = "" if built in (None, error) else f"; building it from its sdist: {built}"
            raise SystemExit(f"error: could not download {pin} for cp{python.replace('.', '')}: {error}{detail}")
        return None
    return error


def fetch_all(pins: list[str], wheels_dir: Path, source: list[str]) -> dict[str, list[str]]:
    """Wheels of every pin for DEVICE_PYTHON (so that an unreachable index stops at the first package), then for
    each other Python every pin whose Requires-Python allows it; returns {python: reasons} for the pins left out
    (run.sh installs the rest there and leaves those to the machine's own copies)."""
    for pin in pins:
        print(f"{pin} ...", flush=True)
        fetch(pin, DEVICE_PYTHON, wheels_dir, source)
    not_covered = {}
    for python in PYTHONS:
        reasons = []
        for pin in pins:
            allowed = requires_python(wheels_of(wheels_dir, pin)[0])
            if not allowed.contains(python):
                reasons.append(f"{pin}: Requires-Python {allowed}")
            elif error := fetch(pin, python, wheels_dir, source):
                reasons.append(f"{pin}: {error}")
        if reasons:
            not_covered[python] = reasons
    return not_covered


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def check_size(bundle: Path, wheels: list[Path], max_mib: float) -> None:
    """Stops with one line naming the three largest wheels when the bundle is over ``max_mib``."""
    total = sum(wheel.stat().st_size for wheel in wheels)
    if total > max_mib * 2**20:
        largest = sorted(wheels, key=lambda wheel: wheel.stat().st_size, reverse=True)[:3]
        names = ", ".join(f"{wheel.name} {mib(wheel.stat().st_size)}" for wheel in largest)
        raise SystemExit(
            f"error: {bundle.name}/ is {mib(total)}, over the {max_mib:g} MiB limit; largest: {names} "
            f"(--max-mib raises the limit; the device tool carries 64 MiB with the repo)"
        )


def manifest(wheels: list[Path], pins: list[str], covered: list[str], not_covered: dict[str, list[str]]) -> dict:
    """What the bundle holds, for whoever reads the device's results."""

    def installed(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "requirements": pins,
        "pythons": covered,
        "not_covered": not_covered,
        "platforms": list(PLATFORMS),
        "venv": {
            "python": platform.python_version(),
            "packages": {name: installed(name) for name in ("torch", "torchvision", *CARRIED)},
        },
        "wheels": [
            {
                "file": wheel.name,
                "name": str(parse_wheel_filename(wheel.name)[0]),
                "version": str(parse_wheel_filename(wheel.name)[1]),
                "bytes": wheel.stat().st_size,
            }
            for wheel in wheels
        ],
        "total_bytes": sum(wheel.stat().st_size for wheel in wheels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUNDLE, help="the bundle folder (default device_bundle/)")
    parser.add_argument("--packages", nargs="+", metavar="NAME==VERSION", help="pins to carry instead of .venv's")
    parser.add_argument("--find-links", type=Path, metavar="DIR", help="take wheels and sdists from DIR, offline")
    parser.add_argument("--max-mib", type=float, default=MAX_MIB, help=f"size limit (default {MAX_MIB:g})")
    args = parser.parse_args()
    if args.packages and any(pin.count("==") != 1 for pin in args.packages):
        parser.error("--packages takes exact pins, NAME==VERSION")
    pins = args.packages or venv_pins(CARRIED)
    bootstrap = [] if args.packages else venv_pins(BOOTSTRAP)
    source = ["--no-index", "--find-links", str(args.find_links)] if args.find_links else list(PIP_LIMITS)

    wheels_dir = args.out / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    not_covered = fetch_all(pins + bootstrap, wheels_dir, source)
    covered = [python for python in PYTHONS if python not in not_covered]
    found = (wheel_for(wheels_dir, pin, python) for pin in pins + bootstrap for python in PYTHONS)
    wanted = {wheel for wheel in found if wheel is not None}
    for stale in set(wheels_dir.iterdir()) - wanted:
        stale.unlink()  # other versions, or a Python the bundle cannot serve
    wheels = sorted(wanted)

    for name in ("requirements.txt", "run.sh", "manifest.json"):
        (args.out / name).unlink(missing_ok=True)  # an incomplete bundle must not look usable
    check_size(args.out, wheels, args.max_mib)
    header = "# Written by scripts/device_bundle.py: the device installs these with pip --no-index --no-deps\n"
    (args.out / "requirements.txt").write_text(header + "".join(f"{pin}\n" for pin in pins))
    (args.out / "run.sh").write_text(RUN_SH)
    (args.out / "run.sh").chmod(0o755)
    summary = manifest(wheels, pins, covered, not_covered)
    (args.out / "manifest.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"{args.out}: {len(wheels)} wheels, {mib(summary['total_bytes'])}, for CPython {', '.join(covered)}")
    for python, reasons in not_covered.items():
        print(f"note: on CPython {python} run.sh leaves these to the machine's own copies: {'; '.join(reasons)}")


if __name__ == "__main__":
    main()
