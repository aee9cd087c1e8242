"""How an image is shown: contrast, gamma and channels, turned into a QImage once per change.

Decoding and normalisation are done once per image / per settings change, never per paint.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PySide6.QtGui import QImage

from app.core.images import display_range, to_display8

# RGB32 (0xffRRGGBB words: bytes B, G, R, 255 on little-endian machines) is QPixmap's own
# format, so QPixmap.fromImage shares the buffer; RGBX8888 is in R, G, B, 255 order everywhere.
_FORMAT, _FROM_GRAY, _FROM_RGB = (
    (QImage.Format.Format_RGB32, cv2.COLOR_GRAY2BGRA, cv2.COLOR_RGB2BGRA)
    if sys.byteorder == "little"
    else (QImage.Format.Format_RGBX8888, cv2.COLOR_GRAY2RGBA, cv2.COLOR_RGB2RGBA)
)


@dataclass(frozen=True)
class DisplaySettings:
    """Display mapping. ``auto`` uses the percentiles; otherwise ``low``/``high`` are used."""

    auto: bool = True
    low_pct: float = 1.0
    high_pct: float = 99.8
    low: float = 0.0
    high: float = 255.0
    gamma: float = 1.0
    channels: tuple[int, ...] | None = None  # 1 or 3 channel indices; None: first three

    def with_(self, **changes: object) -> DisplaySettings:
        return replace(self, **changes)


def channel_count(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else int(image.shape[2])


def effective_range(image: np.ndarray, settings: DisplaySettings) -> tuple[float, float]:
    """The low/high that the settings map to black/white for this image."""
    if settings.auto:
        if image.dtype == np.uint8:
            return 0.0, 255.0
        plane = image if settings.channels is None else image[..., list(settings.channels)]
        return display_range(plane, (settings.low_pct, settings.high_pct))
    return settings.low, settings.high


def render_qimage(image: np.ndarray, settings: DisplaySettings) -> QImage:
    """A QImage (owning its pixels) of ``image`` under ``settings``.

    The mapped pixels are expanded straight into the QImage's own buffer, in the format
    QPixmap uses, so ``QPixmap.fromImage`` shares the buffer instead of converting it: no
    other copy of the image is made on the way to the screen.
    """
    channels = settings.channels
    if channels is not None and (image.ndim == 2 or max(channels) >= image.shape[2]):
        channels = None
    low, high = effective_range(image, settings)
    if image.dtype == np.uint8 and settings.auto and settings.gamma == 1.0:
        pixels = to_display8(image, channels=channels)
    else:
        pixels = to_display8(image, low=low, high=high, gamma=settings.gamma, channels=channels)
    h, w = pixels.shape[:2]
    qimage = QImage(w, h, _FORMAT)
    buffer = np.ndarray(
        (h, w, 4), np.uint8, buffer=qimage.bits(), strides=(qimage.bytesPerLine(), 4, 1)
    )
    cv2.cvtColor(pixels, _FROM_GRAY if pixels.ndim == 2 else _FROM_RGB, dst=buffer)
    return qimage


def pixel_text(image: np.ndarray | None, x: float, y: float) -> str:
    """The raw value(s) under image coordinates (x, y), or '' outside the image."""
    if image is None:
        return ""
    c, r = int(np.floor(x)), int(np.floor(y))
    if not (0 <= r < image.shape[0] and 0 <= c < image.shape[1]):
        return ""
    value = image[r, c]
    if np.ndim(value) == 0:
        return f"{value:g}" if image.dtype.kind == "f" else str(int(value))
    return ", ".join(f"{v:g}" if image.dtype.kind == "f" else str(int(v)) for v in value)
