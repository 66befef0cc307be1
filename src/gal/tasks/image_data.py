"""Image classification data: CIFAR-10/100 (Tables I-II), ImageNet (Table III) and scikit-learn's digits.

Every loader is torchvision's or timm's own (ImageNet: timm's data set, loader and prefetcher, as the authors
ran it); this module only picks the recipe values, says where each comes from, and turns a missing data set
into a :class:`DatasetUnavailableError` that says where to put the files.
"""

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from timm.data import ImageDataset, create_dataset, create_loader, create_transform, resolve_data_config
from timm.data.loader import PrefetchLoader, fast_collate
from timm.models import get_pretrained_cfg
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import datasets, transforms

from gal.errors import ConfigError
from gal.tasks import DatasetUnavailableError, eval_shard

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # authors' CIFAR code (PAPER_NOTES, "CIFAR recipe")
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR_DATASETS: dict[str, type[datasets.CIFAR10]] = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}


def cifar_transform(train: bool, image_size: int = 224) -> transforms.Compose:
    """The authors' CIFAR recipe (PAPER_NOTES): Resize(224), horizontal flip (train only), ToTensor, Normalize.

    The 32 px images are upsampled to the ImageNet resolution the pretrained EfficientNet-B1 expects;
    there is no random crop in the authors' code.
    """
    flip = [transforms.RandomHorizontalFlip()] if train else []
    return transforms.Compose(
        [transforms.Resize(image_size), *flip, transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)]
    )


def build_cifar(
    name: str, root: str, train: bool, transform: Callable | None = None, download: bool = True, verify: bool = True
) -> datasets.CIFAR10:
    """torchvision's CIFAR-10 or CIFAR-100 (``name`` "cifar10" / "cifar100") under ``root``.

    ``verify=False`` skips only torchvision's md5 check of the extracted files (each must still
    exist): the check pins the official files' bytes, so it is what tests with small synthetic
    files in the same format turn off. The downloaded archive is always checked.
    """
    if name not in CIFAR_DATASETS:
        raise ConfigError(f"unknown CIFAR data set {name!r}; choose one of {sorted(CIFAR_DATASETS)}")
    cifar = CIFAR_DATASETS[name] if verify else _without_md5(CIFAR_DATASETS[name])
    try:
        return cifar(root, train=train, transform=transform, download=download)
    except (OSError, RuntimeError) as error:  # offline (URLError is an OSError), or missing/corrupted files
        folder = os.path.join(root, cifar.base_folder)
        raise DatasetUnavailableError(
            f"{name} is not at {folder} (missing, or failing torchvision's md5 check)"
            f"{' and cannot be downloaded' if download else ' and download=False'}: get the official "
            f"{cifar.filename} from {cifar.url} (https://www.cs.toronto.edu/~kriz/cifar.html), extract it "
            f"in {root} so that it makes {folder}/, or set task.root=... to the folder that holds "
            f"{cifar.base_folder}/ ({type(error).__name__}: {error})"
        ) from error


def _without_md5(cifar: type[datasets.CIFAR10]) -> type[datasets.CIFAR10]:
    """``cifar`` with its file md5 sums set to None: torchvision's check_integrity(path, None) checks existence only."""
    no_md5 = {
        "train_list": [[file, None] for file, _ in cifar.train_list],
        "test_list": [[file, None] for file, _ in cifar.test_list],
        "meta": {**cifar.meta, "md5": None},
    }
    return type(cifar.__name__, (cifar,), no_md5)


def imagenet_data_config(
    model_name: str, image_size: int | None = None, crop_pct: float | None = None, interpolation: str | None = None
) -> dict[str, Any]:
    """Input size, eval crop, eval interpolation, mean and std: timm's ``resolve_data_config`` over the model's
    pretrained config, with the recipe's values where given, as the authors' train_gal.py resolves them."""
    size = (3, image_size, image_size) if image_size else None
    args = {"input_size": size, "crop_pct": crop_pct, "interpolation": interpolation}
    pretrained_cfg = get_pretrained_cfg(model_name)
    return resolve_data_config(args, pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else None)


def build_imagenet(root: str, split: str) -> ImageDataset:
    """timm's folder data set over ``root/split`` (``create_dataset("")``, the authors' timm ``Dataset``);
    the loaders below set its transform."""
    folder = os.path.join(root, split)
    try:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder} is not a folder")
        return create_dataset("", root=folder, split=split, search_split=False)
    except (FileNotFoundError, RuntimeError) as error:  # no folder, or no class folders of images in it
        raise DatasetUnavailableError(
            f"no image folder at {folder}: expected {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG "
            "(one folder per class; ImageNet's flat val/ reorganised into class folders, e.g. with the usual "
            f"valprep.sh script); set task.root=... to the folder that holds train/ and val/ ({error})"
        ) from error


def imagenet_train_loader(
    dataset: ImageDataset,
    data_config: dict[str, Any],
    batch_size: int,
    augment: dict[str, Any],
    num_workers: int,
    seed: int,
    distributed: bool,
    device: torch.device,
) -> PrefetchLoader:
    """timm's ``create_loader`` as the authors' train_gal.py calls it: RandomResizedCrop, flip, ``augment``'s
    auto_augment (their --aa rand-m9-mstd0.5; timm then drops colour jitter) and train_interpolation (their
    --train-interpolation default "random") on the workers; uint8 batches normalised and randomly erased (--reprob
    0.2 --remode pixel) on ``device`` by timm's prefetcher; drop_last as timm. Workers are not persistent: each
    epoch's start from the process's generator, which a checkpoint keeps (see ClassificationTask.loaders)."""
    loader = create_loader(
        dataset,
        input_size=data_config["input_size"],
        batch_size=batch_size,
        is_training=True,
        use_prefetcher=True,
        re_prob=augment.get("re_prob", 0.0),
        re_mode=augment.get("re_mode", "pixel"),
        auto_augment=augment.get("auto_augment"),
        interpolation=augment.get("train_interpolation", "random"),
        mean=data_config["mean"],
        std=data_config["std"],
        num_workers=num_workers,
        distributed=distributed,
        pin_memory=device.type == "cuda",
        device=device,
        persistent_workers=False,
    )
    if distributed:  # create_loader's DistributedSampler(dataset) has seed 0 in every run: the order follows ours
        loader.sampler.seed = seed
    return loader


def imagenet_eval_loader(
    dataset: ImageDataset,
    data_config: dict[str, Any],
    batch_size: int,
    num_workers: int,
    rank: int,
    world_size: int,
    device: torch.device,
) -> PrefetchLoader:
    """Resize to input_size / crop_pct, center crop, normalise on ``device``: timm's eval transform and prefetcher.

    Every rank takes its :func:`gal.tasks.eval_shard` (timm's OrderedDistributedSampler would pad the shards with
    repeated images).
    """
    dataset.transform = create_transform(
        data_config["input_size"],
        is_training=False,
        use_prefetcher=True,
        interpolation=data_config["interpolation"],
        crop_pct=data_config["crop_pct"],
        mean=data_config["mean"],
        std=data_config["std"],
    )
    loader = DataLoader(
        eval_shard(dataset, rank, world_size),
        batch_size,
        num_workers=num_workers,
        collate_fn=fast_collate,
        pin_memory=device.type == "cuda",
    )
    return PrefetchLoader(loader, mean=data_config["mean"], std=data_config["std"], device=device)


def load_digits_split(
    test_size: float = 0.2, split_seed: int = 0, val_size: float = 0.0
) -> tuple[TensorDataset, TensorDataset, TensorDataset | None]:
    """scikit-learn's digits (1797 8x8 images, 10 classes) as (train, test, validation or None) TensorDatasets.

    Images are float32 (N, 1, 8, 8) in [0, 1] (the pixels are counts 0..16); labels are int64.
    The split is stratified and drawn by ``split_seed`` (task.split: fixed, or the training seed); ``val_size``
    of the training images are held out as a stratified validation split.
    """
    # imported here: only the digits need scikit-learn (about a second to import)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from gal.tasks import carve_validation

    x, y = load_digits(return_X_y=True)
    images = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, y, test_size=test_size, random_state=split_seed, stratify=y
    )
    (x_train, y_train), val = carve_validation((x_train, y_train), val_size, split_seed, stratify=y_train)
    val_set = None if val is None else _tensor_dataset(*val)
    return _tensor_dataset(x_train, y_train), _tensor_dataset(x_test, y_test), val_set


def _tensor_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def check_num_classes(dataset: Dataset, num_classes: int) -> None:
    """Raise ValueError unless ``dataset`` has ``num_classes`` classes (checked before training starts).

    The count is ``len(dataset.classes)`` for torchvision's data sets, the class folders of timm's folder data
    set, and the number of distinct labels for a TensorDataset of (inputs, labels).
    """
    if hasattr(dataset, "classes"):
        found = len(dataset.classes)
    elif isinstance(dataset, ImageDataset):
        found = len(dataset.reader.class_to_idx)
    elif isinstance(dataset, TensorDataset):
        found = int(dataset.tensors[1].unique().numel())
    else:
        raise TypeError(f"cannot count the classes of a {type(dataset).__name__}")
    if found != num_classes:
        raise ConfigError(
            f"the data set has {found} classes but the model is built for {num_classes}: set task.num_classes={found}"
        )
