"""Background proposals: the model runs on a worker thread and never makes the annotator wait.

The GUI tells the :class:`ProposalController` which image is current and which come next;
the worker proposes the current image first, then prefetches the next ones, and stores each
result with :meth:`ProjectStore.replace_proposals` (which refuses images a person has
touched). Every request carries ``(image_id, request_seq, generation)``; the generation
changes when the model changes, so results of an older model are dropped, never applied.

The worker and the controller share only the job queue: each job is a frozen snapshot
(image, generation, model choice, a cancellation event) taken when it was queued, and the
worker reports through queued signals, so the controller's state is touched on the GUI
thread only. No torch object, QPixmap or QGraphicsItem crosses threads: only ids, numpy
arrays and dataclasses.

The current image's proposal pass keeps its model features in the worker's
:class:`app.ml.assist.Assistant` cache, under the key the GUI's assists name the image
by (:func:`assist_image_key`), so the first assist on it runs no backbone. Prefetch and
batch jobs keep none: the image the person is on is the one they are likely to correct.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PySide6.QtCore import QObject, Qt, QThread, Signal

from app.core.score_threshold import SCORE_FLOOR
from app.core.store import ProjectStore
from app.core.types import ImageRecord, ImageStatus, Instance
from app.errors import MaskLoopError
from app.ml.assist import REFINE_ENLARGE, Assistant, AssistError
from app.ml.predictor import PredictionCancelled
from app.ml.predictor import Predictor as ModelPredictor
from app.ml.propose import ImageOutcome, propose_images
from app.ml.zoo import ModelCard

log = logging.getLogger(__name__)

PRIORITY_CURRENT = 0
PRIORITY_PREFETCH = 1
PRIORITY_BATCH = 2


class Predictor(Protocol):
    """What the worker needs from a model (app.ml.predictor.Predictor fits)."""

    device_name: str
    card: ModelCard  # its categories are mapped onto the project's

    def predict(
        self, image: np.ndarray, *, should_stop: Callable[[], bool] | None = None
    ) -> list[Instance]: ...


@dataclass(frozen=True)
class ModelChoice:
    """Which model proposes and where it runs. It stores every detection down to
    :data:`SCORE_FLOOR`; which are shown is the project's score threshold."""

    model_id: str = "cells-mobile"
    device: str = "auto"

    @property
    def version_number(self) -> int | None:
        """The project model version (``v3`` -> 3); None for a zoo model."""
        if self.model_id[:1] == "v" and self.model_id[1:].isdigit():
            return int(self.model_id[1:])
        return None


PredictorFactory = Callable[[ModelChoice, Path], Predictor]


def zoo_predictor_factory(choice: ModelChoice, project_root: Path) -> Predictor:
    """Build the real Predictor for a zoo card or project model version (runs on the worker)."""
    from app.ml.predictor import Predictor as MLPredictor
    from app.ml.zoo import get_card

    card = get_card(choice.model_id, project_root=project_root)
    return MLPredictor(
        card,
        device=choice.device,
        score_threshold=SCORE_FLOOR,
        model_version=choice.version_number,
    )


@dataclass(frozen=True)
class ProposalResult:
    """Proposals for one image, already stored if ``stored`` is True."""

    image_id: int
    request_seq: int
    generation: int
    model_id: str
    instances: int
    stored: bool
    seconds: float | None  # the model's time on the image; None: stored proposals filtered
    uncertainty: float | None = None


@dataclass(frozen=True)
class WorkerFailure:
    image_id: int | None
    message: str
    details: str


@dataclass(frozen=True)
class WorkerStatus:
    model_id: str
    device_name: str
    queue_length: int
    busy: bool
    last_seconds: float | None
    assisting: bool = False  # the busy work is an assist, not a proposal

    @property
    def state(self) -> str:
        """One word for the status bar and the Model dock."""
        return ("assisting" if self.assisting else "proposing") if self.busy else "idle"


ASSIST_BOX, ASSIST_CLICK, ASSIST_REFINE = "box", "click", "refine"


def assist_image_key(record: ImageRecord) -> Hashable:
    """The key naming an image's pixels in assists and the feature cache: it changes when
    the file does (path, modification time, size)."""
    return (record.id, record.path, record.mtime_ns, record.size_bytes)


@dataclass(frozen=True)
class AssistRequest:
    """One assist for the worker. ``image_key`` names the pixels (it changes when the file
    does) so the worker's feature cache never answers for other pixels; ``seq`` and
    ``generation`` are stamped by :meth:`ProposalController.request_assist`."""

    kind: str  # ASSIST_BOX, ASSIST_CLICK or ASSIST_REFINE
    image_id: int
    image_key: Hashable
    pixels: np.ndarray
    box: tuple[float, float, float, float] | None = None  # ASSIST_BOX
    point: tuple[float, float] | None = None  # ASSIST_CLICK
    instance: Instance | None = None  # the instance to replace, as it was when asked
    others: tuple[Instance, ...] = ()  # ASSIST_CLICK: the image's instances
    seq: int = 0
    generation: int = 0


@dataclass(frozen=True)
class AssistResult:
    """The model's instance for a request, or why there is none (``error``)."""

    request: AssistRequest
    instance: Instance | None
    error: str | None = None


@dataclass(frozen=True, order=True)
class ProposalJob:
    """One image to propose, with everything the worker needs fixed when it was queued.

    ``cancelled`` is set when the job's generation ends (another model or device) or the
    controller shuts down: the worker then skips the job, or abandons it
    at the predictor's next cancellation point.
    """

    priority: int
    seq: int
    image_id: int = field(compare=False)
    generation: int = field(compare=False)
    choice: ModelChoice = field(compare=False)
    cancelled: threading.Event = field(compare=False, repr=False)
    batch: int = field(compare=False, default=0)  # the propose-all run it counts for; 0: none


@dataclass(frozen=True)
class AssistJob:
    """An assist request with the model choice of the generation it was asked in."""

    request: AssistRequest
    choice: ModelChoice
    cancelled: threading.Event = field(repr=False)


class JobQueue:
    """A priority queue of image jobs; one job per image (the best priority wins). Assist
    requests wait in their own first-in first-out line, served before any job: a person
    is waiting for them. The controller puts, the worker gets; both threads may call."""

    def __init__(self) -> None:
        self._assists: deque[AssistJob] = deque()
        self._heap: list[ProposalJob] = []
        self._best: dict[int, ProposalJob] = {}
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job: ProposalJob) -> None:
        with self._cond:
            if self._closed:
                return
            old = self._best.get(job.image_id)
            if old is not None and old.generation == job.generation and old <= job:
                if job.batch and old.batch != job.batch:
                    # Already queued sooner; it now also counts for the batch.
                    self._best[job.image_id] = old = dataclasses.replace(old, batch=job.batch)
                    heapq.heappush(self._heap, old)
                return
            self._best[job.image_id] = job
            heapq.heappush(self._heap, job)
            self._cond.notify()

    def put_assist(self, job: AssistJob) -> None:
        with self._cond:
            if self._closed:
                return
            self._assists.append(job)
            self._cond.notify()

    def get(self) -> ProposalJob | AssistJob | None:
        """The next assist or live job, waiting for one; None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._assists:
                    return self._assists.popleft()
                while self._heap:
                    job = heapq.heappop(self._heap)
                    if self._best.get(job.image_id) is job:
                        del self._best[job.image_id]
                        return job
                self._cond.wait()

    def drop(self, keep: Callable[[ProposalJob], bool] = lambda job: False) -> None:
        with self._cond:
            self._best = {i: j for i, j in self._best.items() if keep(j)}
            self._heap = [j for j in self._heap if self._best.get(j.image_id) is j]
            heapq.heapify(self._heap)

    def __len__(self) -> int:
        with self._cond:
            return len(self._best)

    def close(self) -> None:
        """Stop serving: queued work is dropped and :meth:`get` answers None."""
        with self._cond:
            self._closed = True
            self._assists.clear()
            self._heap.clear()
            self._best.clear()
            self._cond.notify_all()


class ProposalWorker(QThread):
    """Runs queued jobs on its own thread, with its own store connection and predictor.

    It reads nothing of the controller: each job is a frozen snapshot, and everything the
    worker has to say goes out through its signals, which the controller receives on the
    GUI thread. What it remembers (the loaded model, models that failed, a fall back to the
    CPU, images already re-proposed) is its own.
    """

    proposals_ready = Signal(object)  # ProposalResult
    failed = Signal(object)  # WorkerFailure
    notice = Signal(str)  # a one-line message for the status bar
    assist_ready = Signal(object)  # AssistResult
    busy_changed = Signal(bool, bool)  # busy, and whether the work is an assist
    model_ready = Signal(int, str)  # generation, device name
    model_failed = Signal(int, str, str)  # generation, model id, why it did not load
    device_changed = Signal(int, object)  # generation, the ModelChoice it now runs with
    # A proposal job left the queue, run or skipped: the queue count changed, and a
    # propose-all run (its batch number; 0 for none) is one step further.
    job_done = Signal(int)

    def __init__(
        self, queue: JobQueue, project_root: Path, predictor_factory: PredictorFactory
    ) -> None:
        super().__init__()
        self._queue = queue
        self._project_root = project_root
        self._factory = predictor_factory
        self._predictor: Predictor | None = None
        self._loaded_for: tuple[int, ModelChoice] | None = None
        self._assistant: Assistant | None = None
        self._broken: set[int] = set()  # generations whose model did not load
        self._on_cpu: int | None = None  # generation that fell back to the CPU

    def run(self) -> None:
        store = ProjectStore.open(self._project_root)
        try:
            while (job := self._queue.get()) is not None:
                if job.cancelled.is_set():
                    continue
                if isinstance(job, AssistJob):
                    self.busy_changed.emit(True, True)
                    try:
                        self.assist_ready.emit(self._assist(job))
                    finally:
                        self.busy_changed.emit(False, False)
                    continue
                try:
                    self._run_job(store, job)
                except Exception as exc:  # the worker must keep serving
                    log.exception("proposal for image %s failed", job.image_id)
                    self.failed.emit(
                        WorkerFailure(
                            job.image_id, f"{type(exc).__name__}: {exc}", traceback.format_exc()
                        )
                    )
                finally:
                    self.job_done.emit(job.batch)
        finally:
            store.close()
            self._predictor = None
            self._assistant = None

    def _choice_for(self, generation: int, choice: ModelChoice) -> ModelChoice:
        """The job's choice, on the CPU once its generation ran the GPU out of memory."""
        if generation == self._on_cpu:
            return dataclasses.replace(choice, device="cpu")
        return choice

    def _assist(self, job: AssistJob) -> AssistResult:
        """Answer one assist with the current model; every failure becomes the answer's
        ``error`` (the person reads it in the status bar), never a dead worker."""
        request = job.request
        choice = self._choice_for(request.generation, job.choice)
        predictor = self._ensure_predictor(request.generation, choice)
        if predictor is None:
            return AssistResult(request, None, "no model is loaded, so the assist cannot run.")
        try:
            a, key, pixels = self._assistant_for(predictor), request.image_key, request.pixels
            if request.kind == ASSIST_BOX:
                assert request.box is not None
                found = a.box_to_mask(pixels, request.box, image_key=key)
            elif request.kind == ASSIST_CLICK:
                assert request.point is not None
                found = a.click(pixels, request.point, image_key=key, others=request.others)
            elif request.kind == ASSIST_REFINE:
                assert request.instance is not None
                found = a.refine(pixels, request.instance, image_key=key, enlarge=REFINE_ENLARGE)
            else:
                raise AssistError(f"unknown assist {request.kind!r}")
        except AssistError as exc:  # NoObjectFound included: an answer, not a fault
            return AssistResult(request, None, str(exc))
        except Exception as exc:
            log.exception("assist %s on image %s failed", request.kind, request.image_id)
            return AssistResult(request, None, f"{type(exc).__name__}: {exc}")
        return AssistResult(request, found)

    def _assistant_for(self, predictor: Predictor) -> Assistant:
        """The assistant of ``predictor`` (its feature cache dropped when the model changed)."""
        if self._assistant is None:
            self._assistant = Assistant(predictor)  # type: ignore[arg-type]
        else:
            self._assistant.use(predictor)  # type: ignore[arg-type]
        return self._assistant

    def _keeping_features(
        self, predictor: Predictor, image: ImageRecord, job: ProposalJob
    ) -> AbstractContextManager[None]:
        """Keep the proposal pass's features for assists: the current image and those
        proposed ahead of the annotator (the next image is usually proposed before it is
        shown), not a Propose-all batch; the cache's byte bound drops the oldest. Only with
        a real model (a stand-in has none)."""
        if job.priority not in (PRIORITY_CURRENT, PRIORITY_PREFETCH) or not isinstance(
            predictor, ModelPredictor
        ):
            return nullcontext()
        return self._assistant_for(predictor).keeping_features(assist_image_key(image))

    def _ensure_predictor(self, generation: int, choice: ModelChoice) -> Predictor | None:
        """The model for this generation and choice, loaded once; None (reported once per
        generation) when it cannot be loaded."""
        if self._loaded_for == (generation, choice) and self._predictor is not None:
            return self._predictor
        if generation in self._broken:
            return None
        self._predictor = None
        try:
            self._predictor = self._factory(choice, self._project_root)
        except MaskLoopError as exc:  # expected (offline weights, bad card): no traceback
            log.warning("cannot load model %s: %s", choice.model_id, exc)
            self._broken.add(generation)
            self.model_failed.emit(generation, choice.model_id, str(exc))
            return None
        except Exception as exc:
            log.exception("cannot load model %s", choice.model_id)
            self._broken.add(generation)
            self.model_failed.emit(generation, choice.model_id, str(exc))
            return None
        self._loaded_for = (generation, choice)
        self.model_ready.emit(generation, getattr(self._predictor, "device_name", ""))
        return self._predictor

    def _run_job(self, store: ProjectStore, job: ProposalJob) -> None:
        choice = self._choice_for(job.generation, job.choice)
        image = store.image(job.image_id)
        if image.status not in (ImageStatus.NEW, ImageStatus.PROPOSED):
            return  # a person works on it: nothing to propose
        if image.status is ImageStatus.PROPOSED and image.proposed_by == choice.model_id:
            return  # this model's proposals are already stored
        # "proposing" only when the model runs: a skipped image does not flash the status.
        self.busy_changed.emit(True, False)
        try:
            outcome = self._propose_with_fallback(store, image, job, choice)
        finally:
            self.busy_changed.emit(False, False)
        if outcome is None:
            return
        if outcome.error:
            self.failed.emit(WorkerFailure(job.image_id, outcome.error, ""))
            return
        self.proposals_ready.emit(
            ProposalResult(
                job.image_id,
                job.seq,
                job.generation,
                choice.model_id,
                outcome.instances,
                outcome.stored,
                outcome.seconds,
                outcome.uncertainty,
            )
        )

    def _propose_with_fallback(
        self, store: ProjectStore, image: ImageRecord, job: ProposalJob, choice: ModelChoice
    ) -> ImageOutcome | None:
        """Propose one image the way ``maskloop propose`` does (same category mapping,
        uncertainty and records); on GPU out-of-memory retry once, then use the CPU."""
        for attempt in range(3):
            predictor = self._ensure_predictor(job.generation, choice)
            if predictor is None:
                return None
            try:
                with self._keeping_features(predictor, image, job):
                    return next(
                        propose_images(
                            store,
                            predictor,
                            predictor.card,
                            [image],
                            model_id=choice.model_id,
                            model_version=choice.version_number,
                            should_stop=job.cancelled.is_set,
                            threshold=SCORE_FLOOR,
                        )
                    )
            except PredictionCancelled:
                return None  # the model or the annotator moved on: not a failure
            except torch.cuda.OutOfMemoryError:
                if choice.device == "cpu":
                    raise
                _free_gpu_memory()
                if attempt == 0:
                    log.warning("GPU out of memory; retrying once")
                    continue
                choice = dataclasses.replace(choice, device="cpu")
                self._on_cpu = job.generation
                self.notice.emit(
                    "The GPU ran out of memory: proposals now run on the CPU (slower)."
                )
                self.device_changed.emit(job.generation, choice)
        return None


def _free_gpu_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ProposalController(QObject):
    """The GUI's handle on background proposals.

    It lives on the GUI thread and all its state is touched there only: requests come from
    the GUI, and the worker's reports arrive through queued signals. The worker gets its
    work as frozen jobs through a thread-safe queue and reads nothing else of it.
    """

    proposals_ready = Signal(object)  # ProposalResult
    failed = Signal(object)  # WorkerFailure: one image failed, the worker goes on
    model_error = Signal(str)  # the model could not be loaded: show a dialog, keep working
    model_failed = Signal(str, str)  # (model id, message): which model model_error is about
    notice = Signal(str)  # a one-line message for the status bar
    status_changed = Signal(object)  # WorkerStatus
    batch_progress = Signal(int, int, float)  # done, total, eta seconds (-1 unknown)
    batch_finished = Signal(bool)  # True when cancelled
    assist_ready = Signal(object)  # AssistResult; requests of a model since left get none
    assists_dropped = Signal()  # queued assists were dropped (another model, or none): no answer

    def __init__(
        self,
        project_root: Path,
        *,
        predictor_factory: PredictorFactory = zoo_predictor_factory,
        choice: ModelChoice | None = None,
        prefetch: int = 3,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.project_root = Path(project_root)
        self.choice = choice or ModelChoice()
        self.prefetch = prefetch
        self.generation = 0
        self._cancelled = threading.Event()  # set when the current generation ends
        self._seq = 0
        self._queue = JobQueue()
        self._busy = False
        self._assisting = False
        self._device_name = ""
        self._last_seconds: float | None = None
        self._model_broken = False
        self._batch = 0  # the current propose-all run (0: none yet)
        self._batch_total = 0
        self._batch_done = 0
        self._batch_t0 = 0.0
        self._thread = ProposalWorker(self._queue, self.project_root, predictor_factory)
        queued = Qt.ConnectionType.QueuedConnection
        w = self._thread
        w.proposals_ready.connect(self._proposed, queued)
        w.failed.connect(self.failed, queued)
        w.notice.connect(self.notice, queued)
        w.assist_ready.connect(self.assist_ready, queued)
        w.busy_changed.connect(self._set_busy, queued)
        w.model_ready.connect(self._model_ready, queued)
        w.model_failed.connect(self._model_failed, queued)
        w.device_changed.connect(self._device_changed, queued)
        w.job_done.connect(self._job_done, queued)
        self._thread.start()

    # -- requests from the GUI ------------------------------------------------------------

    def set_current(self, image_id: int, upcoming: Sequence[int] = ()) -> None:
        """The annotator is on ``image_id``; ``upcoming`` are the next images in list order.

        The prefetch window moves with the annotator: queued current/prefetch jobs for
        images left behind are dropped (batch jobs stay).
        """
        if self._model_broken:
            return
        self._queue.drop(keep=lambda job: job.batch > 0)
        self._put(image_id, PRIORITY_CURRENT)
        for image in list(upcoming)[: self.prefetch]:
            self._put(image, PRIORITY_PREFETCH)

    def propose_all(self, image_ids: Sequence[int]) -> None:
        """Propose a whole list in the background, reporting progress; the GUI stays usable."""
        self._batch += 1
        self._batch_total = len(image_ids)
        self._batch_done = 0
        self._batch_t0 = time.perf_counter()
        for image_id in image_ids:
            self._put(image_id, PRIORITY_BATCH, batch=self._batch)
        self.batch_progress.emit(0, len(image_ids), -1.0)
        if not image_ids:
            self.batch_finished.emit(False)

    def request_assist(self, request: AssistRequest) -> AssistRequest:
        """Queue an assist ahead of the proposals; returns it stamped with its sequence
        number and the current generation (what its :class:`AssistResult` carries)."""
        self._seq += 1
        stamped = dataclasses.replace(request, seq=self._seq, generation=self.generation)
        self._queue.put_assist(AssistJob(stamped, self.choice, self._cancelled))
        return stamped

    def cancel_batch(self) -> None:
        self._queue.drop(keep=lambda job: not job.batch)
        was_running = self._batch_total > 0
        self._batch_total = 0
        if was_running:
            self.batch_finished.emit(True)
        self._emit_status()

    def set_model(self, choice: ModelChoice) -> None:
        """Switch model or device: queued work is cancelled, the in-flight job dropped."""
        self.choice = choice
        self.generation += 1
        self._cancelled.set()
        self._cancelled = threading.Event()
        self._model_broken = False
        self._queue.drop()
        self.cancel_batch()
        self.assists_dropped.emit()

    def shutdown(self, timeout_ms: int = 10000) -> None:
        """Stop the worker: queued work is dropped, the job in flight abandoned at its next
        cancellation point."""
        self._cancelled.set()
        self._queue.close()
        self._thread.wait(timeout_ms)

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def _put(self, image_id: int, priority: int, batch: int = 0) -> None:
        self._seq += 1
        self._queue.put(
            ProposalJob(
                priority, self._seq, image_id, self.generation, self.choice, self._cancelled, batch
            )
        )
        self._emit_status()

    def _emit_status(self) -> None:
        self.status_changed.emit(
            WorkerStatus(
                self.choice.model_id,
                self._device_name,
                len(self._queue),
                self._busy,
                self._last_seconds,
                self._busy and self._assisting,
            )
        )

    # -- the worker's reports (queued: they run on the GUI thread) ---------------------------

    def _proposed(self, result: ProposalResult) -> None:
        if result.seconds is not None:
            self._last_seconds = result.seconds
        self.proposals_ready.emit(result)

    def _set_busy(self, busy: bool, assisting: bool) -> None:
        self._busy = busy
        self._assisting = assisting
        self._emit_status()

    def _model_ready(self, generation: int, device_name: str) -> None:
        if generation == self.generation:
            self._device_name = device_name
            self._emit_status()

    def _model_failed(self, generation: int, model_id: str, reason: str) -> None:
        if generation != self.generation:
            return
        self._model_broken = True
        self._queue.drop()
        self.cancel_batch()
        self.assists_dropped.emit()
        message = (
            f"The model '{model_id}' could not be loaded, so no proposals will be made "
            f"until another model is chosen. Annotation works as usual.\n\n{reason}"
        )
        self.model_failed.emit(model_id, message)
        self.model_error.emit(message)

    def _device_changed(self, generation: int, choice: ModelChoice) -> None:
        """Keep the generation (queued work stays valid) but run on another device."""
        if generation == self.generation:
            self.choice = choice

    def _job_done(self, batch: int) -> None:
        self._emit_status()  # a skipped job changes no busy state, only the count
        if batch:
            self._batch_step(batch)

    def _batch_step(self, batch: int) -> None:
        if batch != self._batch or not self._batch_total:
            return  # a step of a run since cancelled or replaced
        self._batch_done += 1
        done, total = self._batch_done, self._batch_total
        elapsed = time.perf_counter() - self._batch_t0
        if done >= total:
            self._batch_total = 0
        eta = elapsed / done * (total - done) if done else -1.0
        self.batch_progress.emit(done, total, eta)
        if done >= total:
            self.batch_finished.emit(False)
