"""app.core.scan: the folder scan behind ``maskloop init`` adds, re-finds and flags images."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from app.core.images import MAX_PIXELS_ENV
from app.core.scan import ScanError, ScanReport, scan_folder
from app.core.store import ProjectStore


def _png(path: Path, width: int = 8, height: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((height, width), np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def store(tmp_path):
    with ProjectStore.open(tmp_path / "project", create=True) as s:
        yield s


def _paths(store: ProjectStore, include_missing: bool = False) -> list[str]:
    return [r.path for r in store.images(include_missing=include_missing)]


def test_recursive_scan_with_sizes_relative_paths_and_any_case_extension(store, tmp_path):
    images = tmp_path / "images"
    _png(images / "a.png", 8, 6)
    _png(images / "sub" / "deeper" / "b.PNG", 5, 4)
    Image.fromarray(np.zeros((3, 7, 3), np.uint8)).save(images / "c.JPeG", format="JPEG")
    tifffile.imwrite(images / "d.tiff", np.zeros((9, 11), np.uint16))
    (images / "notes.txt").write_text("not an image")
    (images / "e.gif").write_bytes(b"GIF89a")

    report = scan_folder(store, images)

    assert report == ScanReport(added=4, existing=0, missing=0, reappeared=0, unreadable=[])
    rows = {r.path: r for r in store.images()}
    assert sorted(rows) == [
        "../images/a.png",
        "../images/c.JPeG",
        "../images/d.tiff",
        "../images/sub/deeper/b.PNG",
    ]
    assert (rows["../images/a.png"].width, rows["../images/a.png"].height) == (8, 6)
    assert (rows["../images/c.JPeG"].width, rows["../images/c.JPeG"].height) == (7, 3)
    assert (rows["../images/d.tiff"].width, rows["../images/d.tiff"].height) == (11, 9)
    a = rows["../images/a.png"]
    st = (images / "a.png").stat()
    assert (a.size_bytes, a.mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert store.abspath(a) == (images / "a.png").resolve()


def test_images_inside_the_project_folder_get_plain_relative_paths(store):
    _png(store.root / "imgs" / "x.png")
    scan_folder(store, store.root / "imgs")
    assert _paths(store) == ["imgs/x.png"]


def test_rescan_adds_only_new_images_and_never_duplicates(store, tmp_path):
    images = tmp_path / "images"
    for i in range(3):
        _png(images / f"{i}.png")
    assert scan_folder(store, images).added == 3
    _png(images / "new.png")
    report = scan_folder(store, images)
    assert (report.added, report.existing, report.missing) == (1, 3, 0)
    assert store.count_images() == 4
    again = scan_folder(store, images)
    assert (again.added, again.existing) == (0, 4)
    assert len(_paths(store, include_missing=True)) == 4


def test_missing_files_are_flagged_and_unflagged_when_they_come_back(store, tmp_path):
    images = tmp_path / "images"
    _png(images / "keep.png")
    gone = _png(images / "gone.png")
    scan_folder(store, images)
    moved = gone.with_name("elsewhere.bak")
    gone.rename(moved)

    report = scan_folder(store, images)
    assert (report.added, report.existing, report.missing, report.reappeared) == (0, 1, 1, 0)
    assert _paths(store) == ["../images/keep.png"]
    assert store.image_by_path("../images/gone.png").missing
    assert scan_folder(store, images).missing == 1  # still gone, still counted

    moved.rename(gone)
    report = scan_folder(store, images)
    assert (report.added, report.existing, report.missing, report.reappeared) == (0, 1, 0, 1)
    assert not store.image_by_path("../images/gone.png").missing
    assert store.count_images() == 2


def test_images_from_another_folder_are_not_flagged_missing(store, tmp_path):
    _png(tmp_path / "first" / "a.png")
    _png(tmp_path / "second" / "b.png")
    scan_folder(store, tmp_path / "first")
    report = scan_folder(store, tmp_path / "second")
    assert (report.added, report.missing) == (1, 0)
    assert store.count_images() == 2


def test_hidden_entries_models_folder_and_nested_projects_are_skipped(store, tmp_path):
    _png(store.root / "a.png")
    _png(store.root / ".thumbs" / "t.png")
    _png(store.root / ".hidden.png")
    _png(store.root / "models" / "preview.png")
    other = tmp_path / "project" / "sub_project"
    _png(other / "inner.png")
    (other / "maskloop.sqlite").write_bytes(b"")
    scan_folder(store, store.root)
    assert _paths(store) == ["a.png"]


def test_symlinked_folders_are_not_followed(store, tmp_path):
    images = tmp_path / "images"
    _png(images / "a.png")
    try:
        os.symlink(images, images / "loop", target_is_directory=True)
    except OSError:
        pytest.skip("this file system cannot make symlinks")
    assert scan_folder(store, images).added == 1


def test_unreadable_files_are_collected_not_fatal(store, tmp_path, monkeypatch):
    images = tmp_path / "images"
    _png(images / "good.png")
    (images / "empty.png").write_bytes(b"")
    (images / "junk.jpg").write_bytes(b"definitely not a jpeg" * 10)
    _png(images / "huge.png", 300, 300)
    monkeypatch.setenv(MAX_PIXELS_ENV, "10000")

    report = scan_folder(store, images)

    assert report.added == 1
    reasons = dict(report.unreadable)
    assert sorted(reasons) == ["../images/empty.png", "../images/huge.png", "../images/junk.jpg"]
    assert "empty (0 bytes)" in reasons["../images/empty.png"]
    assert "not a PNG, JPEG, BMP or TIFF" in reasons["../images/junk.jpg"]
    assert "limit" in reasons["../images/huge.png"]
    assert _paths(store) == ["../images/good.png"]


def test_progress_reports_done_and_total(store, tmp_path):
    images = tmp_path / "images"
    for i in range(5):
        _png(images / f"{i}.png")
    calls: list[tuple[int, int]] = []
    scan_folder(store, images, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (5, 5)
    assert all(total == 5 and 0 < done <= 5 for done, total in calls)


def test_large_scan_commits_in_batches_in_path_order(store, tmp_path, monkeypatch):
    monkeypatch.setattr("app.core.scan.BATCH_SIZE", 7)
    images = tmp_path / "images"
    for i in range(20):
        _png(images / f"{i:02d}.png")
    assert scan_folder(store, images).added == 20
    records = store.images(order="path")
    assert [r.path for r in records] == [f"../images/{i:02d}.png" for i in range(20)]
    assert [r.id for r in records] == sorted(r.id for r in records)


def test_missing_or_file_images_dir_raises(store, tmp_path):
    with pytest.raises(ScanError, match="does not exist"):
        scan_folder(store, tmp_path / "nope")
    _png(tmp_path / "x.png")
    with pytest.raises(ScanError, match="not a folder"):
        scan_folder(store, tmp_path / "x.png")


def test_store_benchmark_runs_quick(capsys):
    """Smoke run of tests/benchmarks/bench_store.py: one JSON line per case, real numbers."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_store.py"
    spec = importlib.util.spec_from_file_location("bench_store", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--repeat", "1"]) == 0
    lines = {
        line["benchmark"]: line for line in map(json.loads, capsys.readouterr().out.splitlines())
    }
    assert sorted(lines) == ["store_edits", "store_init", "store_open"]
    assert lines["store_init"]["unit"] == "images/s"
    assert lines["store_init"]["baseline"]["median"] > 0
    assert all(line["ours"]["median"] > 0 for line in lines.values())


def test_broken_and_looping_links_are_reported_and_skipped(store, tmp_path):
    images = tmp_path / "images"
    _png(images / "good.png")
    (images / "self.png").symlink_to("self.png")  # loops: stat raises ELOOP
    (images / "gone.tif").symlink_to(tmp_path / "nowhere.tif")
    (images / "ring").symlink_to("ring")  # a looping folder link, not an image name
    report = scan_folder(store, images)
    assert _paths(store) == ["../images/good.png"] and report.added == 1
    reasons = dict(report.unreadable)
    assert set(reasons) == {"../images/self.png", "../images/gone.tif"}
    assert all(why.startswith("broken link") for why in reasons.values())
