"""Which torch device a user's ``--device`` / Device choice means: one function for training,
prediction and evaluation."""

from __future__ import annotations

import torch

from app.errors import MaskLoopError

# The choices the GUI offers; cuda:N and mps are for the command line's --device.
DEVICE_CHOICES = ("auto", "cpu", "cuda")


class DeviceError(MaskLoopError):
    """The asked-for device is unknown or not present on this machine."""


def device_from_arg(device: str) -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is torch's syntax."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"Unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"Device {device!r} asked for but CUDA is not available; use --device cpu or auto."
        )
    return dev
