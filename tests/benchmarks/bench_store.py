"""Project store benchmarks.

Cases (one JSON line each, ``_bench.emit``):
  store_init   ``scan_folder`` of 20,000 small real PNG and JPEG files (48-80 px, in folders
               of 1,000) into a fresh project, images/s; target >= 2,000. Baseline, measured
               in the same run on a subset: a naive scan that fully decodes every file
               (``read_image``) to learn its size.
  store_open   open a 100,000-image project and fetch the first page of 1,000 rows (path
               order), s; target < 0.3.
  store_edits  10,000 single-instance edits (add, move every vertex, delete, in turn), each its
               own committed transaction via ``apply_edit`` (WAL, synchronous=NORMAL), edits/s;
               target >= 1,000.

Run ``.venv/bin/python tests/benchmarks/bench_store.py`` (``--quick`` for small sizes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _bench import emit  # noqa: E402

from app.core.images import read_image  # noqa: E402
from app.core.scan import scan_folder  # noqa: E402
from app.core.store import NewImage, ProjectStore  # noqa: E402
from app.core.types import Instance, Polygon  # noqa: E402


def make_image_folder(folder: Path, n: int) -> None:
    """``n`` real PNG/JPEG files: 64 distinct encoded images written round-robin."""
    rng = np.random.default_rng(0)
    encoded = []
    for k in range(64):
        h, w = int(rng.integers(48, 81)), int(rng.integers(48, 81))
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        ext = ".png" if k % 2 == 0 else ".jpg"
        encoded.append((ext, cv2.imencode(ext, pixels)[1].tobytes()))
    for i in range(n):
        sub = folder / f"batch_{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        ext, data = encoded[i % len(encoded)]
        (sub / f"img_{i:06d}{ext}").write_bytes(data)


def naive_scan(store: ProjectStore, files: list[Path]) -> None:
    """The baseline: decode every file in full to learn its size."""
    rows = []
    for path in files:
        h, w = read_image(path).shape[:2]
        rows.append(NewImage(Path(os.path.relpath(path, store.root)).as_posix(), w, h))
    store.add_images(rows)


def bench_init(work: Path, n: int, n_baseline: int, repeat: int) -> None:
    images = work / "images"
    make_image_folder(images, n)
    subset = sorted(images.rglob("*.*"))[:n_baseline]
    ours, base = [], []
    for r in range(repeat):
        t0 = time.perf_counter()
        with ProjectStore.open(work / f"init_{r}", create=True) as store:
            report = scan_folder(store, images)
        ours.append(n / (time.perf_counter() - t0))
        assert report.added == n and not report.unreadable, report
        t0 = time.perf_counter()
        with ProjectStore.open(work / f"naive_{r}", create=True) as store:
            naive_scan(store, subset)
        base.append(n_baseline / (time.perf_counter() - t0))
    emit(
        "store_init",
        ours,
        unit="images/s",
        baseline=base,
        baseline_name=f"full-decode scan (read_image of each file, {n_baseline} files)",
        target=">= 2000 images/s",
        higher_is_better=True,
        images=n,
    )


def bench_open(work: Path, n: int, repeat: int) -> None:
    folder = work / "open"
    with ProjectStore.open(folder, create=True) as store:
        store.add_images(
            NewImage(f"images/plate_{i // 1000:03d}/img_{i:06d}.png", 640, 480) for i in range(n)
        )
        store.checkpoint()

    def open_first_page() -> None:
        with ProjectStore.open(folder) as store:
            page = store.images(limit=1000)
        assert len(page) == 1000

    open_first_page()  # warm the OS file cache, as a second launch would
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        open_first_page()
        samples.append(time.perf_counter() - t0)
    emit("store_open", samples, unit="s", target="< 0.3 s", images=n, page=1000)


def _ring(cx: float, cy: float, r: float, n: int = 32) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def bench_edits(work: Path, n: int, repeat: int) -> None:
    samples = []
    for r in range(repeat):
        with ProjectStore.open(work / f"edits_{r}", create=True) as store:
            ids = store.add_images(NewImage(f"img_{i:03d}.png", 512, 512) for i in range(100))
            category = store.add_category("cell")
            live: dict[int, Instance] = {}
            t0 = time.perf_counter()
            for k in range(n):
                image_id = ids[(k // 3) % len(ids)]
                step = k % 3
                if step == 0:
                    inst = Instance(category.id, [Polygon(_ring(100 + k % 300, 200, 20))])
                    live[image_id] = store.apply_edit(image_id, add=[inst])[0]
                elif step == 1:
                    moved = live[image_id].copy()
                    moved.polygons[0].exterior += 1.5
                    store.apply_edit(image_id, update=[moved])
                else:
                    store.apply_edit(image_id, delete=[live.pop(image_id).id])
            samples.append(n / (time.perf_counter() - t0))
            assert store.integrity_ok()
    emit(
        "store_edits",
        samples,
        unit="edits/s",
        target=">= 1000 edits/s",
        higher_is_better=True,
        edits=n,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeat", type=int, default=None, help="runs per case (median)")
    parser.add_argument(
        "--only", choices=["store_init", "store_open", "store_edits"], action="append"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    only = set(args.only or ["store_init", "store_open", "store_edits"])
    with tempfile.TemporaryDirectory(prefix="maskloop-bench-") as tmp:
        work = Path(tmp)
        if "store_init" in only:
            bench_init(
                work,
                n=1000 if quick else 20_000,
                n_baseline=200 if quick else 2000,
                repeat=args.repeat or (2 if quick else 3),
            )
        if "store_open" in only:
            bench_open(work, n=10_000 if quick else 100_000, repeat=args.repeat or 7)
        if "store_edits" in only:
            bench_edits(work, n=600 if quick else 10_000, repeat=args.repeat or 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
