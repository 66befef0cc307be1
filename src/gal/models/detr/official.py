"""Load facebookresearch/detr checkpoints (the model zoo's detr-r50 / detr-r101 files) into our DETR.

    model = build_detr("resnet50", pretrained_backbone=False)
    load_official_checkpoint(model, "detr-r50-e632da11.pth")

The official files are ``{"model": state_dict, ...}``, sometimes with "args" (an argparse.Namespace),
"optimizer", "lr_scheduler" and "epoch"; only "model" is read. Our own checkpoints (``last.pt``,
``{"model": ...}`` in our names) and bare state_dicts load too. The names differ in three places,
listed in OFFICIAL_RENAMES (checked against facebookresearch/detr@29901c5, tests/data/detr_official_keys.json).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from gal.errors import ConfigError

# (official name pattern, our name); a name already in our naming matches none of the patterns
OFFICIAL_RENAMES: tuple[tuple[str, str], ...] = (
    # the official backbone is Joiner(resnet, position_embedding), an nn.Sequential: the ResNet is
    # its item 0 (item 1, the sine encoding, has no weights); ours holds the ResNet directly
    (r"^backbone\.0\.body\.", "backbone.body."),
    # the official layers keep the FFN's two Linear layers as attributes; ours group them in FeedForward
    (r"^(transformer\.(?:encoder|decoder)\.layers\.\d+)\.linear([12])\.", r"\1.ffn.linear\2."),
    # the decoder's attention to the encoder memory: `multihead_attn` there, `cross_attn` here
    (r"^(transformer\.decoder\.layers\.\d+)\.multihead_attn\.", r"\1.cross_attn."),
)
# (layer3 blocks, bottleneck blocks) -> torchvision ResNet, to name the backbone a file was trained with
_RESNET_SHAPES = {(2, False): "resnet18", (6, False): "resnet34", (6, True): "resnet50", (23, True): "resnet101"}
_SHOWN = 5  # unmatched keys quoted in an error


def rename_official(name: str) -> str:
    """Our name for an official DETR state_dict name (our own names come back unchanged)."""
    for pattern, replacement in OFFICIAL_RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def load_official_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the DETR weights in ``path`` (official or ours) into ``model``, strictly.

    Raises ConfigError (a ValueError) naming the file when it is not a checkpoint, when its names do not match the
    model's (missing and unexpected keys quoted) or when a tensor has another shape.
    """
    state_dict = _read_state_dict(Path(path))
    renamed: dict[str, Tensor] = {}
    for name, value in state_dict.items():
        ours = rename_official(name)
        if ours in renamed:
            raise ConfigError(f"{path}: holds {ours!r} twice, in the official and in our naming; keep one of them")
        renamed[ours] = value
    expected = model.state_dict()
    missing = [name for name in expected if name not in renamed]
    unexpected = [name for name in state_dict if rename_official(name) not in expected]
    if missing or unexpected:
        raise ConfigError(
            f"{path}: its weights do not match the model: missing {_quote(missing)}, unexpected {_quote(unexpected)}. "
            + _hint(renamed, expected)
        )
    mismatched = [name for name, value in renamed.items() if value.shape != expected[name].shape]
    if mismatched:
        shapes = "; ".join(
            f"{name}: {tuple(renamed[name].shape)} in the file, {tuple(expected[name].shape)} in the model"
            for name in mismatched[:_SHOWN]
        )
        raise ConfigError(
            f"{path}: {len(mismatched)} tensor(s) have another shape than the model's ({shapes}). Build the model "
            "as the file was trained: task.num_classes (class_embed has num_classes + 1 rows), "
            "task.model.num_queries, hidden_dim, dim_feedforward."
        )
    model.load_state_dict(renamed, strict=True)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The state_dict in a checkpoint file: its "model" entry, or the whole file when it is one."""
    with open(path, "rb") as file:  # a missing file raises FileNotFoundError, which names it
        magic = file.read(4)
    # torch.save writes a zip archive, or before PyTorch 1.6 a pickle (protocol 2: first byte 0x80)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        what = "empty" if not magic else "neither a zip archive nor a pickle"
        raise ConfigError(f"{path} is not a PyTorch checkpoint ({what}); give a file written by torch.save")
    try:
        # the official training script pickles its argparse.Namespace under "args"; allow that class only
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ConfigError(
            f"{path} could not be read as a checkpoint ({type(err).__name__}: {err}). A truncated download? "
            "Fetch it again. A file that pickles other objects? Re-save its weights alone with "
            "torch.save({'model': state_dict}, new_path) (only if you trust the file)."
        ) from err
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not (isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values())):
        keys = sorted(checkpoint)[:_SHOWN] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConfigError(
            f"{path} holds no DETR weights: expected {{'model': state_dict}} or a state_dict of tensors, got {keys}"
        )
    return checkpoint


def _quote(names: list[str]) -> str:
    """The first few names, and how many more there are."""
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{names[:_SHOWN]}{more}" if names else "none"


def _backbone(names: Iterable[str]) -> str | None:
    """The torchvision ResNet whose body these (our) names describe, or None when unknown."""
    blocks = {m.group(1) for name in names if (m := re.match(r"backbone\.body\.layer3\.(\d+)\.", name))}
    bottleneck = any(name.startswith("backbone.body.layer3.0.conv3.") for name in names)
    return _RESNET_SHAPES.get((len(blocks), bottleneck))


def _hint(found: dict[str, Tensor], expected: dict[str, Tensor]) -> str:
    """What to change when the names do not match: the backbone when the file's differs, else the settings."""
    in_file, in_model = _backbone(found), _backbone(expected)
    if in_file and in_model and in_file != in_model:
        return f"The file's backbone is {in_file} and the model's {in_model}: set task.model.backbone={in_file}."
    return (
        "Give a detection DETR from facebookresearch/detr (not a panoptic one) or one of this project's "
        "checkpoints, and build the model as it was trained (task.model.backbone, enc_layers, dec_layers, dilation)."
    )
