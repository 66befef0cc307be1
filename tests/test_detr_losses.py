"""DETR's matcher and set criterion against hand computations, brute force and torch's own losses."""

import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from gal.models.detr.criterion import SetCriterion
from gal.models.detr.matcher import HungarianMatcher

NUM_CLASSES = 3  # logits have NUM_CLASSES + 1 columns; the last is "no object"


def paired_giou(boxes1, boxes2):
    """GIoU of row i of boxes1 with row i of boxes2, both (N, 4) cxcywh, from the definition."""

    def corners(boxes):
        cx, cy, w, h = boxes.unbind(-1)
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    ax1, ay1, ax2, ay2 = corners(boxes1)
    bx1, by1, bx2, by2 = corners(boxes2)
    inter = (torch.min(ax2, bx2) - torch.max(ax1, bx1)).clamp(min=0) * (
        torch.min(ay2, by2) - torch.max(ay1, by1)
    ).clamp(min=0)
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    hull = (torch.max(ax2, bx2) - torch.min(ax1, bx1)) * (torch.max(ay2, by2) - torch.min(ay1, by1))
    return inter / union - (hull - union) / hull


def make_criterion(**kwargs):
    return SetCriterion(NUM_CLASSES, HungarianMatcher(), **kwargs)


def random_batch(generator, sizes=(3, 0, 2), queries=5):
    """Outputs with sigmoid-range boxes and targets with random labels and boxes inside [0, 1]."""
    batch = len(sizes)
    outputs = {
        "pred_logits": torch.randn(batch, queries, NUM_CLASSES + 1, generator=generator, requires_grad=True),
        "pred_boxes": (0.25 + 0.5 * torch.rand(batch, queries, 4, generator=generator)).requires_grad_(),
    }
    targets = []
    for n in sizes:
        centres = 0.3 + 0.4 * torch.rand(n, 2, generator=generator)
        sizes_wh = 0.1 + 0.4 * torch.rand(n, 2, generator=generator)
        labels = torch.randint(NUM_CLASSES, (n,), generator=generator)
        targets.append({"labels": labels, "boxes": torch.cat([centres, sizes_wh], dim=1)})
    return outputs, targets


def match_each_layer_on_its_own(matcher, layers, targets):
    """The per-layer reference: each layer's cost to the host, scipy per image (DETR's HungarianMatcher.forward)."""
    sizes = [len(t["boxes"]) for t in targets]
    matched = []
    for pred_logits, pred_boxes in layers:
        cost = matcher.cost(pred_logits, pred_boxes, targets).cpu()
        blocks = cost.split(sizes, dim=-1)
        pairs = [linear_sum_assignment(block[image].numpy()) for image, block in enumerate(blocks)]
        matched.append([(torch.as_tensor(query), torch.as_tensor(target)) for query, target in pairs])
    return matched


def with_aux_layers(generator, outputs, n_aux):
    """``outputs`` plus ``n_aux`` intermediate layers of fresh random logits and boxes."""
    shape = outputs["pred_boxes"].shape
    outputs["aux_outputs"] = [
        {
            "pred_logits": torch.randn(*shape[:2], NUM_CLASSES + 1, generator=generator),
            "pred_boxes": 0.25 + 0.5 * torch.rand(shape, generator=generator),
        }
        for _ in range(n_aux)
    ]
    return outputs


@pytest.fixture
def two_box_example():
    """One image, targets t0, t1; query 0 sits exactly on t1, query 1 is t0 shifted by (0.1, 0.1), query 2 is far.

    Class probabilities (softmax of logits with ln 3 / ln 5 entries):
    query 0: p(class 2) = 3/6, query 1: p(class 1) = 3/6, query 2: p(no object) = 5/8.
    """
    ln3, ln5 = math.log(3.0), math.log(5.0)
    outputs = {
        "pred_logits": torch.tensor([[[0.0, 0.0, ln3, 0.0], [0.0, ln3, 0.0, 0.0], [0.0, 0.0, 0.0, ln5]]]),
        "pred_boxes": torch.tensor([[[0.75, 0.75, 0.2, 0.2], [0.35, 0.35, 0.2, 0.2], [0.5, 0.1, 0.1, 0.1]]]),
    }
    targets = [
        {"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]])}
    ]
    return outputs, targets


def test_two_boxes_are_matched_crosswise_with_hand_computed_losses(two_box_example):
    outputs, targets = two_box_example
    criterion = make_criterion()
    ((query_idx, target_idx),) = criterion.match(outputs, targets)
    assert query_idx.dtype == target_idx.dtype == torch.int64
    assert query_idx.tolist() == [0, 1] and target_idx.tolist() == [1, 0]

    losses = criterion(outputs, targets)
    # Query 0 equals t1: L1 0, GIoU 1. Query 1 vs t0: |dx| + |dy| = 0.2; corners (0.25, 0.45)^2 vs (0.15, 0.35)^2:
    # intersection 0.1^2 = 0.01, union 0.04 + 0.04 - 0.01 = 0.07, hull 0.3^2 = 0.09,
    # GIoU = 1/7 - (0.09 - 0.07) / 0.09 = 1/7 - 2/9 = -5/63, so 1 - GIoU = 68/63. Two target boxes.
    assert losses["loss_bbox"].item() == pytest.approx(0.2 / 2, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx((0 + 68 / 63) / 2, abs=1e-5)
    # CE: queries 0 and 1 have p(target class) = 1/2 (weight 1), query 2 p(no object) = 5/8 (weight eos_coef 0.1).
    expected_ce = (2 * math.log(2.0) + 0.1 * math.log(8 / 5)) / (1 + 1 + 0.1)
    assert losses["loss_ce"].item() == pytest.approx(expected_ce, abs=1e-6)
    expected_total = 1 * expected_ce + 5 * 0.1 + 2 * (34 / 63)
    assert criterion.total_loss(losses).item() == pytest.approx(expected_total, abs=1e-5)


def test_matcher_cost_entry_by_hand(two_box_example):
    outputs, targets = two_box_example
    cost = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0).cost(
        outputs["pred_logits"], outputs["pred_boxes"], targets
    )
    assert cost.shape == (1, 3, 2)
    # query 1 vs t0: -p(class 1) + 5 * L1 - 2 * GIoU = -1/2 + 5 * 0.2 + 2 * 5/63
    assert cost[0, 1, 0].item() == pytest.approx(-0.5 + 1.0 + 10 / 63, abs=1e-5)
    # query 0 vs t1 (identical box): -p(class 2) + 0 - 2 * 1
    assert cost[0, 0, 1].item() == pytest.approx(-0.5 - 2.0, abs=1e-5)


@pytest.mark.parametrize("queries,n_targets", [(4, 4), (6, 3)])
def test_assignment_is_optimal_against_brute_force(queries, n_targets):
    generator = torch.Generator().manual_seed(queries)
    outputs, targets = random_batch(generator, sizes=(n_targets,), queries=queries)
    matcher = HungarianMatcher()
    cost = matcher.cost(outputs["pred_logits"], outputs["pred_boxes"], targets)[0]  # (Q, N)
    ((query_idx, target_idx),) = matcher(outputs["pred_logits"], outputs["pred_boxes"], targets)
    assert sorted(target_idx.tolist()) == list(range(n_targets)) and len(set(query_idx.tolist())) == n_targets
    found = cost[query_idx, target_idx].sum().item()
    best = min(
        sum(cost[q, t].item() for t, q in enumerate(chosen))
        for chosen in itertools.permutations(range(queries), n_targets)
    )
    assert found == pytest.approx(best, abs=1e-5)


def test_image_without_targets_gets_only_no_object_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    outputs, targets = random_batch(generator, sizes=(0,), queries=4)
    criterion = make_criterion()
    ((query_idx, target_idx),) = criterion.match(outputs, targets)
    assert query_idx.numel() == target_idx.numel() == 0 and query_idx.dtype == torch.int64
    losses = criterion(outputs, targets)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    no_object = torch.full((1, 4), NUM_CLASSES)
    # every query has the same class weight, so the weighted mean is the plain mean
    expected = F.cross_entropy(outputs["pred_logits"].transpose(1, 2), no_object)
    torch.testing.assert_close(losses["loss_ce"], expected)
    criterion.total_loss(losses).backward()  # the zero box terms still have a graph
    assert outputs["pred_logits"].grad.abs().sum() > 0


def test_empty_image_in_a_batch_keeps_the_others_matched():
    generator = torch.Generator().manual_seed(1)
    outputs, targets = random_batch(generator, sizes=(3, 0, 2))
    indices = make_criterion().match(outputs, targets)
    assert [len(q) for q, _ in indices] == [3, 0, 2]
    assert [sorted(t.tolist()) for _, t in indices] == [[0, 1, 2], [], [0, 1]]


def test_eos_coef_weights_cross_entropy_like_torch():
    generator = torch.Generator().manual_seed(2)
    outputs, targets = random_batch(generator)
    criterion = make_criterion(eos_coef=0.3)
    indices = criterion.match(outputs, targets)
    target_classes = torch.full((3, 5), NUM_CLASSES)
    for image, (query, target) in enumerate(indices):
        target_classes[image, query] = targets[image]["labels"][target]
    weight = torch.tensor([1.0, 1.0, 1.0, 0.3])
    expected = F.cross_entropy(
        outputs["pred_logits"].reshape(-1, NUM_CLASSES + 1), target_classes.flatten(), weight=weight
    )
    torch.testing.assert_close(criterion(outputs, targets)["loss_ce"], expected)
    assert "class_weight" in dict(criterion.named_buffers())
    torch.testing.assert_close(criterion.class_weight, weight)


def test_aux_losses_have_suffixes_and_equal_the_final_layer():
    generator = torch.Generator().manual_seed(3)
    outputs, targets = random_batch(generator)
    final = {"pred_logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"]}
    outputs["aux_outputs"] = [dict(final), dict(final)]
    criterion = make_criterion()
    losses = criterion(outputs, targets)
    names = ["loss_ce", "loss_bbox", "loss_giou"]
    assert set(losses) == set(names) | {f"{name}_{layer}" for name in names for layer in (0, 1)}
    for name in names:
        for layer in (0, 1):
            torch.testing.assert_close(losses[f"{name}_{layer}"], losses[name])
    main = criterion.total_loss({name: losses[name] for name in names})
    torch.testing.assert_close(criterion.total_loss(losses), 3 * main)
    assert set(make_criterion(aux_loss=False)(outputs, targets)) == set(names)


def test_box_losses_at_shifted_boxes_with_the_same_matching():
    generator = torch.Generator().manual_seed(4)
    outputs, targets = random_batch(generator)
    criterion = make_criterion()
    indices = criterion.match(outputs, targets)
    num_boxes = criterion.num_boxes(targets, torch.device("cpu"))
    assert num_boxes.item() == 5.0
    shifted = (outputs["pred_boxes"] + 0.05 * torch.randn(3, 5, 4, generator=generator)).detach()
    losses = criterion.box_losses(shifted, targets, indices, num_boxes)

    matched = torch.cat([shifted[image, query] for image, (query, _) in enumerate(indices)])
    target_boxes = torch.cat([t["boxes"][target] for t, (_, target) in zip(targets, indices)])
    torch.testing.assert_close(losses["loss_bbox"], (matched - target_boxes).abs().sum() / 5)
    torch.testing.assert_close(losses["loss_giou"], (1 - paired_giou(matched, target_boxes)).sum() / 5)
    # forward with the given indices evaluates the final layer at the shifted boxes, not a new matching
    reused = criterion({"pred_logits": outputs["pred_logits"], "pred_boxes": shifted}, targets, indices)
    torch.testing.assert_close(reused["loss_bbox"], losses["loss_bbox"])
    torch.testing.assert_close(reused["loss_giou"], losses["loss_giou"])


def test_gradients_reach_boxes_and_logits():
    generator = torch.Generator().manual_seed(5)
    outputs, targets = random_batch(generator)
    criterion = make_criterion()
    criterion.total_loss(criterion(outputs, targets)).backward()
    for name in ("pred_logits", "pred_boxes"):
        grad = outputs[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # unmatched queries get no box gradient; matched ones do
    matched = torch.zeros(3, 5, dtype=torch.bool)
    for image, (query, _) in enumerate(criterion.match(outputs, targets)):
        matched[image, query] = True
    box_grad = outputs["pred_boxes"].grad.abs().sum(-1)
    assert (box_grad[~matched] == 0).all() and (box_grad[matched] > 0).all()


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="all matcher costs"):
        HungarianMatcher(cost_class=0, cost_bbox=0, cost_giou=0)
    with pytest.raises(ValueError, match="non-negative"):
        HungarianMatcher(cost_bbox=-1.0)
    with pytest.raises(ValueError, match="weight_dict"):
        make_criterion(weight_dict={"loss_ce": 1, "loss_box": 5, "loss_giou": 2})
    criterion = make_criterion()
    with pytest.raises(ValueError, match="no weight"):
        criterion.total_loss({"loss_cardinality": torch.tensor(1.0)})
    outputs, targets = random_batch(torch.Generator().manual_seed(6))
    with pytest.raises(ValueError, match="target dicts"):
        criterion.match(outputs, targets[:2])


def as_lists(matchings):
    """Per layer, per image (query_idx, target_idx) as lists of ints."""
    return [[(query.tolist(), target.tolist()) for query, target in layer] for layer in matchings]


@pytest.mark.parametrize("sizes", [(3, 0, 2, 5), (0, 0), (1,), (8, 0)])  # 8 targets > 6 queries: 6 matched
def test_matching_all_layers_at_once_equals_matching_each_layer_on_its_own(sizes):
    generator = torch.Generator().manual_seed(len(sizes))
    outputs, targets = random_batch(generator, sizes=sizes, queries=6)
    outputs = with_aux_layers(generator, outputs, n_aux=4)
    layers = [(layer["pred_logits"], layer["pred_boxes"]) for layer in [outputs, *outputs["aux_outputs"]]]
    matcher = HungarianMatcher()
    batched = matcher.match_layers(layers, targets)
    expected = match_each_layer_on_its_own(matcher, layers, targets)
    assert as_lists(batched) == as_lists(expected) and len(batched) == 5
    assert all(index.dtype == torch.int64 for layer in batched for pair in layer for index in pair)
    final, aux = make_criterion().match_all(outputs, targets)
    assert as_lists([final, *aux]) == as_lists(expected)
    assert make_criterion(aux_loss=False).match_all(outputs, targets)[1] == []


def test_losses_with_all_layers_matched_at_once_equal_the_per_layer_path():
    generator = torch.Generator().manual_seed(7)
    outputs, targets = random_batch(generator, sizes=(3, 0, 2), queries=5)
    outputs = with_aux_layers(generator, outputs, n_aux=3)
    criterion = make_criterion()
    layers = [outputs, *outputs["aux_outputs"]]
    final, *aux = match_each_layer_on_its_own(
        criterion.matcher, [(x["pred_logits"], x["pred_boxes"]) for x in layers], targets
    )
    num_boxes = criterion.num_boxes(targets, torch.device("cpu"))
    expected = criterion.layer_losses(outputs, targets, final, num_boxes)
    for layer, (aux_layer, indices) in enumerate(zip(outputs["aux_outputs"], aux)):
        expected.update(
            {f"{k}_{layer}": v for k, v in criterion.layer_losses(aux_layer, targets, indices, num_boxes).items()}
        )
    indices, aux_indices = criterion.match_all(outputs, targets)
    for losses in (
        criterion(outputs, targets),
        criterion(outputs, targets, indices, aux_indices),
        criterion(outputs, targets, indices),
        criterion(outputs, targets, aux_indices=aux_indices),
    ):
        assert losses.keys() == expected.keys()
        for name in expected:
            assert torch.equal(losses[name], expected[name]), name
    with pytest.raises(ValueError, match="aux matchings"):
        criterion(outputs, targets, indices, aux_indices[:1])


def count_host_syncs(fn, *args):
    """Warnings of torch.cuda.set_sync_debug_mode("warn") while ``fn(*args)`` runs."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


def to_cuda(tree):
    """Every tensor of nested dicts and lists on the GPU, detached."""
    if isinstance(tree, dict):
        return {key: to_cuda(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [to_cuda(value) for value in tree]
    return tree.detach().cuda()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-sync detection needs a CUDA device")
def test_matching_every_decoder_layer_makes_one_device_to_host_copy_on_cuda():
    criterion = make_criterion().cuda()
    counts = []
    for n_aux in (1, 5):
        generator = torch.Generator().manual_seed(n_aux)
        outputs, targets = random_batch(generator, sizes=(3, 0, 2))
        outputs, targets = to_cuda(with_aux_layers(generator, outputs, n_aux)), to_cuda(targets)
        criterion.match_all(outputs, targets)  # warm-up: lazy CUDA and pinned-memory set-up may sync
        counts.append(count_host_syncs(criterion.match_all, outputs, targets))
    assert counts == [1, 1]  # the costs' copy to the host; the indices come back non-blocking
