"""``maskloop demo`` end to end through the command-line entry point."""

import pytest

from app.cli import main
from app.core.store import ProjectStore
from app.core.types import ImageStatus


def test_demo_creates_a_project_and_says_what_to_run_next(tmp_path, capsys):
    folder = tmp_path / "demo"
    rc = main(["demo", str(folder), "--images", "3", "--size", "128x96", "--seed", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "created demo project" in out
    assert "2 8-bit PNG, 1 16-bit TIFF, 128x96 px; 5 real DSB2018 images, CC0" in out
    assert f"maskloop gui {folder.resolve()}" in out
    with ProjectStore.open(folder) as store:
        assert store.count_images() == 8
        assert store.count_images(ImageStatus.DONE) == 3  # --done defaults to min(4, N)
        assert store.images()[0].width == 128
        real = [r for r in store.images() if r.path.startswith("images/real_dsb2018_")]
        assert len(real) == 5 and all(r.status is ImageStatus.NEW for r in real)
        assert {(r.width, r.height) for r in real} >= {(256, 256), (696, 520), (320, 256)}


def test_no_real_leaves_the_real_images_out(tmp_path, capsys):
    folder = tmp_path / "demo"
    assert main(["demo", str(folder), "--images", "2", "--size", "64x64", "--no-real"]) == 0
    assert "(1 8-bit PNG, 1 16-bit TIFF, 64x64 px)\n" in capsys.readouterr().out
    with ProjectStore.open(folder) as store:
        assert store.count_images() == 2


def test_done_option_and_rerun(tmp_path, capsys):
    folder = tmp_path / "demo"
    assert main(["demo", str(folder), "--images", "2", "--done", "1", "--size", "64x64"]) == 0
    capsys.readouterr()
    assert main(["demo", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "already holds a demo project" in out
    assert "1 images done" in out and "6 new images" in out  # 1 synthetic, 5 real


def test_non_empty_folder_is_an_error_message(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("mine")
    assert main(["demo", str(tmp_path), "--size", "64x64"]) == 1
    assert "not empty" in capsys.readouterr().err


def test_bad_size_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", str(tmp_path / "d"), "--size", "512"])
    assert info.value.code == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
