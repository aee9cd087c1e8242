"""Store lookups answered in one query: the next image to review, an image's instance ids."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.core.labelme import import_labelme
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon

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


def test_instance_ids_lists_an_images_instances_in_order(store) -> None:
    square = Polygon([[1, 1], [5, 1], [5, 5], [1, 5]])
    cat = store.add_category("cell")
    a, c = store.by_name["a"], store.by_name["c"]
    added = store.add_instances(a, [Instance(cat.id, [square]), Instance(cat.id, [square])])
    assert store.instance_ids(a) == [i.id for i in added]
    assert store.instance_ids(c) == []


def test_an_import_asks_only_for_ids_of_the_instances_it_replaces(tmp_path: Path, monkeypatch):
    """Skipping or replacing an annotated image needs no decoding of its outlines."""
    folder = tmp_path / "data"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((20, 20), np.uint8))
    shape = {"label": "cell", "points": [[1, 1], [9, 1], [9, 9]], "shape_type": "polygon"}
    doc = {"shapes": [shape], "imagePath": "a.png", "imageWidth": 20, "imageHeight": 20}
    (folder / "a.json").write_text(json.dumps(doc))
    with ProjectStore.open(tmp_path / "p", create=True) as s:
        cat = s.add_category("cell")
        (image_id,) = s.add_images([NewImage("../data/a.png", 20, 20)])
        square = Polygon([[2, 2], [6, 2], [6, 6], [2, 6]])
        s.add_instances(image_id, [Instance(cat.id, [square]), Instance(cat.id, [square])])

        def no_decoding(_image_id):
            raise AssertionError("the import decoded the image's outlines")

        monkeypatch.setattr(s, "instances", no_decoding)
        kept = import_labelme(s, folder)
        assert kept.images == 0 and "already has 2 instances" in kept.skipped[0][1]
        replaced = import_labelme(s, folder, replace=True)
        assert replaced.deleted == [("../data/a.png", 2)] and s.count_instances(image_id) == 1
