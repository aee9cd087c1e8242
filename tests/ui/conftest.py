"""A small project for the GUI tests: a 16-bit TIFF with two proposals and an 8-bit PNG."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from canvas_helpers import open_main_window, square
from PIL import Image

from app.core.store import NewImage, ProjectStore
from app.core.types import Instance


@pytest.fixture
def project(tmp_path):
    """Folder of a project: a.tif (16-bit, 2 proposals) and b.png (8-bit, empty)."""
    root = tmp_path / "proj"
    root.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(root / "a.tif", rng.integers(100, 4000, (200, 200), dtype=np.uint16))
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(root / "b.png")
    with ProjectStore.open(root, create=True) as store:
        store.add_category("cell", "#ff0000")
        store.add_category("debris", "#0000ff")
        store.add_images([NewImage("a.tif", 200, 200), NewImage("b.png", 200, 200)])
        store.replace_proposals(
            1,
            [
                Instance(1, [square(20, 20, 30)], score=0.9),
                Instance(1, [square(120, 120, 30)], score=0.3),
            ],
            model_version=None,
        )
    return root


@pytest.fixture
def window(qtbot, project):
    """The main window on ``project``; closed, with its store, after the test."""
    win = open_main_window(qtbot, project)
    yield win
    win.close()
    win.store.close()
