"""ProposalController: queue priority, prefetch, stale results, faults (fake predictor, no torch)."""

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from app.core.store import NewImage, ProjectStore
from app.core.types import Category, ImageStatus, Instance, Polygon, Source
from app.ml.predictor import PredictionCancelled
from app.ui.workers import ModelChoice, ProposalController

N_IMAGES = 6


def square(x):
    return Polygon([[x, x], [x + 5, x], [x + 5, x + 5], [x, x + 5]])


class FakePredictor:
    card = SimpleNamespace(categories=[Category(1, "cell")])  # what propose_images maps

    """Identifies each image by its constant pixel value (= image id) and records calls."""

    def __init__(self, choice, log, gate=None, fail_on=(), oom=0):
        self.choice = choice
        self.device_name = f"fake-{choice.device}"
        self.log = log
        self.gate = gate
        self.fail_on = set(fail_on)
        self.oom = oom

    def predict(self, image, *, should_stop=None):
        image_id = int(image.flat[0])
        if self.gate is not None:
            self.gate.wait(5)
        if should_stop is not None and should_stop():
            raise PredictionCancelled("cancelled")
        if self.oom and self.choice.device != "cpu":
            self.oom -= 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.log.append((image_id, self.choice.model_id, self.choice.device))
        if image_id in self.fail_on:
            raise ValueError("boom")
        return [Instance(1, [square(image_id)], score=0.9, source=Source.MODEL)]


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    (root / "img").mkdir(parents=True)
    for i in range(1, N_IMAGES + 1):
        cv2.imwrite(str(root / "img" / f"{i}.png"), np.full((16, 16), i, np.uint8))
    with ProjectStore.open(root, create=True) as store:
        store.add_images([NewImage(f"img/{i}.png", 16, 16) for i in range(1, N_IMAGES + 1)])
        store.add_category("cell")
    return root


def make_controller(qtbot, project, **kw):
    """A controller whose factory makes FakePredictors; returns it, the call log, the choices."""
    log = []
    factory_kw = {k: kw.pop(k) for k in ("gate", "fail_on", "oom") if k in kw}
    calls = []

    def factory(choice, root):
        calls.append(choice)
        if choice.model_id == "broken":
            raise FileNotFoundError("weights file missing: put it in the models folder")
        return FakePredictor(choice, log, **factory_kw)

    return ProposalController(project, predictor_factory=factory, **kw), log, calls


@pytest.fixture
def controllers():
    made = []
    yield made
    for c in made:
        c.shutdown()


def wait_results(qtbot, c, n, timeout=5000):
    got = []
    c.proposals_ready.connect(got.append)
    qtbot.waitUntil(lambda: len(got) >= n, timeout=timeout)
    return got


def test_current_first_then_prefetch_in_list_order(qtbot, project, controllers):
    gate = threading.Event()
    c, log, _ = make_controller(qtbot, project, gate=gate, prefetch=2)
    controllers.append(c)
    got = []
    c.proposals_ready.connect(got.append)
    c.set_current(1, upcoming=[2, 3, 4])  # 1 starts, then the annotator moves on
    time.sleep(0.05)
    c.set_current(5, upcoming=[6, 2])
    gate.set()
    qtbot.waitUntil(lambda: len(got) >= 4, timeout=5000)
    time.sleep(0.1)
    # 1 was in flight; then the new current image, then its window in list order.
    # 3 and 4 belonged to the window the annotator left (4 was beyond it anyway).
    assert [i for i, *_ in log] == [1, 5, 6, 2]
    with ProjectStore.open(project) as store:
        assert store.image(5).status is ImageStatus.PROPOSED
        assert [i.source for i in store.instances(5)] == [Source.MODEL]


def test_already_proposed_image_is_not_proposed_again(qtbot, project, controllers):
    c, log, _ = make_controller(qtbot, project)
    controllers.append(c)
    c.set_current(1)
    wait_results(qtbot, c, 1)
    c.set_current(1)
    c.set_current(2)
    wait_results(qtbot, c, 1)
    assert [i for i, *_ in log] == [1, 2]


def test_never_touches_human_work(qtbot, project, controllers):
    with ProjectStore.open(project) as store:
        store.apply_edit(3, add=[Instance(1, [square(1)])])
    c, log, _ = make_controller(qtbot, project)
    controllers.append(c)
    c.set_current(3, upcoming=[4])
    wait_results(qtbot, c, 1)
    assert [i for i, *_ in log] == [4]
    with ProjectStore.open(project) as store:
        assert [i.source for i in store.instances(3)] == [Source.HUMAN]


def test_edit_during_inference_wins_over_the_result(qtbot, project, controllers):
    gate = threading.Event()
    c, log, _ = make_controller(qtbot, project, gate=gate)
    controllers.append(c)
    got = []
    c.proposals_ready.connect(got.append)
    c.set_current(2)
    time.sleep(0.05)
    with ProjectStore.open(project) as store:  # the annotator draws while the model runs
        store.apply_edit(2, add=[Instance(1, [square(3)])])
    gate.set()
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    assert got[0].stored is False
    with ProjectStore.open(project) as store:
        assert [i.source for i in store.instances(2)] == [Source.HUMAN]


def test_model_switch_drops_stale_result_and_queue(qtbot, project, controllers):
    gate = threading.Event()
    c, log, calls = make_controller(qtbot, project, gate=gate)
    controllers.append(c)
    got = []
    c.proposals_ready.connect(got.append)
    c.set_current(1, upcoming=[2, 3])
    time.sleep(0.05)
    failures = []
    c.failed.connect(failures.append)
    c.set_model(ModelChoice("other-model"))
    gate.set()
    time.sleep(0.3)
    assert got == [] and c.queue_length == 0
    assert failures == []  # a cancelled prediction is not a failure
    with ProjectStore.open(project) as store:
        assert store.count_instances() == 0
    c.set_current(1)
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    assert got[0].model_id == "other-model" and calls[-1].model_id == "other-model"


def test_worker_survives_an_exception(qtbot, project, controllers):
    c, log, _ = make_controller(qtbot, project, fail_on={1})
    controllers.append(c)
    failures = []
    c.failed.connect(failures.append)
    c.set_current(1, upcoming=[2])
    got = wait_results(qtbot, c, 1)
    assert got[0].image_id == 2
    assert failures[0].image_id == 1 and "boom" in failures[0].message
    assert "Traceback" in failures[0].details


def test_missing_image_file_is_reported_not_fatal(qtbot, project, controllers):
    (project / "img" / "1.png").unlink()
    c, log, _ = make_controller(qtbot, project)
    controllers.append(c)
    failures = []
    c.failed.connect(failures.append)
    c.set_current(1, upcoming=[2])
    wait_results(qtbot, c, 1)
    assert failures and failures[0].image_id == 1


def test_broken_model_reports_once_and_app_keeps_working(qtbot, project, controllers):
    c, log, _ = make_controller(qtbot, project, choice=ModelChoice("broken"))
    controllers.append(c)
    with qtbot.waitSignal(c.model_error, timeout=5000) as blocker:
        c.set_current(1, upcoming=[2])
    assert "could not be loaded" in blocker.args[0] and "models folder" in blocker.args[0]
    c.set_current(2)  # ignored until another model is chosen
    time.sleep(0.1)
    assert log == []
    c.set_model(ModelChoice("cells-mobile"))
    c.set_current(2)
    wait_results(qtbot, c, 1)
    assert log[0][0] == 2


def test_propose_all_progress_and_cancel(qtbot, project, controllers):
    gate = threading.Event()
    c, log, _ = make_controller(qtbot, project, gate=gate)
    controllers.append(c)
    progress = []
    c.batch_progress.connect(lambda d, t, eta: progress.append((d, t)))
    with qtbot.waitSignal(c.batch_finished, timeout=5000) as finished:
        c.propose_all([1, 2, 3, 4, 5, 6])
        time.sleep(0.05)
        c.cancel_batch()
        gate.set()
    assert finished.args == [True]
    time.sleep(0.2)
    assert len(log) <= 1 and progress[0] == (0, 6)


def test_propose_all_completes_with_eta(qtbot, project, controllers):
    c, log, _ = make_controller(qtbot, project)
    controllers.append(c)
    progress = []
    c.batch_progress.connect(lambda d, t, eta: progress.append((d, t, eta)))
    with qtbot.waitSignal(c.batch_finished, timeout=5000) as finished:
        c.propose_all([1, 2, 3])
    assert finished.args == [False]
    assert [p[:2] for p in progress] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert progress[-1][2] == 0.0


def test_gpu_out_of_memory_falls_back_to_cpu(qtbot, project, controllers):
    c, log, calls = make_controller(qtbot, project, oom=2, choice=ModelChoice(device="cuda"))
    controllers.append(c)
    notices = []
    c.notice.connect(notices.append)
    c.set_current(1)
    wait_results(qtbot, c, 1)
    assert log == [(1, "cells-mobile", "cpu")]
    assert [ch.device for ch in calls] == ["cuda", "cpu"]
    assert notices and "CPU" in notices[0]


def test_uncertainty_counts_every_detection_only_confident_ones_stored(qtbot, project, controllers):
    class TwoScores(FakePredictor):
        def predict(self, image, *, should_stop=None):
            x = int(image.flat[0])
            return [
                Instance(1, [square(x)], score=0.9, source=Source.MODEL),
                Instance(1, [square(x + 6)], score=0.3, source=Source.MODEL),
            ]

    c = ProposalController(project, predictor_factory=lambda choice, root: TwoScores(choice, []))
    controllers.append(c)
    c.set_current(1)
    (result,) = wait_results(qtbot, c, 1)
    assert result.instances == 1 and result.uncertainty == pytest.approx((0.2 + 0.6) / 2)
    with ProjectStore.open(project) as store:
        assert [i.score for i in store.instances(1)] == [pytest.approx(0.9)]
        assert store.image(1).uncertainty == pytest.approx(0.4)
