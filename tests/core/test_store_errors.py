"""SQLite failures (another writer holding the lock, a full disk) become typed StoreErrors
with one-line messages, and the store is left as it was."""

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from app.core import store as store_module
from app.core.store import NewImage, ProjectStore
from app.core.store_errors import StoreFullError, StoreLockedError
from app.core.types import Instance, Polygon


@pytest.fixture
def project(tmp_path: Path) -> Path:
    with ProjectStore.open(tmp_path / "p", create=True) as store:
        store.add_category("cell")
        store.add_images([NewImage("a.png", 2000, 2000)])
    return tmp_path / "p"


@pytest.fixture
def short_lock(monkeypatch):
    monkeypatch.setattr(store_module, "LOCK_TIMEOUT_S", 0.05)


def _hold_write_lock(project: Path) -> sqlite3.Connection:
    other = sqlite3.connect(project / "maskloop.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_write_while_another_process_writes_is_a_one_line_error(project, short_lock):
    other = _hold_write_lock(project)
    try:
        with ProjectStore.open(project) as store, pytest.raises(StoreLockedError) as err:
            store.set_meta("k", "v")
        assert "busy" in str(err.value) and "\n" not in str(err.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with ProjectStore.open(project) as store:
        assert store.get_meta("k") is None
        store.set_meta("k", "v")  # the lock is gone: writes work again
        assert store.get_meta("k") == "v"


def _big_instance(seed: int) -> Instance:
    ring = np.random.default_rng(seed).uniform(0, 2000, (20_000, 2))
    return Instance(category_id=1, polygons=[Polygon(ring)])


def test_a_full_disk_rolls_the_whole_change_back(project):
    with ProjectStore.open(project) as store:
        (image,) = store.images()
        store.add_instance(image.id, _big_instance(0))
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk fills up
        with pytest.raises(StoreFullError) as err:
            store.add_instances(image.id, [_big_instance(1), _big_instance(2)])
        assert "Free some disk space" in str(err.value) and "\n" not in str(err.value)
        assert store.count_instances() == 1 and store.integrity_ok()
        store.set_meta("still", "writable")  # small writes still fit


def test_an_edit_waits_briefly_for_another_writer_then_fails(project, monkeypatch):
    """The GUI edits through ImageDocument: a locked project must not freeze it 30 s."""
    import time

    from app.core import document

    monkeypatch.setattr(document, "EDIT_LOCK_TIMEOUT_S", 0.1)
    with ProjectStore.open(project) as store:
        doc = document.ImageDocument(store, 1)
        other = _hold_write_lock(project)
        try:
            start = time.monotonic()
            with pytest.raises(StoreLockedError):
                doc.add_instance(_big_instance(0))
            assert time.monotonic() - start < 5
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert doc.instances == {} and store.count_instances() == 0
        doc.add_instance(_big_instance(0))  # the store's own lock timeout is back
        assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
