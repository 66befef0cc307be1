"""Image data: torchvision's and timm's real loaders on tiny files in the real formats, and clear errors."""

import socket

import numpy as np
import pytest
import torch
from timm.data import ImageDataset
from timm.data.auto_augment import RandAugment
from timm.data.loader import PrefetchLoader
from timm.data.random_erasing import RandomErasing
from torchvision import transforms

from gal.tasks.image_data import (
    CIFAR_MEAN,
    CIFAR_STD,
    DatasetUnavailableError,
    build_cifar,
    build_imagenet,
    check_num_classes,
    cifar_transform,
    imagenet_data_config,
    imagenet_eval_loader,
    imagenet_train_loader,
    load_digits_split,
)

from .synthetic_images import N_COLOURED_CLASSES, class_colour, write_cifar, write_image_folder

WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture
def offline(monkeypatch):
    """No name resolves, as on a machine without network (and no 170 MB download where there is one)."""

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "offline (test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)


@pytest.mark.parametrize(("name", "n_classes"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loads_the_official_format(tmp_path, offline, name, n_classes):
    root = str(write_cifar(tmp_path, name, n_train=12, n_test=8))
    # download=True finds the files present and never touches the network
    train = build_cifar(name, root, train=True, transform=cifar_transform(train=True), verify=False)
    test = build_cifar(name, root, train=False, transform=cifar_transform(train=False), verify=False)
    assert (len(train), len(test)) == (12, 8)
    check_num_classes(train, n_classes)
    image, label = test[0]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    pixels = image * torch.tensor(CIFAR_STD)[:, None, None] + torch.tensor(CIFAR_MEAN)[:, None, None]
    assert image.min() < 0 and pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # normalised, from [0, 1]
    colour = torch.tensor(class_colour(label, N_COLOURED_CLASSES)) / 255
    torch.testing.assert_close(pixels.mean((1, 2)), colour, atol=0.05, rtol=0)  # CHW planes decoded in order


def test_cifar_transform_flips_only_in_training():
    assert any(isinstance(t, transforms.RandomHorizontalFlip) for t in cifar_transform(train=True).transforms)
    assert not any(isinstance(t, transforms.RandomHorizontalFlip) for t in cifar_transform(train=False).transforms)


@pytest.mark.parametrize(("name", "folder"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_offline_without_files_says_where_they_go(tmp_path, offline, name, folder):
    with pytest.raises(DatasetUnavailableError) as error:
        build_cifar(name, str(tmp_path), train=True, download=True)
    message = str(error.value)
    assert f"{tmp_path}/{folder}" in message
    assert "https://www.cs.toronto.edu/~kriz/" in message and "task.root=" in message


def test_cifar_checks_md5_by_default(tmp_path):
    root = str(write_cifar(tmp_path, "cifar10", n_train=5, n_test=2))
    with pytest.raises(DatasetUnavailableError, match="md5"):
        build_cifar("cifar10", root, train=True, download=False)


def test_cifar_unknown_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="cifar10.*cifar100"):
        build_cifar("cifar1000", str(tmp_path), train=True)


def test_imagenet_goes_through_timms_dataset_loader_and_prefetcher(tmp_path):
    root = str(write_image_folder(tmp_path, WNIDS, n_per_class=4, size=48))
    train, val = build_imagenet(root, "train"), build_imagenet(root, "val")
    assert isinstance(train, ImageDataset) and len(train) == len(val) == 12
    check_num_classes(train, 3)
    config = imagenet_data_config("efficientnet_b2", 64, 0.875, "bicubic")
    assert (config["input_size"], config["crop_pct"]) == ((3, 64, 64), 0.875)
    augment = {"auto_augment": "rand-m9-mstd0.5", "re_prob": 0.2, "re_mode": "pixel", "train_interpolation": "random"}
    loader = imagenet_train_loader(train, config, 5, augment, 0, seed=0, distributed=False, device=torch.device("cpu"))
    assert isinstance(loader, PrefetchLoader) and len(loader) == 2  # drop_last, as timm's create_loader
    on_workers = [type(t) for t in train.transform.transforms]
    assert RandAugment in on_workers
    assert transforms.Normalize not in on_workers and RandomErasing not in on_workers  # both on the device
    assert len(train.transform.transforms[0].interpolation) == 2  # "random": bilinear or bicubic per image
    assert loader.random_erasing.probability == 0.2 and loader.random_erasing.mode == "pixel"
    images, labels = next(iter(loader))
    assert images.shape == (5, 3, 64, 64) and images.dtype == torch.float32 and labels.dtype == torch.int64

    evaluation = imagenet_eval_loader(val, config, 4, 0, rank=1, world_size=2, device=torch.device("cpu"))
    assert list(evaluation.dataset.indices) == list(range(1, 12, 2))  # an unpadded shard
    images, labels = next(iter(evaluation))
    assert images.shape == (4, 3, 64, 64) and labels.tolist() == [val[i][1] for i in (1, 3, 5, 7)]
    # the workers resize to 64 / 0.875 and center-crop to uint8; the prefetcher normalises on the device
    assert val.transform.transforms[0].size == int(64 / 0.875)
    pixels = torch.as_tensor(np.asarray(val[1][0]))
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 64, 64)
    mean, std = (torch.tensor(config[k]).view(3, 1, 1) * 255 for k in ("mean", "std"))
    torch.testing.assert_close(images[0], (pixels.float() - mean) / std)


@pytest.mark.parametrize("make_empty", [False, True])
def test_image_folder_missing_says_the_layout(tmp_path, make_empty):
    if make_empty:
        (tmp_path / "val").mkdir()
    with pytest.raises(DatasetUnavailableError) as error:
        build_imagenet(str(tmp_path), "val")
    message = str(error.value)
    assert f"{tmp_path}/val" in message and "train/<wnid>/*.JPEG" in message and "task.root=" in message


def test_digits_split_is_fixed_stratified_and_shaped():
    train, test, val = load_digits_split()
    assert val is None  # no validation split unless val_size > 0
    x_train, y_train = train.tensors
    x_test, y_test = test.tensors
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert x_train.min() == 0 and x_train.max() == 1
    train_counts, test_counts = np.bincount(y_train.numpy()), np.bincount(y_test.numpy())
    np.testing.assert_allclose(test_counts / 360, (train_counts + test_counts) / 1797, atol=1 / 360)
    again_train, _, _ = load_digits_split()
    assert torch.equal(again_train.tensors[0], x_train) and torch.equal(again_train.tensors[1], y_train)
    check_num_classes(train, 10)


def test_check_num_classes_names_both_numbers_and_the_key():
    train, _, _ = load_digits_split()
    with pytest.raises(ValueError, match=r"10 classes .* built for 100: set task.num_classes=10"):
        check_num_classes(train, 100)


def test_imagenet_train_order_under_ddp_follows_the_runs_seed(tmp_path):
    """timm's create_loader gives every run a DistributedSampler seeded 0; ours takes the run's seed."""
    root = str(write_image_folder(tmp_path, WNIDS, n_per_class=4, size=16))
    config = imagenet_data_config("resnet18", 16)
    store = torch.distributed.HashStore()
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        orders = {}
        for seed in (0, 1):
            loader = imagenet_train_loader(
                build_imagenet(root, "train"), config, 4, {}, 0, seed, True, torch.device("cpu")
            )
            assert isinstance(loader.sampler, torch.utils.data.DistributedSampler) and loader.sampler.seed == seed
            orders[seed] = list(loader.sampler)
        assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1]) == list(range(12))
    finally:
        torch.distributed.destroy_process_group()
