"""The assists' feature cache (app.ml.feature_cache): one model's windows, bounded."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from app.ml.feature_cache import FeatureCache, FeatureCacheError, ModelIdentity, WindowFeatures
from app.ml.tiling import Tile


def test_feature_cache_stores_one_models_features() -> None:
    """Storing another model's features drops the first model's, and a lookup with the
    other identity never answers."""

    def entry(x: int) -> WindowFeatures:
        t = torch.zeros(1, 3, 8, 8)
        return WindowFeatures(Tile(x, 0, x + 8, 8), (8, 64), ImageList(t, [(8, 8)]), {"0": t})

    a, b = ModelIdentity("m", 1, 1), ModelIdentity("m", 2, 2)
    cache = FeatureCache()
    cache.put(a, "img", entry(0))
    assert cache.get(a, "img", entry(0).window) is not None
    assert cache.get(b, "img", entry(0).window) is None
    cache.put(b, "img", entry(8))
    assert len(cache) == 1 and cache.get(a, "img", entry(8).window) is None
    assert cache.nbytes == entry(8).nbytes
    with pytest.raises(FeatureCacheError, match="at least 0"):
        FeatureCache(max_bytes=-1)


def test_the_least_recently_used_window_is_evicted_first() -> None:
    def entry(x: int) -> WindowFeatures:
        t = torch.zeros(1, 3, 8, 8)
        return WindowFeatures(Tile(x, 0, x + 8, 8), (8, 64), ImageList(t, [(8, 8)]), {"0": t})

    model = ModelIdentity("m", 1, 1)
    cache = FeatureCache(max_bytes=2 * entry(0).nbytes)
    cache.put(model, "img", entry(0))
    cache.put(model, "img", entry(8))
    assert cache.get(model, "img", entry(0).window) is not None  # now the most recent
    cache.put(model, "img", entry(16))
    assert cache.get(model, "img", entry(8).window) is None
    assert cache.get(model, "img", entry(0).window) is not None
    assert cache.nbytes == 2 * entry(0).nbytes
