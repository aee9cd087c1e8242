"""The canvas widget: zoom about the cursor, fit / 1:1, pan, and tool dispatch.

Pan with the middle button or by holding Space while dragging. The wheel zooms about the
cursor. Edits leave as signals (``geometry_edited``, ``polygon_drawn``, ``brush_stroke``)
that the editor turns into undo commands; assist gestures (``assist_box``, ``assist_click``,
``assist_region``) go to the model worker, whose answers come back as such edits.
"""

from __future__ import annotations

from collections.abc import Collection

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QGraphicsView, QWidget

from app.core.document import ImageDocument

from .assist_marks import AssistMarks
from .items import InstanceEditor
from .scene import AnnotationScene
from .tools import BoxTool, BrushTool, DrawPolygonTool, SelectTool, Tool

MIN_ZOOM, MAX_ZOOM = 0.02, 64.0
WHEEL_STEP = 1.0015  # zoom factor per wheel angle unit (120 units per notch ~ x1.2)


class CanvasView(QGraphicsView):
    selection_changed = Signal(list)
    # instance id, polygons, merge key | None, History label ("Move vertex", ...)
    geometry_edited = Signal(int, object, object, str)
    polygon_drawn = Signal(object)  # list[Polygon]
    brush_stroke = Signal(object, float, bool)  # (N, 2) points, radius, erase
    assist_box = Signal(object, bool)  # (x0, y0, x1, y1) image pixels, replace the selected
    assist_click = Signal(float, float)  # image pixels: the object under a click
    # image pixels, subtract: the clicked object's region added to / cut from the selected
    assist_region = Signal(float, float, bool)
    cursor_moved = Signal(float, float)  # image coordinates
    zoom_changed = Signal(float)
    brush_size_changed = Signal(float)
    tool_changed = Signal(str)
    review_step = Signal(int)  # Tab (1) / Shift+Tab (-1): next / previous proposal

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas_scene = AnnotationScene(self.geometry_edited.emit)
        self.setScene(self.canvas_scene)
        self.setBackgroundBrush(QColor("#202020"))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontSavePainterState, True)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontAdjustForAntialiasing, True)
        self.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.tools: dict[str, Tool] = {
            t.name: t
            for t in (SelectTool(), DrawPolygonTool(), BrushTool(False), BrushTool(True), BoxTool())
        }
        self.tool: Tool = self.tools["select"]
        self.last_scene_pos = QPointF()
        self._space = False
        self._panning = False
        self._pan_origin = QPointF()
        self._image_size = (0, 0)
        self._fitted = False  # the view shows the whole image: keep it so on resize
        self.assist_marks = AssistMarks(self.canvas_scene)  # assists the model works on

    # -- content ------------------------------------------------------------------------------

    @property
    def doc(self) -> ImageDocument | None:
        return self.canvas_scene.doc

    def show_image(
        self, image: QImage | None, doc: ImageDocument, colors: dict[int, str], *, fit: bool
    ) -> None:
        self.tool.deactivate(self)
        self.assist_marks.clear()  # answers for the image left are dropped
        record = doc.store.image(doc.image_id)
        self._image_size = (record.width, record.height)
        self.canvas_scene.set_colors(colors)
        self.canvas_scene.set_image(image, record.width, record.height)
        self.canvas_scene.load(doc)
        self.tool.activate(self)
        if fit:
            self.fit()
        self.selection_changed.emit([])

    def load_document(self, doc: ImageDocument) -> None:
        """Show ``doc``'s instances (after it changed without an edit, e.g. a reload)."""
        self.canvas_scene.load(doc)

    def image_size(self) -> tuple[int, int]:
        """(width, height) of the shown image."""
        return self._image_size

    def set_display_image(self, image: QImage) -> None:
        """New contrast / gamma / channels for the same image: swap the pixels only."""
        self.canvas_scene.set_image(image, *self._image_size)

    def refresh(self, ids) -> None:
        before = list(self.canvas_scene.selection)
        self.canvas_scene.refresh(ids)
        if self.canvas_scene.selection != before:
            self.selection_changed.emit(list(self.canvas_scene.selection))

    def reload(self, colors: dict[int, str] | None = None) -> None:
        """Re-read every instance from the document, keeping selection where possible."""
        if colors is not None:
            self.canvas_scene.set_colors(colors)
        self.canvas_scene.restyle()
        self.selection_changed.emit(list(self.canvas_scene.selection))

    # -- selection ----------------------------------------------------------------------------

    def selection(self) -> list[int]:
        return list(self.canvas_scene.selection)

    def set_selection(self, ids) -> None:
        if self.doc is not None and self.canvas_scene.set_selection(ids):
            self.selection_changed.emit(self.selection())

    def toggle_selected(self, instance_id: int) -> None:
        sel = self.selection()
        self.set_selection(
            [i for i in sel if i != instance_id] if instance_id in sel else [*sel, instance_id]
        )

    def layer_instance_at(self, pos: QPointF, exclude: Collection[int] = ()) -> int | None:
        """The smallest shown instance under ``pos`` other than those in ``exclude``."""
        return self.canvas_scene.layer.instance_at(pos, exclude)

    def single_editor(self) -> InstanceEditor | None:
        editors = self.canvas_scene.editors
        return next(iter(editors.values())) if len(editors) == 1 else None

    def center_on_instance(self, instance_id: int) -> None:
        editor = self.canvas_scene.editors.get(instance_id)
        if editor is not None and not self.mapToScene(
            self.viewport().rect()
        ).boundingRect().contains(editor.sceneBoundingRect()):
            self.centerOn(editor.sceneBoundingRect().center())

    def zoom_to_instance(self, instance_id: int) -> None:
        """Select an instance and fill the view with it (and a margin around it)."""
        shape = self.canvas_scene.layer.shape_of(instance_id)
        if shape is None:
            return
        self.set_selection([instance_id])
        box = shape.bbox
        margin = max(box.width(), box.height()) * 0.5 + 4
        self.fitInView(
            box.adjusted(-margin, -margin, margin, margin), Qt.AspectRatioMode.KeepAspectRatio
        )
        self._fitted = False
        if self.zoom() > MAX_ZOOM:
            self.set_zoom(MAX_ZOOM)
        self.centerOn(box.center())
        self.zoom_changed.emit(self.zoom())

    # -- display options ----------------------------------------------------------------------

    def set_threshold(self, value: float) -> None:
        self.canvas_scene.layer.set_threshold(value)
        hidden = [i for i in self.selection() if not self.canvas_scene.layer.is_shown(i)]
        if hidden:
            self.set_selection([i for i in self.selection() if i not in hidden])

    def set_hidden_categories(self, ids: frozenset[int]) -> None:
        """Hide every instance of these categories (and drop them from the selection)."""
        layer = self.canvas_scene.layer
        layer.set_hidden_categories(ids)
        hidden = [i for i in self.selection() if not layer.is_shown(i)]
        if hidden:
            self.set_selection([i for i in self.selection() if i not in hidden])

    def set_fill_opacity(self, value: float) -> None:
        self.canvas_scene.fill_opacity = value
        self.canvas_scene.layer.set_fill_opacity(value)
        for editor in self.canvas_scene.editors.values():
            editor.fill_opacity = value
            editor.update()

    def set_score_labels_visible(self, visible: bool) -> None:
        """Proposal scores next to the outlines (off where they crowd dense images)."""
        self.canvas_scene.layer.show_labels = visible
        self.canvas_scene.layer.update()

    def score_labels_visible(self) -> bool:
        return self.canvas_scene.layer.show_labels

    def set_instances_visible(self, visible: bool) -> None:
        self.canvas_scene.layer.setVisible(visible)
        for editor in self.canvas_scene.editors.values():
            editor.setVisible(visible)

    # -- tools --------------------------------------------------------------------------------

    def set_tool(self, name: str) -> None:
        if self.tool.name == name:
            return
        self.tool.deactivate(self)
        self.tool = self.tools[name]
        self.tool.activate(self)
        self.tool_changed.emit(name)

    def brush_radius(self) -> float:
        return self.tools["brush"].radius

    def set_brush_radius(self, radius: float) -> None:
        for name in ("brush", "eraser"):
            tool = self.tools[name]
            assert isinstance(tool, BrushTool)
            tool.set_radius(self, radius)

    # -- zoom and pan -------------------------------------------------------------------------

    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, factor: float) -> None:
        self._fitted = False
        factor = min(max(factor, MIN_ZOOM), MAX_ZOOM)
        self.scale(factor / self.zoom(), factor / self.zoom())
        self.zoom_changed.emit(self.zoom())

    def fit(self) -> None:
        w, h = self._image_size
        if w and h:
            self.fitInView(QRectF(0, 0, w, h), Qt.AspectRatioMode.KeepAspectRatio)
            self._fitted = True
            self.zoom_changed.emit(self.zoom())

    def is_fitted(self) -> bool:
        """True until the person zooms after F (fit) or opening an image."""
        return self._fitted

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt API)
        delta = event.angleDelta().y()
        if delta:
            self.set_zoom(self.zoom() * WHEEL_STEP**delta)
        event.accept()

    def _start_pan(self, event: QMouseEvent) -> None:
        self._panning = True
        self._pan_origin = event.position()
        self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = self.mapToScene(event.position().toPoint())
        if event.button() == Qt.MouseButton.MiddleButton or (
            self._space and event.button() == Qt.MouseButton.LeftButton
        ):
            self._start_pan(event)
            self._fitted = False
            return
        if not self.tool.press(self, pos, event):
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._panning:
            d = event.position() - self._pan_origin
            self._pan_origin = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(d.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(d.y()))
            return
        pos = self.mapToScene(event.position().toPoint())
        self.last_scene_pos = pos
        self.cursor_moved.emit(pos.x(), pos.y())
        if not self.tool.move(self, pos, event):
            super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._panning:
            self._panning = False
            self.viewport().setCursor(self.tool.cursor)
            return
        pos = self.mapToScene(event.position().toPoint())
        if not self.tool.release(self, pos, event):
            super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = self.mapToScene(event.position().toPoint())
        if not self.tool.double_click(self, pos, event):
            super().mouseDoubleClickEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            return
        if self.tool.key(self, event):
            return
        if event.key() == Qt.Key.Key_Escape and self.selection():
            self.set_selection([])
            return
        super().keyPressEvent(event)

    def focusNextPrevChild(self, next: bool) -> bool:  # noqa: N802, A002 (Qt API)
        """Tab and Shift+Tab on the canvas step through the proposals instead of the focus."""
        self.review_step.emit(1 if next else -1)
        return True

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.viewport().setCursor(self.tool.cursor)
            return
        super().keyReleaseEvent(event)
