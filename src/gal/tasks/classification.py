"""Image classification (Tables I-III, and digits on this machine): z is the logits.

The loss is per-sample cross-entropy; the metrics are top-1/top-5 accuracy, top-1 error
and the mean loss over the evaluation split, summed across ranks under torchrun.
"""

from typing import Any

import timm
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

import gal.models.cnn  # noqa: F401  (registers digits_cnn with timm)
from gal.precision import memory_format_of
from gal.tasks.image_data import (
    build_cifar,
    build_image_folder,
    check_num_classes,
    cifar_transform,
    imagenet_transform,
    load_digits_split,
)

DATASETS = ("digits", "cifar10", "cifar100", "imagenet")


def build_datasets(
    dataset: str,
    root: str | None,
    image_size: int,
    download: bool,
    augment: dict[str, Any],
    split_seed: int,
    verify: bool = True,
) -> tuple[Dataset, Dataset]:
    """(train, eval) splits of ``dataset`` with the recipe's transforms."""
    if dataset == "digits":
        return load_digits_split(split_seed=split_seed)
    if dataset in ("cifar10", "cifar100"):
        return (
            build_cifar(dataset, root, True, cifar_transform(True, image_size), download, verify),
            build_cifar(dataset, root, False, cifar_transform(False, image_size), download, verify),
        )
    if dataset == "imagenet":
        return (
            build_image_folder(root, "train", imagenet_transform(True, image_size, **augment)),
            build_image_folder(root, "val", imagenet_transform(False, image_size, **augment)),
        )
    raise ValueError(f"unknown classification dataset {dataset!r}; choose one of {DATASETS}")


def create_model(name: str, num_classes: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm.create_model, with a clear error when pretrained weights cannot be fetched."""
    if name not in timm.list_models():
        raise ValueError(f"unknown model {name!r}: see timm.list_models() (e.g. efficientnet_b1, resnet50)")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except Exception as error:
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not fetch pretrained weights for {name!r} ({type(error).__name__}: {error}). Place them in "
            "the Hugging Face cache ($HF_HOME, e.g. with `huggingface-cli download timm/<model>` on a machine "
            "online) or set task.model.pretrained=false"
        ) from error


class ClassificationTask:
    """A timm model on an image data set."""

    objective = ("error", "minimize")  # top-1 error in % (100 - acc1)

    def __init__(
        self,
        dataset: str,
        num_classes: int,
        model: dict[str, Any],
        batch_size: int,
        epochs: int,
        root: str | None = None,
        image_size: int = 224,
        download: bool = True,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        augment: dict[str, Any] | None = None,
        split_seed: int = 0,
        verify: bool = True,
    ) -> None:
        self.train_set, self.eval_set = build_datasets(
            dataset, root, image_size, download, dict(augment or {}), split_seed, verify
        )
        check_num_classes(self.train_set, num_classes)
        self.num_classes = self.feature_dim = num_classes
        self.model_kwargs = dict(model)
        self.batch_size, self.epochs, self.num_workers = batch_size, epochs, num_workers
        self.eval_batch_size = eval_batch_size or batch_size

    def build_model(self) -> nn.Module:
        return create_model(num_classes=self.num_classes, **self.model_kwargs)

    def loaders(self, seed: int, rank: int, world_size: int) -> tuple[DataLoader, DataLoader]:
        # Workers start anew each epoch (not persistent), seeded from the process's generator, which the checkpoint
        # keeps: a resumed run draws the augmentations of the uninterrupted one (persistent workers would carry
        # their own generators, which no checkpoint holds). Evaluation's start for each evaluation only.
        workers = {"num_workers": self.num_workers, "pin_memory": torch.cuda.is_available()}
        shuffle = DistributedSampler(self.train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        train = DataLoader(self.train_set, self.batch_size, sampler=shuffle, drop_last=True, **workers)
        # every rank evaluates a disjoint shard, unpadded, so the summed metrics are exact
        shard = Subset(self.eval_set, range(rank, len(self.eval_set), world_size))
        return train, DataLoader(shard, self.eval_batch_size, **workers)

    def features_and_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]):
        images, labels = batch
        return model(images), lambda logits: F.cross_entropy(logits.float(), labels, reduction="none")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Top-1/top-5 accuracy and top-1 error in %, and the mean cross-entropy."""
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
                    torch.tensor(len(labels), device=device),
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
