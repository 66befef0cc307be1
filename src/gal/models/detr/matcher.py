"""Hungarian matching between DETR's queries and the ground-truth boxes of each image.

Each image's targets are assigned one-to-one to queries by minimising a weighted sum
of a class cost, an L1 box cost and a GIoU cost (Carion et al., 2020, Sec. 3.1);
queries left unmatched are trained to predict "no object".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

Target = dict[str, Tensor]  # "labels": (N,) int64, "boxes": (N, 4) normalised cxcywh


class HungarianMatcher(nn.Module):
    """Optimal one-to-one assignment of targets to queries, image by image.

    The defaults are DETR's matcher costs (class 1, L1 5, GIoU 2; the paper's
    Table IV and facebookresearch/detr's ``--set_cost_*`` flags).
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> None:
        super().__init__()
        costs = {"cost_class": cost_class, "cost_bbox": cost_bbox, "cost_giou": cost_giou}
        if any(value < 0 for value in costs.values()):
            raise ValueError(f"matcher costs must be non-negative, got {costs}")
        if all(value == 0 for value in costs.values()):
            raise ValueError("all matcher costs are 0: the matching would be arbitrary")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def cost(self, pred_logits: Tensor, pred_boxes: Tensor, targets: list[Target]) -> Tensor:
        """Matching cost of every query against every target box of the batch.

        pred_logits (B, Q, C+1), pred_boxes (B, Q, 4) cxcywh in [0, 1].
        Returns (B, Q, sum_i N_i) on the predictions' device; column block i belongs to image i.
        """
        batch, queries = pred_logits.shape[:2]
        prob = pred_logits.flatten(0, 1).float().softmax(-1)  # (B*Q, C+1)
        boxes = pred_boxes.flatten(0, 1).float()  # (B*Q, 4)
        target_labels = torch.cat([t["labels"] for t in targets]).to(prob.device)
        target_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes)
        # 1 - p(class) up to a constant that does not change the assignment (as in DETR).
        cost_class = -prob[:, target_labels]
        cost_bbox = torch.cdist(boxes, target_boxes, p=1)
        cost_giou = -generalized_box_iou(
            box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
        )
        cost = self.cost_class * cost_class + self.cost_bbox * cost_bbox + self.cost_giou * cost_giou
        return cost.view(batch, queries, -1)

    @torch.no_grad()
    def forward(self, pred_logits: Tensor, pred_boxes: Tensor, targets: list[Target]) -> list[tuple[Tensor, Tensor]]:
        """Per image, (query_idx, target_idx): int64 tensors of length min(Q, N_i) on the predictions' device.

        pred_logits (B, Q, C+1), pred_boxes (B, Q, 4) cxcywh in [0, 1], targets a list of B dicts.
        query_idx is sorted; an image without targets gets two empty tensors.
        """
        return self.match_layers([(pred_logits, pred_boxes)], targets)[0]

    @torch.no_grad()
    def match_layers(
        self, layers: list[tuple[Tensor, Tensor]], targets: list[Target]
    ) -> list[list[tuple[Tensor, Tensor]]]:
        """``forward`` of each decoder layer's (pred_logits, pred_boxes), each layer matched on its own.

        All layers' costs go to the host in one device-to-host copy, and all indices come back in one
        host-to-device copy (non-blocking from pinned memory on CUDA). Returns, per layer, per image,
        (query_idx, target_idx) as ``forward`` does.
        """
        for pred_logits, _ in layers:
            if len(targets) != pred_logits.shape[0]:
                raise ValueError(f"{len(targets)} target dicts for a batch of {pred_logits.shape[0]} images")
        if not layers:
            return []
        device = layers[0][1].device
        sizes = [len(t["boxes"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64, device=device)
            return [[(empty, empty.clone()) for _ in targets] for _ in layers]
        costs = torch.stack([self.cost(pred_logits, pred_boxes, targets) for pred_logits, pred_boxes in layers])
        # (L, B, Q, sum_i N_i) to the host: the one device-to-host copy
        host = [part for cost in costs.cpu() for part in _hungarian(cost, sizes)]
        flat = torch.from_numpy(np.concatenate(host))
        if device.type == "cuda":
            flat = flat.pin_memory()  # so that the copy back does not block the host
        parts = flat.to(device, non_blocking=True).split([len(part) for part in host])
        pairs = list(zip(parts[0::2], parts[1::2]))  # layer 0's images, then layer 1's, ...
        return [pairs[layer * len(targets) : (layer + 1) * len(targets)] for layer in range(len(layers))]


def _hungarian(cost: Tensor, sizes: list[int]) -> list[np.ndarray]:
    """scipy's assignment per image of one layer's host cost (B, Q, sum_i N_i): [query_idx_0, target_idx_0, ...]."""
    from scipy.optimize import linear_sum_assignment  # imported here: only DETR's matching needs scipy

    parts = []
    for image, block in enumerate(cost.split(sizes, dim=-1)):
        query_idx, target_idx = linear_sum_assignment(block[image].numpy())
        parts += [query_idx.astype(np.int64, copy=False), target_idx.astype(np.int64, copy=False)]
    return parts
