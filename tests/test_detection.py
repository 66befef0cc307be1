"""DETR on a synthetic COCO-format set through the shared trainer, with GAL on the boxes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gal.tasks.coco_data import write_synthetic_coco
from gal.train import build_task, train

from .conftest import compose_config
from .synthetic_images import TINY_DETR, synthetic_coco
from .test_detr_losses import match_each_layer_on_its_own


@pytest.mark.parametrize("gal", ["off", "on"])
def test_detr_trains_and_evaluates_with_cocoeval(tmp_path, gal):
    root = synthetic_coco(tmp_path / "coco", 4)
    overrides = ["experiment=table4_coco_detr_r50", f"gal={gal}", f"task.root={root}", *TINY_DETR]
    overrides += ["task.global_batch_size=2", "trainer.epochs=1", "trainer.progress=false"]
    cfg = compose_config(overrides, tmp_path / "results")
    metrics = train(cfg)
    assert set(metrics) == {"AP", "AP50", "AP75", "APS", "APM", "APL"}
    summary = json.loads((Path(cfg.run_dir) / "metrics.json").read_text())
    assert summary["steps"] == 2 and summary["gal_weights"] == (1344 if gal == "on" else 0)  # 4*64 + 64*16 + 16*4
    state = torch.load(Path(cfg.run_dir) / "last.pt", weights_only=True)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]][:2] == [1e-4, 1e-5]  # transformer+heads, backbone


def test_gal_loss_is_the_box_terms_at_fixed_matching(tmp_path):
    root = synthetic_coco(tmp_path / "coco", 2)
    cfg = compose_config(
        ["experiment=table4_coco_detr_r50", f"task.root={root}", *TINY_DETR, "task.global_batch_size=2"]
    )
    task = build_task(cfg.task)
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(iter(task.loaders(0, 0, 1)[0]))
    z, loss_fn, other_loss = task.features_and_loss(model, batch)
    assert z.shape == (2, 8, 4)
    losses = task.criterion(model(batch[0], batch[1]), batch[2])
    total = task.criterion.total_loss(losses)
    torch.testing.assert_close(loss_fn(z) + other_loss, total)  # the two parts add up to DETR's loss
    # loss_fn keeps the forward pass's matching when the boxes move: reversing the queries' boxes
    # would re-match differently, but the loss must use the original assignment
    outputs = model(batch[0], batch[1])  # dropout is 0: the same outputs as in features_and_loss
    indices, num_boxes = task.criterion.match(outputs, batch[2]), task.criterion.num_boxes(batch[2], z.device)
    moved = z.detach().flip(1)
    fixed = task.criterion.total_loss(task.criterion.box_losses(moved, batch[2], indices, num_boxes))
    torch.testing.assert_close(loss_fn(moved), fixed)
    rematched = task.criterion.match({"pred_logits": outputs["pred_logits"], "pred_boxes": moved}, batch[2])
    refit = task.criterion.total_loss(task.criterion.box_losses(moved, batch[2], rematched, num_boxes))
    assert not torch.allclose(fixed, refit), "the test needs a move that changes the matching"


def test_one_step_matches_every_layer_as_matching_each_on_its_own(tmp_path):
    """features_and_loss matches all decoder layers in one host round trip: the losses of the per-layer path."""
    root = synthetic_coco(tmp_path / "coco", 2)
    overrides = ["experiment=table4_coco_detr_r50", f"task.root={root}", *TINY_DETR, "task.model.dec_layers=3"]
    task = build_task(compose_config([*overrides, "task.global_batch_size=2"]).task)
    torch.manual_seed(0)
    model = task.build_model()
    images, mask, targets = next(iter(task.loaders(0, 0, 1)[0]))
    z, loss_fn, other_loss = task.features_and_loss(model, (images, mask, targets))
    outputs = model(images, mask)  # dropout is 0: the same outputs as in features_and_loss
    criterion, layers = task.criterion, [outputs, *outputs["aux_outputs"]]
    assert len(layers) == 3
    final, *aux = match_each_layer_on_its_own(
        criterion.matcher, [(layer["pred_logits"], layer["pred_boxes"]) for layer in layers], targets
    )
    num_boxes = criterion.num_boxes(targets, z.device)
    losses = {"loss_ce": criterion.class_loss(outputs["pred_logits"], targets, final)}
    for layer, (aux_layer, indices) in enumerate(zip(outputs["aux_outputs"], aux)):
        aux_losses = criterion.layer_losses(aux_layer, targets, indices, num_boxes)
        losses.update({f"{name}_{layer}": value for name, value in aux_losses.items()})
    torch.testing.assert_close(other_loss, criterion.total_loss(losses), rtol=0, atol=0)
    box_loss = criterion.total_loss(criterion.box_losses(outputs["pred_boxes"], targets, final, num_boxes))
    torch.testing.assert_close(loss_fn(z), box_loss, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("gal", ["off", "on"])
def test_tiny_detr_learns_the_synthetic_set(tmp_path, gal):
    """ResNet-18 DETR, 2+2 layers, 64x80 images: AP50 >= 50 % on its 8 training images (~1.5 min on CPU)."""
    root = write_synthetic_coco(tmp_path / "coco", 8, image_size=(64, 80), split="train2017")
    shutil.copytree(root / "train2017", root / "val2017")  # evaluate on the training images themselves
    shutil.copy(root / "annotations/instances_train2017.json", root / "annotations/instances_val2017.json")
    overrides = [
        "experiment=table4_coco_detr_r50", f"gal={gal}", f"task.root={root}", *TINY_DETR,
        "task.model.hidden_dim=64", "task.model.nheads=4", "task.model.enc_layers=2", "task.model.dim_feedforward=128",
        "task.model.num_queries=10", "task.augment=false", "task.global_batch_size=4", "trainer.epochs=200",
        "trainer.eval_every=200", "optimizer.lr=5e-4", "task.lr_backbone=5e-4", "scheduler=none",
        "trainer.progress=false",
    ]  # fmt: skip
    assert train(compose_config(overrides, tmp_path / "results"))["AP50"] >= 50.0


def test_detr_trains_under_torchrun_with_two_processes(tmp_path):
    root = synthetic_coco(tmp_path / "coco", 4)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gal",
        "experiment=table4_coco_detr_r50", "gal=on", f"task.root={root}", *TINY_DETR, "task.global_batch_size=2",
        "trainer.epochs=1", "trainer.progress=false", f"results_dir={tmp_path / 'results'}",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    summary = json.loads((tmp_path / "results/runs/table4_detr_r50/coco/adamw/on/seed=0/metrics.json").read_text())
    assert summary["steps"] == 2  # 4 images, 2 ranks, 1 per step (a global batch of 2)
    assert set(summary["metrics"]) == {"AP", "AP50", "AP75", "APS", "APM", "APL"}
