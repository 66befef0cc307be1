"""scripts/device_bundle.py with real pip against folders of tiny wheels and sdists, and device_bundle/run.sh run
through a stand-in for scripts/gpu_check.py; one slow test fetches the project's real set from PyPI."""

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_bundle.py"
_spec = importlib.util.spec_from_file_location("device_bundle", SCRIPT)
device_bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(device_bundle)

PURE, SDIST, COMPILED, ABI3 = "gal-tiny-pure==0.1.0", "gal-tiny-sdist==0.2.0", "gal-tiny-ext==1.0", "gal-tiny-abi3==1.0"
MANYLINUX = "manylinux_2_17_x86_64"
DEVICE_OWN = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pillow")  # what the GPU machine brings
# the set run.sh's check needs: scripts/gpu_check.py's top level, and what its workers (gal.device_check) and the
# trainer runs they start import
IMPORT_SET = (
    "import gal.train, gal.device_check, gal.tasks.classification, gal.tasks.detection, gal.tasks.image_data\n"
    "import timm, hydra, omegaconf, pytorch_optimizer, pycocotools.coco, pycocotools.cocoeval\n"
    "import importlib.util, sys\n"
    f"spec = importlib.util.spec_from_file_location('gpu_check', {str(ROOT / 'scripts' / 'gpu_check.py')!r})\n"
    "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
    "from timm.models import _hub\n"  # timm imports huggingface_hub and safetensors only if it can: as in make test
    "assert _hub._has_hf_hub and _hub._has_safetensors, 'timm without huggingface_hub or safetensors'\n"
    "print(timm.__file__)\n"
)


def source_tree(folder: Path, pin: str) -> Path:
    """A one-module setuptools project for ``pin``; its module records the version."""
    name, version = pin.split("==")
    module = name.replace("-", "_")
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(f"VERSION = {version!r}\n")
    (folder / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\nrequires-python = ">=3.10"\n'
    )
    return folder


def build(tree: Path, hook: str, out: Path) -> None:
    """A real PEP 517 build with .venv's setuptools (offline)."""
    code = f"from setuptools import build_meta; build_meta.{hook}({str(out)!r})"
    subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, capture_output=True)


def write_wheel(folder: Path, pin: str, tag: str, payload: int = 0) -> Path:
    """A wheel of ``pin`` tagged ``tag`` (a compiled package's tags, which no build here could make for four
    Pythons): one module, ``payload`` bytes of data, and the RECORD pip reads."""
    name, version = pin.split("==")
    module, info = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\nTAG = {tag!r}\n".encode(),
        f"{module}/data.bin": os.urandom(payload),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n".encode(),
    }
    record = [
        f"{path},sha256={urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{module}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


@pytest.fixture(scope="module")
def links(tmp_path_factory) -> Path:
    """A --find-links folder: a pure wheel and an sdist-only package built for real, a compiled package with a
    wheel per CPython 3.10-3.13 (and two for other platforms), and an abi3 package from cp311 on."""
    base = tmp_path_factory.mktemp("links")
    folder = base / "links"
    folder.mkdir()
    build(source_tree(base / "pure", PURE), "build_wheel", folder)
    build(source_tree(base / "sdist", SDIST), "build_sdist", folder)
    for minor, size in zip((10, 11, 12, 13), (3000, 4000, 5000, 6000)):
        write_wheel(folder, COMPILED, f"cp3{minor}-cp3{minor}-{MANYLINUX}", payload=size)
    write_wheel(folder, COMPILED, "cp312-cp312-win_amd64")
    write_wheel(folder, COMPILED, "cp312-cp312-macosx_11_0_arm64")
    write_wheel(folder, ABI3, f"cp311-abi3-{MANYLINUX}")
    return folder


def run_script(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def bundle(links, tmp_path_factory) -> Path:
    """A bundle of the pure, sdist-only and compiled packages, at <repo>/device_bundle as run.sh expects."""
    out = tmp_path_factory.mktemp("repo") / "device_bundle"
    result = run_script("--out", out, "--find-links", links, "--packages", PURE, SDIST, COMPILED)
    assert result.returncode == 0, result.stderr
    return out


def test_a_bundle_holds_one_wheel_per_python_of_compiled_packages_one_of_pure_ones_and_builds_sdists(bundle):
    wheels = sorted(path.name for path in (bundle / "wheels").iterdir())
    compiled = [f"gal_tiny_ext-1.0-cp3{minor}-cp3{minor}-{MANYLINUX}.whl" for minor in (10, 11, 12, 13)]
    assert wheels == sorted(
        [*compiled, "gal_tiny_pure-0.1.0-py3-none-any.whl", "gal_tiny_sdist-0.2.0-py3-none-any.whl"]
    )
    requirements = (bundle / "requirements.txt").read_text().splitlines()
    assert [line for line in requirements if not line.startswith("#")] == [PURE, SDIST, COMPILED]

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["pythons"] == ["3.10", "3.11", "3.12", "3.13"] and manifest["not_covered"] == {}
    sizes = {entry["file"]: entry["bytes"] for entry in manifest["wheels"]}
    assert sizes == {name: (bundle / "wheels" / name).stat().st_size for name in wheels}
    assert manifest["total_bytes"] == sum(sizes.values())
    assert {entry["name"] for entry in manifest["wheels"]} == {"gal-tiny-pure", "gal-tiny-sdist", "gal-tiny-ext"}
    assert manifest["venv"]["packages"]["torch"] == importlib.metadata.version("torch")

    assert os.access(bundle / "run.sh", os.X_OK)
    syntax = subprocess.run(["bash", "-n", str(bundle / "run.sh")], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_a_second_run_reuses_the_wheels_without_any_source(bundle, tmp_path):
    before = {path.name: path.stat().st_mtime_ns for path in (bundle / "wheels").iterdir()}
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script("--out", bundle, "--find-links", empty, "--packages", PURE, SDIST, COMPILED)
    assert result.returncode == 0, result.stderr
    assert {path.name: path.stat().st_mtime_ns for path in (bundle / "wheels").iterdir()} == before


def test_a_release_that_leaves_a_python_out_is_named_and_the_others_keep_their_wheels_for_it(links, tmp_path):
    result = run_script("--out", tmp_path / "b", "--find-links", links, "--packages", COMPILED, ABI3)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["pythons"] == ["3.11", "3.12", "3.13"]
    assert list(manifest["not_covered"]) == ["3.10"] and ABI3 in manifest["not_covered"]["3.10"][0]
    wheels = sorted(path.name for path in (tmp_path / "b" / "wheels").iterdir())
    assert f"gal_tiny_abi3-1.0-cp311-abi3-{MANYLINUX}.whl" in wheels
    assert f"gal_tiny_ext-1.0-cp310-cp310-{MANYLINUX}.whl" in wheels  # run.sh installs it on 3.10, and names ABI3
    assert "on CPython 3.10 run.sh leaves these to the machine's own copies: gal-tiny-abi3==1.0" in result.stdout


def test_a_bundle_over_the_limit_fails_naming_its_three_largest_wheels(links, tmp_path):
    result = run_script(
        "--out", tmp_path / "b", "--find-links", links, "--packages", PURE, COMPILED, "--max-mib", "0.01"
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: b/ is 0.0 MiB, over the 0.01 MiB limit; largest: gal_tiny_ext-1.0-cp313-cp313")
    largest = line.split("largest: ")[1]
    assert [part.split("-")[2] for part in largest.split(", ")] == ["cp313", "cp312", "cp311"]
    assert not (tmp_path / "b" / "run.sh").exists() and not (tmp_path / "b" / "requirements.txt").exists()


def test_a_package_the_source_lacks_is_a_one_line_error(links, tmp_path):
    result = run_script("--out", tmp_path / "b", "--find-links", links, "--packages", PURE, "gal-tiny-missing==9.9")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: could not download gal-tiny-missing==9.9 for cp312: "
        "ERROR: No matching distribution found for gal-tiny-missing==9.9"
    )


STAND_IN = """import json, os, sys
import gal_tiny_ext, gal_tiny_pure, gal_tiny_sdist
json.dump({"argv": sys.argv[1:], "pythonpath": os.environ["PYTHONPATH"], "cwd": os.getcwd(),
           "ext": gal_tiny_ext.TAG, "pure": gal_tiny_pure.__file__}, open(os.environ["STAND_IN_OUT"], "w"))
sys.exit(int(os.environ["STAND_IN_EXIT"]))
"""


def run_sh(bundle: Path, tmp_path: Path, python: str, exit_status: int, *args: str) -> tuple[int, str, dict]:
    """bash run.sh with a stand-in check that records what it was given and exits with ``exit_status``."""
    (tmp_path / "check.py").write_text(STAND_IN)
    env = {
        **os.environ,
        "GAL_PYTHON": python,
        "GAL_SITE": str(tmp_path / "site"),
        "GAL_GPU_CHECK": str(tmp_path / "check.py"),
        "GAL_DEVICE_LIMIT_S": "300",
        "OUT": str(tmp_path / "out"),
        "STAND_IN_OUT": str(tmp_path / "seen.json"),
        "STAND_IN_EXIT": str(exit_status),
    }
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        ["bash", str(bundle / "run.sh"), *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    return result.returncode, result.stdout + result.stderr, json.loads((tmp_path / "seen.json").read_text())


def test_run_sh_without_torch_installs_offline_passes_the_budget_and_the_arguments_and_returns_the_status(
    bundle, tmp_path
):
    bare_python = shutil.which("python3.11") or pytest.skip("needs a python3.11 without torch")
    status, output, seen = run_sh(bundle, tmp_path, bare_python, 1, "--cpu", "--models", "resnet50_imagenet")
    assert status == 1, output
    repo = bundle.parent
    assert seen["cwd"] == str(repo) and seen["pythonpath"] == f"{tmp_path / 'site'}:{repo / 'src'}"
    assert seen["ext"] == f"cp311-cp311-{MANYLINUX}" and seen["pure"].startswith(str(tmp_path / "site"))
    argv = seen["argv"]
    assert argv[:3] == ["--out-dir", str(tmp_path / "out"), "--budget-s"] and 250 < int(argv[3]) <= 300
    assert argv[4:6] == ["--no-torchvision", "ModuleNotFoundError: No module named 'torch'"]
    assert argv[6:] == ["--cpu", "--models", "resnet50_imagenet"]
    assert "torchvision unusable, checking without it" in output and "gpu_check exit status 1" in output


def test_run_sh_with_torch_prints_the_versions_and_keeps_torchvision(bundle, tmp_path):
    status, output, seen = run_sh(bundle, tmp_path, sys.executable, 0, "--cpu")
    assert status == 0, output
    assert f"torch {importlib.metadata.version('torch')}" in output and "gpu no CUDA device" in output
    assert "--no-torchvision" not in seen["argv"] and seen["argv"][-1] == "--cpu"


def device_view(folder: Path, carried: tuple[str, ...] = ()) -> Path:
    """A folder of links to .venv's files of DEVICE_OWN with all they require, and of ``carried`` alone (installed
    with --no-deps): a Python path that holds what the GPU machine would."""
    site = Path(importlib.metadata.distribution("torch").locate_file(""))
    folder.mkdir()
    todo, seen = [*DEVICE_OWN, *carried], set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        distribution = importlib.metadata.distribution(name)
        for requirement in map(Requirement, distribution.requires or [] if name not in carried else []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
        for top in {file.parts[0] for file in distribution.files or [] if file.parts[0] != ".."}:
            if not (folder / top).exists() and (site / top).exists():
                (folder / top).symlink_to(site / top)
    return folder


def import_set(python_path: list[Path]) -> subprocess.CompletedProcess:
    """IMPORT_SET under .venv's Python without its site-packages: only ``python_path`` and src/."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*python_path, ROOT / "src"]))}
    return subprocess.run([sys.executable, "-S", "-c", IMPORT_SET], env=env, capture_output=True, text=True)


def test_the_carried_packages_and_the_devices_own_are_all_the_check_and_the_trainer_import(tmp_path):
    carried = tuple(canonicalize_name(name) for name in device_bundle.CARRIED)
    result = import_set([device_view(tmp_path / "view", carried)])
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_the_real_set_downloads_installs_offline_and_imports_beside_the_devices_own_packages(tmp_path):
    out = tmp_path / "device_bundle"
    result = run_script("--out", out)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        device_bundle.DEVICE_PYTHON in manifest["pythons"] and manifest["total_bytes"] < device_bundle.MAX_MIB * 2**20
    )
    install = [
        shutil.which("python3.11") or sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
        "--find-links", str(out / "wheels"), "--target", str(tmp_path / "site"), "-r", str(out / "requirements.txt"),
    ]  # fmt: skip
    subprocess.run(install, check=True, capture_output=True)
    result = import_set([tmp_path / "site", device_view(tmp_path / "view")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(tmp_path / "site" / "timm" / "__init__.py")


def test_run_sh_installs_what_fits_this_python_and_names_the_rest(bundle, tmp_path):
    """A release with no wheel for the machine's Python (e.g. 3.10) is left to the machine's own copy."""
    copy = tmp_path / "repo" / "device_bundle"
    shutil.copytree(bundle, copy)
    (copy / "requirements.txt").write_text((copy / "requirements.txt").read_text() + "gal-tiny-absent==3.0\n")
    status, output, seen = run_sh(copy, tmp_path, sys.executable, 0, "--cpu")
    assert status == 0, output
    python = f"Python {sys.version_info.major}.{sys.version_info.minor}"
    assert f"no wheel for {python}" in output and ": gal-tiny-absent==3.0; the machine's own copies are used" in output
    assert seen["pure"].startswith(str(tmp_path / "site"))  # the others are installed
