"""What the canvas shows while the model works on an assist: the box dragged (or the box a
refine asks about) as a dashed outline, a click as a small dashed ring, until the answer
comes, is dropped, or the image changes. Without them a click on a busy machine looks
like it did nothing."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsItem, QGraphicsRectItem, QGraphicsScene

MARK_COLOR = QColor("#40e0ff")
RING_RADIUS_PX = 7.0  # screen pixels: the ring keeps its size at every zoom
MARK_Z = 21  # above the outlines and the box being dragged


def _pen() -> QPen:
    pen = QPen(MARK_COLOR, 1.5, Qt.PenStyle.DashLine)
    pen.setCosmetic(True)
    return pen


class AssistMarks:
    """The marks of the assists in flight, by request number."""

    def __init__(self, scene: QGraphicsScene) -> None:
        self._scene = scene
        self._items: dict[int, QGraphicsItem] = {}

    def __len__(self) -> int:
        return len(self._items)

    def box(self, seq: int, box: tuple[float, float, float, float]) -> None:
        x0, y0, x1, y1 = box
        item = QGraphicsRectItem(QRectF(QPointF(x0, y0), QPointF(x1, y1)).normalized())
        self._add(seq, item)

    def point(self, seq: int, x: float, y: float) -> None:
        r = RING_RADIUS_PX
        item = QGraphicsEllipseItem(-r, -r, 2 * r, 2 * r)
        item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        item.setPos(x, y)
        self._add(seq, item)

    def remove(self, seq: int) -> None:
        item = self._items.pop(seq, None)
        if item is not None and item.scene() is self._scene:
            self._scene.removeItem(item)

    def clear(self) -> None:
        for seq in list(self._items):
            self.remove(seq)

    def _add(self, seq: int, item: QGraphicsRectItem | QGraphicsEllipseItem) -> None:
        self.remove(seq)
        item.setPen(_pen())
        item.setZValue(MARK_Z)
        item.setToolTip("Asking the model\u2026")
        self._scene.addItem(item)
        self._items[seq] = item
