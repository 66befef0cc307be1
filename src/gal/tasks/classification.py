"""Image classification (Tables I-III, and digits on this machine): z is the logits.

The loss is per-sample cross-entropy; the metrics are top-1/top-5 accuracy, top-1 error
and the mean loss over the evaluation split, summed across ranks under torchrun.
"""

import os
import socket
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import timm
import torch
import torch.distributed as dist
from timm.models import get_pretrained_cfg
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

import gal.models.cnn  # noqa: F401  (registers digits_cnn with timm)
from gal.config import VALIDATION_DATASETS
from gal.errors import ConfigError, WeightsUnavailableError
from gal.precision import memory_format_of
from gal.tasks import Features, Task, carve_validation, eval_shard, per_process_batch, split_random_state
from gal.tasks.image_data import (
    build_cifar,
    build_imagenet,
    check_num_classes,
    cifar_transform,
    imagenet_data_config,
    imagenet_eval_loader,
    imagenet_train_loader,
    load_digits_split,
)

DATASETS = ("digits", "cifar10", "cifar100", "imagenet")


def build_datasets(
    dataset: str,
    root: str | None,
    image_size: int,
    download: bool,
    split_seed: int,
    verify: bool = True,
    val_size: float = 0.0,
) -> tuple[Dataset, Dataset, Dataset | None]:
    """(train, eval, validation or None) splits of ``dataset``; CIFAR's with the authors' transforms, ImageNet's get
    theirs from the loaders (timm's loader sets the transform of the data set it is given)."""
    if dataset == "digits":
        return load_digits_split(split_seed=split_seed, val_size=val_size)
    if val_size and dataset not in VALIDATION_DATASETS:
        raise ConfigError(f"task.val_size is supported on {', '.join(VALIDATION_DATASETS)}, not {dataset}")
    if dataset in ("cifar10", "cifar100"):
        train = build_cifar(dataset, root, True, cifar_transform(True, image_size), download, verify)
        test = build_cifar(dataset, root, False, cifar_transform(False, image_size), download, verify)
        if not val_size:
            return train, test, None
        # the validation images: a stratified share of the training set, seen through the evaluation transform
        unaugmented = build_cifar(dataset, root, True, cifar_transform(False, image_size), False, verify)
        (kept,), (held,) = carve_validation((np.arange(len(train)),), val_size, split_seed, stratify=train.targets)
        return Subset(train, kept.tolist()), test, Subset(unaugmented, held.tolist())
    if dataset == "imagenet":
        return build_imagenet(root, "train"), build_imagenet(root, "val"), None
    raise ConfigError(f"unknown classification dataset {dataset!r}; choose one of {DATASETS}")


def create_model(
    name: str, num_classes: int, pretrained: bool = False, pretrained_file: str | None = None, **kwargs: Any
) -> nn.Module:
    """timm.create_model; ``pretrained_file`` loads the weights from a local file (timm's pretrained_cfg_overlay)
    instead of the Hugging Face hub. An unknown name or tag, or weights that cannot be had, is a clear error."""
    if not timm.is_model(name):
        raise ConfigError(f"unknown model {name!r}: see timm.list_models() (e.g. efficientnet_b1, resnet50)")
    if "." in name and name not in timm.list_pretrained(name):
        tags = timm.list_pretrained(f"{name.split('.')[0]}.*")
        raise ConfigError(f"timm has no pretrained tag {name!r}; its tags: {', '.join(tags) or 'none'}")
    hub_id = getattr(get_pretrained_cfg(name), "hf_hub_id", None) or f"timm/{name}"
    if pretrained_file is not None:
        if not os.path.isfile(pretrained_file):
            raise ConfigError(f"task.model.pretrained_file={pretrained_file} is not a file")
        kwargs["pretrained_cfg_overlay"] = {"file": os.path.abspath(pretrained_file)}
    elif pretrained and (unreachable := hub_unreachable()) is not None:
        # no network: the cached file if there is one, else the error now (huggingface_hub would back off and
        # retry for over a minute before failing)
        if (cached := cached_hub_weights(hub_id)) is None:
            raise WeightsUnavailableError(_no_weights(name, hub_id, f"the hub is unreachable: {unreachable}"))
        kwargs["pretrained_cfg_overlay"] = {"file": cached}
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except Exception as error:
        if not pretrained:
            raise
        raise WeightsUnavailableError(_no_weights(name, hub_id, f"{type(error).__name__}: {error}")) from error


def _no_weights(name: str, hub_id: str, reason: str) -> str:
    return (
        f"could not load the pretrained weights of {name!r} ({reason}). Either put them in the Hugging Face "
        f"cache ($HF_HOME; on a machine online: `huggingface-cli download {hub_id}`, then copy the cache over), "
        "or download the file and pass task.model.pretrained_file=PATH; or train from scratch with "
        "task.model.pretrained=false"
    )


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the Hugging Face hub ($HF_ENDPOINT) cannot be reached, or None: reachable, or left to huggingface_hub
    (HF_HUB_OFFLINE set, which it honours at once; a proxy, which only it can try)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return None
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        return f"{host}:{port}: {error}"
    return None


def cached_hub_weights(hub_id: str) -> str | None:
    """The weights file timm would load for ``hub_id`` from the Hugging Face cache ($HF_HOME / $HF_HUB_CACHE),
    without the network: model.safetensors, else pytorch_model.bin (timm's _hub.load_state_dict_from_hf)."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = hub_id.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(path, str):
            return path
    return None


class ClassificationTask(Task):
    """A timm model on an image data set."""

    objective = ("error", "minimize")  # top-1 error in % (100 - acc1)

    def __init__(
        self,
        dataset: str,
        num_classes: int,
        model: dict[str, Any],
        global_batch_size: int,
        root: str | None = None,
        image_size: int | None = 224,
        download: bool = True,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        augment: dict[str, Any] | None = None,
        split_seed: int = 0,
        verify: bool = True,
        drop_last: bool = True,
        label_smoothing: float = 0.0,
        crop_pct: float | None = None,
        interpolation: str | None = None,
        split: str = "fixed",
        val_size: float = 0.0,
        seed: int = 0,
    ) -> None:
        """``global_batch_size`` is the recipe's batch over all processes; ``eval_batch_size`` is per process.
        ``label_smoothing`` is in the training loss (GAL's loss_fn included), not in the reported test loss.
        ImageNet: ``image_size``, ``crop_pct`` and the eval ``interpolation`` default (None) to the model's
        pretrained config (timm's resolve_data_config); ``augment`` holds the training augmentation.
        digits: ``split`` (fixed by ``split_seed``, or ``per_seed``: drawn from the training ``seed``); digits and
        CIFAR: a stratified validation split of ``val_size`` of the training images (CIFAR's without augmentation)."""
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.dataset = dataset
        random_state = split_random_state(split, split_seed, seed)
        self.train_set, self.eval_set, self.val_set = build_datasets(
            dataset, root, image_size, download, random_state, verify, val_size
        )
        check_num_classes(getattr(self.train_set, "dataset", self.train_set), num_classes)  # a Subset's: its source
        if dataset == "imagenet":
            self.data_config = imagenet_data_config(model["name"], image_size, crop_pct, interpolation)
        self.num_classes = self.feature_dim = num_classes
        self.model_kwargs = dict(model)
        self.global_batch_size, self.num_workers = global_batch_size, num_workers
        self.eval_batch_size = eval_batch_size or global_batch_size
        self.augment, self.drop_last, self.label_smoothing = dict(augment or {}), drop_last, label_smoothing

    def build_model(self) -> nn.Module:
        return create_model(num_classes=self.num_classes, **self.model_kwargs)

    def loaders(
        self, seed: int, rank: int, world_size: int, device: torch.device | None = None
    ) -> tuple[DataLoader, DataLoader]:
        # Workers start anew each epoch (not persistent), seeded from the process's generator, which the checkpoint
        # keeps: a resumed run draws the augmentations of the uninterrupted one (persistent workers would carry
        # their own generators, which no checkpoint holds). Evaluation's start for each evaluation only.
        batch_size = per_process_batch(self.global_batch_size, world_size)
        device = device or torch.device("cpu")
        if self.dataset == "imagenet":
            train = imagenet_train_loader(
                self.train_set, self.data_config, batch_size, self.augment, self.num_workers, seed, world_size > 1,
                device,
            )  # fmt: skip
            evaluation = imagenet_eval_loader(
                self.eval_set, self.data_config, self.eval_batch_size, self.num_workers, rank, world_size, device
            )
            return train, evaluation
        workers = {"num_workers": self.num_workers, "pin_memory": device.type == "cuda"}
        shuffle = DistributedSampler(self.train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        train = DataLoader(self.train_set, batch_size, sampler=shuffle, drop_last=self.drop_last, **workers)
        return train, DataLoader(eval_shard(self.eval_set, rank, world_size), self.eval_batch_size, **workers)

    def val_loader(self, rank: int, world_size: int, device: torch.device | None = None) -> DataLoader | None:
        """The validation split (digits with task.val_size > 0), sharded as the evaluation split, or None."""
        if self.val_set is None:
            return None
        return DataLoader(eval_shard(self.val_set, rank, world_size), self.eval_batch_size, num_workers=0)

    def features_and_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Features:
        images, labels = batch
        smoothing = self.label_smoothing

        def loss_fn(logits: Tensor) -> Tensor:
            return F.cross_entropy(logits.float(), labels, reduction="none", label_smoothing=smoothing)

        return Features(model(images), loss_fn)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Top-1/top-5 accuracy and top-1 error in %, and the mean cross-entropy.

        The sums stay on the device over the batches: the one host sync is the final read.
        """
        model.eval()
        device = next(model.parameters()).device
        totals = torch.zeros(4, device=device, dtype=torch.float64)  # loss, top-1, top-5, count
        layout = memory_format_of(model)  # as the trainer feeds it: channels_last on CUDA
        for images, labels in loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=layout)
            labels = labels.to(device, non_blocking=True)
            logits = model(images).float()
            top5 = logits.topk(min(5, self.num_classes), dim=1).indices == labels[:, None]
            totals += torch.stack(
                [
                    F.cross_entropy(logits, labels, reduction="sum"),
                    top5[:, 0].sum(),
                    top5.any(dim=1).sum(),
                    torch.full((), len(labels), device=device),  # a fill kernel; torch.tensor would copy and sync
                ]
            ).double()
        if dist.is_initialized():
            dist.all_reduce(totals)
        loss, top1, top5_hits, count = totals.tolist()
        return {
            "acc1": 100 * top1 / count,
            "acc5": 100 * top5_hits / count,
            "error": 100 * (1 - top1 / count),
            "loss": loss / count,
        }
