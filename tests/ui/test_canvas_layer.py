"""The instance layer built in bulk: outlines, hit testing, painting, lazy editors, refresh."""

from __future__ import annotations

import numpy as np
import pytest
from canvas_helpers import click, drag
from PIL import Image
from PySide6.QtCore import QPointF
from PySide6.QtGui import QImage, QPainterPath, QPolygonF

from app.core.store import NewImage, ProjectStore
from app.core.types import Instance, Polygon, Source
from app.ui.canvas.view import CanvasView
from app.ui.editor import Editor


def rect(x: float, y: float, w: float, h: float) -> np.ndarray:
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)


def open_canvas(qtbot, tmp_path, instances: list[Instance]):
    """A 200x200 dark image holding ``instances`` (category 1 is red), shown in a canvas."""
    root = tmp_path / "proj"
    root.mkdir()
    Image.fromarray(np.full((200, 200), 20, np.uint8)).save(root / "a.png")
    store = ProjectStore.open(root, create=True)
    store.add_category("cell", "#ff0000")
    store.add_images([NewImage("a.png", 200, 200)])
    store.add_instances(1, instances)
    view = CanvasView()
    qtbot.addWidget(view)
    view.resize(600, 600)
    view.show()
    qtbot.waitExposed(view)
    editor = Editor(store, view)
    editor.open_image(1)
    return view, editor, store


@pytest.fixture
def canvas(qtbot, tmp_path):
    """A plain cell, a cell with a hole, a two-part cell, a proposal."""
    view, editor, store = open_canvas(
        qtbot,
        tmp_path,
        [
            Instance(1, [Polygon(rect(10, 10, 30, 30))]),
            Instance(1, [Polygon(rect(60, 10, 60, 60), [rect(75, 25, 30, 30)])]),
            Instance(1, [Polygon(rect(10, 120, 20, 20)), Polygon(rect(60, 120, 20, 20))]),
            Instance(1, [Polygon(rect(130, 130, 40, 40))], score=0.8, source=Source.MODEL),
        ],
    )
    yield view, editor, store
    view.close()
    store.close()


def fixture_ids(store: ProjectStore) -> list[int]:
    """Instance ids ordered as the fixture adds them (plain, holed, two parts, proposal)."""
    return [i.id for i in store.instances(1)]


def red_at(view: CanvasView, x: float, y: float) -> int:
    image = view.viewport().grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    p = view.mapFromScene(QPointF(x, y))
    color = image.pixelColor(p.x(), p.y())
    return color.red() - color.blue()


def test_simple_cells_are_polygons_holes_and_parts_are_paths(canvas):
    view, _, store = canvas
    plain, holed, parts, proposal = fixture_ids(store)
    layer = view.canvas_scene.layer
    assert isinstance(layer.shape_of(plain).outline, QPolygonF)
    assert isinstance(layer.shape_of(proposal).outline, QPolygonF)
    assert isinstance(layer.shape_of(holed).outline, QPainterPath)
    assert isinstance(layer.shape_of(parts).outline, QPainterPath)
    assert layer.shape_of(parts).bbox.getCoords() == (10, 120, 80, 140)
    assert layer.shape_of(proposal).pending and not layer.shape_of(plain).pending


def test_clicks_hit_cells_and_parts_but_not_holes(canvas):
    view, _, store = canvas
    plain, holed, parts, _ = fixture_ids(store)
    layer = view.canvas_scene.layer
    assert layer.instance_at(QPointF(25, 25)) == plain
    assert layer.instance_at(QPointF(65, 60)) == holed
    assert layer.instance_at(QPointF(90, 40)) is None  # inside the hole
    assert layer.instance_at(QPointF(70, 130)) == parts  # the second part
    assert layer.instance_at(QPointF(45, 130)) is None  # between the parts
    click(view, 70, 130)
    assert view.selection() == [parts]
    # Only the selection gets a real item; the layer stops drawing it meanwhile.
    assert list(view.canvas_scene.editors) == [parts]
    click(view, 90, 40)
    assert view.selection() == []
    assert view.canvas_scene.editors == {}


@pytest.mark.parametrize("zoom", [None, 4.0])  # fit (aliased) and zoomed in (antialiased)
def test_layer_paints_cells_not_holes(canvas, zoom):
    view, _, _ = canvas
    if zoom is not None:
        view.set_zoom(zoom)
        view.centerOn(90, 40)
    view.viewport().repaint()
    assert red_at(view, 65, 60) > 40  # holed cell's ring
    assert red_at(view, 90, 40) < 10  # its hole shows the gray image
    if zoom is None:
        assert red_at(view, 25, 25) > 40
        assert red_at(view, 150, 150) > 20  # the proposal, fainter
        assert red_at(view, 185, 100) < 10  # background


def test_vertex_drag_on_a_lazily_made_editor_updates_store_and_layer(canvas):
    view, editor, store = canvas
    plain = fixture_ids(store)[0]
    view.set_zoom(4.0)
    view.centerOn(25, 25)
    view.set_selection([plain])
    handle = next(h for h in view.single_editor().handles() if h.key == (0, 0, 2))
    assert (handle.pos().x(), handle.pos().y()) == (40, 40)
    drag(view, [(40, 40), (45, 44), (50, 48)])
    assert store.instance(plain).polygons[0].exterior[2].tolist() == [50, 48]
    assert store.instance(plain).source == Source.HUMAN
    view.set_selection([])
    assert view.canvas_scene.layer.shape_of(plain).bbox.getCoords() == (10, 10, 50, 48)
    assert view.canvas_scene.layer.instance_at(QPointF(45, 42)) == plain
    editor.undo_group.activeStack().undo()
    assert view.canvas_scene.layer.shape_of(plain).bbox.getCoords() == (10, 10, 40, 40)


def test_refresh_drops_deleted_and_adds_new_instances(canvas):
    view, editor, store = canvas
    plain, holed, *_ = fixture_ids(store)
    view.set_selection([plain, holed])
    editor.delete_selected()
    layer = view.canvas_scene.layer
    assert layer.shape_of(plain) is None and layer.shape_of(holed) is None
    assert view.selection() == []
    editor.add_polygon([Polygon(rect(100, 150, 10, 10), [rect(102, 152, 3, 3)])])
    (new,) = view.selection()  # a drawn instance is selected
    assert new in layer.ids()
    assert isinstance(layer.shape_of(new).outline, QPainterPath)
    assert layer.instance_at(QPointF(108, 158)) == new
    editor.undo_group.activeStack().undo()
    editor.undo_group.activeStack().undo()
    assert layer.shape_of(plain) is not None and layer.shape_of(holed) is not None
    assert layer.shape_of(new) is None


def test_score_labels_do_not_cover_each_other():
    from PySide6.QtCore import QPointF

    from app.ui.canvas.items import uncrowded_labels

    close = [(0.7, QPointF(10, 10)), (0.9, QPointF(12, 11)), (0.8, QPointF(200, 10))]
    kept = uncrowded_labels(close, 20.0, 8.0)
    assert [score for score, _ in kept] == [0.9, 0.8]  # the weaker overlapping label is left out
    apart = [(0.5, QPointF(x * 25.0, 40)) for x in range(10)]
    assert len(uncrowded_labels(apart, 20.0, 8.0)) == 10  # side by side, none covered
    row = [(0.5, QPointF(x * 15.0, 40)) for x in range(10)]
    kept = [p.x() for _, p in uncrowded_labels(row, 20.0, 8.0)]
    assert all(b - a >= 20.0 for a, b in zip(kept, kept[1:], strict=False))


def test_crowd_regions_are_drawn_hatched_and_listed_as_crowd(qtbot, tmp_path):
    """A COCO crowd region (kept by import-coco) is told apart from the cells: a hatched,
    dotted region on the canvas and "crowd" in the Instances dock."""
    from app.ui.panels.instance_list import InstanceListPanel

    view, editor, store = open_canvas(
        qtbot,
        tmp_path,
        [
            Instance(1, [Polygon(rect(10, 10, 60, 60))]),
            Instance(1, [Polygon(rect(100, 100, 60, 60))], crowd=True),
        ],
    )
    plain, crowd = [i.id for i in store.instances(1)]
    layer = view.canvas_scene.layer
    assert layer.shape_of(crowd).crowd and not layer.shape_of(plain).crowd
    view.viewport().repaint()

    def red_share(x0: float, y0: float) -> float:
        points = [(x0 + dx, y0 + dy) for dx in range(10, 50, 3) for dy in range(10, 50, 3)]
        return sum(red_at(view, x, y) > 40 for x, y in points) / len(points)

    assert red_share(10, 10) > 0.95  # a solid fill
    assert 0.05 < red_share(100, 100) < 0.8  # hatched: stripes of fill and image
    panel = InstanceListPanel()
    qtbot.addWidget(panel)
    panel.show_document(editor.doc, store.categories())
    sources = [panel.topLevelItem(r).text(3) for r in range(panel.topLevelItemCount())]
    assert any(s.endswith(", crowd") for s in sources) and not all(
        s.endswith(", crowd") for s in sources
    )
    view.close()
    store.close()
