import sqlite3

import numpy as np
import pytest

from app.core.polygon_codec import GeometryDecodeError, decode_polygons, encode_polygons
from app.core.store import (
    DB_NAME,
    SCHEMA_VERSION,
    CategoryInUseError,
    NewImage,
    NotFoundError,
    ProjectNotFoundError,
    ProjectStore,
    SchemaTooNewError,
    StoreError,
)
from app.core.types import ImageStatus, Instance, Polygon, Source


def square(x, y, s=10, hole=False):
    ext = [[x, y], [x + s, y], [x + s, y + s], [x, y + s]]
    holes = [[[x + 2, y + 2], [x + 4, y + 2], [x + 4, y + 4]]] if hole else []
    return Polygon(ext, holes)


@pytest.fixture
def store(tmp_path):
    s = ProjectStore.open(tmp_path / "proj", create=True)
    yield s
    s.close()


@pytest.fixture
def filled(store):
    ids = store.add_images([NewImage(f"img/{i:03d}.png", 64, 48) for i in range(5)])
    cat = store.add_category("cell")
    return store, ids, cat


def test_polygon_codec_round_trip_with_holes_and_parts():
    polys = [square(0, 0, hole=True), square(20, 20), Polygon(np.zeros((0, 2)))]
    back = decode_polygons(encode_polygons(polys))
    assert back == polys
    back[0].exterior[0, 0] = 99  # decoded rings are writable copies
    assert decode_polygons(encode_polygons([])) == []


def test_polygon_codec_rejects_damaged_blob():
    blob = encode_polygons([square(0, 0, hole=True)])
    with pytest.raises(GeometryDecodeError):
        decode_polygons(blob[:-8])
    with pytest.raises(GeometryDecodeError):
        decode_polygons(blob + b"\0" * 8)


def test_open_missing_project_says_how_to_create(tmp_path):
    with pytest.raises(ProjectNotFoundError, match="maskloop init"):
        ProjectStore.open(tmp_path / "nothing")


def test_create_refuses_existing_project(tmp_path):
    ProjectStore.create(tmp_path / "p").close()
    with pytest.raises(StoreError, match="already holds"):
        ProjectStore.create(tmp_path / "p")


def test_wal_and_schema_version(store):
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_newer_schema_gives_clear_error(tmp_path):
    ProjectStore.create(tmp_path / "p").close()
    conn = sqlite3.connect(tmp_path / "p" / DB_NAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNewError, match="newer MaskLoop"):
        ProjectStore.open(tmp_path / "p")


def test_garbage_database_gives_clear_error(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a readable MaskLoop project"):
        ProjectStore.open(tmp_path / "p")


def test_migration_from_empty_database(tmp_path):
    (tmp_path / "p").mkdir()
    sqlite3.connect(tmp_path / "p" / DB_NAME).close()  # schema 0: an empty database
    with ProjectStore.open(tmp_path / "p") as s:
        assert s.categories() == []


def test_images_added_once_paged_and_filtered(filled):
    store, ids, _ = filled
    assert store.add_images([NewImage("img/000.png", 64, 48), NewImage("new.png", 1, 1)]) == [6]
    assert store.count_images() == 6
    page = store.images(offset=1, limit=2)
    assert [r.path for r in page] == ["img/001.png", "img/002.png"]
    store.set_image_status(ids[2], ImageStatus.DONE)
    assert [r.id for r in store.images(status=ImageStatus.DONE)] == [ids[2]]
    assert store.count_images([ImageStatus.DONE, ImageStatus.NEW]) == 6
    assert store.status_counts()[ImageStatus.DONE] == 1
    assert store.image_by_path("img/003.png").id == ids[3]
    assert store.image_by_path("nope.png") is None
    with pytest.raises(NotFoundError):
        store.image(999)
    with pytest.raises(NotFoundError):
        store.set_image_status(999, ImageStatus.DONE)


def test_uncertainty_order_most_uncertain_first_unscored_last(filled):
    store, ids, _ = filled
    store.set_uncertainty(ids[3], 0.9)
    store.set_uncertainty(ids[1], 0.2)
    order = [r.id for r in store.images(order="uncertainty")]
    assert order[:2] == [ids[3], ids[1]]
    assert set(order[2:]) == {ids[0], ids[2], ids[4]}
    with pytest.raises(ValueError):
        store.images(order="random; DROP TABLE images")


def test_missing_images_hidden_and_counted(filled):
    store, ids, _ = filled
    store.set_missing([ids[0]], True)
    assert store.count_images() == 4 and store.count_missing() == 1
    assert len(store.images(include_missing=True)) == 5
    store.set_missing([ids[0]], False)
    assert store.count_images() == 5


def test_split_validation(filled):
    store, ids, _ = filled
    store.set_split(ids[0], "val")
    assert store.image(ids[0]).split == "val"
    with pytest.raises(ValueError):
        store.set_split(ids[0], "test")


def test_categories_stable_ids_and_validation(store):
    a = store.add_category("cell")
    b = store.add_category("nucleus", color="#00ff00", id=17)
    assert b.id == 17 and store.category(17).color == "#00ff00"
    with pytest.raises(StoreError, match="already exists"):
        store.add_category("cell")
    with pytest.raises(StoreError, match="already used"):
        store.add_category("other", id=17)
    with pytest.raises(StoreError, match="non-empty"):
        store.add_category("  ")
    assert store.update_category(a.id, name="Cell").name == "Cell"
    with pytest.raises(StoreError, match="already exists"):
        store.update_category(a.id, name="nucleus")
    assert [c.id for c in store.categories()] == [a.id, 17]


def test_delete_category_with_instances_needs_a_decision(filled):
    store, ids, cat = filled
    other = store.add_category("other")
    store.add_instance(ids[0], Instance(cat.id, [square(0, 0)]))
    with pytest.raises(CategoryInUseError, match="1 instances"):
        store.delete_category(cat.id)
    assert store.category(cat.id)  # nothing changed
    store.delete_category(cat.id, reassign_to=other.id)
    assert store.instances(ids[0])[0].category_id == other.id
    store.delete_category(other.id, delete_instances=True)
    assert store.count_instances() == 0 and store.categories() == []


def test_instances_round_trip_and_edit(filled):
    store, ids, cat = filled
    inst = Instance(
        cat.id,
        [square(1, 1, hole=True), square(30, 30)],
        score=0.7,
        source=Source.MODEL,
        model_version=3,
    )
    saved = store.add_instance(ids[0], inst)
    assert saved.id is not None and saved.image_id == ids[0]
    got = store.instance(saved.id)
    assert got.polygons == inst.polygons and got.score == pytest.approx(0.7)
    assert got.source is Source.MODEL and got.model_version == 3
    got.polygons = [square(5, 5)]
    got.source = Source.MODEL_EDITED
    store.apply_edit(ids[0], update=[got])
    assert store.instance(saved.id).source is Source.MODEL_EDITED
    assert store.image(ids[0]).status is ImageStatus.IN_PROGRESS  # a person worked on it
    store.apply_edit(ids[0], delete=[saved.id])
    assert store.instances(ids[0]) == []
    # undo of the delete re-inserts with the same id
    store.apply_edit(ids[0], add=[got], status=ImageStatus.NEW)
    assert store.instance(saved.id).polygons == [square(5, 5)]
    assert store.image(ids[0]).status is ImageStatus.NEW


def test_apply_edit_is_atomic(filled):
    store, ids, cat = filled
    a = store.add_instance(ids[0], Instance(cat.id, [square(0, 0)]))
    with pytest.raises(NotFoundError):
        store.apply_edit(ids[0], delete=[a.id, 12345])
    assert store.instance(a.id)  # the first delete was rolled back
    with pytest.raises(StoreError, match="unknown image or category"):
        store.apply_edit(ids[0], add=[Instance(999, [square(0, 0)])])
    assert store.count_instances(ids[0]) == 1


def test_proposals_never_overwrite_human_work(filled):
    store, ids, cat = filled
    proposal = Instance(cat.id, [square(0, 0)], score=0.9)
    assert store.replace_proposals(ids[0], [proposal, proposal], model_version=1)
    assert store.image(ids[0]).status is ImageStatus.PROPOSED
    assert {i.source for i in store.instances(ids[0])} == {Source.MODEL}
    # a newer model replaces untouched proposals
    assert store.replace_proposals(ids[0], [proposal], model_version=2)
    assert [i.model_version for i in store.instances(ids[0])] == [2]
    # once a person edits, proposals are refused
    store.apply_edit(ids[0], add=[Instance(cat.id, [square(9, 9)])])
    assert not store.replace_proposals(ids[0], [proposal], model_version=3)
    assert len(store.instances(ids[0])) == 2
    # done images are never touched, even with only model instances
    store.replace_proposals(ids[1], [proposal], model_version=1)
    store.set_image_status(ids[1], ImageStatus.DONE)
    assert not store.replace_proposals(ids[1], [], model_version=2)
    assert store.count_instances(ids[1]) == 1
    assert store.instance_counts_by_source()[Source.MODEL] == 2


def test_transaction_rolls_back_everything(filled):
    store, ids, cat = filled
    with pytest.raises(RuntimeError), store.transaction():
        store.add_instance(ids[0], Instance(cat.id, [square(0, 0)]))
        store.add_category("inner")
        raise RuntimeError("boom")
    assert store.count_instances() == 0 and store.category_by_name("inner") is None


def test_model_versions_and_meta(store):
    cat = store.add_category("cell")
    assert store.next_model_version_id() == 1
    v = store.add_model_version(
        "cells-mobile",
        "models/v1.pt",
        categories=[cat],
        metrics={"segm_AP50": 0.9},
        images_used=12,
        name="first",
    )
    assert v.id == 1 and v.categories == [cat] and v.metrics["segm_AP50"] == 0.9
    v2 = store.add_model_version("cells-mobile", "models/v2.pt", parent_id=v.id)
    assert [m.id for m in store.model_versions()] == [1, 2] and v2.parent_id == 1
    assert store.next_model_version_id() == 3
    with pytest.raises(NotFoundError):
        store.model_version(9)
    assert store.get_meta("active_model") is None
    store.set_meta("active_model", "v2")
    store.set_meta("active_model", "v1")
    assert store.get_meta("active_model") == "v1"


def test_reopen_sees_committed_data(tmp_path):
    with ProjectStore.open(tmp_path / "p", create=True) as s:
        (i,) = s.add_images([NewImage("a.png", 4, 4)])
        c = s.add_category("x")
        s.add_instance(i, Instance(c.id, [square(0, 0, hole=True)]))
    with ProjectStore.open(tmp_path / "p") as s:
        assert s.instances(i)[0].polygons == [square(0, 0, hole=True)]
        assert s.integrity_ok()


def test_proposal_outcomes_per_model_version(filled):
    store, ids, cat = filled
    p = Instance(cat.id, [square(0, 0)], score=0.9)
    store.replace_proposals(ids[0], [p, p, p, p], model_version=1)
    store.replace_proposals(ids[1], [p, p], model_version=2)
    a, b, c, d = store.instances(ids[0])
    store.apply_edit(ids[0], delete=[a.id])  # rejected
    b.polygons = [square(3, 3)]
    b.source = Source.MODEL_EDITED
    store.apply_edit(ids[0], update=[b])  # edited
    store.apply_edit(ids[0], add=[Instance(cat.id, [square(40, 40)])])  # drawn by hand
    store.apply_edit(ids[0], delete=[c.id])
    store.apply_edit(ids[0], add=[c])  # undo of a rejection: not rejected after all
    store.set_image_status(ids[0], ImageStatus.DONE)
    by_version = {o.model_version: o for o in store.proposal_outcomes()}
    v1 = by_version[1]
    assert (v1.accepted, v1.edited, v1.rejected, v1.pending, v1.added_by_hand) == (2, 1, 1, 0, 1)
    assert v1.reviewed == 4
    v2 = by_version[2]
    assert (v2.accepted, v2.pending, v2.rejected, v2.added_by_hand) == (0, 2, 0, 0)
    # replacing untouched proposals with a newer model is not a rejection
    store.replace_proposals(ids[1], [p], model_version=3)
    after = {o.model_version: o for o in store.proposal_outcomes()}
    assert 2 not in after and after[3].pending == 1 and after[3].rejected == 0


def test_migration_from_schema_1_keeps_data(tmp_path):
    from app.core.schema import MIGRATIONS

    folder = tmp_path / "old"
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO images (path, width, height) VALUES ('a.png', 4, 4)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with ProjectStore.open(folder) as s:
        assert s.image(1).path == "a.png"
        assert s.proposal_outcomes() == []
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_images_with_human_work(filled):
    store, ids, cat = filled
    store.add_instances(ids[0], [Instance(cat.id, [square(0, 0)], source=Source.MODEL, score=0.9)])
    store.add_instances(ids[1], [Instance(cat.id, [square(0, 0)], source=Source.HUMAN)])
    store.add_instances(
        ids[2],
        [
            Instance(cat.id, [square(0, 0)], source=Source.MODEL, score=0.8),
            Instance(cat.id, [square(20, 20)], source=Source.MODEL_EDITED, score=0.8),
        ],
    )
    assert store.images_with_human_work() == {ids[1], ids[2]}
