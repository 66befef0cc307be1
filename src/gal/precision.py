"""Mixed precision (bf16 autocast where the GPU supports it, fp16 with a GradScaler otherwise) and memory format."""

import contextlib

import torch

from gal.errors import ConfigError

MODES = ("auto", "off", "bf16", "fp16")


class Precision:
    """Autocast context and loss scaling for one device.

    ``mode='auto'`` is bf16 on CUDA devices that support it, fp16 + GradScaler on older ones,
    and full precision on the CPU.
    """

    def __init__(self, device: torch.device, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ConfigError(f"trainer.precision must be one of {MODES}, got {mode!r}")
        if mode == "auto":
            if device.type != "cuda":
                mode = "off"
            else:
                mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        self.device, self.mode = device, mode
        self.dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
        self.scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scale(self) -> torch.Tensor | float:
        """The loss scale as a device tensor (reading it as a float would sync with the host)."""
        if not self.scaler.is_enabled():
            return 1.0
        return self.scaler.scale(torch.ones((), device=self.device))

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true scale before clipping them."""
        if self.scaler.is_enabled():
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler.is_enabled():
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


def memory_format_of(model: torch.nn.Module) -> torch.memory_format:
    """channels_last when the model's first 4-d weight is stored so (the trainer converts image models on CUDA)."""
    first = next((p for p in model.parameters() if p.dim() == 4), None)
    if first is not None and not first.is_contiguous() and first.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
