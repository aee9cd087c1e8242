"""``maskloop screenshot`` and the argument checks of ``maskloop gui``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.cli import build_parser, main
from app.core.store import NewImage, ProjectStore
from app.core.types import Instance, Polygon, Source


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    Image.fromarray(np.full((120, 160), 40, np.uint8)).save(root / "x.png")
    with ProjectStore.open(root, create=True) as store:
        store.add_category("cell", "#00ff00")
        store.add_images([NewImage("x.png", 160, 120)])
        ring = np.array([[20, 20], [100, 20], [100, 90], [20, 90]], np.float32)
        store.add_instances(1, [Instance(1, [Polygon(ring)], source=Source.HUMAN)])
    return root


def test_screenshot_command_writes_png(project, tmp_path, capsys):
    out = tmp_path / "shots" / "w.png"
    assert main(["screenshot", str(project), "--out", str(out), "--size", "800x500"]) == 0
    assert "wrote" in capsys.readouterr().out
    shot = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert shot.shape == (500, 800, 3)
    green = (shot[..., 1] > shot[..., 0] + 60) & (shot[..., 1] > shot[..., 2] + 60)
    assert green.sum() > 200


def test_screenshot_unknown_image_is_a_user_error(project, tmp_path, capsys):
    rc = main(["screenshot", str(project), "--out", str(tmp_path / "s.png"), "--image", "nope.png"])
    assert rc == 1
    assert "no image 'nope.png'" in capsys.readouterr().err


def test_bad_size_and_missing_project(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["screenshot", "p", "--out", "o.png", "--size", "big"])
    assert main(["screenshot", str(tmp_path / "none"), "--out", str(tmp_path / "o.png")]) == 1
    assert "not a MaskLoop project" in capsys.readouterr().err
    args = build_parser().parse_args(["gui"])
    assert args.project is None
