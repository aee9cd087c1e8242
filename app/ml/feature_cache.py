"""The image windows' features an assist answers from, and the memory-bounded cache of them.

An assist on a window whose features are cached runs only the RoI heads. The features
belong to one model: storing another model's drops every cached window, so a model change
never answers from stale features.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.models.detection.image_list import ImageList

from app.errors import MaskLoopError
from app.ml.predictor import Predictor
from app.ml.tiling import Tile

log = logging.getLogger(__name__)

# Enough for the windows of a few dozen 1024 px images of the bundled model (9 tiles of
# about 8 MB each per image); a GPU model's features live in GPU memory.
DEFAULT_CACHE_BYTES = 512 << 20


class FeatureCacheError(MaskLoopError):
    """The feature cache cannot be configured as asked."""


@dataclass(frozen=True)
class ModelIdentity:
    """The model features were computed by. ``instance`` tells predictor objects apart: two
    predictors of one card (another device, precision or fine-tuned weights) never share
    features."""

    card_id: str
    model_version: int | None
    instance: int

    @classmethod
    def of(cls, predictor: Predictor) -> ModelIdentity:
        return cls(predictor.card.id, predictor.model_version, id(predictor.model))


@dataclass
class FloorDetections:
    """A window's detections down to the score floor, boxes in window pixels (for clicks)."""

    boxes: np.ndarray  # (N, 4) float64, window pixels at native scale
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) model labels, 1-based


@dataclass
class WindowFeatures:
    """One image window as the model's RoI heads see it, on the predictor's device."""

    window: Tile
    image_shape: tuple[int, int]  # (height, width) of the whole image
    images: ImageList  # the resized, padded input (the RPN needs it for clicks)
    features: dict[str, torch.Tensor]
    floor: FloorDetections | None = None  # filled by the first click in the window

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factors from window pixels to the model's resized input."""
        rh, rw = self.images.image_sizes[0]
        return rw / self.window.width, rh / self.window.height

    @property
    def nbytes(self) -> int:
        """Memory held (the floor detections, a few KB, are not counted)."""
        tensors = [self.images.tensors, *self.features.values()]
        return sum(t.element_size() * t.nelement() for t in tensors)


class FeatureCache:
    """The least recently used windows' features of one model, at most ``max_bytes`` in all.

    Keyed by (image key, window); features of another model are dropped as soon as a new
    model's are stored, so a model change can never answer from stale features.
    """

    def __init__(self, *, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise FeatureCacheError(f"feature cache size {max_bytes} must be at least 0 bytes.")
        self.max_bytes = max_bytes
        self.model: ModelIdentity | None = None
        self._entries: OrderedDict[tuple[Hashable, Tile], WindowFeatures] = OrderedDict()
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def get(self, model: ModelIdentity, image_key: Hashable, window: Tile) -> WindowFeatures | None:
        """The cached features (now most recently used), or None."""
        if model != self.model:
            return None
        entry = self._entries.get((image_key, window))
        if entry is not None:
            self._entries.move_to_end((image_key, window))
        return entry

    def put(self, model: ModelIdentity, image_key: Hashable, entry: WindowFeatures) -> None:
        """Store ``entry``, evicting the least recently used until the bound holds."""
        if model != self.model:
            if self._entries:
                log.info("model changed to %s: dropping %d cached windows", model, len(self))
            self.clear()
            self.model = model
        key = (image_key, entry.window)
        old = self._entries.pop(key, None)
        if old is not None:
            self._nbytes -= old.nbytes
        size = entry.nbytes
        if size > self.max_bytes:
            log.debug(
                "window features of %d bytes exceed the cache (%d): not kept", size, self.max_bytes
            )
            return
        self._entries[key] = entry
        self._nbytes += size
        while self._nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._nbytes -= evicted.nbytes

    def forget(self, image_key: Hashable, *, keep_shape: tuple[int, int] | None = None) -> int:
        """Drop the windows of one image (it changed or was closed), with ``keep_shape``
        only those computed for an image of another (height, width); returns how many."""
        keys = [
            k
            for k, e in self._entries.items()
            if k[0] == image_key and (keep_shape is None or e.image_shape != keep_shape)
        ]
        for key in keys:
            self._nbytes -= self._entries.pop(key).nbytes
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()
        self._nbytes = 0
