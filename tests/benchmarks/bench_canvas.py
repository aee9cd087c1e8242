"""Canvas speed on a 2048x2048 16-bit image with 2,000 instances x 40 vertices.

Cases (each against the naive scene: one QGraphicsPolygonItem plus one handle item per
vertex for every instance, measured in the same run):
canvas_repaint_fit, canvas_repaint_zoom4 (full viewport repaint, target < 16 ms median and
p95), canvas_open_image (decode + display mapping + instances + first paint, target < 150 ms;
its ``split_median_s`` times each stage of the same open on its own), canvas_vertex_drag
(100 moves of one vertex, target < 5 ms per move, one undo step).

Run: QT_QPA_PLATFORM=offscreen .venv/bin/python tests/benchmarks/bench_canvas.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from _bench import emit, timeit  # noqa: E402
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt  # noqa: E402
from PySide6.QtGui import QBrush, QColor, QMouseEvent, QPen, QPixmap, QPolygonF  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication,
    QGraphicsEllipseItem,
    QGraphicsPolygonItem,
    QGraphicsScene,
    QGraphicsView,
)

from app.core.document import ImageDocument  # noqa: E402
from app.core.images import read_image  # noqa: E402
from app.core.store import NewImage, ProjectStore  # noqa: E402
from app.core.types import Instance, Polygon, Source  # noqa: E402
from app.ui.canvas.view import CanvasView  # noqa: E402
from app.ui.display import DisplaySettings, render_qimage  # noqa: E402
from app.ui.editor import Editor  # noqa: E402

VIEW_SIZE = (1600, 1000)


def make_project(folder: Path, side: int, n: int, vertices: int) -> ProjectStore:
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(folder / name, rng.integers(0, 60000, (side, side), dtype=np.uint16))
    store = ProjectStore.open(folder, create=True)
    store.add_category("cell", "#ff4040")
    store.add_images([NewImage("a.tif", side, side), NewImage("b.tif", side, side)])
    per_row = int(np.ceil(np.sqrt(n)))
    pitch = side / per_row
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    instances = []
    for k in range(n):
        cx, cy = (k % per_row + 0.5) * pitch, (k // per_row + 0.5) * pitch
        r = pitch * 0.4 * (1 + 0.1 * np.sin(3 * t + k))
        ring = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).astype(np.float32)
        instances.append(Instance(1, [Polygon(ring)], score=0.9, source=Source.HUMAN))
    for image_id in (1, 2):
        store.add_instances(image_id, instances)
    return store


class NaiveCanvas:
    """The baseline: every instance a QGraphicsPolygonItem with one ellipse item per vertex."""

    def __init__(self) -> None:
        self.scene = QGraphicsScene()
        self.view = QGraphicsView(self.scene)
        self.view.resize(*VIEW_SIZE)
        self.polys: list[QGraphicsPolygonItem] = []
        self.handles: list[list[QGraphicsEllipseItem]] = []

    def open(self, store: ProjectStore, image_id: int) -> None:
        self.scene.clear()
        self.polys, self.handles = [], []
        record = store.image(image_id)
        image = render_qimage(read_image(store.abspath(record)), DisplaySettings())
        self.scene.addPixmap(QPixmap.fromImage(image))
        color = QColor("#ff4040")
        fill = QColor(color)
        fill.setAlphaF(0.35)
        pen = QPen(color, 1.5)
        pen.setCosmetic(True)
        for inst in store.instances(image_id):
            ring = inst.polygons[0].exterior
            item = QGraphicsPolygonItem(QPolygonF([QPointF(x, y) for x, y in ring.tolist()]))
            item.setPen(pen)
            item.setBrush(QBrush(fill))
            self.scene.addItem(item)
            hs = []
            for x, y in ring.tolist():
                h = QGraphicsEllipseItem(-2, -2, 4, 4)
                h.setPos(x, y)
                h.setFlag(QGraphicsEllipseItem.GraphicsItemFlag.ItemIsMovable)
                self.scene.addItem(h)
                hs.append(h)
            self.polys.append(item)
            self.handles.append(hs)
        self.view.fitInView(
            QRectF(0, 0, record.width, record.height), Qt.AspectRatioMode.KeepAspectRatio
        )


def open_split(app, store: ProjectStore, editor: Editor, repeat: int) -> dict[str, float]:
    """Median seconds of each stage of opening an image, each timed on its own: decode and
    display mapping, reading the instances from the store, building the canvas shapes, and
    the first paint (the event processing after ``open_image``)."""
    flip = iter(range(10**6))

    def other() -> int:
        return 1 + next(flip) % 2

    def pixels() -> None:
        render_qimage(read_image(store.abspath(store.image(other()))), DisplaySettings())

    doc = ImageDocument(store, 1)
    scene = editor.canvas.canvas_scene
    paints = []
    for _ in range(repeat + 1):
        editor.open_image(other())
        t0 = time.perf_counter()
        app.processEvents()
        paints.append(time.perf_counter() - t0)
    stages = {
        "image": timeit(pixels, repeat=repeat),
        "instances": timeit(lambda: ImageDocument(store, other()), repeat=repeat),
        "shapes": timeit(lambda: scene.load(doc), repeat=repeat),
        "first_paint": paints[1:],
    }
    editor.open_image(other())
    app.processEvents()
    return {name: round(statistics.median(times), 5) for name, times in stages.items()}


def mouse(widget, kind, pos, buttons) -> None:
    button = Qt.MouseButton.LeftButton if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton
    ev = QMouseEvent(
        kind, QPointF(pos), QPointF(widget.mapToGlobal(pos)), button, buttons,
        Qt.KeyboardModifier.NoModifier,
    )  # fmt: skip
    QApplication.sendEvent(widget, ev)


def zoom_about_centre(view: QGraphicsView, factor: float, side: int) -> None:
    view.resetTransform()
    view.scale(factor, factor)
    view.centerOn(side / 2, side / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small image and few instances")
    args = parser.parse_args()
    side, n, vertices, repeat = (512, 200, 40, 10) if args.quick else (2048, 2000, 40, 30)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        store = make_project(Path(tmp), side, n, vertices)
        canvas = CanvasView()
        canvas.resize(*VIEW_SIZE)
        canvas.show()
        editor = Editor(store, canvas)
        naive = NaiveCanvas()
        naive.view.show()
        app.processEvents()
        size = {"image": f"{side}x{side} uint16", "instances": n, "vertices": vertices}

        flip = iter(range(10**6))
        open_ours = timeit(
            lambda: (editor.open_image(1 + next(flip) % 2), app.processEvents()),
            repeat=max(5, repeat // 3),
        )
        split = open_split(app, store, editor, repeat=max(5, repeat // 3))
        open_naive = timeit(lambda: (naive.open(store, 1), app.processEvents()), repeat=3)
        emit("canvas_open_image", open_ours, baseline=open_naive, baseline_name="naive items",
             target="< 150 ms", split_median_s=split, **size)  # fmt: skip

        canvas.fit()
        app.processEvents()
        fit_ours = timeit(lambda: canvas.viewport().repaint(), repeat=repeat)
        fit_naive = timeit(lambda: naive.view.viewport().repaint(), repeat=max(3, repeat // 5))
        emit("canvas_repaint_fit", fit_ours, baseline=fit_naive, baseline_name="naive items",
             target="median and p95 < 16 ms", **size)  # fmt: skip

        zoom_about_centre(canvas, 4.0, side)
        zoom_about_centre(naive.view, 4.0, side)
        app.processEvents()
        z_ours = timeit(lambda: canvas.viewport().repaint(), repeat=repeat)
        z_naive = timeit(lambda: naive.view.viewport().repaint(), repeat=max(3, repeat // 5))
        emit("canvas_repaint_zoom4", z_ours, baseline=z_naive, baseline_name="naive items",
             target="median and p95 < 16 ms", **size)  # fmt: skip

        # Vertex drag: select the instance in the middle, drag vertex 0 through 100 moves.
        target = n // 2 + int(np.sqrt(n)) // 2
        ids = sorted(editor.doc.instances)
        inst_id = ids[min(target, len(ids) - 1)]
        canvas.set_selection([inst_id])
        canvas.centerOn(canvas.single_editor().boundingRect().center())
        app.processEvents()
        handle = next(h for h in canvas.single_editor().handles() if h.key == (0, 0, 0))
        start = canvas.mapFromScene(handle.scenePos())
        stack = editor.undo_group.activeStack()
        depth = stack.count()
        vp = canvas.viewport()
        mouse(vp, QEvent.Type.MouseMove, start, Qt.MouseButton.NoButton)
        mouse(vp, QEvent.Type.MouseButtonPress, start, Qt.MouseButton.LeftButton)
        moves = []
        for k in range(1, 101):
            t0 = time.perf_counter()
            mouse(
                vp,
                QEvent.Type.MouseMove,
                start + type(start)(k % 7, k % 5),
                Qt.MouseButton.LeftButton,
            )
            app.processEvents()
            moves.append(time.perf_counter() - t0)
        mouse(
            vp, QEvent.Type.MouseButtonRelease, start + type(start)(3, 3), Qt.MouseButton.NoButton
        )
        one_step = stack.count() == depth + 1

        zoom_about_centre(naive.view, 4.0, side)
        poly = naive.polys[min(target, len(naive.polys) - 1)]
        hs = naive.handles[min(target, len(naive.handles) - 1)]
        naive.view.centerOn(poly.boundingRect().center())
        app.processEvents()
        naive_moves = []
        base = list(poly.polygon())
        for k in range(1, 101):
            t0 = time.perf_counter()
            p = base[0] + QPointF(k % 7 / 4, k % 5 / 4)
            hs[0].setPos(p)
            poly.setPolygon(QPolygonF([p, *base[1:]]))
            app.processEvents()
            naive_moves.append(time.perf_counter() - t0)
        emit("canvas_vertex_drag", moves, baseline=naive_moves, baseline_name="naive items",
             target="< 5 ms per move, one undo step", one_undo_step=one_step, **size)  # fmt: skip
        canvas.close()
        naive.view.close()
        store.close()


if __name__ == "__main__":
    main()
