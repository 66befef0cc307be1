"""DETR's set loss: classification of every query plus L1 and GIoU on the matched boxes.

Losses follow Carion et al. (2020), Sec. 3.1 and Appendix A.2, and facebookresearch/detr's
``SetCriterion``: weights CE 1 / L1 5 / GIoU 2 and eos_coef 0.1 (the paper's Table IV),
the box terms normalised by the number of target boxes averaged over ranks, and the same
losses on every intermediate decoder layer ("aux losses", suffix ``_{i}``).

For GAL the adjusted features z are the final layer's predicted boxes, so the box terms
are public on their own: the task matches once, then re-evaluates only ``box_losses`` at
z - eta~ g with the same indices and the same ``num_boxes``.

    indices = criterion.match(outputs, targets)
    losses = criterion(outputs, targets, indices)
    num_boxes = criterion.num_boxes(targets, z.device)
    loss_fn = lambda z: criterion.total_loss(criterion.box_losses(z, targets, indices, num_boxes))
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss

from gal.distributed import average_across_ranks
from gal.models.detr.matcher import HungarianMatcher, Target

LOSS_NAMES = ("loss_ce", "loss_bbox", "loss_giou")
DEFAULT_WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}  # DETR's --*_loss_coef defaults


def _base_name(name: str) -> str:
    """'loss_bbox_3' -> 'loss_bbox' (aux layer 3); 'loss_bbox' -> 'loss_bbox'."""
    stem, _, suffix = name.rpartition("_")
    return stem if suffix.isdigit() else name


def _matched(indices: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """(image_idx, query_idx) of every matched query, flat over the batch; each (M,)."""
    image_idx = torch.cat([torch.full_like(query, image) for image, (query, _) in enumerate(indices)])
    query_idx = torch.cat([query for query, _ in indices])
    return image_idx, query_idx


class SetCriterion(nn.Module):
    """DETR's loss: a dict of named losses; ``weight_dict`` says how they add up (``total_loss``)."""

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        eos_coef: float = 0.1,
        weight_dict: Mapping[str, float] | None = None,
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        if set(weight_dict) != set(LOSS_NAMES):
            raise ValueError(f"weight_dict needs exactly the keys {LOSS_NAMES}, got {sorted(weight_dict)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.eos_coef = eos_coef
        self.weight_dict = weight_dict
        self.aux_loss = aux_loss
        class_weight = torch.ones(num_classes + 1)
        class_weight[num_classes] = eos_coef  # down-weights "no object", the class of most queries
        self.register_buffer("class_weight", class_weight)

    def match(self, outputs: Mapping[str, Tensor], targets: list[Target]) -> list[tuple[Tensor, Tensor]]:
        """Hungarian matching of the final decoder layer: per image (query_idx, target_idx), int64 (min(Q, N_i),)."""
        device = outputs["pred_boxes"].device
        # scipy solves on the host; the box losses, evaluated twice in a GAL step, then index on the device
        indices = self.matcher(outputs["pred_logits"], outputs["pred_boxes"], targets)
        return [(query.to(device), target.to(device)) for query, target in indices]

    def num_boxes(self, targets: list[Target], device: torch.device) -> Tensor:
        """Target boxes per rank: the total over ranks divided by the world size, at least 1; a 0-d float tensor."""
        count = torch.as_tensor(float(sum(len(t["boxes"]) for t in targets)), device=device)
        return average_across_ranks(count).clamp(min=1)

    def class_loss(self, pred_logits: Tensor, targets: list[Target], indices: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Cross-entropy over all B*Q queries, unmatched ones labelled no-object (index num_classes).

        pred_logits (B, Q, C+1). Weighted mean: sum_j w_{y_j} CE_j / sum_j w_{y_j}, w = class_weight.
        """
        target_classes = torch.full(
            pred_logits.shape[:2], self.num_classes, dtype=torch.int64, device=pred_logits.device
        )
        matched_labels = torch.cat([t["labels"][target] for t, (_, target) in zip(targets, indices)])
        target_classes[_matched(indices)] = matched_labels.to(pred_logits.device)
        return F.cross_entropy(pred_logits.transpose(1, 2), target_classes, weight=self.class_weight)

    def box_losses(
        self, pred_boxes: Tensor, targets: list[Target], indices: list[tuple[Tensor, Tensor]], num_boxes: Tensor
    ) -> dict[str, Tensor]:
        """L1 and 1 - GIoU between matched queries and their targets, each summed and divided by num_boxes.

        pred_boxes (B, Q, 4) cxcywh; indices from ``match``; num_boxes a 0-d tensor from ``num_boxes``.
        Returns {"loss_bbox": 0-d, "loss_giou": 0-d}; both are 0 (with a graph) when no image has targets.
        """
        matched_boxes = pred_boxes[_matched(indices)]  # (M, 4)
        target_boxes = torch.cat([t["boxes"][target] for t, (_, target) in zip(targets, indices)]).to(matched_boxes)
        loss_bbox = F.l1_loss(matched_boxes, target_boxes, reduction="none").sum()
        # Paired GIoU: equal to diag(generalized_box_iou(...)) without the M x M matrix (eps 1e-7 in the denominators).
        loss_giou = generalized_box_iou_loss(
            box_convert(matched_boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
        ).sum()
        return {"loss_bbox": loss_bbox / num_boxes, "loss_giou": loss_giou / num_boxes}

    def layer_losses(
        self,
        layer: Mapping[str, Tensor],
        targets: list[Target],
        indices: list[tuple[Tensor, Tensor]],
        num_boxes: Tensor,
    ) -> dict[str, Tensor]:
        """{"loss_ce", "loss_bbox", "loss_giou"} of one decoder layer's {"pred_logits", "pred_boxes"}."""
        losses = {"loss_ce": self.class_loss(layer["pred_logits"], targets, indices)}
        losses.update(self.box_losses(layer["pred_boxes"], targets, indices, num_boxes))
        return losses

    def forward(
        self,
        outputs: Mapping[str, Tensor | list[dict[str, Tensor]]],
        targets: list[Target],
        indices: list[tuple[Tensor, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """All losses: the final layer's, then each aux layer's with suffix ``_{i}``; 0-d tensors.

        outputs: "pred_logits" (B, Q, C+1), "pred_boxes" (B, Q, 4) cxcywh, optional "aux_outputs"
        (a list of dicts with the same two keys, one per intermediate decoder layer).
        indices: the final layer's matching, reused when given (GAL matches once per step);
        aux layers are always matched on their own, as in DETR.
        """
        if indices is None:
            indices = self.match(outputs, targets)
        num_boxes = self.num_boxes(targets, outputs["pred_boxes"].device)
        losses = self.layer_losses(outputs, targets, indices, num_boxes)
        if self.aux_loss:
            for layer, aux in enumerate(outputs.get("aux_outputs", [])):
                aux_losses = self.layer_losses(aux, targets, self.match(aux, targets), num_boxes)
                losses.update({f"{name}_{layer}": value for name, value in aux_losses.items()})
        return losses

    def total_loss(self, losses: Mapping[str, Tensor]) -> Tensor:
        """sum_k weight_dict[k without its layer suffix] * losses[k]; a 0-d tensor."""
        unknown = sorted(name for name in losses if _base_name(name) not in self.weight_dict)
        if unknown:
            raise ValueError(f"no weight for losses {unknown}; weight_dict has {sorted(self.weight_dict)}")
        return sum(self.weight_dict[_base_name(name)] * value for name, value in losses.items())
