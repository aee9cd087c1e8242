"""Reduced precision for inference: where it is safe, where it is not, and on which devices.

Mask R-CNN spends most of its time in convolutions: the backbone, the FPN, the RPN's 3x3
convolution and the mask head (on a ResNet-50 FPN at 800x1066 with 100 detections, about
4.6 s of 5.7 s on one CPU core). Those run in bfloat16 (or float16 on GPUs without bf16)
at about twice the speed on GPUs and on CPUs that compute bf16 natively. The box head, the
box regressor and the RPN's objectness and box-delta layers stay in float32: bf16 keeps 8
bits of mantissa, and boxes decoded from bf16 deltas moved enough to cost the bundled cells
model 0.07 segm AP (0.505 -> 0.435, AP75 0.55 -> 0.40 on its held-out set) when the whole
model ran under autocast. With only the convolutional parts in bf16 its AP stayed within
0.001 of float32 on the same images, though single masks differ by a few pixels.

So ``auto`` means bf16 on CUDA (fp16 where bf16 is missing) and float32 on the CPU, whose
results then match torchvision's own path exactly; ``bf16`` on a CPU is the user's choice
of speed (about 1.4x end to end on the bundled model, 2x in the convolutions) over
bit-for-bit agreement.

The reduced parts hold their own weights in the low dtype (no per-call casts) and hand
float32 back, so the rest of the model never sees the difference.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from app.errors import MaskLoopError
from app.ml.defaults import Precision

log = logging.getLogger(__name__)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); else bf16 is emulated
    and slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # pragma: no cover - depends on the torch build
            continue
    return False


def resolve_dtype(precision: Precision | str, device: torch.device) -> torch.dtype:
    """The dtype the convolutional parts run in on ``device``.

    ``auto``: bf16 on CUDA GPUs that support it (else fp16), float32 elsewhere.
    """
    try:
        wanted = Precision(precision)
    except ValueError as exc:
        choices = ", ".join(p.value for p in Precision)
        raise MaskLoopError(f"Unknown precision {precision!r}; use one of {choices}.") from exc
    if wanted is Precision.FP32:
        return torch.float32
    if wanted is Precision.BF16:
        if device.type == "cpu" and not cpu_has_fast_bf16():
            log.warning("this CPU has no native bf16: bf16 will be slower than fp32")
        return torch.bfloat16
    if wanted is Precision.FP16:
        if device.type == "cpu":
            raise MaskLoopError("fp16 is for GPUs; on the CPU use bf16 or fp32.")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def precision_name(dtype: torch.dtype) -> str:
    """The name a user gives the dtype: fp32, bf16 or fp16."""
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return names.get(dtype, str(dtype).removeprefix("torch."))


class LowPrecision(nn.Module):
    """Runs ``module`` with its weights and inputs in ``dtype``; returns float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module.to(dtype)
        self.dtype = dtype

    def forward(self, *args: Any) -> Any:
        return _cast(self.module(*_cast(args, self.dtype)), torch.float32)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """Floating tensors inside tensors, lists, tuples and dicts cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        return type(value)((k, _cast(v, dtype)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def reduce_precision(model: nn.Module, dtype: torch.dtype) -> list[str]:
    """Put a torchvision Mask R-CNN's convolutional parts in ``dtype`` (module docstring).

    Returns the parts changed (none for float32). Only for inference: the parts no longer
    train like the originals.
    """
    if dtype == torch.float32:
        return []
    heads = model.roi_heads
    parts = {
        "backbone": (model, "backbone"),
        "rpn.head.conv": (model.rpn.head, "conv"),
        "roi_heads.mask_head": (heads, "mask_head"),
        "roi_heads.mask_predictor": (heads, "mask_predictor"),
    }
    done = []
    for name, (owner, attr) in parts.items():
        part = getattr(owner, attr, None)
        if part is None or isinstance(part, LowPrecision):
            continue
        setattr(owner, attr, LowPrecision(part, dtype))
        done.append(name)
    log.debug("running %s in %s", ", ".join(done), dtype)
    return done
