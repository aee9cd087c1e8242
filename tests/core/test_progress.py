"""Progress of imports and exports, and what a cancel leaves behind (nothing)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.core.coco import export_coco
from app.core.label_maps import export_label_maps, import_label_maps
from app.core.progress import CreatedFiles, OperationCancelled
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "p"
    with ProjectStore.open(root, create=True) as s:
        s.add_category("cell")
        s.add_images([NewImage(f"img/{k}.png", 32, 32) for k in range(3)])
        for k in (1, 2, 3):
            s.add_instances(k, [Instance(1, [Polygon([[2, 2], [12, 2], [12, 12], [2, 12]])])])
            s.set_image_status(k, ImageStatus.DONE)
        yield s


def _stop_at(step: int, seen: list):
    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == step:
            raise OperationCancelled("cancelled")

    return progress


def test_export_progress_reaches_the_total(store, tmp_path):
    seen: list = []
    export_label_maps(store, tmp_path / "maps", progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    seen.clear()
    export_coco(store, tmp_path / "a.json", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (3, 3)


def test_a_cancelled_export_leaves_no_file_behind(store, tmp_path):
    maps = tmp_path / "new" / "maps"
    with pytest.raises(OperationCancelled):
        export_label_maps(store, maps, progress=_stop_at(2, []))
    assert not (tmp_path / "new").exists()  # maps written before the cancel and folders gone
    with pytest.raises(OperationCancelled):
        export_coco(store, tmp_path / "a.json", progress=_stop_at(1, []))
    assert list(tmp_path.iterdir()) == [tmp_path / "p"]


def test_a_cancelled_export_keeps_files_it_did_not_create(tmp_path):
    old = tmp_path / "old.png"
    old.write_bytes(b"x")
    created = CreatedFiles()
    created.will_write(old)
    created.will_write(tmp_path / "sub" / "new.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new.png").write_bytes(b"y")
    created.remove()
    assert old.exists() and not (tmp_path / "sub").exists()


def test_a_cancelled_import_changes_nothing(store, tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    for k in range(3):
        labels = np.zeros((32, 32), np.uint16)
        labels[4:20, 4:20] = 1
        Image.fromarray(labels).save(folder / f"{k}.png")
    before = [(r.id, r.status, len(store.instances(r.id))) for r in store.images()]
    seen: list = []
    with pytest.raises(OperationCancelled):
        import_label_maps(store, folder, replace=True, progress=_stop_at(2, seen))
    assert [(r.id, r.status, len(store.instances(r.id))) for r in store.images()] == before
    seen.clear()
    report = import_label_maps(
        store, folder, replace=True, progress=lambda d, t: seen.append((d, t))
    )
    assert report.images == 3 and seen[-1] == (3, 3)
