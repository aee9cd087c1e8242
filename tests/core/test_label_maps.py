"""Label maps: 8/16-bit PNG and TIFF import matched by stem, 16-bit PNG export."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from app.core.geometry import polygons_to_mask
from app.core.label_maps import LabelMapError, export_label_maps, import_label_maps
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus

H, W = 40, 50


def _labels() -> np.ndarray:
    lab = np.zeros((H, W), np.uint16)
    lab[5:20, 5:20] = 1
    lab[5:20, 20:30] = 2  # touches 1
    lab[10:13, 10:13] = 0  # hole in 1
    lab[30:38, 35:48] = 1000
    return lab


@pytest.fixture
def store(tmp_path: Path):
    s = ProjectStore.open(tmp_path / "proj", create=True)
    s.add_category("nucleus", id=4)
    s.add_images([NewImage("img/a.tif", W, H), NewImage("img/b.png", W, H)])
    yield s
    s.close()


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering of the ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = {(int(x), int(y)) for x, y in zip(a[a > 0], b[b > 0], strict=True)}
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def test_import_16bit_png_and_tiff_then_export(store, tmp_path):
    src = tmp_path / "labels"
    src.mkdir()
    cv2.imwrite(str(src / "a_cp_masks.png"), _labels())
    tifffile.imwrite(src / "b.tif", _labels().astype(np.int32))
    (src / "stray.png").write_bytes(b"not a png")
    report = import_label_maps(store, src)
    assert report.images == 2 and report.instances == 6
    assert [r for r, _ in report.skipped] == ["stray.png"]
    a = store.image_by_path("img/a.tif")
    assert a.status == ImageStatus.DONE
    insts = store.instances(a.id)
    assert {i.category_id for i in insts} == {4}
    assert any(i.has_holes for i in insts)
    assert sum(polygons_to_mask(i.polygons, H, W).sum() for i in insts) == (_labels() > 0).sum()

    out = export_label_maps(store, tmp_path / "out")
    assert out.images == 2 and out.instances == 6 and out.overlap_pixels == 0
    back = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert back.dtype == np.uint16 and back.max() == 3
    assert _same_partition(back, _labels())
    assert (tmp_path / "out" / "b.png").exists()


def test_8bit_label_map_and_existing_work(store, tmp_path):
    src = tmp_path / "labels"
    src.mkdir()
    cv2.imwrite(str(src / "b.png"), (_labels() > 0).astype(np.uint8) * 7)
    assert import_label_maps(store, src, status=ImageStatus.PROPOSED).instances == 1  # one id
    again = import_label_maps(store, src)
    assert again.images == 0 and "--replace" in again.skipped[0][1]
    assert import_label_maps(store, src, replace=True).instances == 1


def test_size_mismatch_and_empty_folder(store, tmp_path):
    src = tmp_path / "labels"
    src.mkdir()
    with pytest.raises(LabelMapError):
        import_label_maps(store, src)
    cv2.imwrite(str(src / "a.png"), np.ones((5, 5), np.uint8))
    report = import_label_maps(store, src)
    assert report.images == 0 and "px" in report.skipped[0][1]


def test_rgb_label_map_is_refused(store, tmp_path):
    src = tmp_path / "labels"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.ones((H, W, 3), np.uint8))
    report = import_label_maps(store, src)
    assert report.images == 0 and "single-channel" in report.skipped[0][1]
