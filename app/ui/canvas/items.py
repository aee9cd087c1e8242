"""Graphics items of the canvas.

Thousands of instances are painted by one :class:`InstanceLayer` from outlines made in one
batch per load (:mod:`.outlines`), device-coordinate cached, so a repaint at an unchanged zoom
is a blit. Only the selected instances get real items (:class:`InstanceEditor`), and only a
single selection gets vertex handles (:class:`VertexHandle`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QPainter,
    QPainterPath,
    QPen,
    QPolygonF,
    QTransform,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsObject,
    QGraphicsRectItem,
    QStyleOptionGraphicsItem,
    QWidget,
)

from app.core.types import Polygon

from .outlines import polygons_path

HANDLE_SIZE = 7.0  # device pixels
OUTLINE_WIDTH = 1.5  # device pixels (cosmetic pens)
LABEL_MIN_SCALE = 0.7  # score labels are drawn from this zoom on


@dataclass(slots=True)
class Shape:
    """What the layer needs to paint and hit-test one instance (slots: thousands are made
    per image, and a per-object dict would double what the garbage collector tracks)."""

    outline: QPolygonF | QPainterPath  # see outlines.instance_outlines
    color: QColor
    pending: bool  # an unreviewed proposal: dashed, with its score
    score: float | None
    bbox: QRectF
    category_id: int | None = None
    crowd: bool = False  # a COCO crowd region: hatched, dotted outline (never trained on)

    def contains(self, pos: QPointF) -> bool:
        if isinstance(self.outline, QPolygonF):
            return self.outline.containsPoint(pos, Qt.FillRule.OddEvenFill)
        return self.outline.contains(pos)


def _draw_outlines(painter: QPainter, shapes: Iterable[Shape], exposed: QRectF) -> None:
    draw_polygon, draw_path = painter.drawPolygon, painter.drawPath
    for shape in shapes:
        if exposed.intersects(shape.bbox):
            if isinstance(shape.outline, QPolygonF):
                draw_polygon(shape.outline)
            else:
                draw_path(shape.outline)


def uncrowded_labels(
    anchors: list[tuple[float, QPointF]], width: float, height: float
) -> list[tuple[float, QPointF]]:
    """The (score, bottom-left) labels of ``width`` x ``height`` to draw so that none covers
    another, highest scores first. Placed labels are kept in a grid of label-sized cells, so
    each test looks at the nine cells around one label: linear for thousands of cells."""
    grid: dict[tuple[int, int], list[QPointF]] = {}
    kept = []
    for score, pos in sorted(anchors, key=lambda a: -a[0]):
        col, row = int(pos.x() // width), int(pos.y() // height)
        neighbours = (grid.get((col + dc, row + dr), []) for dc in (-1, 0, 1) for dr in (-1, 0, 1))
        if any(
            abs(p.x() - pos.x()) < width and abs(p.y() - pos.y()) < height
            for cell in neighbours
            for p in cell
        ):
            continue
        grid.setdefault((col, row), []).append(pos)
        kept.append((score, pos))
    return kept


class InstanceLayer(QGraphicsItem):
    """Paints every instance that is not being edited, grouped by colour and style."""

    def __init__(self, rect: QRectF) -> None:
        super().__init__()
        self._rect = QRectF(rect)
        self._shapes: dict[int, Shape] = {}
        self._hidden: set[int] = set()
        self._groups: list[tuple[QColor, bool, bool, list[Shape]]] | None = None
        self.threshold = 0.0
        self.hidden_categories: frozenset[int] = frozenset()
        self.opacity_fill = 0.35
        self.show_labels = True
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    # -- content ------------------------------------------------------------------------------

    def set_rect(self, rect: QRectF) -> None:
        self.prepareGeometryChange()
        self._rect = QRectF(rect)

    def set_shapes(self, shapes: dict[int, Shape]) -> None:
        self._shapes = dict(shapes)
        self._invalidate()

    def put(self, instance_id: int, shape: Shape | None) -> None:
        if shape is None:
            self._shapes.pop(instance_id, None)
        else:
            self._shapes[instance_id] = shape
        self._invalidate()

    def shape_of(self, instance_id: int) -> Shape | None:
        return self._shapes.get(instance_id)

    def ids(self) -> list[int]:
        return list(self._shapes)

    def set_hidden(self, ids: Iterable[int]) -> None:
        hidden = set(ids)
        if hidden != self._hidden:
            self._hidden = hidden
            self._invalidate()

    def set_threshold(self, value: float) -> None:
        if value != self.threshold:
            self.threshold = value
            self._invalidate()

    def set_fill_opacity(self, value: float) -> None:
        self.opacity_fill = value
        self._invalidate()

    def set_hidden_categories(self, ids: frozenset[int]) -> None:
        if ids != self.hidden_categories:
            self.hidden_categories = ids
            self._invalidate()

    def _passes(self, s: Shape) -> bool:
        if s.category_id in self.hidden_categories:
            return False
        return not (s.pending and s.score is not None and s.score < self.threshold)

    def is_shown(self, instance_id: int) -> bool:
        s = self._shapes.get(instance_id)
        return s is not None and self._passes(s)

    def _invalidate(self) -> None:
        self._groups = None
        self.update()

    def _visible(self) -> Iterable[tuple[int, Shape]]:
        for i, s in self._shapes.items():
            if i not in self._hidden and self._passes(s):
                yield i, s

    def _build_groups(self) -> list[tuple[QColor, bool, bool, list[Shape]]]:
        # One big merged path is far slower to fill than many small ones: keep them apart.
        groups: dict[tuple[int, bool, bool], tuple[QColor, bool, bool, list[Shape]]] = {}
        for _, s in self._visible():
            key = (s.color.rgba(), s.pending, s.crowd)
            if key not in groups:
                groups[key] = (s.color, s.pending, s.crowd, [])
            groups[key][3].append(s)
        return list(groups.values())

    # -- hit testing --------------------------------------------------------------------------

    def instance_at(self, pos: QPointF, exclude: Collection[int] = ()) -> int | None:
        """The smallest shown instance under ``pos`` (so nested cells stay clickable), other
        than those in ``exclude``."""
        best, best_area = None, float("inf")
        for i, s in self._shapes.items():
            if i in exclude or not self.is_shown(i) or not s.bbox.contains(pos):
                continue
            area = s.bbox.width() * s.bbox.height()
            if area < best_area and s.contains(pos):
                best, best_area = i, area
        return best

    # -- painting -----------------------------------------------------------------------------

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt API)
        return self._rect.adjusted(-50, -50, 50, 50)

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        if self._groups is None:
            self._groups = self._build_groups()
        scale = option.levelOfDetailFromTransform(painter.worldTransform())
        # Antialiasing costs ~3x and shows only when zoomed in.
        antialias = scale >= 1.0
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, antialias)
        # Without antialiasing, Qt strokes a 1.5 px pen as a polygon per outline (~2/3 of
        # the first frame after opening 2,000 cells), but draws 1 px hairlines directly: two
        # hairlines half a device pixel apart cover nearly the same pixels at half the cost.
        width = OUTLINE_WIDTH if antialias else 1.0
        for color, pending, crowd, shapes in self._groups:
            fill = QColor(color)
            fill.setAlphaF(self.opacity_fill * (0.6 if pending else 1.0))
            pen = QPen(color, width)
            pen.setCosmetic(True)
            if pending:
                pen.setStyle(Qt.PenStyle.DashLine)
            elif crowd:
                pen.setStyle(Qt.PenStyle.DotLine)
            painter.setPen(pen)
            painter.setBrush(QBrush(fill, Qt.BrushStyle.BDiagPattern) if crowd else QBrush(fill))
            _draw_outlines(painter, shapes, option.exposedRect)
            if not antialias:
                world = painter.worldTransform()
                painter.setWorldTransform(world * QTransform.fromTranslate(0.5, 0.5))
                painter.setBrush(Qt.BrushStyle.NoBrush)
                _draw_outlines(painter, shapes, option.exposedRect)
                painter.setWorldTransform(world)
        if self.show_labels and scale >= LABEL_MIN_SCALE:
            self._paint_labels(painter, option.exposedRect, scale)

    def _paint_labels(self, painter: QPainter, exposed: QRectF, scale: float) -> None:
        font = QFont()
        font.setPointSizeF(8.0 / scale)
        painter.setFont(font)
        painter.setPen(QColor("white"))
        metrics = QFontMetricsF(font)
        anchors = [
            (s.score, s.bbox.topLeft() - QPointF(0, 2 / scale))
            for _, s in self._visible()
            if s.pending and s.score is not None and exposed.intersects(s.bbox)
        ]
        for score, pos in uncrowded_labels(
            anchors, metrics.horizontalAdvance("0.00"), metrics.height()
        ):
            painter.drawText(pos, f"{score:.2f}")


class VertexHandle(QGraphicsRectItem):
    """A draggable square on one vertex of the selected instance (constant screen size)."""

    def __init__(self, editor: InstanceEditor, key: tuple[int, int, int]) -> None:
        half = HANDLE_SIZE / 2
        super().__init__(-half, -half, HANDLE_SIZE, HANDLE_SIZE, editor)
        self.editor = editor
        self.key = key  # (polygon index, ring index (0 = exterior), vertex index)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsMovable, True)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges, True)
        self.setBrush(QBrush(QColor("white")))
        pen = QPen(QColor("black"), 1)
        pen.setCosmetic(True)
        self.setPen(pen)
        self.setCursor(Qt.CursorShape.SizeAllCursor)
        self.setZValue(2)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: object) -> object:  # noqa: N802
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged and not (
            self.editor.syncing
        ):
            self.editor.vertex_moved(self.key, self.pos())
        return super().itemChange(change, value)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.editor.request_vertex_delete(self.key)
            event.accept()
            return
        self.editor.drag_started(self.key)
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        super().mouseReleaseEvent(event)
        self.editor.drag_finished(self.key)


class InstanceEditor(QGraphicsObject):
    """A selected instance: outlined strongly, movable, with vertex handles when editable.

    It edits a private copy of the polygons; the canvas turns finished gestures into document
    operations (and the undo stack) through the callbacks below.
    """

    def __init__(
        self,
        instance_id: int,
        polygons: Sequence[Polygon],
        color: QColor,
        *,
        editable: bool,
        on_commit,
    ) -> None:
        super().__init__()
        self.instance_id = instance_id
        self.polygons = [p.copy() for p in polygons]
        self.color = QColor(color)
        self.on_commit = on_commit  # (instance_id, polygons, merge_key | None, label) -> None
        self.syncing = False
        self.fill_opacity = 0.35
        self._path = polygons_path(self.polygons)
        self._handles: list[VertexHandle] = []
        self._drag_origin: list[Polygon] | None = None
        self.setZValue(10)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsMovable, editable)
        if editable:
            self._make_handles()

    # -- geometry -----------------------------------------------------------------------------

    def _ring(self, key: tuple[int, int, int]) -> np.ndarray:
        poly = self.polygons[key[0]]
        return poly.exterior if key[1] == 0 else poly.holes[key[1] - 1]

    def _make_handles(self) -> None:
        for h in self._handles:
            h.setParentItem(None)
            if h.scene() is not None:
                h.scene().removeItem(h)
        self._handles = []
        self.syncing = True
        for pi, poly in enumerate(self.polygons):
            for ri, ring in enumerate((poly.exterior, *poly.holes)):
                for vi, (x, y) in enumerate(ring.tolist()):
                    handle = VertexHandle(self, (pi, ri, vi))
                    handle.setPos(x, y)
                    self._handles.append(handle)
        self.syncing = False

    def handles(self) -> list[VertexHandle]:
        return list(self._handles)

    def set_polygons(self, polygons: Sequence[Polygon]) -> None:
        self.prepareGeometryChange()
        self.polygons = [p.copy() for p in polygons]
        self._path = polygons_path(self.polygons)
        if self._handles:
            self._make_handles()
        self.update()

    def vertex_moved(self, key: tuple[int, int, int], pos: QPointF) -> None:
        ring = self._ring(key)
        ring[key[2]] = (pos.x(), pos.y())
        self.prepareGeometryChange()
        self._path = polygons_path(self.polygons)
        self.update()

    def drag_started(self, key: tuple[int, int, int]) -> None:
        self._drag_origin = [p.copy() for p in self.polygons]

    def drag_finished(self, key: tuple[int, int, int]) -> None:
        origin, self._drag_origin = self._drag_origin, None
        if origin is not None and origin != self.polygons:
            self.on_commit(self.instance_id, [p.copy() for p in self.polygons], key, "Move vertex")

    def request_vertex_delete(self, key: tuple[int, int, int]) -> None:
        """Remove a vertex; a ring left with fewer than 3 is dropped (a part: the instance)."""
        polys = [p.copy() for p in self.polygons]
        pi, ri, vi = key
        poly = polys[pi]
        ring = np.delete(poly.exterior if ri == 0 else poly.holes[ri - 1], vi, axis=0)
        if ri == 0:
            if len(ring) < 3:
                polys.pop(pi)
            else:
                poly.exterior = ring
        elif len(ring) < 3:
            poly.holes.pop(ri - 1)
        else:
            poly.holes[ri - 1] = ring
        self.on_commit(self.instance_id, polys, None, "Delete vertex")

    def insert_vertex_near(self, pos: QPointF, tolerance: float) -> bool:
        """Insert a vertex on the edge nearest ``pos`` if it is within ``tolerance``."""
        best = None
        p = np.array([pos.x(), pos.y()], np.float64)
        for pi, poly in enumerate(self.polygons):
            for ri, ring in enumerate((poly.exterior, *poly.holes)):
                a = ring.astype(np.float64)
                b = np.roll(a, -1, axis=0)
                ab = b - a
                t = np.clip(((p - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
                d = np.hypot(*(a + ab * t[:, None] - p).T)
                k = int(np.argmin(d))
                if d[k] <= tolerance and (best is None or d[k] < best[0]):
                    best = (d[k], pi, ri, k)
        if best is None:
            return False
        _, pi, ri, k = best
        polys = [q.copy() for q in self.polygons]
        poly = polys[pi]
        ring = np.insert(poly.exterior if ri == 0 else poly.holes[ri - 1], k + 1, p, axis=0)
        if ri == 0:
            poly.exterior = ring
        else:
            poly.holes[ri - 1] = ring
        self.on_commit(self.instance_id, polys, None, "Insert vertex")
        return True

    # -- whole-instance move ------------------------------------------------------------------

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        super().mouseReleaseEvent(event)
        offset = self.pos()
        if offset.isNull():
            return
        shift = np.array([offset.x(), offset.y()], np.float32)
        moved = [Polygon(p.exterior + shift, [h + shift for h in p.holes]) for p in self.polygons]
        self.setPos(0, 0)
        self.on_commit(self.instance_id, moved, None, "Move instance")

    # -- painting -----------------------------------------------------------------------------

    def contains_point(self, pos: QPointF) -> bool:
        return self._path.contains(pos - self.pos())

    def boundingRect(self) -> QRectF:  # noqa: N802
        return self._path.boundingRect().adjusted(-4, -4, 4, 4)

    def shape(self) -> QPainterPath:
        return self._path

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        fill = QColor(self.color)
        fill.setAlphaF(min(1.0, self.fill_opacity + 0.15))
        halo = QPen(QColor("white"), OUTLINE_WIDTH + 2.5)
        halo.setCosmetic(True)
        painter.setPen(halo)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self._path)
        pen = QPen(self.color, OUTLINE_WIDTH + 0.5)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(QBrush(fill))
        painter.drawPath(self._path)
