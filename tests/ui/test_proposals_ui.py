"""The main window with background proposals (fake predictor: no torch work)."""

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PySide6.QtWidgets import QMessageBox

from app.core.store import NewImage, ProjectStore
from app.core.types import Category, ImageStatus, Instance, Polygon, Source
from app.ui.main_window import MainWindow
from app.ui.panels.model_panel import ModelEntry
from app.ui.workers import ModelChoice, ProposalController

N = 4


class Fake:
    card = SimpleNamespace(categories=[Category(1, "cell")])  # what propose_images maps

    device_name = "cpu (fake)"

    def __init__(self, gate=None, fail=False):
        self.gate, self.fail = gate, fail

    def predict(self, image, *, should_stop=None):
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise RuntimeError("model exploded")
        x = float(image.flat[0])
        square = Polygon([[x, x], [x + 8, x], [x + 8, x + 8], [x, x + 8]])
        return [Instance(1, [square], score=0.8, source=Source.MODEL)]


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "p"
    (root / "img").mkdir(parents=True)
    for i in range(N):
        cv2.imwrite(str(root / "img" / f"{i}.png"), np.full((32, 32), i + 1, np.uint8))
    with ProjectStore.open(root, create=True) as s:
        s.add_images([NewImage(f"img/{i}.png", 32, 32) for i in range(N)])
        s.add_category("cell")
    return root


@pytest.fixture(autouse=True)
def fake_cards():
    """User cards for the model ids the fake predictors stand for: the active model is set
    through the versions module, which refuses ids that name no model."""
    folder = Path(os.environ["XDG_DATA_HOME"]) / "maskloop" / "models"
    folder.mkdir(parents=True, exist_ok=True)
    for model_id in ("fake", "other"):
        card = {
            "id": model_id,
            "title": model_id,
            "architecture": "maskrcnn_mobilenet_v3_fpn",
            "categories": [{"id": 1, "name": "cell"}],
            "weights": {"file": f"{model_id}.pt", "sha256": "0" * 64},
        }
        (folder / f"{model_id}.json").write_text(json.dumps(card))


@pytest.fixture
def window(qtbot, project):
    store = ProjectStore.open(project)
    w = MainWindow(store)
    qtbot.addWidget(w)
    yield w
    w.close()
    store.close()


def attach(window, factory, model="fake"):
    controller = ProposalController(
        window.store.root, predictor_factory=factory, choice=ModelChoice(model)
    )
    entries = [ModelEntry("fake", "Fake model"), ModelEntry("other", "Other model")]
    window.attach_proposals(controller, entries)
    return controller


def test_proposals_appear_on_the_current_image_and_prefetch(qtbot, window):
    attach(window, lambda c, r: Fake())
    doc = window.editor.doc
    qtbot.waitUntil(lambda: len(window.editor.doc.instances) == 1, timeout=5000)
    assert window.editor.doc.image_id == doc.image_id
    qtbot.waitUntil(lambda: window.store.count_images(ImageStatus.PROPOSED) == N, timeout=5000)
    assert "fake" in window.model_status.text()
    assert "cpu (fake)" in window.model_panel.info.text()


def test_proposals_wait_while_a_polygon_is_being_drawn(qtbot, window):
    gate = threading.Event()
    controller = attach(window, lambda c, r: Fake(gate))
    image = window.current_image_id()
    window.canvas.set_tool("polygon")
    window.canvas.tool.points.append(window.canvas.mapToScene(5, 5))  # a drawing under way
    with qtbot.waitSignal(
        controller.proposals_ready, timeout=5000, check_params_cb=lambda r: r.image_id == image
    ):
        gate.set()
    assert window.store.count_instances(image) == 1
    # The window's refresh ran before this test heard the signal; it waits for the drawing
    # and, when its timer fires while the drawing goes on, waits again.
    with qtbot.waitSignal(window._refresh_timer.timeout, timeout=3000):
        pass
    assert window._refresh_timer.isActive()
    assert len(window.editor.doc.instances) == 0  # not refreshed under the drawing
    assert window.canvas.tool.points  # the drawing was not disturbed
    window.canvas.tool.points.clear()
    qtbot.waitUntil(lambda: len(window.editor.doc.instances) == 1, timeout=3000)


def test_worker_failure_goes_to_status_bar_and_log(qtbot, window):
    attach(window, lambda c, r: Fake(fail=True))
    qtbot.waitUntil(lambda: "model exploded" in window.log_view.toPlainText(), timeout=5000)
    assert "Traceback" in window.log_view.toPlainText()
    assert window.editor.doc is not None  # still working


def test_broken_model_shows_a_dialog_and_annotation_goes_on(qtbot, window):
    def broken(choice, root):
        raise FileNotFoundError("cells-mobile.pt is missing")

    attach(window, broken)
    qtbot.waitUntil(
        lambda: any(b.isVisible() for b in window.findChildren(QMessageBox)), timeout=5000
    )
    box = next(b for b in window.findChildren(QMessageBox) if b.isVisible())
    assert "cells-mobile.pt is missing" in box.text() and not box.isModal()
    window.next_image()  # the app keeps working without proposals
    assert window.editor.doc is not None


def test_propose_all_with_progress_and_model_switch(qtbot, window):
    controller = attach(window, lambda c, r: Fake())
    with qtbot.waitSignal(controller.batch_finished, timeout=10000):
        window.model_panel.propose_all.click()
    assert window.store.count_images(ImageStatus.PROPOSED) == N
    assert "All images proposed" in window.model_panel.eta.text()
    # switching the model re-proposes untouched images with it, and remembers the choice
    window.model_panel.model.setCurrentIndex(1)
    window.model_panel.model.activated.emit(1)
    assert controller.choice.model_id == "other"
    assert window.store.get_meta("active_model") == "other"


def test_a_model_whose_card_is_gone_is_not_made_active(qtbot, window):
    """The active model has one writer (app.ml.versions), which checks the id names a model."""
    controller = attach(window, lambda c, r: Fake())
    (Path(os.environ["XDG_DATA_HOME"]) / "maskloop" / "models" / "other.json").unlink()
    window.set_model(ModelChoice("other"))
    assert controller.choice.model_id == "fake"
    assert window.store.get_meta("active_model") is None  # never written: the default stays
    assert "No model card with id 'other'" in window.statusBar().currentMessage()


def test_human_work_survives_a_model_switch(qtbot, window):
    controller = attach(window, lambda c, r: Fake())
    image = window.current_image_id()
    qtbot.waitUntil(lambda: len(window.editor.doc.instances) == 1, timeout=5000)
    window.store.apply_edit(image, add=[Instance(1, [Polygon([[1, 1], [5, 1], [5, 5]])])])
    controller.set_model(ModelChoice("other"))
    # The worker takes the shown image first, then the next ones: once "other" has proposed
    # a next image, it has been through the shown one.
    with qtbot.waitSignal(
        controller.proposals_ready,
        timeout=5000,
        check_params_cb=lambda r: r.model_id == "other" and r.image_id != image,
    ):
        window._request_proposals(image)
    sources = sorted(i.source.value for i in window.store.instances(image))
    assert sources == ["human", "model"]


def test_activating_a_version_reproposes_untouched_images_only(qtbot, window):
    controller = attach(window, lambda c, r: Fake())
    qtbot.waitUntil(lambda: window.store.count_images(ImageStatus.PROPOSED) == N, timeout=5000)
    touched = window.current_image_id()
    window.store.apply_edit(touched, add=[Instance(1, [Polygon([[1, 1], [5, 1], [5, 5]])])])
    version = window.store.add_model_version("fake", "models/v1.pt")
    window.versions.activated.emit(f"v{version.id}")
    assert controller.choice.model_id == f"v{version.id}"
    untouched = [r.id for r in window.store.images() if r.id != touched]
    qtbot.waitUntil(
        lambda: all(window.store.instances(i)[0].model_version == version.id for i in untouched),
        timeout=10000,
    )
    assert {i.model_version for i in window.store.instances(touched)} == {None}
    assert window.store.image(touched).status is ImageStatus.IN_PROGRESS


def test_next_most_uncertain_image(qtbot, window):
    ids = [r.id for r in window.store.images()]
    window.store.set_uncertainty(ids[2], 0.9)
    window.store.set_uncertainty(ids[1], 0.4)
    window.most_uncertain_image()
    assert window.current_image_id() == ids[2]
    window.most_uncertain_image()  # the current one is skipped: next in line
    assert window.current_image_id() == ids[1]


def test_a_model_that_cannot_load_falls_back_without_a_traceback(
    qtbot, window, caplog, monkeypatch
):
    from app.ml.zoo import WeightsDownloadError

    monkeypatch.setattr(QMessageBox, "show", lambda self: None)

    def factory(choice, root):
        if choice.model_id == "other":
            raise WeightsDownloadError("offline: cannot download the COCO weights from https://x")
        return Fake()

    controller = attach(window, factory)
    qtbot.waitUntil(lambda: window.store.count_images(ImageStatus.PROPOSED) == N, timeout=5000)
    window.set_model(ModelChoice("other"))
    assert controller.choice.model_id == "other"
    qtbot.waitUntil(lambda: controller.choice.model_id == "fake", timeout=5000)
    assert window.store.get_meta("active_model") == "fake"
    assert "could not be loaded" in window.log_view.toPlainText()
    assert "Proposals go on with fake" in window.log_view.toPlainText()
    assert window.log_view.toPlainText().count("Proposals go on with") == 1  # late reports ignored
    worker_records = [r for r in caplog.records if r.name == "app.ui.workers"]
    assert any("offline" in r.getMessage() for r in worker_records)
    assert not any(r.exc_info for r in worker_records)


class TwoScores(Fake):
    def predict(self, image, *, should_stop=None):
        x = float(image.flat[0])
        return [
            Instance(
                1, [Polygon([[x, x], [x + 8, x], [x + 8, x + 8]])], score=s, source=Source.MODEL
            )
            for s in (0.8, 0.3)
        ]


def test_the_model_dock_stores_down_to_the_floor_and_the_slider_shows_the_rest(qtbot, window):
    """One threshold: the worker stores every detection down to the floor, so the 0.3
    detection is there and the slider alone decides whether it is shown."""
    controller = ProposalController(
        window.store.root,
        predictor_factory=lambda c, r: TwoScores(),
        choice=ModelChoice("fake"),
    )
    window.attach_proposals(controller, [ModelEntry("fake", "Fake model")])
    qtbot.waitUntil(lambda: window.store.count_images(ImageStatus.PROPOSED) == N, timeout=5000)
    image = window.current_image_id()
    assert sorted(i.score for i in window.store.instances(image)) == [0.3, 0.8]
    qtbot.waitUntil(lambda: len(window.editor.doc.instances) == 2, timeout=5000)
    assert window.threshold.value() == 50 and len(window.editor.review_order()) == 1
    window.threshold.setValue(20)
    assert len(window.editor.review_order()) == 2
