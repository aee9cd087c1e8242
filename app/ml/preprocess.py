"""The one image -> model-input conversion shared by training and prediction.

A model only works on images converted the way it was trained, so the conversion is
described by an ``InputSpec`` stored in the model card and applied by this single function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from app.errors import MaskLoopError

NORMALIZE_MODES = ("auto", "percentile", "minmax", "fixed")
CHANNEL_MODES = ("rgb", "gray", "stain")
# "auto" inverts dark-on-light images (brightfield, stained tissue: the background is the
# bright half) so that objects are bright on a dark background, as in fluorescence.
INVERT_MODES = ("none", "auto", "always")
# Percentiles of very large images are estimated on a strided subsample: same result to a
# fraction of a grey level, a fraction of the time.
_PERCENTILE_MAX_SAMPLES = 1 << 22
# Resize bounds a card may ask for. Below 32 px the backbone's coarsest feature map (stride
# 32) is empty; above 4096 px one image's features and pasted masks take many GB (a card
# asking 1e5 px would pass and then fail allocating); larger images are tiled instead.
MIN_INPUT_SIZE = 32
MAX_INPUT_SIZE = 4096


class InputSpecError(MaskLoopError):
    """An input specification (model card ``input`` block) is invalid."""


@dataclass(frozen=True)
class InputSpec:
    """How images are turned into model input.

    ``min_size``/``max_size`` are the model's resize bounds (torchvision's
    GeneralizedRCNNTransform). ``normalize``: "auto" divides uint8 by 255 and stretches
    other images between the ``percentiles``; "percentile" always stretches; "minmax"
    stretches between the image's min and max; "fixed" between ``low`` and ``high``.
    ``channels``: "rgb" keeps colour (gray is repeated, alpha dropped); "gray" averages the
    colour channels first, for models trained on single-channel data; "stain" is "gray"
    except for a colour image with a light background (one that ``invert`` turns), which
    gives its red plane: hematoxylin-stained nuclei absorb red light and eosin-stained
    tissue passes it, so pink stroma, as dark as the nuclei in the average, is light there
    (and "auto" inversion decides on the red plane too: stroma can cover half of a tissue
    image). ``invert``: "auto"
    turns the scaled image into ``1 - x`` when its median is above 0.5 (a light background:
    brightfield or stained tissue), "always" always does, "none" never; one model then sees
    dark-on-light nuclei as it sees fluorescent ones. ``channel``: the plane (0-based) a
    model sees of a two-channel or 5+-channel image (fluorescence stacks such as nuclei +
    cytoplasm); 1-, 3- and 4-channel images are grey, RGB and RGBA.
    """

    min_size: int = 800
    max_size: int = 1333
    normalize: str = "auto"
    percentiles: tuple[float, float] = (1.0, 99.8)
    low: float | None = None
    high: float | None = None
    channels: str = "rgb"
    invert: str = "none"
    channel: int = 0

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZE_MODES:
            raise InputSpecError(
                f"normalize={self.normalize!r}; use one of {', '.join(NORMALIZE_MODES)}."
            )
        if self.channels not in CHANNEL_MODES:
            raise InputSpecError(
                f"channels={self.channels!r}; use one of {', '.join(CHANNEL_MODES)}."
            )
        if not isinstance(self.channel, int) or isinstance(self.channel, bool) or self.channel < 0:
            raise InputSpecError(f"channel={self.channel!r}; it must be a whole number >= 0.")
        if self.invert not in INVERT_MODES:
            raise InputSpecError(
                f"invert={self.invert!r}; use one of {', '.join(INVERT_MODES)}."
            )
        if self.normalize == "fixed" and (
            self.low is None or self.high is None or self.high <= self.low
        ):
            raise InputSpecError('normalize="fixed" needs numbers low < high.')
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise InputSpecError(f"percentiles={self.percentiles}; need 0 <= low < high <= 100.")
        sizes = (self.min_size, self.max_size)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes) or not (
            MIN_INPUT_SIZE <= self.min_size <= self.max_size <= MAX_INPUT_SIZE
        ):
            raise InputSpecError(
                f"min_size={self.min_size!r}, max_size={self.max_size!r}; need whole numbers "
                f"{MIN_INPUT_SIZE} <= min_size <= max_size <= {MAX_INPUT_SIZE} (pixels). "
                "Images larger than max_size are cut into tiles, so a larger one is never needed."
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputSpecError(
                f"Unknown input option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}."
            )
        values = dict(d)
        if "percentiles" in values:
            values["percentiles"] = tuple(float(p) for p in values["percentiles"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["percentiles"] = list(self.percentiles)
        return d


def to_model_input(image: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """Float32 (3, H, W) tensor in [0, 1] at the image's original size.

    Accepts (H, W), (H, W, 1), (H, W, 3) and (H, W, 4) arrays of any integer, bool or float
    dtype. Resizing is left to the model (``min_size``/``max_size``).
    """
    arr, spec = _channels(image, spec)
    scaled = _normalize(arr, spec)
    if _inverts(scaled, spec):
        scaled = np.subtract(np.float32(1.0), scaled, out=scaled)
    if scaled.shape[2] == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


def image_spec(image: np.ndarray, spec: InputSpec) -> InputSpec:
    """``spec`` with its image-dependent choices fixed by ``image``: the intensity range
    (``normalize="fixed"``) and the inversion. Parts of one image (tiles, crops) converted
    with it map alike, so objects do not change at tile borders."""
    arr, spec = _channels(image, spec)
    data = arr.astype(np.float32, copy=False)
    found = _range(arr, data, np.isfinite(data), spec)
    changes: dict[str, Any] = {}
    if found is not None:
        changes.update(normalize="fixed", low=found[0], high=found[1])
    if spec.invert == "auto":
        changes["invert"] = "always" if _inverts(_normalize(arr, spec), spec) else "none"
    return replace(spec, **changes) if changes else spec


def _inverts(scaled: np.ndarray, spec: InputSpec) -> bool:
    if spec.invert != "auto":
        return spec.invert == "always"
    flat = scaled.reshape(-1)
    if flat.size > _PERCENTILE_MAX_SAMPLES:
        flat = flat[:: flat.size // _PERCENTILE_MAX_SAMPLES + 1]
    return float(np.median(flat)) > 0.5


def _channels(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, InputSpec]:
    """The planes the model sees, and ``spec`` with the inversion fixed where "stain" had to
    decide it (on the red plane) to pick the plane."""
    arr = _to_hwc(np.asarray(image), spec.channel)
    if spec.channels == "rgb" or arr.shape[2] != 3:
        return arr, spec
    if spec.channels == "stain":
        # float32 like the average, so that normalize="auto" stretches either plane alike
        red = arr[:, :, :1].astype(np.float32)
        if spec.invert == "auto":
            light = _inverts(_normalize(red, spec), spec)
            spec = replace(spec, invert="always" if light else "none")
        if spec.invert == "always":
            return red, spec
    return arr.astype(np.float32).mean(axis=2, keepdims=True), spec


def _to_hwc(arr: np.ndarray, channel: int) -> np.ndarray:
    if arr.ndim == 2:
        return arr[:, :, None]
    if arr.ndim == 3 and arr.shape[2] in (1, 3):
        return arr
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr[:, :, :3]
    if arr.ndim == 3 and arr.shape[2] >= 2:
        if channel >= arr.shape[2]:
            raise InputSpecError(
                f"The model card's input uses channel {channel}, but the image has "
                f"{arr.shape[2]} channels (0-{arr.shape[2] - 1}); set input.channel in the card."
            )
        return arr[:, :, channel : channel + 1]
    raise InputSpecError(
        f"Cannot use an image of shape {arr.shape}: expected (H, W) or (H, W, C). Convert "
        "multi-page stacks to one plane first."
    )


def _range(
    arr: np.ndarray, data: np.ndarray, finite: np.ndarray, spec: InputSpec
) -> tuple[float, float] | None:
    if arr.dtype == np.bool_:
        return None
    mode = spec.normalize
    if mode == "auto":
        if arr.dtype == np.uint8:
            return None
        mode = "percentile"
    if mode == "fixed":
        low, high = float(spec.low), float(spec.high)  # type: ignore[arg-type]
    elif not finite.any():
        low, high = 0.0, 1.0
    elif mode == "minmax":
        valid = data[finite]
        low, high = float(valid.min()), float(valid.max())
    else:
        low, high = _percentiles(data[finite] if not finite.all() else data, spec.percentiles)
    if high <= low:
        # A flat image: everything maps to 0 rather than dividing by zero.
        high = low + 1.0
    return low, high


def _normalize(arr: np.ndarray, spec: InputSpec) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if spec.normalize == "auto" and arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    data = arr.astype(np.float32, copy=False)
    finite = np.isfinite(data)
    low, high = _range(arr, data, finite, spec)  # type: ignore[misc]
    out = (data - np.float32(low)) / np.float32(high - low)
    out = np.where(finite, out, 0.0)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def _percentiles(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    flat = values.reshape(-1)
    if flat.size > _PERCENTILE_MAX_SAMPLES:
        flat = flat[:: flat.size // _PERCENTILE_MAX_SAMPLES + 1]
    low, high = np.percentile(flat, percentiles)
    return float(low), float(high)
