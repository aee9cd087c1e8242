"""ProposalController: queue priority, prefetch, stale results, faults (fake predictor, no torch
model). Ordering is checked with events and signals, never with sleeps: a held job waits at a
gate, and :func:`settle` pushes a do-nothing batch job behind everything queued."""

import dataclasses
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt

from app.core.store import NewImage, ProjectStore
from app.core.types import Category, ImageStatus, Instance, Polygon, Source
from app.ml.predictor import PredictionCancelled
from app.ui.workers import (
    PRIORITY_CURRENT,
    JobQueue,
    ModelChoice,
    ProposalController,
    ProposalJob,
    ProposalWorker,
)

N_IMAGES = 6
BARRIER = N_IMAGES + 1  # an image a person works on: a job for it does nothing


def square(x):
    return Polygon([[x, x], [x + 5, x], [x + 5, x + 5], [x, x + 5]])


class FakePredictor:
    """Identifies each image by its constant pixel value (= image id) and records calls:
    ``started`` when a prediction begins, ``log`` when it completes."""

    card = SimpleNamespace(categories=[Category(1, "cell")])  # what propose_images maps

    def __init__(self, choice, calls, gate=None, fail_on=(), oom=0, oom_error=None):
        self.choice = choice
        self.device_name = f"fake-{choice.device}"
        self.calls = calls
        self.gate = gate
        self.fail_on = set(fail_on)
        self.oom = oom
        self.oom_error = oom_error or torch.cuda.OutOfMemoryError

    def predict(self, image, *, should_stop=None):
        image_id = int(image.flat[0])
        self.calls.started.append(image_id)
        if self.gate is not None:
            self.gate.wait(5)
        if should_stop is not None and should_stop():
            raise PredictionCancelled("cancelled")
        if self.oom and self.choice.device != "cpu":
            self.oom -= 1
            raise self.oom_error("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.calls.log.append((image_id, self.choice.model_id, self.choice.device))
        if image_id in self.fail_on:
            raise ValueError("boom")
        return [Instance(1, [square(image_id)], score=0.9, source=Source.MODEL)]


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    (root / "img").mkdir(parents=True)
    ids = range(1, BARRIER + 1)
    for i in ids:
        cv2.imwrite(str(root / "img" / f"{i}.png"), np.full((16, 16), i, np.uint8))
    with ProjectStore.open(root, create=True) as store:
        store.add_images([NewImage(f"img/{i}.png", 16, 16) for i in ids])
        store.add_category("cell")
        store.apply_edit(BARRIER, add=[Instance(1, [square(1)])])
    return root


def make_controller(project, **kw):
    """A controller whose factory makes FakePredictors; returns it and its record of calls
    (``started``, ``log`` and ``choices``, the factory's arguments)."""
    calls = SimpleNamespace(started=[], log=[], choices=[])
    factory_kw = {k: kw.pop(k) for k in ("gate", "fail_on", "oom", "oom_error") if k in kw}

    def factory(choice, root):
        calls.choices.append(choice)
        if choice.model_id == "broken":
            raise FileNotFoundError("weights file missing: put it in the models folder")
        return FakePredictor(choice, calls, **factory_kw)

    return ProposalController(project, predictor_factory=factory, **kw), calls


@pytest.fixture
def controllers():
    made = []
    yield made
    for c in made:
        c.shutdown()


def results(c):
    got = []
    c.proposals_ready.connect(got.append)
    return got


def settle(qtbot, c):
    """Return once every job queued so far has run: a batch job (the lowest priority) for an
    image a person works on goes through the worker after all of them."""
    with qtbot.waitSignal(c.batch_finished, timeout=5000, check_params_cb=lambda x: not x):
        c.propose_all([BARRIER])


def ran(calls):
    return [i for i, *_ in calls.log]


def test_current_first_then_prefetch_in_list_order(qtbot, project, controllers):
    gate = threading.Event()
    c, calls = make_controller(project, gate=gate, prefetch=2)
    controllers.append(c)
    got = results(c)
    c.set_current(1, upcoming=[2, 3, 4])
    qtbot.waitUntil(lambda: calls.started == [1])  # 1 is in flight; the annotator moves on
    c.set_current(5, upcoming=[6, 2])
    gate.set()
    qtbot.waitUntil(lambda: len(got) >= 4, timeout=5000)
    settle(qtbot, c)
    # 1 was in flight; then the new current image, then its window in list order.
    # 3 and 4 belonged to the window the annotator left (4 was beyond it anyway).
    assert ran(calls) == [1, 5, 6, 2]
    with ProjectStore.open(project) as store:
        assert store.image(5).status is ImageStatus.PROPOSED
        assert [i.source for i in store.instances(5)] == [Source.MODEL]


def test_already_proposed_image_is_not_proposed_again(qtbot, project, controllers):
    c, calls = make_controller(project)
    controllers.append(c)
    got = results(c)  # connected before the first request, so no result can slip past
    c.set_current(1, upcoming=[2])
    qtbot.waitUntil(lambda: len(got) == 2, timeout=5000)
    c.set_current(1, upcoming=[2])
    settle(qtbot, c)
    assert calls.started == [1, 2] and [r.image_id for r in got] == [1, 2]


def test_the_status_counts_down_when_jobs_are_skipped(qtbot, project, controllers):
    """Reopening a proposed project queues images that need nothing: the status must not
    stay at "idle, N queued" once the worker has passed them by."""
    c, calls = make_controller(project)
    controllers.append(c)
    got = results(c)
    c.set_current(1, upcoming=[2, 3])
    qtbot.waitUntil(lambda: len(got) == 3, timeout=5000)
    statuses = []
    c.status_changed.connect(statuses.append)
    c.set_current(1, upcoming=[2, 3])  # all three are proposed by this model already
    qtbot.waitUntil(lambda: statuses and statuses[-1].queue_length == 0, timeout=5000)
    assert max(s.queue_length for s in statuses) > 0 and not statuses[-1].busy
    assert calls.started == [1, 2, 3]


def test_never_touches_human_work(qtbot, project, controllers):
    with ProjectStore.open(project) as store:
        store.apply_edit(3, add=[Instance(1, [square(1)])])
    c, calls = make_controller(project)
    controllers.append(c)
    got = results(c)
    c.set_current(3, upcoming=[4])
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    assert ran(calls) == [4]
    with ProjectStore.open(project) as store:
        assert [i.source for i in store.instances(3)] == [Source.HUMAN]


def test_edit_during_inference_wins_over_the_result(qtbot, project, controllers):
    gate = threading.Event()
    c, calls = make_controller(project, gate=gate)
    controllers.append(c)
    got = results(c)
    c.set_current(2)
    qtbot.waitUntil(lambda: calls.started == [2])
    with ProjectStore.open(project) as store:  # the annotator draws while the model runs
        store.apply_edit(2, add=[Instance(1, [square(3)])])
    gate.set()
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    assert got[0].stored is False
    with ProjectStore.open(project) as store:
        assert [i.source for i in store.instances(2)] == [Source.HUMAN]


def test_model_switch_drops_stale_result_and_queue(qtbot, project, controllers):
    gate = threading.Event()
    c, calls = make_controller(project, gate=gate)
    controllers.append(c)
    got = results(c)
    failures = []
    c.failed.connect(failures.append)
    c.set_current(1, upcoming=[2, 3])
    qtbot.waitUntil(lambda: calls.started == [1])
    c.set_model(ModelChoice("other-model"))
    assert c.queue_length == 0
    gate.set()
    c.set_current(1)
    # The worker is serial: the abandoned job of the old model ends before this one runs.
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    assert got[0].model_id == "other-model" and got[0].generation == c.generation
    assert calls.choices[-1].model_id == "other-model"
    assert failures == []  # a cancelled prediction is not a failure
    with ProjectStore.open(project) as store:
        assert store.image(1).proposed_by == "other-model"
        assert store.instances(2) == [] and store.instances(3) == []


def test_worker_survives_an_exception(qtbot, project, controllers):
    c, calls = make_controller(project, fail_on={1})
    controllers.append(c)
    failures = []
    c.failed.connect(failures.append)
    got = results(c)
    c.set_current(1, upcoming=[2])
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    assert got[0].image_id == 2
    assert failures[0].image_id == 1 and "boom" in failures[0].message
    assert "Traceback" in failures[0].details


def test_missing_image_file_is_reported_not_fatal(qtbot, project, controllers):
    (project / "img" / "1.png").unlink()
    c, calls = make_controller(project)
    controllers.append(c)
    failures = []
    c.failed.connect(failures.append)
    got = results(c)
    c.set_current(1, upcoming=[2])
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    assert failures and failures[0].image_id == 1


def test_broken_model_reports_once_and_app_keeps_working(qtbot, project, controllers):
    c, calls = make_controller(project, choice=ModelChoice("broken"))
    controllers.append(c)
    errors = []
    c.model_error.connect(errors.append)
    with qtbot.waitSignal(c.model_error, timeout=5000) as blocker:
        c.set_current(1, upcoming=[2])
    assert "could not be loaded" in blocker.args[0] and "models folder" in blocker.args[0]
    c.set_current(2)  # ignored until another model is chosen
    assert c.queue_length == 0
    c.set_model(ModelChoice("cells-mobile"))
    got = results(c)
    c.set_current(2)
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    assert ran(calls) == [2]
    assert len(errors) == 1 and [ch.model_id for ch in calls.choices] == ["broken", "cells-mobile"]


def test_propose_all_progress_and_cancel(qtbot, project, controllers):
    gate = threading.Event()
    c, calls = make_controller(project, gate=gate)
    controllers.append(c)
    progress = []
    c.batch_progress.connect(lambda d, t, eta: progress.append((d, t)))
    with qtbot.waitSignal(c.batch_finished, timeout=5000) as finished:
        c.propose_all([1, 2, 3, 4, 5, 6])
        qtbot.waitUntil(lambda: calls.started == [1])
        c.cancel_batch()
        gate.set()
    assert finished.args == [True]
    settle(qtbot, c)
    assert calls.started == [1] and progress[0] == (0, 6)


def test_propose_all_completes_with_eta(qtbot, project, controllers):
    c, calls = make_controller(project)
    controllers.append(c)
    progress = []
    c.batch_progress.connect(lambda d, t, eta: progress.append((d, t, eta)))
    with qtbot.waitSignal(c.batch_finished, timeout=5000) as finished:
        c.propose_all([1, 2, 3])
    assert finished.args == [False]
    assert [p[:2] for p in progress] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert progress[-1][2] == 0.0


def test_a_job_of_a_cancelled_run_does_not_count_for_the_next(qtbot, project, controllers):
    """Switching model cancels the running Propose all and starts another at once (as the
    window does); the abandoned job must not count for the new run, or it would say
    'finished' one image early."""
    gate = threading.Event()
    c, calls = make_controller(project, gate=gate)
    controllers.append(c)
    c.propose_all([1, 2, 3, 4, 5, 6])
    qtbot.waitUntil(lambda: calls.started == [1])
    c.set_model(ModelChoice("other-model"))
    progress = []
    c.batch_progress.connect(lambda d, t, eta: progress.append((d, t)))
    with qtbot.waitSignal(c.batch_finished, timeout=5000) as finished:
        c.propose_all([1, 2, 3])
        gate.set()
    assert finished.args == [False]
    assert progress == [(0, 3), (1, 3), (2, 3), (3, 3)]
    with ProjectStore.open(project) as store:
        assert [store.image(i).proposed_by for i in (1, 2, 3)] == ["other-model"] * 3


def test_gpu_out_of_memory_falls_back_to_cpu(qtbot, project, controllers):
    c, calls = make_controller(project, oom=2, choice=ModelChoice(device="cuda"))
    controllers.append(c)
    notices = []
    c.notice.connect(notices.append)
    got = results(c)
    c.set_current(1)
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    assert calls.log == [(1, "cells-mobile", "cpu")]
    assert [ch.device for ch in calls.choices] == ["cuda", "cpu"]
    assert notices and "CPU" in notices[0]
    assert c.choice.device == "cpu"  # the rest of this model's work stays on the CPU
    c.set_current(2)
    qtbot.waitUntil(lambda: len(got) == 2, timeout=5000)
    assert calls.log[-1] == (2, "cells-mobile", "cpu") and len(calls.choices) == 2


def test_an_error_that_only_mentions_memory_is_reported_not_a_device_switch(
    qtbot, project, controllers
):
    """Out-of-memory is recognised by its type: another RuntimeError is a failure to show,
    not a reason to leave the GPU."""
    c, calls = make_controller(
        project, oom=1, oom_error=RuntimeError, choice=ModelChoice(device="cuda")
    )
    controllers.append(c)
    with qtbot.waitSignal(c.failed, timeout=5000) as failure:
        c.set_current(1)
    assert "out of memory" in failure.args[0].message
    assert [ch.device for ch in calls.choices] == ["cuda"] and c.choice.device == "cuda"


def test_every_detection_down_to_the_floor_is_stored_and_counts(qtbot, project, controllers):
    """The worker stores the 0.3 detection too (the window's score threshold hides it)."""

    class TwoScores(FakePredictor):
        def predict(self, image, *, should_stop=None):
            x = int(image.flat[0])
            return [
                Instance(1, [square(x)], score=0.9, source=Source.MODEL),
                Instance(1, [square(x + 6)], score=0.3, source=Source.MODEL),
            ]

    c = ProposalController(project, predictor_factory=lambda choice, root: TwoScores(choice, None))
    controllers.append(c)
    got = results(c)
    c.set_current(1)
    qtbot.waitUntil(lambda: len(got) == 1, timeout=5000)
    (result,) = got
    assert result.instances == 2 and result.uncertainty == pytest.approx(0.1 + 0.3)
    with ProjectStore.open(project) as store:
        assert [i.score for i in store.instances(1)] == [pytest.approx(0.9), pytest.approx(0.3)]
        assert store.image(1).uncertainty == pytest.approx(0.4)


def test_the_controller_reports_on_the_gui_thread_only(qtbot, project, controllers):
    """Its state (status, seconds per image, batch counts) changes on the GUI thread only:
    receivers connected directly see every signal there, not on the worker thread."""
    c, calls = make_controller(project)
    controllers.append(c)
    threads = []

    def record(*_):
        threads.append(threading.get_ident())

    direct = Qt.ConnectionType.DirectConnection
    for signal in (c.status_changed, c.proposals_ready, c.batch_progress, c.batch_finished):
        signal.connect(record, direct)
    statuses = []
    c.status_changed.connect(statuses.append, direct)
    with qtbot.waitSignal(c.batch_finished, timeout=5000):
        c.propose_all([1, 2])
    assert threads and set(threads) == {threading.get_ident()}
    assert any(s.busy for s in statuses) and statuses[-1].last_seconds is not None


def test_a_broken_model_is_reported_on_the_gui_thread(qtbot, project, controllers):
    c, calls = make_controller(project, choice=ModelChoice("broken"))
    controllers.append(c)
    threads = []
    c.model_error.connect(lambda _m: threads.append(threading.get_ident()))
    c.model_error.connect(
        lambda _m: threads.append(threading.get_ident()), Qt.ConnectionType.DirectConnection
    )
    with qtbot.waitSignal(c.model_error, timeout=5000):
        c.set_current(1)
    qtbot.waitUntil(lambda: len(threads) == 2)
    assert set(threads) == {threading.get_ident()}


def test_shutdown_drops_queued_work(qtbot, project, controllers):
    """Closing the window during Propose all does not read and cancel every queued image."""
    gate = threading.Event()
    c, calls = make_controller(project, gate=gate)
    controllers.append(c)
    c.propose_all([1, 2, 3, 4, 5, 6])
    qtbot.waitUntil(lambda: calls.started == [1])
    gate.set()
    c.shutdown()
    assert calls.started == [1] and calls.log == []


def test_the_worker_needs_only_a_queue_and_a_factory(qtbot, project):
    """A frozen job in, signals out: the worker runs without any controller."""
    calls = SimpleNamespace(started=[], log=[], choices=[])
    queue = JobQueue()
    worker = ProposalWorker(queue, project, lambda choice, root: FakePredictor(choice, calls))
    worker.start()
    try:
        choice = ModelChoice("fake")
        job = ProposalJob(PRIORITY_CURRENT, 1, 3, 0, choice, threading.Event())
        with qtbot.waitSignal(worker.proposals_ready, timeout=5000) as ready:
            queue.put(job)
        assert ready.args[0].image_id == 3 and ready.args[0].model_id == "fake"
        with pytest.raises(dataclasses.FrozenInstanceError):
            job.image_id = 4
    finally:
        queue.close()
        worker.wait(5000)
