"""The editing session of the open project: current image, its document, undo and the canvas.

Every user edit arrives here (from canvas signals or window actions) and leaves as one
QUndoCommand on the current image's stack. Nothing here draws; nothing here holds data that
is not in the store.
"""

from __future__ import annotations

import logging

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage, QUndoGroup

from app.core.document import Edit, ImageDocument, brush_polygons
from app.core.images import ImageReadError, read_image
from app.core.store import ProjectStore
from app.core.types import ImageStatus, Instance, Polygon, Source

from .canvas.view import CanvasView
from .display import DisplaySettings, render_qimage
from .undo import EditCommand, GeometryCommand, UndoStacks

log = logging.getLogger(__name__)

REVIEW_STATUSES = (ImageStatus.NEW, ImageStatus.PROPOSED, ImageStatus.IN_PROGRESS)


class Editor(QObject):
    image_changed = Signal(int)  # a new current image id
    instances_changed = Signal()  # the current image's instances or status changed
    image_error = Signal(str)

    def __init__(self, store: ProjectStore, canvas: CanvasView) -> None:
        super().__init__()
        self.store = store
        self.canvas = canvas
        self.undo_group = QUndoGroup(self)
        self.stacks = UndoStacks(self.undo_group)
        self.docs: dict[int, ImageDocument] = {}
        self.doc: ImageDocument | None = None
        self.pixels: np.ndarray | None = None
        self.display = DisplaySettings()
        self.threshold = 0.0
        self.current_category: int | None = None
        canvas.geometry_edited.connect(self.edit_geometry)
        canvas.polygon_drawn.connect(self.add_polygon)
        canvas.brush_stroke.connect(self.brush)

    # -- images -------------------------------------------------------------------------------

    def colors(self) -> dict[int, str]:
        return {c.id: c.color for c in self.store.categories()}

    def open_image(self, image_id: int) -> None:
        """Show an image: decode once, map for display, load its instances."""
        if self.doc is not None and self.doc.image_id == image_id:
            return
        record = self.store.image(image_id)
        try:
            self.pixels = read_image(self.store.abspath(record))
            qimage: QImage | None = render_qimage(self.pixels, self.display)
        except ImageReadError as exc:
            log.warning("%s", exc)
            self.pixels, qimage = None, None
            self.image_error.emit(str(exc))
        doc = self.docs.get(image_id)
        if doc is None:
            doc = self.docs[image_id] = ImageDocument(self.store, image_id)
        else:
            doc.reload()
        self.doc = doc
        self.stacks.activate(image_id)
        self.canvas.show_image(qimage, doc, self.colors(), fit=True)
        self.canvas.set_threshold(self.threshold)
        self.image_changed.emit(image_id)

    def reload_current(self) -> None:
        """Re-read the current image's instances from the store (another writer changed them,
        e.g. the proposal worker). Undo history stays unless the instances it refers to are gone."""
        if self.doc is None:
            return
        before = set(self.doc.instances)
        self.doc.reload()
        if not before <= set(self.doc.instances):
            self.stacks.stack(self.doc.image_id).clear()
        self.canvas.canvas_scene.load(self.doc)
        self.canvas.reload(self.colors())
        self.instances_changed.emit()

    def set_display(self, settings: DisplaySettings) -> None:
        self.display = settings
        if self.pixels is not None:
            self.canvas.set_display_image(render_qimage(self.pixels, settings))

    def set_threshold(self, value: float) -> None:
        self.threshold = value
        self.canvas.set_threshold(value)

    # -- commands -----------------------------------------------------------------------------

    def _applied(self, doc: ImageDocument, inverse: Edit) -> None:
        if doc is not self.doc:
            return
        ids = [
            *(i.id for i in inverse.add),
            *(i.id for i in inverse.update),
            *inverse.delete,
            *inverse.accept,
            *inverse.unaccept,
        ]
        self.canvas.refresh(ids)
        self.instances_changed.emit()

    def _push(self, text: str, operation) -> None:
        if self.doc is None:
            return
        self.stacks.stack(self.doc.image_id).push(
            EditCommand(self.doc, text, operation, self._applied)
        )

    def edit_geometry(self, instance_id: int, polygons: list[Polygon], merge_key) -> None:
        if self.doc is None:
            return
        self.stacks.stack(self.doc.image_id).push(
            GeometryCommand(self.doc, instance_id, polygons, merge_key, self._applied)
        )

    def _category_for_new(self) -> int | None:
        cats = self.store.categories()
        if not cats:
            return None
        ids = [c.id for c in cats]
        return self.current_category if self.current_category in ids else ids[0]

    def add_polygon(self, polygons: list[Polygon]) -> None:
        category = self._category_for_new()
        if category is None:
            self.image_error.emit("Add a category first (Categories panel), then draw.")
            return
        inst = Instance(category_id=category, polygons=polygons, source=Source.HUMAN)
        new_ids: list[int] = []

        def op(doc: ImageDocument) -> Edit:
            inverse, new_id = doc.add_instance(inst)
            new_ids.append(new_id)
            return inverse

        self._push("Draw polygon", op)
        if new_ids:
            self.canvas.set_selection(new_ids)

    def brush(self, stroke: np.ndarray, radius: float, erase: bool) -> None:
        if self.doc is None:
            return
        size = self.canvas.image_size()
        sel = self.canvas.selection()
        if len(sel) == 1:
            inst = self.doc.instance(sel[0])
            polys = brush_polygons(inst.polygons, stroke, radius, erase=erase, image_size=size)
            self.edit_geometry(sel[0], polys, None)
        elif not erase and not sel:
            polys = brush_polygons([], stroke, radius, erase=False, image_size=size)
            if polys:
                self.add_polygon(polys)

    def delete_selected(self) -> None:
        ids = self.canvas.selection()
        if ids:
            self._push(f"Delete {len(ids)} instance(s)", lambda d: d.delete_instances(ids))

    def set_category_of_selected(self, category_id: int) -> None:
        self.current_category = category_id
        ids = self.canvas.selection()
        if ids:
            self._push("Change category", lambda d: d.change_category(ids, category_id))

    def merge_selected(self) -> None:
        ids = self.canvas.selection()
        if len(ids) < 2:
            return
        new_ids: list[int] = []

        def op(doc: ImageDocument) -> Edit:
            inverse, new_id = doc.merge(ids)
            new_ids.append(new_id)
            return inverse

        self._push(f"Merge {len(ids)} instances", op)
        self.canvas.set_selection(new_ids)

    def accept_selected(self) -> None:
        ids = [i for i in self.canvas.selection() if self.doc and self.doc.is_pending(i)]
        if ids:
            self._push("Accept proposal", lambda d: d.accept(ids))
            self.select_next_pending()

    def reject_selected(self) -> None:
        if self.doc is None:
            return
        ids = [i for i in self.canvas.selection() if self.doc.instance(i).source == Source.MODEL]
        if ids:
            self._push("Reject proposal", lambda d: d.reject(ids))
            self.select_next_pending()

    def accept_all(self) -> None:
        t = self.threshold
        if self.doc is not None and self.doc.pending_ids():
            self._push(f"Accept all proposals >= {t:.2f}", lambda d: d.accept_above(t))

    def select_next_pending(self) -> None:
        """Select the next shown proposal to review (keyboard-only review)."""
        if self.doc is None:
            return
        layer = self.canvas.canvas_scene.layer
        pending = [i for i in self.doc.pending_ids() if layer.is_shown(i)]
        self.canvas.set_selection(pending[:1])
        if pending:
            self.canvas.center_on_instance(pending[0])

    def set_status(self, status: ImageStatus) -> None:
        if self.doc is not None and self.doc.status != status:
            self._push(f"Mark {status.value}", lambda d: d.set_status(status))

    def next_to_review(self, order: str = "path") -> int | None:
        """The first image after the current one (in ``order``) that still needs review."""
        images = self.store.images(status=list(REVIEW_STATUSES), order=order)
        if not images:
            return None
        ids = [im.id for im in images if self.doc is None or im.id != self.doc.image_id]
        if not ids:
            return None
        if self.doc is not None:
            all_ids = [im.id for im in self.store.images(order=order)]
            pos = all_ids.index(self.doc.image_id) if self.doc.image_id in all_ids else -1
            after = [i for i in all_ids[pos + 1 :] if i in set(ids)]
            if after:
                return after[0]
        return ids[0]
