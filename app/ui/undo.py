"""QUndoCommands that run :mod:`app.core.document` operations.

Each command's first ``redo`` runs the operation (which commits to the store and returns
its inverse); later undo/redo apply the stored inverse edits, which are exact. One
QUndoStack per open image lives in a QUndoGroup, so undo always acts on the shown image.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from PySide6.QtGui import QUndoCommand, QUndoGroup, QUndoStack

from app.core.document import Edit, ImageDocument

Applied = Callable[[ImageDocument, Edit], None]  # called after every apply with the inverse

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

    def redo(self) -> None:
        if self._operation is not None:
            self._inverse = self._operation(self.doc)
            self._operation = None
        else:
            assert self._redo is not None
            self._inverse = self.doc.apply(self._redo)
        self._on_applied(self.doc, self._inverse)

    def undo(self) -> None:
        assert self._inverse is not None
        self._redo = self.doc.apply(self._inverse)
        self._on_applied(self.doc, self._redo)


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
    ) -> None:
        super().__init__(doc, text, lambda d: d.replace_geometry(instance_id, polygons), on_applied)
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
    """One QUndoStack per image, grouped so that one QUndoView and one pair of actions serve all."""

    def __init__(self, group: QUndoGroup) -> None:
        self.group = group
        self._stacks: dict[int, QUndoStack] = {}

    def stack(self, image_id: int) -> QUndoStack:
        stack = self._stacks.get(image_id)
        if stack is None:
            stack = QUndoStack(self.group)
            self._stacks[image_id] = stack
        return stack

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
