"""COCO 2017 detection data for DETR (Table IV): the data set, DETR's augmentation, batching, a toy set.

The recipe is DETR's (facebookresearch/detr, datasets/coco.py and datasets/transforms.py); the code
is torchvision's: ``datasets.CocoDetection`` reads the files, ``transforms.v2`` moves the boxes with
every geometric op (``tv_tensors.BoundingBoxes``), ``ops.box_convert`` changes box formats.
Labels are the COCO category ids themselves (1..90, with gaps), as in DETR, whose classifier has
``num_classes = 91`` outputs plus "no object".
"""

import contextlib
import io
import json
import logging
import math
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision import datasets, tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2

from gal.tasks import DatasetUnavailableError

log = logging.getLogger("gal.coco")

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DETR's make_coco_transforms normalises with the ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)
DETR_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)  # DETR's shorter-side choices for training
DETR_MAX_SIZE = 1333  # longest side after resizing, train and eval
DETR_CROP_SCALES = (400, 500, 600)  # the resize before DETR's random crop
DETR_CROP_SIZE = (384, 600)  # DETR's RandomSizeCrop(384, 600): crop height and width drawn from this range
COCO_NUM_CLASSES = 91  # DETR: the largest COCO category id is 90

Sample = tuple[Tensor, dict[str, Any]]
PairTransform = Callable[[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]

# The toy set's categories: one per (shape, colour), with COCO-like gaps in the ids.
SYNTHETIC_CATEGORIES = (
    {"id": 1, "name": "red rectangle", "shape": "rectangle", "colour": (220, 40, 40)},
    {"id": 3, "name": "green circle", "shape": "circle", "colour": (40, 190, 60)},
    {"id": 7, "name": "blue rectangle", "shape": "rectangle", "colour": (40, 70, 220)},
    {"id": 10, "name": "yellow circle", "shape": "circle", "colour": (230, 210, 30)},
)
SYNTHETIC_NUM_CLASSES = 11  # largest synthetic id + 1, the way DETR sizes its classifier for COCO


def coco_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of a COCO 2017 split ("train" or "val") under ``root``."""
    root = Path(root)
    return root / f"{split}2017", root / "annotations" / f"instances_{split}2017.json"


class CocoDetectionSet(datasets.CocoDetection):
    """torchvision's CocoDetection with DETR's targets; an item is (image (3, H, W), target).

    The target holds "boxes" (N, 4) float32 normalised (cx, cy, w, h) in [0, 1], "labels" (N,)
    int64 COCO category ids, "image_id" (int), "orig_size" and "size" (int64 (h, w) of the decoded
    image and of the transformed one). ``transforms(image, target)`` gets a PIL image and a target
    whose "boxes" are ``tv_tensors.BoundingBoxes`` in pixels (XYXY); it must return an image tensor
    (e.g. :func:`detr_transforms`).

    Annotations are filtered as DETR's ConvertCocoPolysToMask does, so that no item can fail mid-epoch:
    crowd regions are dropped (DETR trains on iscrowd == 0 only), boxes are clipped to the image and
    dropped when empty (w <= 0 or h <= 0), and category ids outside [0, num_classes) are dropped (the
    classifier has no output for them). Images left without annotations are kept with empty targets.
    The counts over the whole file are logged once, at construction (a warning when a box or a
    category id was bad), and kept in ``dropped`` (a Counter: "crowd", "degenerate", "category",
    "empty_images"). Missing files raise :class:`DatasetUnavailableError` saying where COCO goes.
    """

    def __init__(self, img_folder: str | Path, ann_file: str | Path, transforms: PairTransform, num_classes: int):
        img_folder, ann_file = Path(img_folder), Path(ann_file)
        for path in (ann_file, img_folder):
            if not path.exists():
                raise DatasetUnavailableError(_missing_message(path, img_folder, ann_file))
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its loading progress
            super().__init__(str(img_folder), str(ann_file), transforms=transforms)
        self.num_classes = num_classes
        self.dropped = self._count_dropped()

    def __getitem__(self, index: int) -> Sample:
        image_id = self.ids[index]
        image = self._load_image(image_id)
        width, height = image.size
        boxes, labels, _ = usable_annotations(self._load_target(image_id), width, height, self.num_classes)
        pixel_boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
        image, target = self.transforms(image, {"boxes": pixel_boxes, "labels": labels})
        target = normalised_target(image, target["boxes"], target["labels"])
        image = image.as_subclass(Tensor)  # a plain tensor, not a tv_tensors.Image
        return image, {**target, "image_id": image_id, "orig_size": torch.tensor([height, width])}

    def _count_dropped(self) -> Counter:
        """Run the filter over every image (sizes from the JSON) and log what it drops."""
        dropped: Counter = Counter()
        for image_id in self.ids:
            info = self.coco.imgs[image_id]
            boxes, _, counts = usable_annotations(
                self._load_target(image_id), info["width"], info["height"], self.num_classes
            )
            dropped += counts
            dropped["empty_images"] += len(boxes) == 0
        problems = dropped["degenerate"] or dropped["category"]  # crowd regions are dropped by design
        log.log(
            logging.WARNING if problems else logging.INFO,
            "%s: %d images; dropped %d crowd, %d degenerate and %d out-of-range-category annotations "
            "(num_classes=%d); %d images have no annotations (kept, empty targets)",
            self.root,
            len(self.ids),
            dropped["crowd"],
            dropped["degenerate"],
            dropped["category"],
            self.num_classes,
            dropped["empty_images"],
        )
        return dropped


def build_coco(
    root: str | Path, split: str, transforms: PairTransform, num_classes: int = COCO_NUM_CLASSES
) -> CocoDetectionSet:
    """The COCO 2017 ``split`` ("train" or "val") under ``root``, laid out as cocodataset.org ships it."""
    img_folder, ann_file = coco_paths(root, split)
    return CocoDetectionSet(img_folder, ann_file, transforms, num_classes)


def _missing_message(missing: Path, img_folder: Path, ann_file: Path) -> str:
    root = ann_file.parent.parent
    return (
        f"COCO is not available: {missing} does not exist (images {img_folder}, annotations {ann_file}). "
        f"Download the 2017 train/val images and annotations from https://cocodataset.org/#download and "
        f"extract them so that {root}/train2017/, {root}/val2017/ and "
        f"{root}/annotations/instances_{{train,val}}2017.json exist, or set task.root=... to the folder "
        "that holds them (scripts/make_synthetic_data.py coco writes a toy set in the same layout)"
    )


def usable_annotations(
    annotations: list[dict[str, Any]], width: int, height: int, num_classes: int
) -> tuple[Tensor, Tensor, Counter]:
    """(boxes (N, 4) XYXY pixels clipped to the image, labels (N,) int64, Counter of dropped annotations).

    The Counter's keys are "crowd", "category" (id outside [0, num_classes)) and "degenerate"
    (no 4-number bbox, or w <= 0 or h <= 0 after clipping: DETR's ``keep`` in ConvertCocoPolysToMask).
    """
    dropped: Counter = Counter()
    xywh, labels = [], []
    for annotation in annotations:
        bbox, category = annotation.get("bbox"), annotation.get("category_id")
        if annotation.get("iscrowd", 0):
            dropped["crowd"] += 1
        elif not (isinstance(category, int) and 0 <= category < num_classes):
            dropped["category"] += 1
        elif not (isinstance(bbox, list | tuple) and len(bbox) == 4):
            dropped["degenerate"] += 1
        else:
            xywh.append([float(value) for value in bbox])
            labels.append(category)
    boxes = box_convert(torch.tensor(xywh, dtype=torch.float32).reshape(-1, 4), "xywh", "xyxy")
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # False for NaN too
    dropped["degenerate"] += int((~keep).sum())
    return boxes[keep], torch.tensor(labels, dtype=torch.int64)[keep], dropped


def normalised_target(image: Tensor, boxes: tv_tensors.BoundingBoxes, labels: Tensor) -> dict[str, Tensor]:
    """DETR's target after its Normalize: boxes (cx, cy, w, h) / (W, H, W, H), empty boxes dropped, "size" (h, w)."""
    if not isinstance(image, Tensor):
        raise TypeError(f"the transforms must end with an image tensor (ToImage, ToDtype), got {type(image).__name__}")
    height, width = image.shape[-2:]
    boxes = v2.functional.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY)
    boxes = boxes.as_subclass(Tensor).clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # a crop can empty a box (DETR's crop)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    cxcywh = box_convert(boxes[keep], "xyxy", "cxcywh") / scale
    return {"boxes": cxcywh.float(), "labels": labels[keep], "size": torch.tensor([height, width])}


class RandomSizeCrop(v2.Transform):
    """DETR's RandomSizeCrop: a random crop whose height and width are drawn from [min_size, max_size].

    Sizes are capped by the image (as in DETR); an image smaller than ``min_size`` is kept whole on
    that side, where DETR's ``random.randint`` would raise. v2's crop kernels move and clip the boxes.
    """

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        self.min_size, self.max_size = min_size, max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image_height, image_width = v2.query_size(flat_inputs)
        height = _randint(min(self.min_size, image_height), min(self.max_size, image_height))
        width = _randint(min(self.min_size, image_width), min(self.max_size, image_width))
        top, left = _randint(0, image_height - height), _randint(0, image_width - width)
        return {"top": top, "left": left, "height": height, "width": width}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(v2.functional.crop, inpt, **params)


def _randint(low: int, high: int) -> int:
    """Uniform on [low, high], from torch's generator (seeded per DataLoader worker)."""
    return int(torch.randint(low, high + 1, ()))


def detr_transforms(
    train: bool,
    scales: Sequence[int] = DETR_SCALES,
    max_size: int = DETR_MAX_SIZE,
    crop_scales: Sequence[int] = DETR_CROP_SCALES,
    crop_size: tuple[int, int] = DETR_CROP_SIZE,
) -> v2.Compose:
    """DETR's make_coco_transforms: (PIL image, target) -> (normalised image tensor, target).

    Train: horizontal flip (p=0.5), then with p=0.5 either a resize of the shorter side to one of
    ``scales`` (longer side <= ``max_size``) or [shorter side to one of ``crop_scales``,
    RandomSizeCrop(*crop_size), shorter side to one of ``scales``]. Eval: shorter side to
    max(scales) (DETR: 800), longer side <= max_size. Then ToTensor and ImageNet Normalize.
    The defaults are DETR's; tests and toy runs pass small sizes.
    """
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if not train:
        return v2.Compose([v2.RandomShortestSize([max(scales)], max_size=max_size), *to_tensor])
    resize = v2.RandomShortestSize(list(scales), max_size=max_size)
    crop_then_resize = v2.Compose(
        [
            v2.RandomShortestSize(list(crop_scales)),
            RandomSizeCrop(*crop_size),
            v2.RandomShortestSize(list(scales), max_size),
        ]
    )
    return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomChoice([resize, crop_then_resize]), *to_tensor])


def collate_detection(batch: list[Sample]) -> tuple[Tensor, Tensor, list[dict[str, Any]]]:
    """(images (B, 3, H, W) zero-padded at the bottom/right to the batch's largest H and W,
    mask (B, H, W) bool True on padding, list of targets): DETR's NestedTensor as two tensors."""
    images, targets = zip(*batch)
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    padded = images[0].new_zeros(len(images), 3, height, width)
    mask = torch.ones(len(images), height, width, dtype=torch.bool)
    for i, image in enumerate(images):
        padded[i, :, : image.shape[-2], : image.shape[-1]] = image
        mask[i, : image.shape[-2], : image.shape[-1]] = False
    return padded, mask, list(targets)


def write_synthetic_coco(
    root: Path, n_images: int, image_size: tuple[int, int] = (96, 128), seed: int = 0, split: str = "train2017"
) -> Path:
    """A toy detection set in COCO's layout; returns ``root``.

    Writes root/<split>/<id:012d>.jpg (``image_size`` = (height, width)) with one to three
    non-overlapping shapes on a noisy grey background, one category per (shape, colour) in
    SYNTHETIC_CATEGORIES, and root/annotations/instances_<split>.json with "images",
    "annotations" (bbox xywh in pixels, polygon segmentation, area of the shape, iscrowd 0) and
    "categories". The same (seed, split) always gives the same files; splits differ from each other.
    """
    height, width = image_size
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    image_folder, annotation_folder = Path(root) / split, Path(root) / "annotations"
    image_folder.mkdir(parents=True, exist_ok=True)
    annotation_folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, n_images + 1):
        file_name = f"{image_id:012d}.jpg"
        background = rng.normal(128, 12, (height, width, 3)).clip(0, 255).astype(np.uint8)
        picture = Image.fromarray(background)
        for category, box in _place_shapes(rng, height, width):
            annotations.append(_draw_shape(picture, category, box, len(annotations) + 1, image_id))
        picture.save(image_folder / file_name, quality=95)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    categories = [{"id": c["id"], "name": c["name"], "supercategory": c["shape"]} for c in SYNTHETIC_CATEGORIES]
    dataset = {"images": images, "annotations": annotations, "categories": categories}
    (annotation_folder / f"instances_{split}.json").write_text(json.dumps(dataset))
    return Path(root)


def _place_shapes(rng: np.random.Generator, height: int, width: int) -> list[tuple[dict, list[int]]]:
    """Up to three (category, [x, y, w, h]) that do not overlap, each side between 12 px and half the image."""
    placed: list[tuple[dict, list[int]]] = []
    for _ in range(int(rng.integers(1, 4))):
        category = SYNTHETIC_CATEGORIES[int(rng.integers(len(SYNTHETIC_CATEGORIES)))]
        for _attempt in range(20):
            w, h = (int(side) for side in rng.integers(12, max(13, min(height, width) // 2), 2))
            if category["shape"] == "circle":
                h = w
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            if all(_disjoint([x, y, w, h], other) for _, other in placed):
                placed.append((category, [x, y, w, h]))
                break
    return placed


def _disjoint(a: list[int], b: list[int]) -> bool:
    return a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


def _draw_shape(picture: Image.Image, category: dict, box: list[int], annotation_id: int, image_id: int) -> dict:
    """Draw the shape filling pixels x..x+w-1, y..y+h-1 (continuous extent [x, x+w]) and return its annotation."""
    x, y, w, h = box
    corners = [x, y, x + w - 1, y + h - 1]  # PIL's rectangle and ellipse include both end pixels
    if category["shape"] == "circle":
        ImageDraw.Draw(picture).ellipse(corners, fill=category["colour"])
        angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
        polygon = np.stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))], 1)
        area = math.pi * w * h / 4
    else:
        ImageDraw.Draw(picture).rectangle(corners, fill=category["colour"])
        polygon = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)
        area = float(w * h)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category["id"],
        "bbox": [x, y, w, h],
        "area": area,
        "iscrowd": 0,
        "segmentation": [polygon.round(2).ravel().tolist()],
    }
