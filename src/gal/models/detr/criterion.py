"""DETR's set loss: classification of every query plus L1 and GIoU on the matched boxes.

Losses follow Carion et al. (2020), Sec. 3.1 and Appendix A.2, and facebookresearch/detr's
``SetCriterion``: weights CE 1 / L1 5 / GIoU 2 and eos_coef 0.1 (the paper's Table IV),
the box terms normalised by the number of target boxes averaged over ranks, and the same
losses on every intermediate decoder layer ("aux losses", suffix ``_{i}``).

For GAL the adjusted features z are the final layer's predicted boxes, so the box terms
are public on their own: the task matches once, then re-evaluates only ``box_losses`` at
z - eta~ g with the same indices and the same ``num_boxes``. ``match_all`` matches every
decoder layer (final and aux, each on its own) with one device-to-host copy per step.

    indices, aux_indices = criterion.match_all(outputs, targets)
    losses = criterion(outputs, targets, indices, aux_indices)
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
        return self.match_layers([outputs], targets)[0]

    def match_all(
        self, outputs: Mapping[str, Tensor | list[dict[str, Tensor]]], targets: list[Target]
    ) -> tuple[list[tuple[Tensor, Tensor]], list[list[tuple[Tensor, Tensor]]]]:
        """(final layer's indices, one list of indices per aux layer), as ``match`` gives them, in one host round trip.

        The aux list is empty without "aux_outputs" or with ``aux_loss=False``.
        """
        final, *aux = self.match_layers([outputs, *self.aux_layers(outputs)], targets)
        return final, aux

    def match_layers(
        self, layers: list[Mapping[str, Tensor]], targets: list[Target]
    ) -> list[list[tuple[Tensor, Tensor]]]:
        """``match`` of each {"pred_logits", "pred_boxes"} in ``layers``: one device-to-host copy for them all."""
        # scipy solves on the host; the box losses, evaluated twice in a GAL step, then index on the device
        return self.matcher.match_layers([(layer["pred_logits"], layer["pred_boxes"]) for layer in layers], targets)

    def aux_layers(self, outputs: Mapping[str, Tensor | list[dict[str, Tensor]]]) -> list[dict[str, Tensor]]:
        """The intermediate decoder layers whose losses count: "aux_outputs" if ``aux_loss``, else none."""
        return list(outputs.get("aux_outputs", [])) if self.aux_loss else []

    def num_boxes(self, targets: list[Target], device: torch.device) -> Tensor:
        """Target boxes per rank: the total over ranks divided by the world size, at least 1; a 0-d float tensor."""
        # a fill kernel: torch.as_tensor(count, device=device) would be a blocking host-to-device copy
        count = torch.full((), float(sum(len(t["boxes"]) for t in targets)), dtype=torch.float32, device=device)
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
        aux_indices: list[list[tuple[Tensor, Tensor]]] | None = None,
    ) -> dict[str, Tensor]:
        """All losses: the final layer's, then each aux layer's with suffix ``_{i}``; 0-d tensors.

        outputs: "pred_logits" (B, Q, C+1), "pred_boxes" (B, Q, 4) cxcywh, optional "aux_outputs"
        (a list of dicts with the same two keys, one per intermediate decoder layer).
        indices, aux_indices: the final layer's and the aux layers' matchings (``match_all``), reused
        when given (GAL matches once per step); what is not given is matched here, every aux layer on
        its own as in DETR, in one device-to-host copy.
        """
        aux_layers = self.aux_layers(outputs)
        if indices is None and aux_indices is None:
            indices, aux_indices = self.match_all(outputs, targets)
        elif indices is None:
            indices = self.match(outputs, targets)
        elif aux_indices is None:
            aux_indices = self.match_layers(aux_layers, targets)
        if len(aux_indices) != len(aux_layers):
            raise ValueError(f"{len(aux_indices)} aux matchings for {len(aux_layers)} aux layers")
        num_boxes = self.num_boxes(targets, outputs["pred_boxes"].device)
        losses = self.layer_losses(outputs, targets, indices, num_boxes)
        for layer, (aux, aux_matching) in enumerate(zip(aux_layers, aux_indices)):
            aux_losses = self.layer_losses(aux, targets, aux_matching, num_boxes)
            losses.update({f"{name}_{layer}": value for name, value in aux_losses.items()})
        return losses

    def total_loss(self, losses: Mapping[str, Tensor]) -> Tensor:
        """sum_k weight_dict[k without its layer suffix] * losses[k]; a 0-d tensor."""
        unknown = sorted(name for name in losses if _base_name(name) not in self.weight_dict)
        if unknown:
            raise ValueError(f"no weight for losses {unknown}; weight_dict has {sorted(self.weight_dict)}")
        return sum(self.weight_dict[_base_name(name)] * value for name, value in losses.items())
