"""Provenance: how each outline was made, stored beside its source and migrated for old
projects; edits, assists, merges, undo and imports each leave the right one."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from app.core.coco import export_coco, import_coco
from app.core.document import ImageDocument
from app.core.polygon_codec import encode_polygons
from app.core.schema import MIGRATIONS
from app.core.store import DB_NAME, SCHEMA_VERSION, NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon, Provenance, Source


def square(x: float, y: float = 0.0, s: float = 10.0) -> Polygon:
    return Polygon(np.array([[x, y], [x + s, y], [x + s, y + s], [x, y + s]], np.float32))


@pytest.fixture
def store(tmp_path: Path):
    with ProjectStore.open(tmp_path / "p", create=True) as s:
        s.add_category("cell")
        s.add_images([NewImage("a.png", 100, 100)])
        yield s


def _schema5_project(folder: Path) -> None:
    """A project written before provenance existed: one instance of each source."""
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME, isolation_level=None)
    for step in MIGRATIONS[:5]:
        for statement in step:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 5")
    conn.execute("INSERT INTO images (path, width, height) VALUES ('a.png', 64, 64)")
    conn.execute("INSERT INTO categories (id, name, color) VALUES (1, 'cell', '#fff')")
    for id_, source in enumerate(("model", "model_edited", "human"), 1):
        conn.execute(
            "INSERT INTO instances (id, image_id, category_id, geometry, score, source, "
            "model_version, created, modified) VALUES (?, 1, 1, ?, NULL, ?, NULL, 't', 't')",
            (id_, encode_polygons([square(10 * id_)]), source),
        )
    conn.close()


def test_old_project_opens_and_its_rows_get_what_their_source_says(tmp_path: Path) -> None:
    _schema5_project(tmp_path / "old")
    with ProjectStore.open(tmp_path / "old") as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [i.provenance for i in s.instances(1)] == [
            Provenance.PROPOSAL,
            Provenance.EDITED,
            Provenance.DRAWN,
        ]
        counts = s.instance_counts_by_provenance()
        assert counts == {
            Provenance.PROPOSAL: 1,
            Provenance.ASSISTED: 0,
            Provenance.DRAWN: 1,
            Provenance.EDITED: 1,
            Provenance.IMPORTED: 0,
        }
        assert s.integrity_ok()


def test_the_schema_accepts_exactly_the_provenances() -> None:
    check = next(
        st for st in MIGRATIONS[5] if st.startswith("ALTER TABLE instances ADD COLUMN provenance")
    )
    allowed = set(re.findall(r"'(\w+)'", check.split("CHECK", 1)[1]))
    assert allowed == {p.value for p in Provenance}


def test_store_refuses_a_provenance_it_does_not_know(store: ProjectStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store._conn.execute(
            "INSERT INTO instances (image_id, category_id, geometry, source, provenance, "
            "created, modified) VALUES (1, 1, x'', 'human', 'guessed', 't', 't')"
        )


def test_new_instances_without_one_get_what_their_source_implies(store: ProjectStore) -> None:
    drawn, assisted = store.add_instances(
        1,
        [
            Instance(1, [square(0)]),
            Instance(1, [square(20)], provenance=Provenance.ASSISTED),
        ],
    )
    assert drawn.provenance == Provenance.DRAWN
    assert [i.provenance for i in store.instances(1)] == [Provenance.DRAWN, Provenance.ASSISTED]
    # Proposals are proposals whatever the proposer's instances said.
    store.add_images([NewImage("b.png", 100, 100)])
    store.replace_proposals(2, [Instance(1, [square(0)], provenance=Provenance.DRAWN)], None)
    assert [i.provenance for i in store.instances(2)] == [Provenance.PROPOSAL]
    assert assisted.provenance == Provenance.ASSISTED


@pytest.fixture
def doc(store: ProjectStore) -> ImageDocument:
    """Image 1 with a proposal (id 1), an assisted (2), a drawn (3) and an imported (4) one."""
    store.replace_proposals(1, [Instance(1, [square(0)], score=0.9)], None)
    store.add_instances(
        1,
        [
            Instance(1, [square(20)], provenance=Provenance.ASSISTED),
            Instance(1, [square(40)], provenance=Provenance.DRAWN),
            Instance(1, [square(60)], provenance=Provenance.IMPORTED),
        ],
    )
    return ImageDocument(store, 1)


def _made(doc: ImageDocument) -> dict[int, Provenance]:
    return {i.id: i.provenance for i in doc.store.instances(1)}


def test_a_persons_outline_change_makes_model_outlines_edited(doc: ImageDocument) -> None:
    for i in (1, 2, 3, 4):
        doc.replace_geometry(i, [square(10 * i, 50, 5)])
    assert _made(doc) == {
        1: Provenance.EDITED,
        2: Provenance.EDITED,
        3: Provenance.DRAWN,
        4: Provenance.IMPORTED,
    }
    assert doc.store.instance(1).source == Source.MODEL_EDITED


def test_undo_and_redo_restore_provenance(doc: ImageDocument) -> None:
    before = _made(doc)
    inverse = doc.replace_geometry(2, [square(0, 50)])
    assert _made(doc)[2] == Provenance.EDITED
    redo = doc.apply(inverse)
    assert _made(doc) == before
    doc.apply(redo)
    assert _made(doc)[2] == Provenance.EDITED


def test_an_assists_new_outline_is_assisted_and_a_category_change_keeps_it(
    doc: ImageDocument,
) -> None:
    doc.replace_geometry(3, [square(40, 0, 12)], Provenance.ASSISTED)  # refine a drawn one
    doc.replace_geometry(1, [square(0, 0, 12)], Provenance.ASSISTED)  # refine a proposal
    cat = doc.store.add_category("debris")
    doc.change_category([2], cat.id)
    made = _made(doc)
    assert made[3] == made[1] == made[2] == Provenance.ASSISTED
    assert doc.store.instance(1).source == Source.MODEL_EDITED


@pytest.mark.parametrize(
    ("ids", "expected"),
    [((3, 3), Provenance.DRAWN), ((3, 4), Provenance.EDITED), ((1, 2), Provenance.EDITED)],
)
def test_merge_keeps_a_shared_persons_provenance_else_edited(
    doc: ImageDocument, ids: tuple[int, int], expected: Provenance
) -> None:
    if ids == (3, 3):  # two drawn parts
        (extra,) = doc.store.add_instances(1, [Instance(1, [square(80)])])
        doc.reload()
        ids = (3, extra.id)
    _, merged = doc.merge(list(ids))
    assert doc.store.instance(merged).provenance == expected


def test_imported_work_is_imported_and_imported_proposals_are_proposals(
    store: ProjectStore, tmp_path: Path
) -> None:
    import cv2

    images = tmp_path / "p"
    cv2.imwrite(str(images / "a.png"), np.zeros((100, 100), np.uint8))
    store.add_instances(1, [Instance(1, [square(0)], provenance=Provenance.ASSISTED)])
    store.set_image_status(1, ImageStatus.DONE)
    export_coco(store, tmp_path / "out.json")
    for status, expected in ((ImageStatus.DONE, Provenance.IMPORTED),
                             (ImageStatus.PROPOSED, Provenance.PROPOSAL)):  # fmt: skip
        with ProjectStore.open(tmp_path / status.value, create=True) as other:
            import_coco(other, tmp_path / "out.json", images_root=images, status=status)
            assert [i.provenance for i in other.instances(1)] == [expected]
