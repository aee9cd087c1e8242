"""QUndoCommands that run :mod:`app.core.document` operations.

A command's operation runs (and commits to the store) *before* it is pushed, so an edit
the store refuses (locked by another process, disk full, an instance another program
removed) never reaches the undo stack: :meth:`UndoStacks.push` reports it instead. Later
undo/redo apply the stored inverse edits, which are exact; if one of those fails the
image's history is dropped, because the stack no longer describes what is saved. One
QUndoStack per open image lives in a QUndoGroup, so undo always acts on the shown image.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from PySide6.QtCore import QTimer
from PySide6.QtGui import QUndoCommand, QUndoGroup, QUndoStack

from app.core.document import Edit, ImageDocument
from app.core.types import Provenance
from app.errors import MaskLoopError

Applied = Callable[[ImageDocument, Edit], None]  # called after every apply with the inverse
Failed = Callable[[ImageDocument, MaskLoopError], None]  # an edit the store did not take

GEOMETRY_COMMAND_ID = 1001


class EditCommand(QUndoCommand):
    """One document operation as one undo step."""

    def __init__(
        self,
        doc: ImageDocument,
        text: str,
        operation: Callable[[ImageDocument], Edit],
        on_applied: Applied,
    ) -> None:
        super().__init__(text)
        self.doc = doc
        self._operation: Callable[[ImageDocument], Edit] | None = operation
        self._on_applied = on_applied
        self._inverse: Edit | None = None
        self._redo: Edit | None = None
        self.on_failed: Failed | None = None  # set by UndoStacks.push

    def run_first(self) -> None:
        """Run the operation (commits to the store); raises MaskLoopError if nothing was saved."""
        assert self._operation is not None
        self._inverse = self._operation(self.doc)
        self._operation = None

    def redo(self) -> None:
        assert self._operation is None, "push commands with UndoStacks.push"
        if self._redo is not None:
            self._inverse = self._guarded(self._redo)
            if self._inverse is None:
                return
        self._on_applied(self.doc, self._inverse)

    def undo(self) -> None:
        assert self._inverse is not None
        redo = self._guarded(self._inverse)
        if redo is None:
            return
        self._redo = redo
        self._on_applied(self.doc, self._redo)

    def _guarded(self, edit: Edit) -> Edit | None:
        """Apply an undo/redo edit; on a store failure report it and return None."""
        try:
            return self.doc.apply(edit)
        except MaskLoopError as exc:
            if self.on_failed is None:
                raise
            self.on_failed(self.doc, exc)
            return None


class GeometryCommand(EditCommand):
    """A geometry change; consecutive drags of the same vertex merge into one undo step."""

    def __init__(
        self,
        doc: ImageDocument,
        instance_id: int,
        polygons: list,
        merge_key: Hashable | None,
        on_applied: Applied,
        text: str = "Edit shape",
        provenance: Provenance | None = None,
    ) -> None:
        super().__init__(
            doc, text, lambda d: d.replace_geometry(instance_id, polygons, provenance), on_applied
        )
        self.merge_key = None if merge_key is None else (doc.image_id, instance_id, merge_key)

    def id(self) -> int:
        return GEOMETRY_COMMAND_ID if self.merge_key is not None else -1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 (Qt API)
        # Both are applied already; undoing the merged step restores the state before the
        # first drag (our inverse), redo re-applies the state after the last one.
        if not isinstance(other, GeometryCommand) or other.merge_key != self.merge_key:
            return False
        if other._inverse is None or other._inverse.add or other._inverse.delete:
            return False
        self._redo = None
        return True


class UndoStacks:
    """One QUndoStack per image, grouped so that one QUndoView and one pair of actions serve all.

    ``on_failed`` hears of every edit the store did not take, after the image's document
    was re-read from the store (so what is shown can be made to match what is saved).
    """

    def __init__(self, group: QUndoGroup, on_failed: Failed | None = None) -> None:
        self.group = group
        self._stacks: dict[int, QUndoStack] = {}
        self._on_failed = on_failed

    def stack(self, image_id: int) -> QUndoStack:
        stack = self._stacks.get(image_id)
        if stack is None:
            stack = QUndoStack(self.group)
            self._stacks[image_id] = stack
        return stack

    def push(self, command: EditCommand) -> bool:
        """Run ``command`` and put it on its image's stack; False (reported) if not saved."""
        try:
            command.run_first()
        except MaskLoopError as exc:
            self._report(command.doc, exc)
            return False
        command.on_failed = self._undo_failed
        self.stack(command.doc.image_id).push(command)
        return True

    def _undo_failed(self, doc: ImageDocument, exc: MaskLoopError) -> None:
        # Qt has moved the stack's index already: the history no longer matches the store.
        # Clear it once Qt has finished with the command that failed.
        stack = self._stacks.get(doc.image_id)
        if stack is not None:
            QTimer.singleShot(0, stack.clear)
        self._report(doc, exc)

    def _report(self, doc: ImageDocument, exc: MaskLoopError) -> None:
        try:
            doc.reload()
        except MaskLoopError:
            pass  # the store is still unreachable: keep the last state that was saved
        if self._on_failed is not None:
            self._on_failed(doc, exc)

    def activate(self, image_id: int) -> QUndoStack:
        stack = self.stack(image_id)
        self.group.setActiveStack(stack)
        return stack

    def drop(self, image_id: int) -> None:
        """Forget an image's history (its document was reloaded from outside, e.g. proposals)."""
        stack = self._stacks.pop(image_id, None)
        if stack is not None:
            self.group.removeStack(stack)
            stack.deleteLater()
