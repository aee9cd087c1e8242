"""COCO export/import: lossless round trips, pycocotools compatibility, all-or-nothing import."""

import copy
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from app.core.coco import (
    CocoImportError,
    build_coco,
    export_coco,
    import_coco,
    safe_relative_name,
)
from app.core.geometry import mask_to_polygons, polygons_to_mask, rle_counts, rle_encode
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon, Source

H, W = 64, 80


def _cell_masks(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = []
    for k in range(4):
        m = np.zeros((H, W), np.uint8)
        cx, cy = int(rng.integers(15, W - 15)), int(rng.integers(15, H - 15))
        cv2.ellipse(
            m, (cx, cy), (int(rng.integers(6, 12)), int(rng.integers(6, 12))), 0, 0, 360, 1, -1
        )
        if k == 0:
            cv2.circle(m, (cx, cy), 3, 0, -1)  # a hole: exported as RLE
        masks.append(m.astype(bool))
    return masks


@pytest.fixture
def project(tmp_path: Path) -> ProjectStore:
    """A project in tmp/proj whose images live beside it in tmp/imgs (stored with ../)."""
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    store = ProjectStore.open(tmp_path / "proj", create=True)
    store.add_category("nucleus", id=7)
    store.add_category("cell", id=2)
    for i, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        cv2.imwrite(str(images / name), np.zeros((H, W), np.uint8))
        (image_id,) = store.add_images([NewImage(f"../imgs/{name}", W, H)])
        insts = [
            Instance(category_id=7 if k % 2 else 2, polygons=mask_to_polygons(m))
            for k, m in enumerate(_cell_masks(i))
        ]
        store.add_instances(image_id, insts)
        store.set_image_status(image_id, ImageStatus.DONE)
    cv2.imwrite(str(images / "todo.png"), np.zeros((H, W), np.uint8))
    store.add_images([NewImage("../imgs/todo.png", W, H)])
    yield store
    store.close()


def _load(path: Path) -> dict:
    data = json.loads(path.read_text())
    data["info"].pop("date_created")
    return data


def _fresh(tmp_path: Path, name: str) -> ProjectStore:
    return ProjectStore.open(tmp_path / name, create=True)


@pytest.mark.parametrize("mode", ["auto", "polygon", "rle"])
def test_round_trip_gives_identical_json(project, tmp_path, mode):
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    export_coco(project, tmp_path / "0.json", segmentation=mode)
    with _fresh(tmp_path, "p1") as p1:
        import_coco(p1, tmp_path / "0.json", images_root=tmp_path / "imgs")
        export_coco(p1, first, segmentation=mode)
    with _fresh(tmp_path, "p2") as p2:
        report = import_coco(p2, first, images_root=tmp_path / "imgs")
        export_coco(p2, second, segmentation=mode)
    assert report.images == 3 and report.instances == 12 and not report.skipped
    assert _load(first) == _load(second)
    assert _load(tmp_path / "0.json") == _load(first)


def test_export_content(project, tmp_path):
    report = export_coco(project, tmp_path / "out.json")
    data = json.loads((tmp_path / "out.json").read_text())
    assert report.images == 3 and report.instances == 12
    assert report.rle_instances == 3 and report.polygon_instances == 9
    assert [c["id"] for c in data["categories"]] == [2, 7]
    assert [i["file_name"] for i in data["images"]] == ["a.png", "b.png", "sub/c.png"]
    assert [a["id"] for a in data["annotations"]] == list(range(1, 13))
    holed = [a for a in data["annotations"] if isinstance(a["segmentation"], dict)]
    assert len(holed) == 3 and all(isinstance(a["segmentation"]["counts"], str) for a in holed)
    assert not list(tmp_path.glob(".*tmp"))


def test_export_filters_status_and_root(project, tmp_path):
    report = export_coco(project, tmp_path / "o.json", statuses=[ImageStatus.NEW])
    assert report.images == 1 and report.instances == 0
    report = export_coco(
        project, tmp_path / "o.json", images_root=tmp_path / "imgs" / "sub", overwrite=True
    )
    assert report.images == 1 and len(report.skipped) == 2


def test_pycocotools_loads_and_cocoeval_is_perfect(project, tmp_path):
    path = tmp_path / "out.json"
    export_coco(project, path)
    gt = COCO(str(path))
    results = []
    for ann in gt.dataset["annotations"]:
        rle = gt.annToRLE(ann)
        counts = rle["counts"]
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "segmentation": {
                    "size": rle["size"],
                    "counts": counts if isinstance(counts, str) else counts.decode(),
                },
                "bbox": ann["bbox"],
                "score": 1.0,
            }
        )
    dt = gt.loadRes(results)
    for iou_type in ("segm", "bbox"):
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0)


def test_exported_masks_match_the_store(project, tmp_path):
    path = tmp_path / "out.json"
    export_coco(project, path)
    gt = COCO(str(path))
    images = {im["file_name"]: im["id"] for im in gt.dataset["images"]}
    record = project.image_by_path("../imgs/a.png")
    anns = gt.loadAnns(gt.getAnnIds(imgIds=[images["a.png"]]))
    for inst, ann in zip(project.instances(record.id), anns, strict=True):
        assert np.array_equal(gt.annToMask(ann).astype(bool), polygons_to_mask(inst.polygons, H, W))


def _coco_file(tmp_path: Path, annotations: list, images=None, categories=None) -> Path:
    data = {
        "images": images
        if images is not None
        else [{"id": 5, "file_name": "a.png", "width": W, "height": H}],
        "annotations": annotations,
        "categories": categories if categories is not None else [{"id": 40, "name": "cell"}],
    }
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data))
    return path


def test_import_reads_uncompressed_rle_and_crowd(project, tmp_path):
    mask = np.zeros((H, W), bool)
    mask[5:20, 30:50] = True
    mask[10:12, 35:40] = False
    rle = {"size": [H, W], "counts": rle_counts(rle_encode(mask)).tolist()}
    path = _coco_file(
        tmp_path,
        [
            {"id": 1, "image_id": 5, "category_id": 40, "segmentation": rle, "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 40, "segmentation": rle, "iscrowd": 1},
            {"id": 3, "image_id": 5, "category_id": 40, "segmentation": [[1, 1, 9, 1, 9, 9]]},
        ],
    )
    with _fresh(tmp_path, "p") as store:
        report = import_coco(store, path, images_root=tmp_path / "imgs", crowd="skip")
        assert report.instances == 2 and "crowd" in report.skipped[0][0]
        assert store.category(40).name == "cell"
        (image,) = store.images()
        first = store.instances(image.id)[0]
        assert first.has_holes and np.array_equal(polygons_to_mask(first.polygons, H, W), mask)
        assert image.status == ImageStatus.DONE
    with _fresh(tmp_path, "q") as store:
        report = import_coco(
            store, path, images_root=tmp_path / "imgs", crowd="import", status=ImageStatus.PROPOSED
        )
        assert report.instances == 3
        (image,) = store.images()
        assert image.status == ImageStatus.PROPOSED
        assert {i.source for i in store.instances(image.id)} == {Source.MODEL}


def test_import_reports_missing_images_and_existing_work(project, tmp_path):
    images = [
        {"id": 1, "file_name": "a.png", "width": W, "height": H},
        {"id": 2, "file_name": "gone.png", "width": W, "height": H},
        {"id": 3, "file_name": "todo.png", "width": W, "height": H},
    ]
    ann = {"image_id": 2, "category_id": 7, "segmentation": [[1, 1, 9, 1, 9, 9]]}
    anns = [ann, dict(ann, image_id=1), dict(ann, image_id=3)]
    cats = [{"id": 7, "name": "nucleus"}]
    path = _coco_file(tmp_path, anns, images, cats)
    report = import_coco(project, path, images_root=tmp_path / "imgs")
    reasons = dict(report.skipped)
    assert "not found" in reasons["gone.png"]
    assert "--replace" in reasons["a.png"]
    assert report.images == 1 and report.instances == 1 and report.images_added == 0
    todo = project.image_by_path("../imgs/todo.png")
    assert todo.status == ImageStatus.DONE and project.count_instances(todo.id) == 1
    report = import_coco(project, path, images_root=tmp_path / "imgs", replace=True)
    a = project.image_by_path("../imgs/a.png")
    assert project.count_instances(a.id) == 1 and report.images == 2


def _snapshot(store: ProjectStore) -> tuple:
    images = store.images(include_missing=True)
    instances = [(i.id, i.category_id) for im in images for i in store.instances(im.id)]
    return [(im.path, im.status) for im in images], store.categories(), instances


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../x.png", "sub/../../x.png", "C:\\x.png", "..\\x.png", ""]
)
def test_import_refuses_file_names_escaping_the_root(project, tmp_path, name):
    before = _snapshot(project)
    path = _coco_file(tmp_path, [], [{"id": 1, "file_name": name, "width": W, "height": H}])
    with pytest.raises(CocoImportError, match=r"images\[0\]\.file_name"):
        import_coco(project, path, images_root=tmp_path / "imgs")
    assert _snapshot(project) == before


def test_safe_relative_name():
    assert safe_relative_name("sub\\./a.png") == "sub/a.png"
    assert safe_relative_name("a/../b.png") is None


def test_symlink_out_of_the_root_is_not_followed(project, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    cv2.imwrite(str(outside / "x.png"), np.zeros((H, W), np.uint8))
    os.symlink(outside, tmp_path / "imgs" / "link")
    path = _coco_file(tmp_path, [], [{"id": 1, "file_name": "link/x.png", "width": W, "height": H}])
    report = import_coco(project, path, images_root=tmp_path / "imgs")
    assert report.images == 0 and "outside" in report.skipped[0][1]


def test_category_clash_with_used_category_changes_nothing(project, tmp_path):
    before = _snapshot(project)
    ann = {"image_id": 5, "category_id": 7, "segmentation": [[1, 1, 9, 1, 9, 9]]}
    path = _coco_file(
        tmp_path, [ann], [{"id": 5, "file_name": "todo.png", "width": W, "height": H}],
        [{"id": 7, "name": "mitochondrion"}],
    )  # fmt: skip
    with pytest.raises(CocoImportError, match="mitochondrion"):
        import_coco(project, path, images_root=tmp_path / "imgs")
    assert _snapshot(project) == before


def test_known_name_under_another_id_maps_by_name(project, tmp_path):
    ann = {"image_id": 5, "category_id": 40, "segmentation": [[1, 1, 9, 1, 9, 9]]}
    path = _coco_file(
        tmp_path, [ann], [{"id": 5, "file_name": "todo.png", "width": W, "height": H}],
        [{"id": 40, "name": "nucleus"}],
    )  # fmt: skip
    report = import_coco(project, path, images_root=tmp_path / "imgs")
    todo = project.image_by_path("../imgs/todo.png")
    assert [i.category_id for i in project.instances(todo.id)] == [7]
    assert "mapped" in report.skipped[0][1] and len(project.categories()) == 2


def test_unused_default_category_gives_way(tmp_path, project):
    with _fresh(tmp_path, "p") as store:
        store.add_category("object")  # what `maskloop init` makes: id 1
        path = _coco_file(tmp_path, [], categories=[{"id": 1, "name": "cell"}])
        report = import_coco(store, path, images_root=tmp_path / "imgs")
        assert [(c.id, c.name) for c in store.categories()] == [(1, "cell")]
        assert report.categories_added == ["1:cell"]


def test_malformed_entries_are_listed_with_positions(project, tmp_path):
    good = {"image_id": 5, "category_id": 40, "segmentation": [[1, 1, 9, 1, 9, 9]]}
    anns = [
        good,
        dict(good, category_id=99),
        dict(good, segmentation=[[1, 2, 3]]),
        dict(good, segmentation={"size": [H, W], "counts": "!!"}),
        dict(good, segmentation={"size": [1, 1], "counts": [1]}),
        "nonsense",
    ]
    before = _snapshot(project)
    with pytest.raises(CocoImportError) as err:
        import_coco(project, _coco_file(tmp_path, anns), images_root=tmp_path / "imgs")
    text = str(err.value)
    for k in range(1, 6):
        assert f"annotations[{k}]" in text
    assert "annotations[0]" not in text
    assert _snapshot(project) == before


def test_results_file_and_bad_json_are_refused(project, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(CocoImportError, match="results"):
        import_coco(project, bad, images_root=tmp_path / "imgs")
    bad.write_text("{")
    with pytest.raises(CocoImportError, match="not valid JSON"):
        import_coco(project, bad, images_root=tmp_path / "imgs")


def _mutations():
    junk = st.one_of(
        st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=True),
        st.text(max_size=8), st.lists(st.integers(-3, 100), max_size=8),
        st.dictionaries(st.sampled_from(["size", "counts"]), st.integers(-2, 5), max_size=2),
    )  # fmt: skip
    paths = st.sampled_from(
        [
            ("images", 0, "id"), ("images", 0, "width"), ("images", 0, "file_name"),
            ("annotations", 0, "segmentation"), ("annotations", 1, "segmentation"),
            ("annotations", 0, "image_id"), ("annotations", 2, "category_id"),
            ("annotations", 1, "iscrowd"), ("categories", 0, "id"), ("categories", 1, "name"),
            ("annotations", 0), ("images",), ("categories",), ("annotations", 1, "score"),
        ]
    )  # fmt: skip
    return st.lists(st.tuples(paths, junk), min_size=1, max_size=3)


@settings(
    max_examples=int(os.environ.get("MASKLOOP_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations=_mutations())
def test_fuzzed_coco_fails_cleanly_and_changes_nothing(project, tmp_path, mutations):
    base = tmp_path / "base.json"
    if not base.exists():
        export_coco(project, base, segmentation="auto")
    data = json.loads(base.read_text())
    for path, value in mutations:
        target = data
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(value)
        except (TypeError, KeyError, IndexError):
            continue  # an earlier mutation replaced the container
    fuzzed = tmp_path / "fuzzed.json"
    fuzzed.write_text(json.dumps(data))
    before = _snapshot(project)
    try:
        report = import_coco(project, fuzzed, images_root=tmp_path / "imgs")
    except CocoImportError:
        assert _snapshot(project) == before
    else:  # every image already holds work: nothing may be written
        assert report.instances == 0
        assert _snapshot(project)[2] == before[2]


def test_build_coco_skips_empty_geometry(tmp_path):
    with _fresh(tmp_path, "p") as store:
        store.add_category("c")
        (iid,) = store.add_images([NewImage("x.png", 10, 10)])
        store.add_instances(iid, [Instance(1, [Polygon([[50, 50], [60, 50], [60, 60]])])])
        store.set_image_status(iid, ImageStatus.DONE)
        _, report = build_coco(store, segmentation="rle")
        assert report.instances == 0 and report.skipped


def test_crowd_regions_are_kept_through_import_and_export(project, tmp_path):
    """Default --crowd keep: iscrowd=1 regions come back out as iscrowd=1 RLE, unchanged."""
    mask = np.zeros((H, W), bool)
    mask[5:20, 30:50] = True
    crowd_rle = rle_encode(mask)
    path = _coco_file(
        tmp_path,
        [
            {"id": 1, "image_id": 5, "category_id": 40, "segmentation": [[1, 1, 9, 1, 9, 9]]},
            {"id": 2, "image_id": 5, "category_id": 40, "segmentation": crowd_rle, "iscrowd": 1},
        ],
    )
    with _fresh(tmp_path, "p") as store:
        report = import_coco(store, path, images_root=tmp_path / "imgs")
        assert report.instances == 2 and not report.skipped
        (image,) = store.images()
        assert [i.crowd for i in store.instances(image.id)] == [False, True]
        export_coco(store, tmp_path / "out.json", segmentation="polygon")
    out = json.loads((tmp_path / "out.json").read_text())["annotations"]
    assert [a["iscrowd"] for a in out] == [0, 1]
    assert out[1]["segmentation"] == crowd_rle and out[1]["area"] == mask.sum()


def test_import_reports_progress_over_the_annotations(project, tmp_path, monkeypatch):
    from app.core import coco

    monkeypatch.setattr(coco, "PROGRESS_EVERY", 2)
    square = [[1, 1, 9, 1, 9, 9, 1, 9]]
    anns = [
        {"id": k, "image_id": 5, "category_id": 40, "segmentation": square} for k in range(1, 6)
    ]
    calls = []
    with _fresh(tmp_path, "p") as store:
        import_coco(
            store,
            _coco_file(tmp_path, anns),
            images_root=tmp_path / "imgs",
            progress=lambda done, total: calls.append((done, total)),
        )
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]
