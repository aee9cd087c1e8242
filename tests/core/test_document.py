"""Document operations: each commits at once, and its inverse restores the store exactly."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.document import DocumentChangedError, DocumentError, Edit, ImageDocument
from app.core.store import NewImage, ProjectStore
from app.core.types import ImageStatus, Instance, Polygon, Provenance, Source


def square(x: float, y: float, s: float = 10.0) -> Polygon:
    return Polygon(np.array([[x, y], [x + s, y], [x + s, y + s], [x, y + s]], np.float32))


def snapshot(store: ProjectStore, image_id: int = 1) -> tuple:
    """Everything an edit may touch, in comparable form (timestamps excluded)."""
    insts = [
        (
            i.id,
            i.category_id,
            i.score,
            i.source,
            i.provenance,
            i.model_version,
            [(p.exterior.tolist(), [h.tolist() for h in p.holes]) for p in i.polygons],
        )
        for i in store.instances(image_id)
    ]
    return store.image(image_id).status, insts, sorted(store.accepted_ids(image_id))


def proposal_ids(doc: ImageDocument) -> list[int]:
    return sorted(i for i, inst in doc.instances.items() if inst.source == Source.MODEL)


OPS = {
    "add": lambda d: d.add_instance(Instance(2, [square(70, 10)]))[0],
    "delete": lambda d: d.delete_instances(list(d.instances)[:1]),
    "geometry": lambda d: d.replace_geometry(next(iter(d.instances)), [square(1, 1, 50)]),
    "geometry_empty_deletes": lambda d: d.replace_geometry(next(iter(d.instances)), []),
    "category": lambda d: d.change_category(list(d.instances), 2),
    "accept": lambda d: d.accept(list(d.instances)),
    "reject": lambda d: d.reject(list(d.instances)),
    "accept_above": lambda d: d.accept_above(0.5),
    "merge": lambda d: d.merge(list(d.instances)[:2])[0],
    "absorb": lambda d: d.absorb(*list(d.instances)[:2], [square(30, 30, 40)]),
    "done": lambda d: d.set_status(ImageStatus.DONE),
    "skipped": lambda d: d.set_status(ImageStatus.SKIPPED),
}


@pytest.fixture(params=["proposals", "human"])
def doc(request, tmp_path):
    """An image with proposals only (status proposed), or with a human instance too."""
    with ProjectStore.open(tmp_path / "q", create=True) as s:
        s.add_category("cell")
        s.add_category("debris")
        s.add_images([NewImage("a.png", 100, 100)])
        s.replace_proposals(
            1,
            [
                Instance(1, [square(30, 30)], score=0.9),
                Instance(1, [square(60, 60)], score=0.4),
            ],
            model_version=None,
        )
        if request.param == "human":
            s.add_instances(1, [Instance(1, [square(5, 5)], source=Source.HUMAN)])
        yield ImageDocument(s, 1)


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_then_inverse_restores_store(doc, op):
    before = snapshot(doc.store)
    inverse = OPS[op](doc)
    after = snapshot(doc.store)
    assert after != before, f"{op} changed nothing"
    redo = doc.apply(inverse)
    assert snapshot(doc.store) == before
    doc.apply(redo)
    assert snapshot(doc.store) == after
    # The in-memory mirror agrees with the store.
    fresh = ImageDocument(doc.store, 1)
    assert fresh.instances.keys() == doc.instances.keys()
    assert fresh.accepted == doc.accepted and fresh.status == doc.status


def test_first_edit_moves_image_to_in_progress_and_undo_restores(doc):
    assert doc.status == ImageStatus.PROPOSED
    inverse = doc.accept(proposal_ids(doc)[:1])
    assert doc.status == ImageStatus.IN_PROGRESS
    doc.apply(inverse)
    assert doc.store.image(1).status == ImageStatus.PROPOSED


def test_accept_keeps_source_model_and_marks_accepted(doc):
    pid = proposal_ids(doc)[0]
    doc.accept([pid])
    assert doc.store.instance(pid).source == Source.MODEL
    assert not doc.is_pending(pid)
    assert ImageDocument(doc.store, 1).accepted == {pid}


def test_editing_a_proposal_makes_it_model_edited(doc):
    pid = proposal_ids(doc)[0]
    doc.replace_geometry(pid, [square(0, 0, 20)])
    stored = doc.store.instance(pid)
    assert stored.source == Source.MODEL_EDITED
    assert stored.score == pytest.approx(0.9) or stored.score == pytest.approx(0.4)


def test_reject_deletes_only_proposals(doc):
    doc.reject(list(doc.instances))
    assert all(i.source != Source.MODEL for i in doc.store.instances(1))


def test_accept_above_threshold(doc):
    doc.accept_above(0.5)
    scores = [doc.instances[i].score for i in doc.accepted]
    assert scores == [pytest.approx(0.9)]
    assert len(doc.pending_ids()) == 1


def test_done_accepts_remaining_proposals(doc):
    doc.set_status(ImageStatus.DONE)
    assert doc.pending_ids() == []
    assert doc.store.image(1).status == ImageStatus.DONE


def test_merge_combines_parts(doc):
    ids = list(doc.instances)[:2]
    n = len(doc.instances)
    _, new_id = doc.merge(ids)
    merged = doc.store.instance(new_id)
    assert len(merged.polygons) == 2
    assert len(doc.store.instances(1)) == n - 1
    with pytest.raises(DocumentError):
        doc.merge([new_id])


def test_absorb_takes_the_outline_and_deletes_the_other(doc):
    first, second = proposal_ids(doc)
    n = len(doc.instances)
    doc.absorb(first, second, [square(30, 30, 40)])
    kept = doc.store.instance(first)
    assert kept.polygons == [square(30, 30, 40)]
    assert kept.source == Source.MODEL_EDITED and kept.provenance == Provenance.EDITED
    assert second not in doc.instances and len(doc.store.instances(1)) == n - 1
    with pytest.raises(DocumentError):
        doc.absorb(first, first, [square(0, 0)])
    with pytest.raises(DocumentError):
        doc.absorb(first, 10_000, [square(0, 0)])
    assert len(doc.store.instances(1)) == n - 1


def test_holes_survive(doc):
    pid = proposal_ids(doc)[0]
    poly = square(0, 0, 40)
    poly.holes = [np.array([[10, 10], [20, 10], [20, 20], [10, 20]], np.float32)]
    inverse = doc.replace_geometry(pid, [poly])
    assert doc.store.instance(pid).polygons == [poly]
    doc.apply(inverse)
    assert doc.store.instance(pid).polygons[0].holes == []


def test_unknown_instance_is_a_typed_error(doc):
    with pytest.raises(DocumentError):
        doc.delete_instances([999])


def test_empty_edit():
    assert Edit().empty
    assert not Edit(delete=[1]).empty


def test_brush_adds_and_eraser_cuts_a_hole():
    from mask_checks import polygons_area

    from app.core.document import brush_polygons
    from app.core.geometry import polygons_to_mask

    base = [square(10, 10, 40)]
    grown = brush_polygons(base, np.array([[55.0, 30.0]]), 4, erase=False, image_size=(100, 100))
    assert polygons_area(grown) > polygons_area(base)
    holed = brush_polygons(base, np.array([[30.0, 30.0]]), 5, erase=True, image_size=(100, 100))
    assert len(holed) == 1 and len(holed[0].holes) == 1
    mask = polygons_to_mask(holed, 100, 100)
    assert not mask[30, 30] and mask[12, 12]
    # A stroke erasing everything leaves nothing; one outside the image changes nothing.
    gone = brush_polygons(base, np.array([[30.0, 30.0]]), 40, erase=True, image_size=(100, 100))
    assert gone == []
    same = brush_polygons(base, np.array([[500.0, 500.0]]), 3, erase=False, image_size=(100, 100))
    assert polygons_area(same) == pytest.approx(polygons_area(base))


def test_an_edit_on_an_image_another_program_rewrote_is_refused_and_reloaded(tmp_path):
    """`propose --force` from the command line while the GUI shows the image."""
    with ProjectStore.open(tmp_path / "p", create=True) as store:
        store.add_category("cell")
        store.add_images([NewImage("a.png", 100, 100)])
        store.replace_proposals(1, [Instance(1, [square(10, 10)], score=0.9)], None)
        doc = ImageDocument(store, 1)
        stale = proposal_ids(doc)  # the new proposal below may reuse the old id
        with ProjectStore.open(tmp_path / "p") as cli:
            cli.replace_proposals(1, [Instance(1, [square(50, 50)], score=0.8)], None)
        before = snapshot(store)
        with pytest.raises(DocumentChangedError, match="reloaded"):
            doc.accept(stale)
        assert snapshot(store) == before
        fresh = proposal_ids(doc)
        assert doc.instances[fresh[0]].polygons[0].exterior.min() == 50  # the new proposal
        doc.accept(fresh)  # the reloaded view edits normally
        assert store.accepted_ids(1) == set(fresh)


def test_other_programs_writing_other_images_do_not_disturb_an_edit(tmp_path):
    with ProjectStore.open(tmp_path / "p", create=True) as store:
        store.add_category("cell")
        store.add_images([NewImage("a.png", 100, 100), NewImage("b.png", 100, 100)])
        doc = ImageDocument(store, 1)
        with ProjectStore.open(tmp_path / "p") as worker:
            worker.replace_proposals(2, [Instance(1, [square(5, 5)], score=0.5)], None)
        doc.add_instance(Instance(1, [square(20, 20)], source=Source.HUMAN))
        assert store.count_instances(1) == 1
