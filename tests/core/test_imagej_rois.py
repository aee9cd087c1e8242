"""ImageJ/Fiji ROI sets: export read by roifile's own reader, round trip, ImageJ's ROI kinds."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import roifile
from interchange_shapes import H, W, crop_iou, instances_by_image, make_project

from app.core import extras
from app.core.extras import MissingExtraError
from app.core.geometry import polygons_to_mask_crop
from app.core.imagej_rois import RoiError, export_rois, import_rois
from app.core.import_problems import DatasetFormatError
from app.core.output_files import OutputRefusedError
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rois")
    proj = make_project(root)
    with ProjectStore.open(proj) as store:
        report = export_rois(store, root / "rois")
    assert report.files == 4 and report.instances == 2000 and not report.skipped
    assert report.composite == 4 * 299  # rings, two-part objects, two-hole objects
    return proj, root / "rois"


def _even_odd(rings: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    for ring in rings:
        crop, x0, y0 = polygons_to_mask_crop([Polygon(ring)], H, W)
        mask[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] ^= crop
    return mask


def test_roifile_reads_every_roi_with_name_category_and_shape(exported):
    proj, out = exported
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.zip"))
    assert files == [
        "d_RoiSet.zip",
        "plate/a_RoiSet.zip",
        "plate/b_RoiSet.zip",
        "plate/sub/c_RoiSet.zip",
    ]
    rois = roifile.roiread(out / "plate" / "a_RoiSet.zip")
    with ProjectStore.open(proj) as store:
        instances = instances_by_image(store)["plate/a.png"]
        names = {c.id: c.name for c in store.categories()}
    assert len(rois) == len(instances) == 500
    assert [r.name for r in rois[:3]] == ["nucleus-0001", "debris-0002", "nucleus-0003"]
    with zipfile.ZipFile(out / "plate" / "a_RoiSet.zip") as zf:
        assert zf.namelist()[:2] == ["nucleus-0001.roi", "debris-0002.roi"]
    for roi, inst in zip(rois, instances, strict=True):
        assert roi.properties == {"category": names[inst.category_id]}
        assert roi.group == inst.category_id  # categories 1, 2 are groups 1, 2
        if roi.composite:
            assert len(inst.polygons) > 1 or inst.has_holes
            mask = _even_odd(roi.coordinates(multi=True))
        else:
            assert roi.roitype == roifile.ROI_TYPE.POLYGON
            mask = _even_odd([roi.coordinates()])
        crop, x0, y0 = polygons_to_mask_crop(inst.polygons, H, W)
        expected = np.zeros((H, W), bool)
        expected[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        assert np.array_equal(mask, expected)


def test_pixel_edge_polygons_are_integer_rois_hand_drawn_ones_subpixel(exported):
    _, out = exported
    rois = roifile.roiread(out / "d_RoiSet.zip")
    disk, hand_drawn = rois[0], rois[3]  # cell kinds 0 and 3
    assert not disk.subpixelresolution and disk.integer_coordinates is not None
    assert hand_drawn.subpixelresolution
    assert not np.array_equal(hand_drawn.coordinates(), np.round(hand_drawn.coordinates()))


def test_round_trip_into_a_new_project_keeps_every_instance(exported, tmp_path):
    proj, out = exported
    with ProjectStore.open(proj) as original:
        before = instances_by_image(original)
        records = original.images()
    with ProjectStore.open(tmp_path / "new", create=True) as store:
        store.add_images([NewImage(r.path, r.width, r.height) for r in records])
        report = import_rois(store, out)
        assert report.images == 4 and report.instances == 2000 and not report.skipped
        assert report.categories_added == ["1:nucleus", "2:debris"]
        back = instances_by_image(store)
    for name, instances in before.items():
        assert len(back[name]) == len(instances)
        for a, b in zip(instances, back[name], strict=True):
            assert a.category_id == b.category_id
            assert crop_iou(a.polygons, b.polygons) >= 0.98
            assert len(b.polygons) == len(a.polygons)
            assert sum(len(p.holes) for p in b.polygons) == sum(len(p.holes) for p in a.polygons)


def _roi_set(path: Path, rois: list, extra: dict[str, bytes] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for k, roi in enumerate(rois):
            zf.writestr(f"{k:04d}.roi", roi.tobytes())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)


def _project(tmp_path: Path) -> ProjectStore:
    store = ProjectStore.open(tmp_path / "proj", create=True)
    store.add_category("cell")
    store.add_images([NewImage("img/x.tif", 100, 80), NewImage("img/y.tif", 100, 80)])
    return store


def test_imagej_roi_kinds_from_fiji(tmp_path):
    rect = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.RECT, left=10, top=20, right=30, bottom=25)
    oval = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.OVAL, left=40, top=10, right=60, bottom=40)
    traced = roifile.ImagejRoi.frompoints(np.array([[70, 10], [90, 10], [90, 30], [70, 30]]))
    traced.roitype = roifile.ROI_TYPE.TRACED
    line = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.LINE, x1=1, y1=1, x2=50, y2=50)
    point = roifile.ImagejRoi.frompoints(np.array([[5.5, 5.5]]))
    point.roitype = roifile.ROI_TYPE.POINT
    other_plane = roifile.ImagejRoi.frompoints(np.array([[1, 1], [9, 1], [9, 9]]), position=2)
    _roi_set(tmp_path / "rois" / "x.zip", [rect, oval, traced, line, point, other_plane])
    with _project(tmp_path) as store:
        report = import_rois(store, tmp_path / "rois")
        assert report.images == 1 and report.instances == 3
        assert [why for _, why in report.skipped] == [
            "a line ROI has no area",
            "a point ROI has no area",
            "it lies on plane 3 of a stack; MaskLoop shows the first plane",
        ]
        x = store.image_by_path("img/x.tif")
        insts = store.instances(x.id)
        assert {i.category_id for i in insts} == {1}
        areas = [int(polygons_to_mask_crop(i.polygons, 80, 100)[0].sum()) for i in insts]
        assert areas[0] == 20 * 5 and areas[2] == 20 * 20
        assert abs(areas[1] - np.pi * 10 * 15) < 0.05 * np.pi * 10 * 15


def test_a_broken_entry_names_file_and_entry_and_imports_nothing(tmp_path):
    good = roifile.ImagejRoi.frompoints(np.array([[1, 1], [9, 1], [9, 9]]))
    _roi_set(tmp_path / "rois" / "y_RoiSet.zip", [good])
    _roi_set(tmp_path / "rois" / "x_RoiSet.zip", [good], {"bad.roi": b"Iout" + b"\x00" * 10})
    (tmp_path / "rois" / "sub").mkdir()
    (tmp_path / "rois" / "sub" / "z.zip").write_bytes(b"not a zip")
    (tmp_path / "elsewhere.zip").write_bytes(b"not read")
    (tmp_path / "rois" / "link.zip").symlink_to(tmp_path / "elsewhere.zip")
    with _project(tmp_path) as store:
        with pytest.raises(DatasetFormatError) as err:
            import_rois(store, tmp_path / "rois")
        message = str(err.value)
        assert "x_RoiSet.zip/bad.roi: not an ImageJ ROI" in message
        assert "sub/z.zip: not a readable zip file" in message
        assert "link.zip" not in message
        assert all(store.instances(r.id) == [] for r in store.images())
        assert [c.name for c in store.categories()] == ["cell"]


def test_unmatched_and_existing_work(tmp_path):
    good = roifile.ImagejRoi.frompoints(np.array([[1, 1], [9, 1], [9, 9]]))
    _roi_set(tmp_path / "rois" / "nothing_RoiSet.zip", [good])
    _roi_set(tmp_path / "rois" / "x_RoiSet.zip", [good])
    with _project(tmp_path) as store:
        (tmp_path / "rois" / "link_RoiSet.zip").symlink_to(tmp_path / "rois" / "x_RoiSet.zip")
        (tmp_path / "rois" / "out_RoiSet.zip").symlink_to(tmp_path / "proj" / "maskloop.sqlite")
        report = import_rois(store, tmp_path / "rois", status=ImageStatus.PROPOSED)
        assert report.skipped == [
            ("out_RoiSet.zip", "links outside the folder; not followed"),
            ("link_RoiSet.zip", "no project image named 'link'"),
            ("nothing_RoiSet.zip", "no project image named 'nothing'"),
        ]
        assert store.image_by_path("img/x.tif").status == ImageStatus.PROPOSED
        report = import_rois(store, tmp_path / "rois")
        assert report.images == 0 and "use --replace" in report.skipped[-1][1]
        with pytest.raises(RoiError, match="no ImageJ ROI sets"):
            import_rois(store, tmp_path / "proj")


def test_export_refuses_the_images_folder_and_existing_files(tmp_path):
    with _project(tmp_path) as store:
        store.set_image_status(1, ImageStatus.DONE)
        with pytest.raises(OutputRefusedError, match="holds the project's images"):
            export_rois(store, tmp_path / "proj" / "img")
        assert export_rois(store, tmp_path / "out").files == 1
        assert (tmp_path / "out" / "x_RoiSet.zip").is_file()
        assert roifile.roiread(tmp_path / "out" / "x_RoiSet.zip") == []
        with pytest.raises(OutputRefusedError, match="--overwrite"):
            export_rois(store, tmp_path / "out")
        assert export_rois(store, tmp_path / "out", overwrite=True).files == 1


def test_missing_extra_names_it(tmp_path, monkeypatch):
    real = extras.importlib.import_module

    def no_roifile(name):
        if name == "roifile":
            raise ImportError("No module named 'roifile'")
        return real(name)

    monkeypatch.setattr(extras.importlib, "import_module", no_roifile)
    with _project(tmp_path) as store, pytest.raises(MissingExtraError, match=r"maskloop\[export\]"):
        import_rois(store, tmp_path)


def test_overlapping_parts_are_written_as_imagej_will_fill_them(tmp_path):
    square = Polygon([[10, 10], [30, 10], [30, 30], [10, 30]])
    shifted = Polygon([[20, 20], [40, 20], [40, 40], [20, 40]])
    hole_sticking_out = Polygon(
        [[50, 10], [70, 10], [70, 30], [50, 30]], [[[60, 5], [65, 5], [65, 20], [60, 20]]]
    )
    with _project(tmp_path) as store:
        store.add_instances(1, [Instance(1, [square, shifted]), Instance(1, [hole_sticking_out])])
        store.set_image_status(1, ImageStatus.DONE)
        export_rois(store, tmp_path / "out")
        insts = store.instances(1)
    rois = roifile.roiread(tmp_path / "out" / "x_RoiSet.zip")
    assert all(roi.composite for roi in rois)
    for roi, inst in zip(rois, insts, strict=True):
        mask = np.zeros((80, 100), bool)
        for ring in roi.coordinates(multi=True):
            crop, x0, y0 = polygons_to_mask_crop([Polygon(ring)], 80, 100)
            mask[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] ^= crop
        crop, x0, y0 = polygons_to_mask_crop(inst.polygons, 80, 100)
        expected = np.zeros((80, 100), bool)
        expected[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        assert np.array_equal(mask, expected)
