"""Object detection (Table IV): DETR on COCO with GAL on the predicted boxes.

z is the final decoder layer's predicted boxes, (B, Q, 4) normalised cxcywh, so GAL's dim is 4.
loss_fn(z) is the box part of the set criterion (L1 and GIoU, weighted) re-evaluated at the
given boxes with the SAME Hungarian matching as the forward pass: the tentative loss at
z - eta~ g moves the boxes, never the assignment. The class terms and the auxiliary decoding
losses do not pass through z; they are returned as the step's other loss and get their
standard gradients.
"""

from typing import Any

import torch
from pycocotools.coco import COCO
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from gal.errors import ConfigError
from gal.models.detr.criterion import SetCriterion
from gal.models.detr.detr import build_detr
from gal.models.detr.matcher import HungarianMatcher
from gal.models.detr.official import load_official_checkpoint
from gal.tasks import Features, Task, eval_shard, per_process_batch
from gal.tasks.coco_data import build_coco, collate_detection, detr_transforms
from gal.tasks.coco_eval import evaluate_coco, gather_detections, postprocess, to_coco_results


class DetectionTask(Task):
    """DETR (built in this project on torchvision) trained with the set criterion."""

    feature_dim = 4  # one box per query: (cx, cy, w, h)
    objective = ("AP", "maximize")
    # multi-scale training: every batch has another size, so cudnn.benchmark would re-tune each step
    # (facebookresearch/detr main.py leaves it off)
    input_sizes_vary = True

    def __init__(
        self,
        root: str,
        model: dict[str, Any],
        global_batch_size: int,
        lr_backbone: float = 1e-5,
        num_classes: int = 91,
        scales: list[int] | None = None,
        max_size: int = 1333,
        eos_coef: float = 0.1,
        cost: dict[str, float] | None = None,
        loss_weights: dict[str, float] | None = None,
        num_workers: int = 2,
        eval_batch_size: int | None = None,
        augment: bool = True,
        checkpoint: str | None = None,
        val_size: float = 0.0,
    ) -> None:
        if val_size:  # gal.config.validate refuses it before any data; this is for callers of the class itself
            raise ConfigError("task.val_size applies to the regression tasks, digits and CIFAR, not COCO: set it to 0")
        transform_kwargs = {"max_size": max_size, **({"scales": tuple(scales)} if scales else {})}
        self.train_set = build_coco(root, "train", detr_transforms(augment, **transform_kwargs), num_classes)
        self.eval_set = build_coco(root, "val", detr_transforms(False, **transform_kwargs), num_classes)
        self.model_kwargs = {**model, "num_classes": num_classes}
        self.criterion = SetCriterion(
            num_classes, HungarianMatcher(**(cost or {})), eos_coef, loss_weights, model.get("aux_loss", True)
        )
        self.global_batch_size, self.lr_backbone = global_batch_size, lr_backbone
        self.num_workers, self.eval_batch_size = num_workers, eval_batch_size or global_batch_size
        self.checkpoint = checkpoint

    def build_model(self) -> nn.Module:
        """DETR as configured; with ``checkpoint``, its weights (official DETR or ours) loaded strictly."""
        if self.checkpoint is None:
            return build_detr(**self.model_kwargs)
        # the checkpoint replaces every weight: no ImageNet download for the backbone
        model = build_detr(**{**self.model_kwargs, "pretrained_backbone": False})
        load_official_checkpoint(model, self.checkpoint)
        return model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The transformer and heads at the optimizer's lr (first: they produce z), the backbone at its own."""
        backbone = [p for p in model.backbone.parameters() if p.requires_grad]
        in_backbone = {id(p) for p in backbone}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in in_backbone]
        return [{"params": rest}, {"params": backbone, "lr": self.lr_backbone}]

    def loaders(
        self, seed: int, rank: int, world_size: int, device: torch.device | None = None
    ) -> tuple[DataLoader, DataLoader]:
        batch_size = per_process_batch(self.global_batch_size, world_size)
        workers = {
            "num_workers": self.num_workers,
            "collate_fn": collate_detection,
            "pin_memory": device is not None and device.type == "cuda",
        }
        shuffle = DistributedSampler(self.train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        # facebookresearch/detr main.py: BatchSampler(sampler_train, batch_size, drop_last=True)
        train = DataLoader(self.train_set, batch_size, sampler=shuffle, drop_last=True, **workers)
        return train, DataLoader(eval_shard(self.eval_set, rank, world_size), self.eval_batch_size, **workers)

    def features_and_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor, list[dict[str, Any]]]) -> Features:
        """z = the final layer's boxes; loss_fn = its box terms at fixed matching; other_loss = the rest."""
        images, mask, targets = batch
        criterion = self.criterion.to(images.device)
        outputs = model(images, mask)
        indices, aux_indices = criterion.match_all(outputs, targets)  # every layer: one device-to-host copy
        losses = criterion(outputs, targets, indices, aux_indices)
        num_boxes = criterion.num_boxes(targets, images.device)
        box_terms = {k for k in losses if k in ("loss_bbox", "loss_giou")}  # final layer only: no suffix
        other_loss = criterion.total_loss({k: v for k, v in losses.items() if k not in box_terms})

        def loss_fn(boxes: Tensor) -> Tensor:
            return criterion.total_loss(criterion.box_losses(boxes, targets, indices, num_boxes))

        return Features(outputs["pred_boxes"], loss_fn, other_loss)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """COCO AP, AP50, AP75, APS, APM, APL (percent) with pycocotools on the evaluation split."""
        model.eval()
        device = next(model.parameters()).device
        detections = []
        for images, mask, targets in loader:
            # non-blocking: no host sync per batch (the loader pins images and masks on CUDA)
            outputs = model(images.to(device, non_blocking=True), mask.to(device, non_blocking=True))
            orig_sizes = torch.stack([t["orig_size"] for t in targets]).to(device, non_blocking=True)
            # in float32 whatever the autocast: a bf16 box scaled to 640 px would be off by up to 2 px
            results = postprocess(outputs["pred_logits"].float(), outputs["pred_boxes"].float(), orig_sizes)
            detections += to_coco_results(results, [t["image_id"] for t in targets])
        coco_gt: COCO = self.eval_set.coco
        return evaluate_coco(coco_gt, gather_detections(detections), image_ids=list(self.eval_set.ids))
