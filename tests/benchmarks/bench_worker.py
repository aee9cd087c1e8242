"""Background proposals: GUI responsiveness and the wait for proposals on the next image.

ui_heartbeat_lateness: a 10 ms QTimer on the GUI thread while the model proposes images
    continuously on the worker thread; baseline: the same inference run on the GUI thread.
next_image_wait: a simulated annotator who dwells ~1.2 inference times per image and then
    moves on; the wait from arriving at an image until its proposals are there. Ours
    prefetches 3 images ahead; the baseline proposes only the current image (no prefetch).

Run: .venv/bin/python tests/benchmarks/bench_worker.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from _bench import emit  # noqa: E402
from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.core.store import NewImage, ProjectStore  # noqa: E402
from app.core.types import ImageStatus  # noqa: E402
from app.ui.workers import ModelChoice, ProposalController  # noqa: E402

SIZE = 512
HEARTBEAT_MS = 10


def make_predictor():
    """The bundled model if it is there, else a random-weight light model (same compute)."""
    from app.ml.models import build_model
    from app.ml.predictor import Predictor
    from app.ml.zoo import ModelCard, get_card, load_model

    try:
        card = get_card("cells-mobile")
        return Predictor(card, device="cpu", model=load_model(card)), card.id
    except Exception:  # not bundled yet, or unloadable: the JSON line names the model used
        card = ModelCard.from_dict(
            {
                "id": "random-mobile",
                "title": "random weights",
                "architecture": "maskrcnn_mobilenet_v3_fpn",
                "categories": [{"id": 1, "name": "cell"}],
                "weights": {"file": "unused.pt", "sha256": "0" * 64},
                "input": {"min_size": SIZE, "max_size": SIZE},
            }
        )
        model = build_model(
            card.architecture, num_classes=2, min_size=SIZE, max_size=SIZE, detections_per_img=100
        )
        # Threshold 0 keeps 100 detections, so mask-to-polygon work is part of the cost.
        return Predictor.from_model(model, card, device="cpu", score_threshold=0.0), card.id


def make_project(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    for i in range(n):
        image = rng.integers(0, 40, (SIZE, SIZE), dtype=np.uint8)
        for _ in range(60):
            x, y = rng.integers(10, SIZE - 10, 2)
            cv2.circle(image, (int(x), int(y)), int(rng.integers(5, 12)), 200, -1)
        cv2.imwrite(str(folder / "img" / f"{i:03d}.png"), image)
    with ProjectStore.open(folder, create=True) as store:
        store.add_images([NewImage(f"img/{i:03d}.png", SIZE, SIZE) for i in range(n)])
        store.add_category("cell")
    return folder


def run_loop(app: QApplication, seconds: float) -> None:
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def heartbeat(app: QApplication, seconds: float, busy_start=None, on_tick=None) -> list[float]:
    """Lateness (s) of each tick of a HEARTBEAT_MS timer over ``seconds`` of event loop.

    ``on_tick`` runs on the GUI thread after each tick (the baseline's inference).
    """
    late: list[float] = []
    clock = QElapsedTimer()
    timer = QTimer()
    timer.setTimerType(timer.timerType().PreciseTimer)
    timer.setInterval(HEARTBEAT_MS)

    def tick() -> None:
        late.append(max(0.0, clock.nsecsElapsed() / 1e9 - HEARTBEAT_MS / 1000))
        clock.restart()
        if on_tick:
            on_tick()  # blocks the GUI thread: the next tick is late by its duration

    timer.timeout.connect(tick)
    clock.start()
    timer.start()
    if busy_start:
        busy_start()
    run_loop(app, seconds)
    timer.stop()
    return late[1:]


def bench_heartbeat(app, predictor, project: Path, seconds: float, image_ids: list[int]):
    controller = ProposalController(project, predictor_factory=lambda c, r: predictor)
    # Keep the worker busy for the whole window: re-propose the batch as it finishes.
    with ProjectStore.open(project) as store:

        def reset_and_go(*_):
            for i in image_ids:
                store.replace_proposals(i, [], None)
                store.set_image_status(i, ImageStatus.NEW)
            controller.set_model(ModelChoice("bench"))
            controller.propose_all(image_ids)

        controller.batch_finished.connect(lambda cancelled: cancelled or reset_and_go())
        ours = heartbeat(app, seconds, busy_start=reset_and_go)
        controller.batch_finished.disconnect()
        controller.cancel_batch()
    controller.shutdown()

    image = cv2.imread(str(project / "img" / "000.png"), cv2.IMREAD_GRAYSCALE)
    baseline = heartbeat(app, seconds, on_tick=lambda: predictor.predict(image))
    return ours, baseline


def bench_next_image(app, predictor, project: Path, image_ids: list[int], prefetch: int):
    """Waits (s) on arrival at each image until its proposals are in."""
    with ProjectStore.open(project) as store:
        for i in image_ids:
            store.replace_proposals(i, [], None)
            store.set_image_status(i, ImageStatus.NEW)
    controller = ProposalController(
        project, predictor_factory=lambda c, r: predictor, prefetch=prefetch
    )
    ready: set[int] = set()
    controller.proposals_ready.connect(lambda result: ready.add(result.image_id))
    t0 = time.perf_counter()
    predictor.predict(cv2.imread(str(project / "img" / "000.png"), cv2.IMREAD_GRAYSCALE))
    dwell = 1.2 * (time.perf_counter() - t0)
    waits = []
    for k, image_id in enumerate(image_ids):
        arrived = time.perf_counter()
        controller.set_current(image_id, image_ids[k + 1 :])
        while image_id not in ready:
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)
            time.sleep(0.001)
        waits.append(time.perf_counter() - arrived)
        run_loop(app, dwell)  # the annotator reviews the image
    controller.shutdown()
    return waits[2:], dwell / 1.2  # the first images are warm-up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    predictor, model_id = make_predictor()
    n = 6 if args.quick else 14
    seconds = 4.0 if args.quick else 12.0
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp) / "proj", n)
        with ProjectStore.open(project) as store:
            ids = [r.id for r in store.images()]
        ours, baseline = bench_heartbeat(app, predictor, project, seconds, ids)
        emit(
            "ui_heartbeat_lateness",
            ours,
            baseline=baseline,
            baseline_name="inference on the GUI thread",
            target="p99 < 0.05 s",
            p99=float(np.percentile(ours, 99)),
            baseline_p99=float(np.percentile(baseline, 99)),
            model=model_id,
            image_size=SIZE,
        )
        waits, infer_s = bench_next_image(app, predictor, project, ids, prefetch=3)
        no_prefetch, _ = bench_next_image(app, predictor, project, ids, prefetch=0)
        emit(
            "next_image_wait",
            waits,
            baseline=no_prefetch,
            baseline_name="no prefetch (current image only)",
            target="p95 < 0.1 s",
            inference_s=infer_s,
            model=model_id,
            image_size=SIZE,
        )


if __name__ == "__main__":
    main()
