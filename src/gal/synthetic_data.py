"""Tiny image data sets in the real on-disk formats: CIFAR's python pickles and an ImageNet folder tree.

Each class has its own colour (plus noise), so a model can learn the classes in a few steps and a
check can see that pixels and labels reached the loader's output together. The tests and
scripts/gpu_check.py (the trainer end to end on a GPU, with no data set there) write them.
"""

import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor

from gal.tasks.coco_data import SYNTHETIC_NUM_CLASSES

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_COLOURED_CLASSES = 4  # the synthetic CIFAR images use the first few classes


def class_colour(index: int, n_classes: int) -> tuple[int, int, int]:
    """An RGB colour per class, the hues spread evenly round the colour wheel."""
    return ImageColor.getrgb(f"hsv({360 * index // n_classes},100%,90%)")


def coloured_images(rng: np.random.Generator, labels: np.ndarray, n_classes: int, size: int) -> np.ndarray:
    """uint8 images (N, size, size, 3): each label's colour plus Gaussian noise."""
    colours = np.array([class_colour(int(label), n_classes) for label in labels], dtype=np.float64)
    noise = rng.normal(0.0, 20.0, (len(labels), size, size, 3))
    return np.clip(colours[:, None, None, :] + noise, 0, 255).astype(np.uint8)


def write_cifar(root: Path, name: str, n_train: int, n_test: int, seed: int = 0) -> Path:
    """A tiny CIFAR-10 / CIFAR-100 in the layout of the official python archive; returns ``root``.

    cifar10: root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}, batches with
    "data" (N, 3072) uint8 (the R, G, B planes of 32x32 images, row-major) and "labels".
    cifar100: root/cifar-100-python/{train, test, meta}, batches with "fine_labels" and "coarse_labels".
    The official files are Python 2 pickles whose byte-string keys torchvision decodes to str
    (``pickle.load(f, encoding="latin1")``); these are Python 3 pickles with str keys, which load
    into the same dicts. The class names are the full 10 / 100, the images use the first
    N_COLOURED_CLASSES. Their bytes differ from the official files, so load them with
    ``build_cifar(..., verify=False)`` (torchvision's md5 check pins the official bytes).
    """
    if name == "cifar10":
        folder, label_key = root / "cifar-10-batches-py", "labels"
        train_files, test_file = [f"data_batch_{i}" for i in range(1, 6)], "test_batch"
        meta_file, meta = "batches.meta", {"label_names": CIFAR10_LABEL_NAMES, "num_cases_per_batch": 10000}
    elif name == "cifar100":
        folder, label_key = root / "cifar-100-python", "fine_labels"
        train_files, test_file = ["train"], "test"
        fine_names, coarse_names = [f"fine_{i}" for i in range(100)], [f"coarse_{i}" for i in range(20)]
        meta_file, meta = "meta", {"fine_label_names": fine_names, "coarse_label_names": coarse_names}
    else:
        raise ValueError(f"unknown CIFAR data set {name!r}; choose cifar10 or cifar100")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for file, indices in zip(train_files, np.array_split(np.arange(n_train), len(train_files))):
        _pickle(folder / file, _cifar_batch(rng, len(indices), label_key, file))
    _pickle(folder / test_file, _cifar_batch(rng, n_test, label_key, test_file))
    _pickle(folder / meta_file, meta)
    return root


def _cifar_batch(rng: np.random.Generator, n: int, label_key: str, batch_label: str) -> dict:
    labels = rng.permutation(np.arange(n) % N_COLOURED_CLASSES)
    images = coloured_images(rng, labels, N_COLOURED_CLASSES, 32)
    batch = {
        "batch_label": f"synthetic {batch_label}",
        "data": images.transpose(0, 3, 1, 2).reshape(n, 3 * 32 * 32),  # HWC -> CHW planes, as CIFAR stores them
        label_key: labels.tolist(),
        "filenames": [f"synthetic_{i}.png" for i in range(n)],
    }
    if label_key == "fine_labels":
        batch["coarse_labels"] = (labels // 5).tolist()
    return batch


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as file:
        pickle.dump(obj, file)


def write_image_folder(
    root: Path, classes: list[str], n_per_class: int, size: int = 32, seed: int = 0, n_val_per_class: int | None = None
) -> Path:
    """root/train/<class>/*.JPEG and root/val/<class>/*.JPEG, ``n_per_class`` JPEGs per class in train and
    ``n_val_per_class`` (default: as many) in val.

    The layout of ImageNet after the usual reorganisation of val/ into class folders; returns ``root``.
    """
    rng = np.random.default_rng(seed)
    counts = {"train": n_per_class, "val": n_per_class if n_val_per_class is None else n_val_per_class}
    for split, count in counts.items():
        for index, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            images = coloured_images(rng, np.full(count, index), len(classes), size)
            for i, image in enumerate(images):
                Image.fromarray(image).save(root / split / name / f"{name}_{i}.JPEG", quality=95)
    return root


# DETR small enough for a CPU step in a fraction of a second (resnet18, 32 wide, 1 + 2 layers, 8 queries),
# sized for gal.tasks.coco_data.write_synthetic_coco's classes
TINY_DETR = [
    "task.model.backbone=resnet18",
    "task.model.pretrained_backbone=false",
    "task.model.hidden_dim=32",
    "task.model.nheads=2",
    "task.model.enc_layers=1",
    "task.model.dec_layers=2",
    "task.model.dim_feedforward=64",
    "task.model.num_queries=8",
    "task.model.dropout=0.0",
    f"task.num_classes={SYNTHETIC_NUM_CLASSES}",
    "task.scales=[64]",
    "task.max_size=96",
    "task.num_workers=0",
]
