"""Display mapping on the open path: fast percentiles, the linear stretch and the QImage."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QImage, QPixmap

from app.core.images import display_range, to_display8
from app.ui.display import DisplaySettings, effective_range, render_qimage

RNG = np.random.default_rng(3)


def qimage_rgb(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    w, h = image.width(), image.height()
    raw = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * h)
    return raw.reshape(h, image.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()


def microscopy(h: int, w: int) -> np.ndarray:
    """Dim noisy background with a few bright blobs, like a fluorescence image."""
    image = RNG.normal(900, 60, (h, w))
    yy, xx = np.mgrid[:h, :w]
    for _ in range(30):
        cy, cx, r = RNG.uniform(0, h), RNG.uniform(0, w), RNG.uniform(5, 40)
        image += 20000 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.clip(image, 0, 65535).astype(np.uint16)


def test_histogram_percentiles_equal_numpy_percentiles_of_the_same_values():
    for dtype, top in ((np.uint16, 65535), (np.uint8, 255), (np.uint16, 7)):
        values = RNG.integers(0, top + 1, (300, 200)).astype(dtype)  # small: no subsample
        for pcts in ((1.0, 99.8), (0.0, 100.0), (37.3, 62.9)):
            expected = np.percentile(values, pcts)
            assert display_range(values, pcts) == pytest.approx(expected, abs=1e-6)


def test_subsampled_percentiles_are_close_to_the_exact_ones():
    image = microscopy(1500, 1700)  # subsampled every 4th row and column
    exact = np.percentile(image, (1.0, 99.8))
    low, high = display_range(image)
    span = exact[1] - exact[0]
    assert abs(low - exact[0]) < 0.005 * span and abs(high - exact[1]) < 0.02 * span


def test_linear_stretch_is_within_one_grey_level_of_exact():
    # Half-level lows: OpenCV builds differ in how they round a fractional subtrahend.
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    for low, high in ((0.0, 65535.0), (1000.4, 1200.9), (12.0, 60000.0), (5000.5, 5001.0), (5001.5, 5002.0), (100.5, 60000.0)):
        out = to_display8(levels, low=low, high=high).astype(int)
        x = np.clip((levels.astype(np.float64) - low) / (high - low), 0, 1)
        assert np.abs(out - np.floor(x * 255 + 0.5)).max() <= 1, (low, high)


@pytest.mark.parametrize(
    ("image", "settings"),
    [
        (microscopy(37, 53), DisplaySettings()),  # odd width: padded scanlines
        (microscopy(37, 53), DisplaySettings(auto=False, low=800, high=3000, gamma=0.6)),
        (RNG.integers(0, 256, (21, 33, 3), dtype=np.uint8), DisplaySettings()),
        (RNG.integers(0, 4000, (20, 30, 2), dtype=np.uint16), DisplaySettings()),
        (RNG.integers(0, 4000, (20, 30, 5), dtype=np.uint16), DisplaySettings(channels=(4, 0, 2))),
        (RNG.normal(size=(19, 23)).astype(np.float32), DisplaySettings()),
    ],
)
def test_qimage_shows_the_mapped_pixels(qapp, image, settings):
    qimage = render_qimage(image, settings)
    low, high = effective_range(image, settings)
    expected = to_display8(
        image, low=low, high=high, gamma=settings.gamma, channels=settings.channels
    )
    if expected.ndim == 2:  # gray shows as equal R, G and B
        expected = np.repeat(expected[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(qimage_rgb(qimage), expected)
    # The pixmap the scene makes from it (sharing its pixels) shows the same.
    np.testing.assert_array_equal(qimage_rgb(QPixmap.fromImage(qimage).toImage()), expected)
