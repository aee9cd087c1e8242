"""Canvas tools as state objects: each gets the view's mouse and key events while active.

A handler returns True when it used the event; otherwise the view does its default
(item interaction such as vertex handles). Tools never edit data themselves: they ask the
canvas, which emits a request that the editor turns into an undo command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QKeyEvent, QMouseEvent, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsPathItem, QGraphicsRectItem

from app.core.types import Polygon

from .items import InstanceEditor, VertexHandle

if TYPE_CHECKING:
    from .view import CanvasView

EDGE_TOLERANCE_PX = 6.0  # screen pixels within which a double-click inserts a vertex
CLICK_SLOP_PX = 4.0  # screen pixels a press may move and still count as a click


class Tool:
    name = "tool"
    cursor = Qt.CursorShape.ArrowCursor

    def activate(self, view: CanvasView) -> None:
        view.viewport().setCursor(self.cursor)

    def deactivate(self, view: CanvasView) -> None:
        """Drop any unfinished gesture."""

    @property
    def in_progress(self) -> bool:
        """A gesture that spans several events (a polygon being clicked) is under way."""
        return False

    def press(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        return False

    def move(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        return False

    def release(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        return False

    def double_click(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        return False

    def key(self, view: CanvasView, event: QKeyEvent) -> bool:
        return False


class SelectTool(Tool):
    """Click selects (Ctrl/Shift-click adds); drag the selection to move it; drag a handle to
    move a vertex, Shift-click a handle to delete it, double-click an edge to insert one."""

    name = "select"

    def press(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        if event.button() != Qt.MouseButton.LeftButton:
            return False
        item = view.itemAt(event.position().toPoint())
        if isinstance(item, VertexHandle):
            return False
        if isinstance(item, InstanceEditor) and item.contains_point(pos):
            if event.modifiers() & (
                Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
            ):
                view.toggle_selected(item.instance_id)
                return True
            return False  # let the editor move the instance
        hit = view.layer_instance_at(pos)
        if event.modifiers() & (
            Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
        ):
            if hit is not None:
                view.toggle_selected(hit)
        else:
            view.set_selection([] if hit is None else [hit])
        return True

    def double_click(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        editor = view.single_editor()
        if editor is None:
            return False
        return editor.insert_vertex_near(pos, EDGE_TOLERANCE_PX / max(view.zoom(), 1e-6))


class DrawPolygonTool(Tool):
    """Click points; Enter or double-click closes; Backspace removes the last; Esc cancels."""

    name = "polygon"
    cursor = Qt.CursorShape.CrossCursor

    def __init__(self) -> None:
        self.points: list[QPointF] = []
        self._preview: QGraphicsPathItem | None = None
        self._hover: QPointF | None = None

    def deactivate(self, view: CanvasView) -> None:
        self.cancel(view)

    @property
    def in_progress(self) -> bool:
        return bool(self.points)

    def cancel(self, view: CanvasView) -> None:
        self.points = []
        self._hover = None
        if self._preview is not None:
            view.scene().removeItem(self._preview)
            self._preview = None

    def _update(self, view: CanvasView) -> None:
        if self._preview is None:
            self._preview = QGraphicsPathItem()
            pen = QPen(QColor("yellow"), 1.5)
            pen.setCosmetic(True)
            self._preview.setPen(pen)
            self._preview.setZValue(20)
            view.scene().addItem(self._preview)
        path = QPainterPath()
        pts = self.points + ([self._hover] if self._hover is not None else [])
        if pts:
            path.moveTo(pts[0])
            for p in pts[1:]:
                path.lineTo(p)
        self._preview.setPath(path)

    def press(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        if event.button() != Qt.MouseButton.LeftButton:
            return False
        self.points.append(QPointF(pos))
        self._update(view)
        return True

    def move(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        if self.points:
            self._hover = QPointF(pos)
            self._update(view)
        return False

    def double_click(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        # The double-click's first press already added its point.
        self.finish(view)
        return True

    def finish(self, view: CanvasView) -> None:
        pts = np.array([[p.x(), p.y()] for p in self.points], np.float32)
        if len(pts) > 1:
            keep = np.r_[True, np.any(np.diff(pts, axis=0) != 0, axis=1)]
            pts = pts[keep]
        self.cancel(view)
        if len(pts) >= 3:
            view.polygon_drawn.emit([Polygon(pts)])

    def key(self, view: CanvasView, event: QKeyEvent) -> bool:
        if not self.points:
            return False
        k = event.key()
        if k in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.finish(view)
        elif k == Qt.Key.Key_Backspace:
            self.points.pop()
            self._update(view)
        elif k == Qt.Key.Key_Escape:
            self.cancel(view)
        else:
            return False
        return True


class BrushTool(Tool):
    """Paint (or erase) a round brush onto the selected instance; painting with nothing
    selected starts a new instance. ``[`` and ``]`` change the size."""

    cursor = Qt.CursorShape.BlankCursor

    def __init__(self, erase: bool, radius: float = 8.0) -> None:
        self.erase = erase
        self.name = "eraser" if erase else "brush"
        self.radius = radius
        self._stroke: list[tuple[float, float]] = []
        self._ring: QGraphicsEllipseItem | None = None
        self._trail: QGraphicsPathItem | None = None

    def activate(self, view: CanvasView) -> None:
        super().activate(view)
        if self._ring is None:
            self._ring = QGraphicsEllipseItem()
            pen = QPen(QColor("red" if self.erase else "white"), 1)
            pen.setCosmetic(True)
            self._ring.setPen(pen)
            self._ring.setZValue(30)
            view.scene().addItem(self._ring)
        self._place(view.last_scene_pos)

    def deactivate(self, view: CanvasView) -> None:
        for item in (self._ring, self._trail):
            if item is not None and item.scene() is not None:
                item.scene().removeItem(item)
        self._ring = self._trail = None
        self._stroke = []

    def set_radius(self, view: CanvasView, radius: float) -> None:
        self.radius = float(min(max(radius, 1.0), 500.0))
        self._place(view.last_scene_pos)
        view.brush_size_changed.emit(self.radius)

    def _place(self, pos: QPointF) -> None:
        if self._ring is not None:
            r = self.radius
            self._ring.setRect(pos.x() - r, pos.y() - r, 2 * r, 2 * r)

    def _draw_trail(self, view: CanvasView) -> None:
        if self._trail is None:
            self._trail = QGraphicsPathItem()
            color = QColor("red" if self.erase else "white")
            color.setAlphaF(0.5)
            pen = QPen(color, 2 * self.radius)
            pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
            self._trail.setPen(pen)
            self._trail.setZValue(25)
            view.scene().addItem(self._trail)
        path = QPainterPath(QPointF(*self._stroke[0]))
        for x, y in self._stroke[1:] or self._stroke:
            path.lineTo(x, y)
        self._trail.setPath(path)

    def press(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        if event.button() != Qt.MouseButton.LeftButton:
            return False
        self._stroke = [(pos.x(), pos.y())]
        self._draw_trail(view)
        return True

    def move(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        self._place(pos)
        if self._stroke:
            self._stroke.append((pos.x(), pos.y()))
            self._draw_trail(view)
            return True
        return False

    def release(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        if not self._stroke:
            return False
        stroke = np.array(self._stroke, np.float64)
        self._stroke = []
        if self._trail is not None:
            view.scene().removeItem(self._trail)
            self._trail = None
        view.brush_stroke.emit(stroke, self.radius, self.erase)
        return True

    def key(self, view: CanvasView, event: QKeyEvent) -> bool:
        if event.key() == Qt.Key.Key_BracketRight:
            self.set_radius(view, self.radius * 1.25)
        elif event.key() == Qt.Key.Key_BracketLeft:
            self.set_radius(view, self.radius / 1.25)
        else:
            return False
        return True


REGION_ADD, REGION_REMOVE = "add", "remove"


def click_region_mode(modifiers: Qt.KeyboardModifier) -> str | None:
    """What a box-tool click with ``modifiers`` does to the selected instance: Shift adds
    the clicked object's region, Alt or Ctrl+Shift removes it; None for a plain click."""
    shift = bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
    ctrl = bool(modifiers & Qt.KeyboardModifier.ControlModifier)
    if modifiers & Qt.KeyboardModifier.AltModifier or (shift and ctrl):
        return REGION_REMOVE
    return REGION_ADD if shift else None


class BoxTool(Tool):
    """Box to mask: drag a box around an object and the model's mask head outlines it
    (with Shift: as the selected instance's new outline); a click without a drag asks the
    model for the object under the cursor, and with Shift adds that object's region to the
    selected instance, with Alt (or Ctrl+Shift, where the window manager takes Alt+click)
    removes it. Esc cancels a drag. The view only emits the request (``assist_box`` /
    ``assist_click`` / ``assist_region``)."""

    name = "box"
    cursor = Qt.CursorShape.CrossCursor

    def __init__(self) -> None:
        self.start: QPointF | None = None  # scene position of the press; None when idle
        self._press_screen = QPointF()
        self._rect: QGraphicsRectItem | None = None

    def deactivate(self, view: CanvasView) -> None:
        self.cancel(view)

    def cancel(self, view: CanvasView) -> None:
        self.start = None
        if self._rect is not None:
            view.scene().removeItem(self._rect)
            self._rect = None

    def press(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        if event.button() != Qt.MouseButton.LeftButton:
            return False
        self.start = QPointF(pos)
        self._press_screen = event.position()
        return True

    def move(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        if self.start is None:
            return False
        if self._rect is None:
            self._rect = QGraphicsRectItem()
            pen = QPen(QColor("yellow"), 1.5, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            self._rect.setPen(pen)
            self._rect.setZValue(20)
            view.scene().addItem(self._rect)
        self._rect.setRect(QRectF(self.start, pos).normalized())
        return True

    def release(self, view: CanvasView, pos: QPointF, event: QMouseEvent) -> bool:
        if self.start is None or event.button() != Qt.MouseButton.LeftButton:
            return False
        start = self.start
        moved = event.position() - self._press_screen
        self.cancel(view)
        if max(abs(moved.x()), abs(moved.y())) < CLICK_SLOP_PX:
            region = click_region_mode(event.modifiers())
            if region is None:
                view.assist_click.emit(start.x(), start.y())
            else:
                view.assist_region.emit(start.x(), start.y(), region == REGION_REMOVE)
        else:
            r = QRectF(start, pos).normalized()
            replace = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
            view.assist_box.emit((r.left(), r.top(), r.right(), r.bottom()), replace)
        return True

    def key(self, view: CanvasView, event: QKeyEvent) -> bool:
        if self.start is None or event.key() != Qt.Key.Key_Escape:
            return False
        self.cancel(view)
        return True
