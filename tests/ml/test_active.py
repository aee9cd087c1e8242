import numpy as np
import pytest

from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus
from app.ml.active import (
    boundary_uncertainty,
    detection_uncertainty,
    image_uncertainty,
    next_images,
)


def test_detection_uncertainty_peaks_at_half():
    u = detection_uncertainty(np.array([0.0, 0.25, 0.5, 0.9, 1.0]))
    np.testing.assert_allclose(u, [0.0, 0.5, 1.0, 0.2, 0.0])


def test_image_uncertainty_formula():
    assert image_uncertainty([0.99, 0.98, 0.97]) == pytest.approx(np.mean([0.02, 0.04, 0.06]))
    assert image_uncertainty([0.5, 0.55, 0.6]) > image_uncertainty([0.9, 0.95, 0.99])
    assert image_uncertainty([0.01, 0.02]) == 0.0  # below the floor: nothing seen
    assert image_uncertainty([]) == 0.0
    assert image_uncertainty([0.9], boundary=[0.6]) == pytest.approx((0.2 + 0.6) / 2)
    with pytest.raises(ValueError):
        image_uncertainty([0.9, 0.8], boundary=[0.1])


def test_boundary_uncertainty():
    p = np.array([[0.0, 0.3], [0.6, 1.0]])
    assert boundary_uncertainty(p) == 0.5
    assert boundary_uncertainty(np.zeros((0, 0))) == 0.0


@pytest.fixture
def store(tmp_path):
    s = ProjectStore.open(tmp_path / "p", create=True)
    s.add_images([NewImage(f"{i}.png", 8, 8) for i in range(6)])
    yield s
    s.close()


def test_next_images_uncertainty_order_skips_worked_on_images(store):
    for image_id, u in [(1, 0.2), (2, 0.9), (3, 0.5), (4, 0.95)]:
        store.set_uncertainty(image_id, u)
    store.set_image_status(4, ImageStatus.DONE)
    store.set_image_status(3, ImageStatus.PROPOSED)
    picked = [r.id for r in next_images(store, 4)]
    assert picked == [2, 3, 1, 5]  # 4 is done; 5 and 6 have no score yet (path order)


def test_next_images_random_is_seeded(store):
    a = [r.id for r in next_images(store, 6, "random", seed=1)]
    b = [r.id for r in next_images(store, 6, "random", seed=1)]
    assert a == b and sorted(a) == [1, 2, 3, 4, 5, 6]
    assert next_images(store, 0) == []
