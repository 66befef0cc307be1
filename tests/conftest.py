"""Shared fixtures: Hydra configs composed the way `python -m gal` composes them."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: two workers on the cores; one thread each (and for the
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # runs they start) instead of two threads per core

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import gal.config  # noqa: F401  (registers the schemas that configs/ extends)

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def compose_config(overrides: list[str], results_dir: Path | None = None) -> DictConfig:
    """The trainer's config for ``overrides``, with ${hydra:...} resolvable outside @hydra.main."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    if results_dir is not None:
        cfg.results_dir = str(results_dir)
    with open_dict(cfg):
        del cfg.hydra  # resolved already through HydraConfig; the trainer never reads it
    return cfg


@pytest.fixture
def make_config(tmp_path):
    """compose_config with results written under this test's tmp_path."""
    return lambda *overrides: compose_config(list(overrides), tmp_path / "results")
