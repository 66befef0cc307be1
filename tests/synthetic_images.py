"""Overrides that point the image tasks at tiny synthetic data sets in their real on-disk formats.

The writers (CIFAR's python pickles, an ImageNet folder tree) live in gal.synthetic_data, which
scripts/gpu_check.py uses too; COCO's in gal.tasks.coco_data.
"""

from pathlib import Path

from gal.synthetic_data import (  # noqa: F401  (the tests import them from here)
    N_COLOURED_CLASSES,
    TINY_DETR,
    class_colour,
    write_cifar,
    write_image_folder,
)
from gal.tasks.coco_data import write_synthetic_coco

# a tiny timm model at 32 px, small batches, no worker processes
SMALL_IMAGE_TASK = [
    "task.model.name=test_efficientnet",
    "task.model.pretrained=false",
    "task.image_size=32",
    "task.global_batch_size=8",
    "task.eval_batch_size=16",
    "task.num_workers=0",
]


def image_task_overrides(task: str, data_dir: Path) -> list[str]:
    """Overrides that point an image task at a tiny synthetic copy of its data set."""
    if task in ("cifar10", "cifar100"):
        root = write_cifar(data_dir / task, task, n_train=32, n_test=16)
        return [f"task.root={root}", "task.download=false", "task.verify=false", *SMALL_IMAGE_TASK]
    if task == "coco":
        return [f"task.root={synthetic_coco(data_dir / 'coco', 2)}", *TINY_DETR, "task.global_batch_size=2"]
    if task == "imagenet":
        root = write_image_folder(data_dir / "imagenet", ["n01", "n02", "n03"], n_per_class=8, size=40)
        return [f"task.root={root}", "task.num_classes=3", *SMALL_IMAGE_TASK, "task.model.drop_rate=0.0",
                "task.model.drop_path_rate=0.0"]  # fmt: skip
    return []


def synthetic_coco(root: Path, n_images: int) -> Path:
    for split in ("train2017", "val2017"):
        write_synthetic_coco(root, n_images, image_size=(64, 80), split=split)
    return root
