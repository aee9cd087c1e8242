"""YOLO segmentation export/import: layout, bridged holes and parts, round trip, bad files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from interchange_shapes import H, W, crop_iou, instances_by_image, make_project

from app.core import extras
from app.core.extras import MissingExtraError
from app.core.geometry import mask_to_polygons, polygons_to_mask
from app.core.import_problems import DatasetFormatError
from app.core.output_files import OutputRefusedError
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageRecord, ImageStatus, Instance, Polygon
from app.core.yolo import (
    YoloError,
    assign_splits,
    export_yolo,
    format_line,
    import_yolo,
    instance_ring,
    parse_line,
    ring_polygons,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("yolo")
    proj = make_project(root)
    with ProjectStore.open(proj) as store:
        report = export_yolo(store, root / "yolo", fractions={"val": 0.25})
    assert set(report.images) == {"train", "val"} and report.instances == 2000
    assert sum(report.images.values()) == 4
    assert report.bridged == 4 * 3 * 100 - 4  # kinds 1, 2 and 4 of 499 cells per image
    assert not report.skipped and not report.stale
    return proj, root / "yolo"


def test_layout_and_data_yaml(exported):
    _, out = exported
    doc = yaml.safe_load((out / "data.yaml").read_text())
    assert doc["names"] == {0: "nucleus", 1: "debris"}
    assert Path(doc["path"]) == out.resolve()
    assert (out / doc["train"]).is_dir() and (out / doc["val"]).is_dir()
    labels = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt"))
    images = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*.png"))
    assert [p.replace("labels/", "images/").replace(".txt", ".png") for p in labels] == images
    assert any(p.startswith("images/val/") for p in images)
    assert "images/train/plate/sub/c.png" in images or "images/val/plate/sub/c.png" in images
    for label in labels:
        for line in (out / label).read_text().splitlines():
            values = [float(v) for v in line.split()]
            assert values[0] in (0, 1) and len(values) % 2 == 1 and len(values) >= 7
            assert 0.0 <= min(values[1:]) and max(values[1:]) <= 1.0


def test_round_trip_into_a_new_project_keeps_every_instance(exported, tmp_path):
    proj, out = exported
    with ProjectStore.open(tmp_path / "new", create=True) as store:
        report = import_yolo(store, out)
        assert report.images == 4 and report.images_added == 4 and report.instances == 2000
        assert report.categories_added == ["1:nucleus", "2:debris"]
        back = instances_by_image(store)
    with ProjectStore.open(proj) as original:
        before = instances_by_image(original)
    assert set(back) == set(before)
    for name, instances in before.items():
        assert len(back[name]) == len(instances)
        for a, b in zip(instances, back[name], strict=True):
            assert a.category_id == b.category_id
            assert crop_iou(a.polygons, b.polygons) >= 0.98
            assert len(b.polygons) == len(a.polygons)
            assert sum(len(p.holes) for p in b.polygons) == sum(len(p.holes) for p in a.polygons)


def test_round_trip_onto_the_same_project_matches_its_images(exported, tmp_path):
    proj, out = exported
    with ProjectStore.open(proj) as store:
        report = import_yolo(store, out)
        assert report.images == 0 and report.images_added == 0
        assert all("use --replace" in why for _, why in report.skipped)
        report = import_yolo(store, out, replace=True)
        assert report.images == 4 and report.images_added == 0 and report.instances == 2000
        assert len(store.images()) == 4


def test_pixel_edge_polygons_come_back_vertex_for_vertex():
    m = np.zeros((H, W), np.uint8)
    cv2.rectangle(m, (33, 40), (120, 171), 1, -1)
    (polygon,) = mask_to_polygons(m, tolerance=0.0)
    ring, joined = instance_ring([polygon], W, H)
    assert joined == 1
    _, points = parse_line(format_line(0, ring, W, H), 1)
    assert ring_polygons(points, W, H) == [polygon]


def test_holes_stay_empty_under_ultralytics_fillpoly():
    """Ultralytics rasterises a label with cv2.fillPoly: bridges must cancel, holes stay empty."""
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (100, 100), 60, 1, -1)
    cv2.circle(m, (80, 90), 15, 0, -1)
    cv2.circle(m, (125, 115), 12, 0, -1)
    cv2.circle(m, (300, 150), 40, 1, -1)
    polygons = mask_to_polygons(m, tolerance=0.0)
    ring, joined = instance_ring(polygons, W, H)
    assert joined == 4
    _, points = parse_line(format_line(0, ring, W, H), 1)
    filled = np.zeros((H, W), np.uint8)
    cv2.fillPoly(filled, [np.round(points * [W, H]).astype(np.int32)], 1)
    separate = np.zeros((H, W), np.uint8)
    rings = [np.round(r).astype(np.int32) for p in polygons for r in (p.exterior, *p.holes)]
    cv2.fillPoly(separate, rings, 1)
    assert filled[90, 80] == 0 and filled[115, 125] == 0 and filled[150, 300] == 1
    # only the bridges' one-pixel lines differ
    assert np.count_nonzero(filled != separate) < 0.01 * np.count_nonzero(separate)


def test_vertices_outside_the_image_are_clipped_to_it():
    triangle = Polygon([[-50.0, 10.0], [100.0, 10.0], [100.0, 400.0]])
    ring, _ = instance_ring([triangle], W, H)
    assert ring[:, 0].min() >= 0 and ring[:, 1].max() <= H
    _, points = parse_line(format_line(0, ring, W, H), 1)
    back = ring_polygons(points, W, H)
    inside = polygons_to_mask([triangle], H, W)
    assert crop_iou(back, mask_to_polygons(inside, tolerance=0.0, min_area=0.0)) >= 0.98
    assert instance_ring([Polygon([[-9.0, -9.0], [-1.0, -9.0], [-1.0, -1.0]])], W, H) is None


def test_splits_follow_each_path_and_keep_some_training_images():
    records = [ImageRecord(k, f"img/{k:04d}.png", 10, 10) for k in range(1000)]
    splits = assign_splits(records, {"val": 0.1, "test": 0.05})
    counts = {s: list(splits.values()).count(s) for s in ("train", "val", "test")}
    assert 60 < counts["val"] < 140 and 20 < counts["test"] < 80
    more = assign_splits(
        [*records, ImageRecord(5000, "img/new.png", 10, 10)], {"val": 0.1, "test": 0.05}
    )
    assert all(more[k] == v for k, v in splits.items())
    two = assign_splits(records[:2], {"val": 0.1})
    assert sorted(two.values()) == ["train", "val"]
    assert assign_splits(records[:1], {"val": 0.5}) == {0: "train"}
    with pytest.raises(YoloError, match="leave some for train"):
        assign_splits(records, {"val": 0.6, "test": 0.4})


def _dataset(root: Path, lines: list[str], names: str = "names: [cell, debris]\n") -> Path:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "train" / "x.png"), np.zeros((50, 80), np.uint8))
    cv2.imwrite(str(root / "images" / "train" / "y.png"), np.zeros((50, 80), np.uint8))
    (root / "labels" / "train" / "y.txt").write_text("0 0.1 0.1 0.5 0.1 0.3 0.6\n")
    (root / "labels" / "train" / "x.txt").write_text("".join(f"{line}\n" for line in lines))
    (root / "data.yaml").write_text(names)
    return root


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("0 0.1 0.1 0.5 0.1 0.3", "odd number of coordinates (5)"),
        ("0 0.1 0.1 0.5 1.2 0.3 0.6", "point (0.5, 1.2) lies outside 0..1"),
        ("0 -0.1 0.1 0.5 0.2 0.3 0.6", "point (-0.1, 0.1) lies outside 0..1"),
        ("2 0.1 0.1 0.5 0.1 0.3 0.6", "class 2 is not one of data.yaml's classes 0..1"),
        ("0.5 0.1 0.1 0.5 0.1 0.3 0.6", "class 0.5 is not one of"),
        ("0 0.1 0.1 zero 0.1 0.3 0.6", "not a number: 'zero'"),
        ("0 0.1 0.1 nan 0.1 0.3 0.6", "coordinates must be finite"),
        ("0 0.5 0.5 0.2 0.2", "4 numbers are a box (a detection label)"),
        ("1 0.1 0.1", "a polygon needs at least 3 points, not 1"),
    ],
)
def test_bad_lines_name_file_and_line_and_import_nothing(tmp_path, line, why):
    folder = _dataset(tmp_path / "ds", ["0 0.1 0.1 0.5 0.1 0.3 0.6", "", line])
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        with pytest.raises(DatasetFormatError) as err:
            import_yolo(store, folder)
        assert f"labels/train/x.txt:3: {why}" in str(err.value)
        assert "nothing was imported" in str(err.value)
        assert store.images() == [] and store.categories() == []


def test_every_bad_line_is_listed(tmp_path):
    folder = _dataset(tmp_path / "ds", ["0 0.1", "7 0.1 0.1 0.5 0.1 0.3 0.6", "0 0.1 0.2 0.3"])
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        with pytest.raises(DatasetFormatError, match="3 malformed entries") as err:
            import_yolo(store, folder)
    for number in (1, 2, 3):
        assert f"x.txt:{number}:" in str(err.value)


@pytest.mark.parametrize(
    ("names", "why"),
    [
        ("nc: 2\n", "no 'names'"),
        ("names: {0: cell, 2: debris}\n", "number the classes 0..1"),
        ("names: [cell, cell]\n", "both named 'cell'"),
        ("names: [cell, ''\n", "not readable YAML"),
    ],
)
def test_bad_data_yaml_is_refused(tmp_path, names, why):
    folder = _dataset(tmp_path / "ds", [], names)
    with (
        ProjectStore.open(tmp_path / "proj", create=True) as store,
        pytest.raises(YoloError, match=why),
    ):
        import_yolo(store, folder)


def test_roboflow_layout_empty_labels_and_matching_by_name(tmp_path):
    ds = tmp_path / "rf"
    for split in ("train", "valid"):
        (ds / split / "images").mkdir(parents=True)
        (ds / split / "labels").mkdir(parents=True)
    cv2.imwrite(str(ds / "train" / "images" / "p.jpg"), np.zeros((40, 40, 3), np.uint8))
    (ds / "train" / "labels" / "p.txt").write_text("0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n")
    (ds / "valid" / "labels" / "q.txt").write_text("")  # an image without objects
    (ds / "valid" / "labels" / "gone.txt").write_text("0 0.1 0.1 0.5 0.1 0.3 0.6\n")
    (ds / "train" / "labels" / "classes.txt").write_text("cell\n")
    (ds / "data.yaml").write_text("train: ../train/images\nnc: 1\nnames: ['cell']\n")
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        (qid,) = store.add_images([NewImage("elsewhere/q.tif", 40, 30)])
        report = import_yolo(store, ds, status=ImageStatus.PROPOSED)
        assert report.images == 2 and report.images_added == 1 and report.instances == 1
        assert report.skipped == [
            ("train/labels/classes.txt", "a class list, not labels"),
            (
                "valid/labels/gone.txt",
                "no image beside it in images/ and no project image named 'gone'",
            ),
        ]
        assert store.image(qid).status == ImageStatus.PROPOSED and store.instances(qid) == []
        p = store.image_by_path("../rf/train/images/p.jpg")
        (inst,) = store.instances(p.id)
        assert inst.source.value == "model"
        assert np.array_equal(inst.polygons[0].exterior, [[10, 10], [30, 10], [30, 30], [10, 30]])


def test_export_refuses_to_overwrite_and_the_images_folder(tmp_path):
    proj = tmp_path / "proj"
    with ProjectStore.open(proj, create=True) as store:
        store.add_category("cell")
        (tmp_path / "imgs").mkdir()
        cv2.imwrite(str(tmp_path / "imgs" / "a.png"), np.zeros((20, 20), np.uint8))
        (iid,) = store.add_images([NewImage("../imgs/a.png", 20, 20)])
        store.add_instances(iid, [Instance(1, [Polygon([[1, 1], [9, 1], [9, 9]])])])
        store.set_image_status(iid, ImageStatus.DONE)
        with pytest.raises(OutputRefusedError, match="holds the project's images"):
            export_yolo(store, tmp_path / "imgs")
        export_yolo(store, tmp_path / "out")
        with pytest.raises(OutputRefusedError, match="--overwrite"):
            export_yolo(store, tmp_path / "out")
        (tmp_path / "out" / "labels" / "train" / "old.txt").write_text("")
        report = export_yolo(store, tmp_path / "out", overwrite=True)
        assert report.stale == [tmp_path / "out" / "labels" / "train" / "old.txt"]


def test_missing_extra_names_it(tmp_path, monkeypatch):
    real = extras.importlib.import_module

    def no_yaml(name):
        if name == "yaml":
            raise ImportError("No module named 'yaml'")
        return real(name)

    monkeypatch.setattr(extras.importlib, "import_module", no_yaml)
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        with pytest.raises(MissingExtraError, match=r"pip install 'maskloop\[export\]'"):
            export_yolo(store, tmp_path / "out")


def _ultralytics_label_path(image: Path) -> Path:
    """How Ultralytics finds an image's label (img2label_paths): last /images/ -> /labels/."""
    head, tail = str(image).rsplit("/images/", 1)
    return Path(f"{head}/labels/{tail}").with_suffix(".txt")


def test_a_folder_named_images_below_the_root_still_finds_its_labels(tmp_path):
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        store.add_category("cell")
        for name in ("images/x.png", "other/y.png"):
            path = tmp_path / "data" / name
            path.parent.mkdir(parents=True)
            cv2.imwrite(str(path), np.zeros((20, 30), np.uint8))
            (iid,) = store.add_images([NewImage(f"../data/{name}", 30, 20)])
            store.add_instances(iid, [Instance(1, [Polygon([[3, 3], [20, 3], [20, 15]])])])
            store.set_image_status(iid, ImageStatus.DONE)
        export_yolo(store, tmp_path / "out", fractions={})
        images = sorted((tmp_path / "out" / "images").rglob("*.png"))
        assert [p.relative_to(tmp_path / "out").as_posix() for p in images] == [
            "images/train/images_/x.png",
            "images/train/other/y.png",
        ]
        for image in images:
            assert _ultralytics_label_path(image).read_text().startswith("0 ")
        report = import_yolo(store, tmp_path / "out", replace=True)
        assert report.images == 2 and report.images_added == 0


def test_links_out_of_the_dataset_folder_are_not_followed(tmp_path):
    folder = _dataset(tmp_path / "ds", ["0 0.1 0.1 0.5 0.1 0.3 0.6"])
    outside = tmp_path / "secret"
    outside.mkdir()
    cv2.imwrite(str(outside / "z.png"), np.zeros((50, 80), np.uint8))
    (outside / "w.txt").write_text("0 0.1 0.1 0.5 0.1 0.3 0.6\n")
    (folder / "images" / "train" / "z.png").symlink_to(outside / "z.png")
    (folder / "labels" / "train" / "z.txt").write_text("0 0.1 0.1 0.5 0.1 0.3 0.6\n")
    (folder / "images" / "train" / "w.png").symlink_to(folder / "images" / "train" / "x.png")
    (folder / "labels" / "train" / "w.txt").symlink_to(outside / "w.txt")
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        report = import_yolo(store, folder)
        assert sorted(Path(r.path).name for r in store.images()) == ["x.png", "y.png"]
        assert report.skipped == [
            ("labels/train/w.txt", "links outside the folder; not followed"),
            (
                "labels/train/z.txt",
                "no image beside it in images/ and no project image named 'train/z'",
            ),
        ]


def test_an_image_whose_file_has_gone_is_listed_and_the_rest_written(tmp_path):
    with ProjectStore.open(tmp_path / "proj", create=True) as store:
        store.add_category("cell")
        (tmp_path / "imgs").mkdir()
        for name in ("a.png", "b.png"):
            cv2.imwrite(str(tmp_path / "imgs" / name), np.zeros((20, 20), np.uint8))
            (iid,) = store.add_images([NewImage(f"../imgs/{name}", 20, 20)])
            store.set_image_status(iid, ImageStatus.DONE)
        (tmp_path / "imgs" / "a.png").unlink()
        report = export_yolo(store, tmp_path / "out", fractions={})
    assert report.skipped == [("../imgs/a.png", "the image file is missing")]
    assert report.images == {"train": 1}
    assert (tmp_path / "out" / "labels" / "train" / "b.txt").read_text() == ""
    assert not (tmp_path / "out" / "labels" / "train" / "a.txt").exists()
