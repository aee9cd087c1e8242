"""The rendered window is not blank and shows instance colours where the instances are."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF
from PySide6.QtGui import QImage

from app.core.store import ProjectStore
from app.ui.app import screenshot
from app.ui.main_window import MainWindow


def as_array(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    w, h = image.width(), image.height()
    raw = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * h)
    return raw.reshape(h, image.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()


def test_window_shows_instance_colour_where_instances_are(qtbot, project):
    with ProjectStore.open(project) as store:
        win = MainWindow(store)
        qtbot.addWidget(win)
        win.resize(1000, 700)
        win.show()
        qtbot.waitExposed(win)
        win.threshold.setValue(0)
        win.canvas.fit()
        pixels = as_array(win.grab().toImage())
        ratio = win.devicePixelRatioF()

        def at(x: float, y: float) -> np.ndarray:
            p = win.canvas.viewport().mapTo(win, win.canvas.mapFromScene(QPointF(x, y)))
            return pixels[int(p.y() * ratio), int(p.x() * ratio)].astype(int)

        inside, outside = at(35, 35), at(90, 35)  # proposal square 20..50; empty image area
        assert inside[0] > inside[2] + 40, inside  # the red category shows through the fill
        assert abs(int(outside[0]) - int(outside[2])) < 20, outside  # plain gray image
        win.close()


def test_screenshot_file_is_not_blank(qtbot, project, tmp_path):
    out = screenshot(project, tmp_path / "shot.png", image="a.tif", size=(900, 600))
    shot = as_array(QImage(str(out)))
    assert shot.shape[:2] == (600, 900)
    assert shot.std() > 10
    red = (shot[..., 0] > 150) & (shot[..., 1] < 100) & (shot[..., 2] < 100)
    assert red.sum() > 50
