"""facebookresearch/detr checkpoints (and ours) load into our DETR, every value in its place.

tests/data/detr_official_keys.json holds the official model's state_dict names and shapes (R50 and
R101, COCO settings), made once with the official build() (its "source" and "how" say how).
"""

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from gal.models.detr.detr import build_detr
from gal.models.detr.official import load_official_checkpoint, rename_official
from gal.tasks.coco_data import SYNTHETIC_NUM_CLASSES
from gal.train import build_task, train

from .conftest import compose_config
from .synthetic_images import TINY_DETR, synthetic_coco

OFFICIAL = json.loads((Path(__file__).parent / "data" / "detr_official_keys.json").read_text())
TINY = {
    "backbone": "resnet18",
    "pretrained_backbone": False,
    "hidden_dim": 32,
    "nheads": 2,
    "enc_layers": 1,
    "dec_layers": 2,
    "dim_feedforward": 64,
    "num_queries": 8,
    "num_classes": SYNTHETIC_NUM_CLASSES,
}  # fmt: skip (TINY_DETR's model)


def official_name(name: str) -> str:
    """The inverse of OFFICIAL_RENAMES, to write tiny models in the official layout."""
    name = re.sub(r"^backbone\.body\.", "backbone.0.body.", name)
    name = re.sub(r"\.ffn\.linear([12])\.", r".linear\1.", name)
    return name.replace(".cross_attn.", ".multihead_attn.")


def random_official(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """An official-layout state_dict of distinct random values."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}


def official_file(path: Path, state_dict: dict[str, torch.Tensor], backbone: str = "resnet50") -> Path:
    """A file laid out as facebookresearch/detr's main.py writes it (an argparse.Namespace under "args")."""
    args = argparse.Namespace(backbone=backbone, lr=1e-4, masks=False, dilation=False, output_dir="", device="cuda")
    lr_scheduler = {"step_size": 200, "gamma": 0.1, "base_lrs": [1e-4, 1e-5], "last_epoch": 500}
    torch.save({"model": state_dict, "lr_scheduler": lr_scheduler, "epoch": 499, "args": args}, path)
    return path


@pytest.fixture(scope="module")
def r50():
    return build_detr("resnet50", pretrained_backbone=False)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_official_file_loads_every_value(tmp_path, r50, backbone):
    model = r50 if backbone == "resnet50" else build_detr(backbone, pretrained_backbone=False)
    official = random_official(OFFICIAL[backbone])
    load_official_checkpoint(model, official_file(tmp_path / "detr.pth", official, backbone))
    ours = model.state_dict()
    assert len(ours) == len(official)
    for name, value in official.items():
        assert torch.equal(ours[rename_official(name)], value), name


def test_the_rename_table_covers_every_official_family():
    for shapes in (OFFICIAL["resnet50"], OFFICIAL["resnet101"]):
        assert all(official_name(rename_official(name)) == name for name in shapes)
    assert rename_official("transformer.decoder.layers.5.multihead_attn.in_proj_weight") == (
        "transformer.decoder.layers.5.cross_attn.in_proj_weight"
    )


def test_bare_state_dict_in_the_pre_1_6_format_loads(tmp_path):
    model = build_detr(**TINY)
    official = random_official({official_name(k): list(v.shape) for k, v in model.state_dict().items()})
    torch.save(official, tmp_path / "bare.pth", _use_new_zipfile_serialization=False)  # DETR's 2020 files may be
    load_official_checkpoint(model, tmp_path / "bare.pth")
    ours = model.state_dict()
    assert all(torch.equal(ours[rename_official(name)], value) for name, value in official.items())


def test_our_own_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    trained = build_detr(**TINY)
    torch.save({"model": trained.state_dict(), "epoch": 3, "config": {"name": "table4"}}, tmp_path / "last.pt")
    torch.manual_seed(1)
    model = build_detr(**TINY)
    load_official_checkpoint(model, tmp_path / "last.pt")
    expected = trained.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in model.state_dict().items())


def test_unknown_names_are_listed(tmp_path):
    model = build_detr(**TINY)
    renamed = {f"detr.{name}": value for name, value in model.state_dict().items()}  # e.g. a panoptic DETRsegm
    path = official_file(tmp_path / "panoptic.pth", renamed)
    with pytest.raises(
        ValueError, match=r"panoptic\.pth.*missing \['backbone\.body\..*unexpected \['detr\.backbone"
    ) as error:
        load_official_checkpoint(model, path)
    assert re.search(r"and \d+ more", str(error.value))  # how many beyond the few quoted


def test_an_r101_file_into_an_r50_model_says_which_backbone(tmp_path, r50):
    names_only = {name: torch.zeros(1) for name in OFFICIAL["resnet101"]}  # the names fail before the shapes
    path = official_file(tmp_path / "detr-r101.pth", names_only, "resnet101")
    with pytest.raises(ValueError, match=r"detr-r101\.pth.*layer3\.6\..*task\.model\.backbone=resnet101"):
        load_official_checkpoint(r50, path)


def test_a_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    model = build_detr(**TINY)
    official = {
        official_name(name): value for name, value in build_detr(**{**TINY, "num_classes": 20}).state_dict().items()
    }
    path = official_file(tmp_path / "voc.pth", official)
    with pytest.raises(
        ValueError, match=r"voc\.pth.*class_embed\.weight: \(21, 32\) in the file, \(12, 32\) in the model"
    ):
        load_official_checkpoint(model, path)


@pytest.mark.parametrize(
    "content", [b"", b"<html>404 Not Found</html>", "truncated zip", "truncated pickle", "no tensors"]
)
def test_a_file_that_is_no_checkpoint_is_named(tmp_path, content):
    path = tmp_path / "detr-r50.pth"
    if content in ("truncated zip", "truncated pickle"):
        torch.save({"model": {"a": torch.ones(100)}}, path, _use_new_zipfile_serialization=content == "truncated zip")
        path.write_bytes(path.read_bytes()[:-120])
    elif content == "no tensors":
        torch.save({"model": {"a": 1.0}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"detr-r50\.pth"):
        load_official_checkpoint(build_detr(**TINY), path)


@pytest.fixture
def tiny_official_file(tmp_path):
    """A tiny DETR in the official layout, random weights, and the state_dict it holds (our names)."""
    torch.manual_seed(2)
    ours = build_detr(**TINY).state_dict()
    official_file(tmp_path / "tiny.pth", {official_name(name): value for name, value in ours.items()})
    return tmp_path / "tiny.pth", ours


def test_detection_task_builds_from_the_checkpoint(tmp_path, tiny_official_file):
    path, expected = tiny_official_file
    root = synthetic_coco(tmp_path / "coco", 2)
    overrides = ["experiment=table4_coco_detr_r50", f"task.root={root}", *TINY_DETR, f"task.checkpoint={path}"]
    model = build_task(compose_config(overrides).task).build_model()
    assert all(torch.equal(value, expected[name]) for name, value in model.state_dict().items())


def test_zero_epochs_evaluates_the_checkpoint(tmp_path, tiny_official_file):
    """What `make coco-detr-r50-eval` runs: no training step, COCO AP of the loaded weights."""
    root = synthetic_coco(tmp_path / "coco", 2)
    overrides = [
        "experiment=table4_coco_detr_r50", "name=table4_eval_official", f"task.root={root}", *TINY_DETR,
        f"task.checkpoint={tiny_official_file[0]}", "task.global_batch_size=2", "trainer.epochs=0",
        "trainer.progress=false",
    ]  # fmt: skip
    cfg = compose_config(overrides, tmp_path / "results")
    assert set(train(cfg)) == {"AP", "AP50", "AP75", "APS", "APM", "APL"}
    summary = json.loads((Path(cfg.run_dir) / "metrics.json").read_text())
    assert summary["steps"] == 0 and "table4_eval_official" in cfg.run_dir
