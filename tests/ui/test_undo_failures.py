"""An edit the store does not take (locked, disk full, instance gone) never reaches the undo
stack, the screen shows what is saved again, and the person is told why."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from PySide6.QtCore import QCoreApplication
from PySide6.QtGui import QUndoGroup

from app.core import store as store_module
from app.core.document import ImageDocument
from app.core.store import ProjectStore
from app.core.types import Instance, Polygon, Source
from app.ui.canvas.view import CanvasView
from app.ui.editor import Editor
from app.ui.undo import EditCommand, GeometryCommand, UndoStacks


def _square(x: float, y: float, side: float) -> list[Polygon]:
    return [Polygon(np.array([[x, y], [x + side, y], [x + side, y + side], [x, y + side]]))]


@pytest.fixture
def store(project, monkeypatch):
    monkeypatch.setattr(store_module, "LOCK_TIMEOUT_S", 0.05)
    with ProjectStore.open(project) as s:
        yield s


class Locked:
    """Another process holding the project's write lock."""

    def __init__(self, store: ProjectStore) -> None:
        self.conn = sqlite3.connect(store.db_path, isolation_level=None)

    def __enter__(self) -> Locked:
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def _geometry(store: ProjectStore) -> dict[int, list]:
    return {i.id: i.polygons[0].exterior.tolist() for i in store.instances(1)}


def test_a_failed_edit_is_not_pushed_and_is_reported(qtbot, store):
    failures = []
    stacks = UndoStacks(QUndoGroup(), on_failed=lambda doc, exc: failures.append(str(exc)))
    doc = ImageDocument(store, 1)
    first = min(doc.instances)
    saved = _geometry(store)
    with Locked(store):
        pushed = stacks.push(
            GeometryCommand(doc, first, _square(50, 50, 10), "drag", lambda d, e: None)
        )
    assert pushed is False and stacks.stack(1).count() == 0
    assert "busy" in failures[0]
    assert _geometry(store) == saved
    assert doc.instances[first].polygons[0].exterior.tolist() == saved[first]


def test_an_undo_the_store_refuses_drops_the_history(qtbot, store):
    failures = []
    stacks = UndoStacks(QUndoGroup(), on_failed=lambda doc, exc: failures.append(str(exc)))
    doc = ImageDocument(store, 1)
    inst = Instance(1, _square(60, 60, 20), source=Source.HUMAN)
    assert stacks.push(EditCommand(doc, "Draw", lambda d: d.add_instance(inst)[0], lambda *a: 0))
    stack = stacks.stack(1)
    assert stack.count() == 1 and store.count_instances(1) == 3
    with Locked(store):
        stack.undo()  # no AssertionError, no exception escaping into Qt
    QCoreApplication.processEvents()
    assert "busy" in failures[0]
    assert stack.count() == 0  # the history no longer described the store
    assert store.count_instances(1) == 3
    assert set(doc.instances) == {i.id for i in store.instances(1)}


def test_the_editor_shows_the_saved_state_after_a_failed_save(qtbot, store):
    canvas = CanvasView()
    qtbot.addWidget(canvas)
    editor = Editor(store, canvas)
    editor.open_image(1)
    messages = []
    editor.save_failed.connect(messages.append)
    shown_before = sorted(editor.doc.instances)
    with Locked(store):
        editor.add_polygon(_square(60, 60, 20))
    assert store.count_instances(1) == 2 and sorted(editor.doc.instances) == shown_before
    assert editor.stacks.stack(1).count() == 0
    assert messages and messages[0].startswith("Not saved:") and "busy" in messages[0]
    editor.add_polygon(_square(60, 60, 20))  # the lock is gone: the same edit saves
    assert store.count_instances(1) == 3 and editor.stacks.stack(1).count() == 1
