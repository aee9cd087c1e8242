"""Schema 3: proposer, scorer and acceptance live in columns, migrated out of the meta table."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from app.core.document import ImageDocument
from app.core.polygon_codec import encode_polygons
from app.core.schema import MIGRATIONS
from app.core.store import (
    DB_NAME,
    SCHEMA_VERSION,
    NewImage,
    NotFoundError,
    ProjectStore,
    SchemaTooNewError,
    StoreError,
)
from app.core.types import ImageStatus, Instance, Polygon, Source


def square(x: float, y: float = 0.0, s: float = 10.0) -> Polygon:
    return Polygon(np.array([[x, y], [x + s, y], [x + s, y + s], [x, y + s]], np.float32))


def _old_database(folder: Path, version: int) -> sqlite3.Connection:
    """A project database at schema ``version``, built by the migrations of that time."""
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME, isolation_level=None)
    for step in MIGRATIONS[:version]:
        for statement in step:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def _insert_instance(conn: sqlite3.Connection, id_: int, image_id: int, source: Source) -> None:
    conn.execute(
        "INSERT INTO instances (id, image_id, category_id, geometry, score, source, "
        "model_version, created, modified) VALUES (?, ?, 1, ?, 0.8, ?, 1, 't', 't')",
        (id_, image_id, encode_polygons([square(id_)]), source.value),
    )


@pytest.fixture
def schema2_project(tmp_path: Path) -> Path:
    """Schema 2 with review facts in meta rows, including the awkward ones old code left."""
    folder = tmp_path / "old"
    conn = _old_database(folder, 2)
    for path in ("a.png", "b.png", "c.png"):
        conn.execute("INSERT INTO images (path, width, height) VALUES (?, 64, 64)", (path,))
    conn.execute("UPDATE images SET status = 'in_progress' WHERE id IN (1, 2)")
    conn.execute("UPDATE images SET status = 'done' WHERE id = 3")
    conn.execute("INSERT INTO categories (id, name, color) VALUES (1, 'cell', '#fff')")
    for id_, image_id, source in [
        (1, 1, Source.MODEL),  # accepted
        (2, 1, Source.MODEL),  # pending
        (3, 1, Source.MODEL_EDITED),  # edited after it was listed: no longer an acceptance
        (4, 2, Source.MODEL),  # listed under image 1, but it is on image 2
        (5, 2, Source.MODEL),  # image 2's list is unreadable
        (6, 3, Source.MODEL),
    ]:
        _insert_instance(conn, id_, image_id, source)
    rows = {
        "proposed_by/1": "cells-mobile",
        "scored_by/1": "cells-mobile",
        "scored_by/2": "v2",
        "proposed_by/99": "gone",  # an image that no longer exists
        "accepted:1": json.dumps([1, 3, 4, 77]),
        "accepted:2": "[5, oops",
        "accepted:3": json.dumps([6]),
        "active_model": "v2",
    }
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows.items())
    conn.close()
    return folder


def test_migration_2_to_3_moves_meta_rows_into_columns(schema2_project: Path) -> None:
    with ProjectStore.open(schema2_project) as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        a, b, c = (s.image(i) for i in (1, 2, 3))
        assert (a.proposed_by, a.scored_by) == ("cells-mobile", "cells-mobile")
        assert (b.proposed_by, b.scored_by) == (None, "v2")
        assert (c.proposed_by, c.scored_by) == (None, None)
        assert s.accepted_ids(1) == {1}
        assert s.accepted_ids(2) == set()
        assert s.accepted_ids(3) == {6}
        keys = [r[0] for r in s._conn.execute("SELECT key FROM meta ORDER BY key")]
        assert keys == ["active_model"]
        assert s.get_meta("active_model") == "v2"
        assert s.integrity_ok()
        # A reviewer sees what the old lists meant on each image (an unreadable one: nothing).
        assert ImageDocument(s, 1).pending_ids() == [2]
        assert ImageDocument(s, 2).pending_ids() == [4, 5]


def test_migration_keeps_analytics_numbers(schema2_project: Path) -> None:
    with ProjectStore.open(schema2_project) as s:
        (outcome,) = s.proposal_outcomes()
        # Image 3 is done: its proposal counts as accepted; 1, 2, 4, 5 wait; 3 was edited.
        assert outcome.to_dict() == {
            "model_version": 1,
            "accepted": 1,
            "edited": 1,
            "rejected": 0,
            "pending": 4,
            "added_by_hand": 0,
        }


def test_migration_0_to_3_and_1_to_3(tmp_path: Path) -> None:
    (tmp_path / "zero").mkdir()
    sqlite3.connect(tmp_path / "zero" / DB_NAME).close()
    conn = _old_database(tmp_path / "one", 1)
    conn.execute("INSERT INTO images (path, width, height) VALUES ('a.png', 4, 4)")
    conn.close()
    for name in ("zero", "one"):
        with ProjectStore.open(tmp_path / name) as s:
            assert s._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            s.add_images([NewImage("b.png", 4, 4)])
            image = s.image_by_path("b.png")
            assert image.proposed_by is None and image.scored_by is None
            s.set_proposed_by(image.id, "m")
            assert s.image(image.id).proposed_by == "m"
    with ProjectStore.open(tmp_path / "one") as s:
        assert s.image(1).path == "a.png" and s.accepted_ids(1) == set()


def test_schema_newer_than_3_is_refused(tmp_path: Path) -> None:
    conn = _old_database(tmp_path / "new", SCHEMA_VERSION)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNewError, match=f"reads up to {SCHEMA_VERSION}"):
        ProjectStore.open(tmp_path / "new")


@pytest.fixture
def proposed(tmp_path: Path):
    """One proposed image with three proposals and a human instance."""
    with ProjectStore.open(tmp_path / "p", create=True) as s:
        s.add_category("cell")
        (image_id,) = s.add_images([NewImage("a.png", 64, 64)])
        s.replace_proposals(image_id, [Instance(1, [square(k)], score=0.9) for k in range(3)], 1)
        s.add_instances(image_id, [Instance(1, [square(40)], source=Source.HUMAN)])
        yield s, image_id, [i.id for i in s.instances(image_id)]


def test_set_accepted_marks_only_unchanged_proposals(proposed) -> None:
    s, image_id, (p1, p2, p3, human) = proposed
    s.set_accepted([p1, p2, p1], True)
    assert s.accepted_ids(image_id) == {p1, p2}
    s.set_accepted([p2], False)
    assert s.accepted_ids(image_id) == {p1}
    with pytest.raises(StoreError, match=rf"\[{human}\] are not unchanged model proposals"):
        s.set_accepted([p3, human], True)
    with pytest.raises(NotFoundError, match=r"\[999\]"):
        s.set_accepted([p3, 999], False)
    assert s.accepted_ids(image_id) == {p1}  # each failed call changed nothing


def test_edit_by_a_person_ends_acceptance_and_delete_takes_it_along(proposed) -> None:
    s, image_id, (p1, p2, p3, _) = proposed
    s.set_accepted([p1, p2, p3], True)
    edited = s.instance(p1)
    edited.polygons, edited.source = [square(20)], Source.MODEL_EDITED
    unchanged_source = s.instance(p2)
    unchanged_source.category_id = 1
    s.apply_edit(image_id, update=[edited, unchanged_source], delete=[p3])
    assert s.accepted_ids(image_id) == {p2}


def test_acceptance_does_not_outlive_replaced_proposals(proposed) -> None:
    s, image_id, ids = proposed
    s.apply_edit(image_id, delete=[ids[3]], status=ImageStatus.PROPOSED)
    s.set_accepted(ids[:3], True)
    s.replace_proposals(image_id, [Instance(1, [square(k)]) for k in range(3)], 2)
    # SQLite reuses the freed ids; the old meta list would have marked the new ones accepted.
    assert [i.id for i in s.instances(image_id)] == ids[:3]
    assert s.accepted_ids(image_id) == set()


def test_review_facts_join_an_outer_transaction(proposed) -> None:
    s, image_id, (p1, *_) = proposed
    with pytest.raises(RuntimeError), s.transaction():
        s.set_accepted([p1], True)
        s.set_proposed_by(image_id, "m")
        s.set_scored_by(image_id, "m")
        raise RuntimeError("boom")
    image = s.image(image_id)
    assert s.accepted_ids(image_id) == set() and image.proposed_by is image.scored_by is None
    with pytest.raises(NotFoundError):
        s.set_proposed_by(999, "m")
    with pytest.raises(NotFoundError):
        s.set_scored_by(999, "m")
