"""Model assists in the window: the Box tool's gestures and Refine go to the proposal
worker as :class:`AssistRequest` s; its answers become ordinary undoable edits.

The model never runs here. An answer is applied only while it still fits what is shown:
the same image and model generation as the request, and for a refine the instance
unchanged since it was asked for. Anything else is dropped, since applying it would edit
something the person has moved on from. Two boxes dragged in quick succession both count
(they are usually two objects): each answer is its own undo step. Answers are stored as
``assisted`` (a person's instance whose outline the model made).

A Shift (Alt: remove) click's answer is not an outline of its own: its region is united
with (cut from) the selected instance by :func:`app.core.document.combine_polygons`, which
is a person's change of that outline like a brush stroke, so provenance follows the
person's rule (a proposal's or assisted outline becomes ``edited``).
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QPointF, Signal

from app.core.document import combine_polygons
from app.core.geometry import polygons_bbox
from app.core.simplify_tolerance import project_tolerance
from app.core.types import Instance, Provenance

from .canvas.assist_marks import AssistMarks
from .editor import Editor
from .workers import (
    ASSIST_BOX,
    ASSIST_CLICK,
    ASSIST_REFINE,
    AssistRequest,
    AssistResult,
    ProposalController,
    assist_image_key,
)

log = logging.getLogger(__name__)

LABELS = {ASSIST_BOX: "Box to mask", ASSIST_CLICK: "Click to instance", ASSIST_REFINE: "Refine"}
REBOX_LABEL = "Refine from box"  # a box dragged with Shift: the selected instance's new outline
REGION_LABELS = {False: "Add region", True: "Remove region"}  # by ``remove``


class AssistSession(QObject):
    """Connects the canvas's assist signals and Refine to the worker, and its answers to
    the editor's undo stack."""

    message = Signal(str)  # one line for the status bar

    def __init__(self, editor: Editor, controller: ProposalController) -> None:
        super().__init__(editor)
        self.editor = editor
        self.controller = controller
        editor.canvas.assist_box.connect(self.box)
        editor.canvas.assist_click.connect(lambda x, y: self.click((x, y)))
        editor.canvas.assist_region.connect(lambda x, y, remove: self.region((x, y), remove))
        controller.assist_ready.connect(self._answered)
        # Dropped requests get no answer: their marks go with them.
        controller.assists_dropped.connect(lambda: self._marks.clear())
        # Region clicks in flight: request seq -> (generation, remove).
        self._regions: dict[int, tuple[int, bool]] = {}

    @property
    def _marks(self) -> AssistMarks:
        return self.editor.canvas.assist_marks

    def box(self, box: tuple[float, float, float, float], replace: bool = False) -> None:
        """A new instance from ``box``; with ``replace``, the one selected instance's new
        outline (category and identity kept), e.g. when the first box's answer was poor."""
        corners = tuple(float(v) for v in box)
        if not replace:
            self._send(ASSIST_BOX, box=corners)
            return
        target = self._selected_instance(REBOX_LABEL)
        if target is not None:
            self._send(ASSIST_BOX, box=corners, instance=target)

    def click(self, point: tuple[float, float]) -> None:
        self._send(ASSIST_CLICK, **self._click_prompt(point))

    def region(self, point: tuple[float, float], remove: bool) -> None:
        """The object under ``point`` added to the one selected instance, or with ``remove``
        cut from it; with nothing selected, a plain click.

        The object is another shown instance under the point when there is one (added:
        it joins the selected instance and is deleted; removed: its outline is cut out),
        else the plain click's answer from the model.
        """
        if self.editor.doc is not None and not self.editor.canvas.selection():
            self.click(point)
            return
        label = REGION_LABELS[remove]
        target = self._selected_instance(label)
        if target is None:
            return
        assert target.id is not None and self.editor.doc is not None
        other = self.editor.canvas.layer_instance_at(QPointF(*point), exclude=(target.id,))
        if other is not None:
            self._combine(target, self.editor.doc.instance(other), remove=remove, absorb=True)
            return
        sent = self._send(
            ASSIST_CLICK, label, needs_category=False, instance=target, **self._click_prompt(point)
        )
        if sent is not None:
            self._regions[sent.seq] = (sent.generation, remove)

    def _click_prompt(self, point: tuple[float, float]) -> dict:
        doc = self.editor.doc
        others = () if doc is None else tuple(i.copy() for i in doc.instances.values())
        return {"point": (float(point[0]), float(point[1])), "others": others}

    def refine_selected(self) -> None:
        """Predict the one selected instance's mask again from its box (enlarged)."""
        target = self._selected_instance(LABELS[ASSIST_REFINE])
        if target is not None:
            self._send(ASSIST_REFINE, needs_category=False, instance=target)

    def _selected_instance(self, label: str) -> Instance | None:
        doc, sel = self.editor.doc, self.editor.canvas.selection()
        if doc is None or len(sel) != 1:
            self.message.emit(f"{label}: select one instance first.")
            return None
        return doc.instance(sel[0]).copy()  # the worker reads it: a snapshot of its own

    def _send(
        self, kind: str, label: str | None = None, needs_category: bool = True, **what
    ) -> AssistRequest | None:
        """Queue the request; returns it as stamped, None when it cannot be asked now.
        ``needs_category``: the answer becomes a new instance of the drawing category."""
        ed, label = self.editor, label or LABELS[kind]
        if ed.doc is None or ed.pixels is None:
            self.message.emit(f"{label}: no image is shown.")
            return None
        if needs_category and ed.drawing_category() is None:
            self.message.emit("Add a category first (Categories panel), then draw.")
            return None
        record = ed.store.image(ed.doc.image_id)
        sent = self.controller.request_assist(
            AssistRequest(
                kind,
                record.id,
                assist_image_key(record),
                ed.pixels,
                **what,
            )
        )
        self.message.emit(f"{label}: asking the model\u2026")
        if sent.box is not None:
            self._marks.box(sent.seq, sent.box)
        elif sent.point is not None:
            self._marks.point(sent.seq, *sent.point)
        elif sent.instance is not None:
            x, y, w, h = polygons_bbox(sent.instance.polygons)
            self._marks.box(sent.seq, (x, y, x + w, y + h))
        return sent

    def _answered(self, result: AssistResult) -> None:
        req, ed = result.request, self.editor
        self._marks.remove(req.seq)
        region = self._regions.pop(req.seq, None)
        current = self.controller.generation
        self._regions = {k: v for k, v in self._regions.items() if v[0] == current}
        replaces = req.instance is not None  # a refine, or a box dragged with Shift
        label = REBOX_LABEL if replaces and req.kind == ASSIST_BOX else LABELS[req.kind]
        if (
            req.generation != self.controller.generation
            or ed.doc is None
            or ed.doc.image_id != req.image_id
        ):
            log.debug("dropping a stale %s answer (request %d)", req.kind, req.seq)
            return
        if region is not None:
            label = REGION_LABELS[region[1]]
        if result.error is not None or result.instance is None:
            self.message.emit(f"{label}: {result.error}")
            return
        if region is not None:
            assert req.instance is not None
            self._combine(req.instance, result.instance, remove=region[1])
            return
        if replaces:
            assert req.instance is not None and req.instance.id is not None
            now = ed.doc.instances.get(req.instance.id)
            if now is None or now.polygons != req.instance.polygons:
                self.message.emit(f"{label}: the instance changed meanwhile; nothing replaced.")
                return
            ed.edit_geometry(
                req.instance.id, result.instance.polygons, None, label, Provenance.ASSISTED
            )
        else:
            ed.add_polygon(result.instance.polygons, label, Provenance.ASSISTED)
        self.message.emit(f"{label}: done (Ctrl+Z undoes).")

    def _combine(
        self, target: Instance, region: Instance, *, remove: bool, absorb: bool = False
    ) -> None:
        """Unite ``region`` with (or cut it from) ``target``, if that instance is still as
        it was. ``absorb``: ``region`` is another instance of the image, deleted when it
        joins ``target`` (in the same undo step)."""
        ed, label = self.editor, REGION_LABELS[remove]
        assert ed.doc is not None and target.id is not None
        now = ed.doc.instances.get(target.id)
        if now is None or now.polygons != target.polygons:
            self.message.emit(f"{label}: the instance changed meanwhile; nothing changed.")
            return
        combined = combine_polygons(
            now.polygons,
            region.polygons,
            subtract=remove,
            image_size=ed.canvas.image_size(),
            tolerance=project_tolerance(ed.store),
        )
        joins = absorb and not remove
        if not combined.changed and not joins:
            where = "does not overlap" if remove else "lies inside"
            self.message.emit(f"{label}: the object found {where} the instance; nothing changed.")
            return
        if not combined.polygons:
            self.message.emit(
                f"{label}: nothing of the instance would be left; nothing changed "
                "(Del deletes an instance)."
            )
            return
        if joins:
            assert region.id is not None
            ed.absorb(target.id, region.id, combined.polygons, label)
            self.message.emit(f"{label}: the instance under the click joined it (Ctrl+Z undoes).")
            return
        ed.edit_geometry(target.id, combined.polygons, None, label)
        self.message.emit(f"{label}: done (Ctrl+Z undoes).")
