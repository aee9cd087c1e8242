"""The annotation scene: the image, the instance layer and the editors of the selection."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsScene

from app.core.document import ImageDocument
from app.core.types import Instance

from .items import InstanceEditor, InstanceLayer, Shape
from .outlines import instance_outlines

FALLBACK_COLOR = "#cccccc"


class AnnotationScene(QGraphicsScene):
    """Mirrors one :class:`ImageDocument`; updated per changed instance, not rebuilt."""

    def __init__(self, on_commit: Callable) -> None:
        super().__init__()
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.NoIndex)
        self.on_commit = on_commit  # (instance_id, polygons, merge_key, label) -> None
        self.doc: ImageDocument | None = None
        self.colors: dict[int, QColor] = {}
        self.selection: list[int] = []
        self.editors: dict[int, InstanceEditor] = {}
        self.image_item = QGraphicsPixmapItem()
        self.image_item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.image_item.setZValue(-10)
        self.addItem(self.image_item)
        self.layer = InstanceLayer(QRectF())
        self.addItem(self.layer)
        self.fill_opacity = 0.35

    # -- loading ------------------------------------------------------------------------------

    def set_image(self, image: QImage | None, width: int, height: int) -> None:
        self.image_item.setPixmap(QPixmap.fromImage(image) if image is not None else QPixmap())
        rect = QRectF(0, 0, width, height)
        self.setSceneRect(rect.adjusted(-width * 0.5, -height * 0.5, width * 0.5, height * 0.5))
        self.layer.set_rect(rect)

    def set_colors(self, colors: dict[int, str]) -> None:
        self.colors = {k: QColor(v) for k, v in colors.items()}

    def load(self, doc: ImageDocument) -> None:
        self.doc = doc
        self._clear_editors()
        self.selection = []
        self.layer.set_hidden(())
        self.layer.set_shapes(self._shapes(doc.instances.values()))

    def _color(self, inst: Instance) -> QColor:
        return self.colors.get(inst.category_id, QColor(FALLBACK_COLOR))

    def _shapes(self, instances: Iterable[Instance]) -> dict[int, Shape]:
        """Shapes of many instances at once (their rings go to Qt in one batch)."""
        assert self.doc is not None
        instances = list(instances)
        outlines = instance_outlines([inst.polygons for inst in instances])
        is_pending = self.doc.is_pending
        fallback = QColor(FALLBACK_COLOR)
        return {
            inst.id: Shape(
                outline=outline,
                color=self.colors.get(inst.category_id, fallback),
                pending=is_pending(inst.id),
                score=inst.score,
                bbox=outline.boundingRect(),
                category_id=inst.category_id,
                crowd=inst.crowd,
            )
            for inst, outline in zip(instances, outlines, strict=True)
        }

    def refresh(self, ids: Iterable[int]) -> None:
        """Bring the given instances in line with the document (added, changed or gone)."""
        assert self.doc is not None
        ids = set(ids)
        present = [self.doc.instances[i] for i in ids if i in self.doc.instances]
        for i in ids - {inst.id for inst in present}:
            self.layer.put(i, None)
        for i, shape in self._shapes(present).items():
            self.layer.put(i, shape)
        self.set_selection([i for i in self.selection if i in self.doc.instances], force=True)

    def restyle(self) -> None:
        """Colours changed (categories edited): rebuild the shapes' styles."""
        if self.doc is not None:
            self.layer.set_shapes(self._shapes(self.doc.instances.values()))
            self.set_selection(self.selection, force=True)

    # -- selection ----------------------------------------------------------------------------

    def _clear_editors(self) -> None:
        for editor in self.editors.values():
            self.removeItem(editor)
        self.editors = {}

    def set_selection(self, ids: Iterable[int], *, force: bool = False) -> bool:
        """Select instances; returns True if the selection changed."""
        assert self.doc is not None
        ids = [i for i in dict.fromkeys(ids) if i in self.doc.instances]
        if ids == self.selection and not force:
            return False
        changed = ids != self.selection
        self.selection = ids
        self._clear_editors()
        for i in ids:
            inst = self.doc.instances[i]
            editor = InstanceEditor(
                i,
                inst.polygons,
                self._color(inst),
                editable=len(ids) == 1,
                on_commit=self.on_commit,
            )
            editor.fill_opacity = self.fill_opacity
            self.addItem(editor)
            self.editors[i] = editor
        self.layer.set_hidden(ids)
        return changed
