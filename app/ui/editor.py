"""The editing session of the open project: current image, its document, undo and the canvas.

Every user edit arrives here (from canvas signals or window actions) and leaves as one
QUndoCommand on the current image's stack. Nothing here draws; nothing here holds data that
is not in the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage, QUndoGroup

from app.core.document import Edit, ImageDocument, brush_polygons
from app.core.images import ImageReadError, read_image
from app.core.simplify_tolerance import project_tolerance
from app.core.store import ProjectStore
from app.core.types import ImageStatus, Instance, Polygon, Provenance, Source

from .canvas.view import CanvasView
from .display import DisplaySettings, render_qimage
from .undo import EditCommand, GeometryCommand, UndoStacks

log = logging.getLogger(__name__)

REVIEW_STATUSES = (ImageStatus.NEW, ImageStatus.PROPOSED, ImageStatus.IN_PROGRESS)


@dataclass(frozen=True)
class DoneSummary:
    """What marking an image done did with its pending proposals (the done rule)."""

    accepted: int
    rejected: int
    threshold: float
    blocked: int = 0  # pending proposals of hidden categories: nothing was done

    def message(self) -> str:
        if self.blocked:
            return (
                f"Not marked done: {self.blocked} pending proposal(s) belong to hidden "
                "categories. Show all categories (Categories dock) to review them first."
            )
        if not (self.accepted or self.rejected):
            return "Marked done."
        return (
            f"Marked done: accepted {self.accepted} shown proposal(s), rejected "
            f"{self.rejected} hidden below score {self.threshold:.2f} (Ctrl+Z undoes)."
        )


class Editor(QObject):
    image_changed = Signal(int)  # a new current image id
    instances_changed = Signal()  # the current image's instances or status changed
    image_error = Signal(str)
    save_failed = Signal(str)  # an edit the store did not take; the image shows the saved state
    drawing_category_changed = Signal(int)  # the category new shapes get

    def __init__(self, store: ProjectStore, canvas: CanvasView) -> None:
        super().__init__()
        self.store = store
        self.canvas = canvas
        self.undo_group = QUndoGroup(self)
        self.stacks = UndoStacks(self.undo_group, on_failed=self._save_failed)
        self.docs: dict[int, ImageDocument] = {}
        self.doc: ImageDocument | None = None
        self.pixels: np.ndarray | None = None
        self.display = DisplaySettings()
        self.threshold = 0.0
        self.hidden_categories: frozenset[int] = frozenset()
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
        self._show_document()

    def reload_if_changed_elsewhere(self) -> bool:
        """Re-read the shown image when another connection changed it (another program, or
        this app's own proposal worker before its signal arrives), as :meth:`reload_current`
        does; True if it did. The window polls this."""
        if self.doc is None or not self.doc.changed_elsewhere():
            return False
        self.reload_current()
        self.image_error.emit(
            "This image was changed in the project (new proposals or another program); "
            "it shows what is saved."
        )
        return True

    def _show_document(self) -> None:
        """Redraw the current image's instances from its document (what is saved)."""
        assert self.doc is not None
        self.canvas.load_document(self.doc)
        self.canvas.reload(self.colors())
        self.instances_changed.emit()

    def forget_history(self) -> None:
        """Drop every image's undo history and cached document (the project changed under
        them, e.g. an import replaced instances)."""
        for image_id in list(self.docs):
            self.stacks.drop(image_id)
        self.docs.clear()

    def reopen_current(self) -> None:
        """Show the current image again from the store, with a fresh document."""
        if self.doc is None:
            return
        image_id = self.doc.image_id
        self.doc = None
        self.open_image(image_id)

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

    def _save_failed(self, doc: ImageDocument, exc: Exception) -> None:
        """Show what is saved again (the undo stack already left the edit out) and say why."""
        if doc is self.doc:
            self._show_document()
        message = f"Not saved: {exc}. The image shows what is saved."
        log.warning("%s", message)
        self.image_error.emit(message)
        self.save_failed.emit(message)

    def _push(self, text: str, operation) -> None:
        if self.doc is None:
            return
        self.stacks.push(EditCommand(self.doc, text, operation, self._applied))

    def edit_geometry(
        self,
        instance_id: int,
        polygons: list[Polygon],
        merge_key,
        label: str = "Edit shape",
        provenance: Provenance | None = None,
    ) -> None:
        """A new outline for an instance; ``provenance`` says an assist made it (a person's
        edit otherwise, see :mod:`app.core.document`)."""
        if self.doc is None:
            return
        self.stacks.push(
            GeometryCommand(
                self.doc, instance_id, polygons, merge_key, self._applied, label, provenance
            )
        )

    def absorb(
        self, instance_id: int, other_id: int, polygons: list[Polygon], label: str
    ) -> None:
        """``instance_id`` takes the outline ``polygons`` and ``other_id`` is deleted, one
        undo step named ``label`` (a neighbour added to the selected instance)."""
        self._push(label, lambda d: d.absorb(instance_id, other_id, polygons))
        self.canvas.set_selection([instance_id])

    def _category_for_new(self) -> int | None:
        cats = self.store.categories()
        if not cats:
            return None
        ids = [c.id for c in cats]
        return self.current_category if self.current_category in ids else ids[0]

    def add_polygon(
        self,
        polygons: list[Polygon],
        label: str = "Draw polygon",
        provenance: Provenance = Provenance.DRAWN,
    ) -> None:
        """A new instance of the drawing category, one undo step named ``label`` (a drawn
        polygon, a brush stroke on nothing, or with ``provenance=assisted`` an assist's
        answer), selected."""
        category = self._category_for_new()
        if category is None:
            self.image_error.emit("Add a category first (Categories panel), then draw.")
            return
        inst = Instance(
            category_id=category, polygons=polygons, source=Source.HUMAN, provenance=provenance
        )
        new_ids: list[int] = []

        def op(doc: ImageDocument) -> Edit:
            inverse, new_id = doc.add_instance(inst)
            new_ids.append(new_id)
            return inverse

        self._push(label, op)
        if new_ids:
            self.canvas.set_selection(new_ids)

    def brush(self, stroke: np.ndarray, radius: float, erase: bool) -> None:
        if self.doc is None:
            return
        size = self.canvas.image_size()
        sel = self.canvas.selection()
        px = project_tolerance(self.store)  # the outline is traced anew: simplified by this
        if len(sel) == 1:
            inst = self.doc.instance(sel[0])
            polys = brush_polygons(
                inst.polygons, stroke, radius, erase=erase, image_size=size, tolerance=px
            )
            self.edit_geometry(sel[0], polys, None, "Erase" if erase else "Brush")
        elif not erase and not sel:
            polys = brush_polygons([], stroke, radius, erase=False, image_size=size, tolerance=px)
            if polys:
                self.add_polygon(polys)

    def delete_selected(self) -> None:
        ids = self.canvas.selection()
        if ids:
            self._push(f"Delete {len(ids)} instance(s)", lambda d: d.delete_instances(ids))

    def set_category_of_selected(self, category_id: int) -> None:
        """With a selection: recategorise it (new shapes keep theirs). Without: the category
        of the shapes drawn next."""
        ids = self.canvas.selection()
        if ids:
            name = self.store.category(category_id).name
            self._push(
                f"Change category of {len(ids)} to {name}",
                lambda d: d.change_category(ids, category_id),
            )
            return
        self.current_category = category_id
        self.drawing_category_changed.emit(category_id)

    def drawing_category(self) -> int | None:
        """The category a shape drawn now gets."""
        return self._category_for_new()

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
            order = self.review_order()
            self._push(f"Accept {len(ids)} proposal(s)", lambda d: d.accept(ids))
            self._select_after(order, ids)

    def reject_selected(self) -> None:
        if self.doc is None:
            return
        ids = [i for i in self.canvas.selection() if self.doc.instance(i).source == Source.MODEL]
        if ids:
            order = self.review_order()
            self._push(f"Reject {len(ids)} proposal(s)", lambda d: d.reject(ids))
            self._select_after(order, ids)

    def accept_all(self) -> None:
        t = self.threshold
        shown = self.review_order()
        if self.doc is not None and shown:
            self._push(
                f"Accept {len(shown)} shown proposal(s) (score \u2265 {t:.2f})",
                lambda d: d.accept(shown),
            )

    def set_hidden_categories(self, ids: frozenset[int]) -> None:
        self.hidden_categories = frozenset(ids)
        self.canvas.set_hidden_categories(self.hidden_categories)

    def _above_threshold(self, instance: Instance) -> bool:
        return instance.score is None or instance.score >= self.threshold

    def _shown(self, instance: Instance) -> bool:
        """A pending proposal is shown when its score reaches the review threshold and its
        category is not hidden."""
        return (
            self._above_threshold(instance) and instance.category_id not in self.hidden_categories
        )

    def review_order(self) -> list[int]:
        """The shown pending proposals in review order: highest score first."""
        if self.doc is None:
            return []
        pending = [self.doc.instances[i] for i in self.doc.pending_ids()]
        shown = [inst for inst in pending if self._shown(inst)]
        shown.sort(key=lambda inst: (-(inst.score if inst.score is not None else 1.0), inst.id))
        return [inst.id for inst in shown]

    def select_next_pending(self, step: int = 1) -> None:
        """Select the next (``step`` 1, Tab) or previous (-1, Shift+Tab) shown proposal,
        cycling, so a doubtful one can be skipped and come back to from the keyboard."""
        order = self.review_order()
        if not order:
            self.canvas.set_selection([])
            return
        sel = self.canvas.selection()
        if sel and sel[-1] in order:
            target = order[(order.index(sel[-1]) + step) % len(order)]
        else:
            target = order[0] if step > 0 else order[-1]
        self._select_proposal(target)

    def select_previous_pending(self) -> None:
        self.select_next_pending(-1)

    def _select_after(self, before: list[int], handled: list[int]) -> None:
        """After accepting/rejecting: the proposal that followed the handled ones."""
        order = self.review_order()
        if not order:
            self.canvas.set_selection([])
            return
        last = max((before.index(i) for i in handled if i in before), default=-1)
        following = [i for i in before[last + 1 :] if i in order]
        self._select_proposal(following[0] if following else order[0])

    def _select_proposal(self, instance_id: int) -> None:
        self.canvas.set_selection([instance_id])
        self.canvas.center_on_instance(instance_id)

    def mark_done(self) -> DoneSummary | None:
        """Mark the image done by the done rule: pending proposals that are shown (score at
        or above the threshold) are accepted, the hidden ones are rejected (removed, but not
        counted as a reviewer's rejections: nobody saw them); one undo step.
        While a category with pending proposals is hidden nothing is done (they would be
        decided unseen): the summary says so."""
        if self.doc is None:
            return None
        pending = [self.doc.instances[i] for i in self.doc.pending_ids()]
        blocked = [inst for inst in pending if inst.category_id in self.hidden_categories]
        if blocked:
            return DoneSummary(0, 0, self.threshold, blocked=len(blocked))
        accept = [inst.id for inst in pending if self._shown(inst)]
        reject = [inst.id for inst in pending if not self._shown(inst)]
        summary = DoneSummary(len(accept), len(reject), self.threshold)
        if self.doc.status == ImageStatus.DONE and not pending:
            return summary
        text = "Mark done"
        if pending:
            text += f", accept {len(accept)}, reject {len(reject)} hidden"
        self._push(
            text,
            lambda d: d.apply(Edit(status=ImageStatus.DONE, accept=accept, discard=reject)),
        )
        return summary

    def set_status(self, status: ImageStatus) -> None:
        """Any status but done (which follows :meth:`mark_done`'s rule)."""
        if status == ImageStatus.DONE:
            raise ValueError("use mark_done() to mark an image done")
        if self.doc is not None and self.doc.status != status:
            self._push(f"Mark {status.value}", lambda d: d.set_status(status))

    def next_to_review(self, order: str = "path") -> int | None:
        """The first image after the current one (in ``order``) that still needs review,
        wrapping round to the first; asked of the store in one query."""
        current = None if self.doc is None else self.doc.image_id
        return self.store.next_image(current, status=REVIEW_STATUSES, order=order)
