"""The package as a researcher installs it: a wheel with every module and config, dependencies declared in
pyproject.toml that agree with requirements.txt's pins, and ``gal-train`` finding its configs from the install."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (the package itself runs on 3.10)
ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins() -> dict[str, Requirement]:
    """requirements.txt's lines as requirements, by canonical name."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    return {canonicalize_name(req.name): req for req in map(Requirement, filter(None, lines))}


def declared() -> list[Requirement]:
    extras = [req for group in PROJECT["optional-dependencies"].values() for req in group]
    return [Requirement(req) for req in [*PROJECT["dependencies"], *extras]]


def test_every_declared_dependency_is_pinned_in_requirements_and_the_pin_lies_in_its_range():
    pinned = pins()
    own = canonicalize_name(PROJECT["name"])
    for req in declared():
        name = canonicalize_name(req.name)
        if name == own:  # dev = [train] + the tools
            continue
        assert name in pinned, f"{req.name} is declared in pyproject.toml but not pinned in requirements.txt"
        (pin,) = pinned[name].specifier
        assert req.specifier.contains(pin.version, prereleases=True), f"{pinned[name]} lies outside {req}"


def test_every_pin_is_declared_as_a_dependency():
    names = {canonicalize_name(req.name) for req in declared()}
    assert not set(pins()) - names, "pinned in requirements.txt but declared nowhere in pyproject.toml"


def test_the_core_needs_torch_alone():
    assert sorted(canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]) == ["numpy", "torch"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), "."]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_holds_every_module_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src").rglob("*.py")}  # gal, hydra_plugins
    configs = {f"gal/configs/{p.relative_to(ROOT / 'configs')}" for p in (ROOT / "configs").rglob("*.yaml")}
    assert modules - names == set(), "modules missing from the wheel: add their package to pyproject.toml"
    assert configs - names == set()


def test_the_installed_package_trains_from_its_own_configs_outside_the_repo(wheel, tmp_path):
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    where = subprocess.run(
        [sys.executable, "-c", "import gal, gal.cli; print(gal.__file__); print(gal.cli.CONFIG_DIR)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    module, configs = where.stdout.split()
    assert module.startswith(str(target)) and configs == str(target / "gal" / "configs")
    run = ["-m", "gal", "experiment=table5_diabetes", "gal=on", f"results_dir={tmp_path}", "--cfg", "job"]
    job = subprocess.run([sys.executable, *run], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr[-2000:]
    assert "alpha: 0.001" in job.stdout and "name: table5" in job.stdout


@pytest.mark.slow
def test_a_fresh_venv_imports_the_core_with_torch_alone_and_trains_with_the_train_extra(wheel, tmp_path):
    """``pip install gal-remainder`` gives GradientAdjuster (torch and numpy, no Hydra); ``[train]`` gives gal-train."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, pip = venv / "bin" / "python", [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    constraints = ["-c", str(ROOT / "requirements.txt")]  # the pinned versions, which install from local disk
    subprocess.run([*pip, *constraints, str(wheel)], check=True, capture_output=True, timeout=900)
    core = "from gal import GradientAdjuster; import importlib.util as u; print(u.find_spec('hydra') is None)"
    assert subprocess.run([python, "-c", core], capture_output=True, text=True, check=True).stdout.strip() == "True"
    subprocess.run([*pip, *constraints, f"{wheel}[train]"], check=True, capture_output=True, timeout=900)
    run = [str(venv / "bin" / "gal-train"), "experiment=table5_diabetes", "gal=on", "--cfg", "job"]
    job = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr[-2000:]
    assert "alpha: 0.001" in job.stdout
