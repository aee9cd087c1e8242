"""Store lookups answered in one query: the next image to review."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus

REVIEW = (ImageStatus.NEW, ImageStatus.PROPOSED, ImageStatus.IN_PROGRESS)


@pytest.fixture
def store(tmp_path: Path):
    """a..f in path order; b and e done, d skipped; uncertainty makes f, c, a the top three."""
    with ProjectStore.open(tmp_path / "p", create=True) as s:
        ids = s.add_images([NewImage(f"{name}.png", 8, 8) for name in "abcdef"])
        by_name = dict(zip("abcdef", ids, strict=True))
        for name, status in (("b", ImageStatus.DONE), ("e", ImageStatus.DONE)):
            s.set_image_status(by_name[name], status)
        s.set_image_status(by_name["d"], ImageStatus.SKIPPED)
        for name, u in (("a", 0.2), ("c", 0.5), ("f", 0.9)):
            s.set_uncertainty(by_name[name], u)
        s.by_name = by_name
        yield s


def name_of(store, image_id):
    return None if image_id is None else store.image(image_id).path[0]


def test_the_next_image_to_review_follows_the_order_and_wraps(store) -> None:
    n = store.by_name
    nxt = {k: name_of(store, store.next_image(n[k], status=REVIEW)) for k in "abcdef"}
    assert nxt == {"a": "c", "b": "c", "c": "f", "d": "f", "e": "f", "f": "a"}
    assert name_of(store, store.next_image(None, status=REVIEW)) == "a"
    by_uncertainty = store.next_image(n["f"], status=REVIEW, order="uncertainty")
    assert name_of(store, by_uncertainty) == "c"  # f 0.9, c 0.5, a 0.2, then unscored
    assert name_of(store, store.next_image(n["a"], status=REVIEW, order="uncertainty")) == "f"


def test_the_current_image_is_never_its_own_next(store) -> None:
    n = store.by_name
    for k in "af":
        store.set_image_status(n[k], ImageStatus.DONE)
    assert store.next_image(n["c"], status=REVIEW) is None  # only c itself is left
    assert name_of(store, store.next_image(n["b"], status=REVIEW)) == "c"


def test_missing_images_are_neither_next_nor_a_starting_point(store) -> None:
    n = store.by_name
    store.set_missing([n["c"]], True)
    assert name_of(store, store.next_image(n["b"], status=REVIEW)) == "f"
    assert name_of(store, store.next_image(n["c"], status=REVIEW)) == "a"  # from the start


def test_an_unknown_order_is_refused(store) -> None:
    with pytest.raises(ValueError, match="unknown order"):
        store.next_image(None, status=REVIEW, order="random")


def test_next_image_in_a_large_project_is_one_quick_query(tmp_path: Path) -> None:
    n = 20_000
    with ProjectStore.open(tmp_path / "big", create=True) as store:
        ids = store.add_images([NewImage(f"img/{i:05d}.png", 8, 8) for i in range(n)])
        with store.transaction():
            for image_id in ids[: n - 1]:
                store.set_image_status(image_id, ImageStatus.DONE)
        t0 = time.perf_counter()
        found = store.next_image(ids[n // 2], status=REVIEW)  # the one left is at the end
        seconds = time.perf_counter() - t0
        assert found == ids[-1]
        assert seconds < 0.5, f"{seconds:.3f} s for one next-image lookup at {n} images"
