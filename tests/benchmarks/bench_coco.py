"""COCO export/import throughput and label_map_to_instances vs the naive per-id contouring.

Run: .venv/bin/python tests/benchmarks/bench_coco.py [--quick]
Cases: coco_export_polygon, coco_export_rle, coco_import (instances/s; targets 20,000 /
5,000 / 10,000 on 200 images x 500 cells), label_map_to_instances (s; 2048x2048 with 1,000
cells vs one full-image findContours per id, same output; target ratio >= 10).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _bench import emit, timeit  # noqa: E402

from app.core.coco import export_coco, import_coco  # noqa: E402
from app.core.geometry import label_map_to_instances, mask_to_polygons  # noqa: E402
from app.core.store import NewImage, ProjectStore  # noqa: E402
from app.core.types import ImageStatus, Instance, Polygon  # noqa: E402


def _templates(rng: np.random.Generator, n: int = 32) -> list[Polygon]:
    """Cell outlines (8-14 px radius ellipses) as the default tolerance traces them."""
    out = []
    for _ in range(n):
        m = np.zeros((40, 40), np.uint8)
        axes = (int(rng.integers(8, 15)), int(rng.integers(8, 15)))
        cv2.ellipse(m, (20, 20), axes, int(rng.integers(0, 180)), 0, 360, 1, -1)
        out.append(mask_to_polygons(m)[0])
    return out


def build_project(folder: Path, n_images: int, cells: int, size: int) -> ProjectStore:
    rng = np.random.default_rng(0)
    templates = _templates(rng)
    images = folder / "imgs"
    images.mkdir(parents=True)
    store = ProjectStore.open(folder / "proj", create=True)
    store.add_category("cell")
    blank = np.zeros((size, size), np.uint8)
    with store.transaction():
        for i in range(n_images):
            name = f"img{i:04d}.png"
            cv2.imwrite(str(images / name), blank)
            (iid,) = store.add_images([NewImage(f"../imgs/{name}", size, size)])
            shifts = rng.integers(0, size - 40, size=(cells, 2)).astype(np.float32)
            insts = [
                Instance(1, [Polygon(templates[k % len(templates)].exterior + shifts[k])])
                for k in range(cells)
            ]
            store.add_instances(iid, insts)
            store.set_image_status(iid, ImageStatus.DONE)
    return store


def bench_coco(quick: bool, repeat: int) -> None:
    n_images, cells, size = (10, 100, 512) if quick else (200, 500, 2048)
    total = n_images * cells
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = build_project(folder, n_images, cells, size)
        for mode, name, target in (
            ("polygon", "coco_export_polygon", 20_000),
            ("rle", "coco_export_rle", 5_000),
        ):
            out = folder / f"{mode}.json"
            times = timeit(
                lambda m=mode, o=out: export_coco(store, o, segmentation=m, overwrite=True), repeat
            )
            emit(
                name,
                [total / t for t in times],
                unit="instances/s",
                higher_is_better=True,
                target=f">= {target} instances/s",
                instances=total,
                images=n_images,
            )
        store.close()
        source = folder / "polygon.json"
        counter = iter(range(10_000))

        def run_import() -> None:
            with ProjectStore.open(folder / f"import{next(counter)}", create=True) as fresh:
                import_coco(fresh, source, images_root=folder / "imgs")

        times = timeit(run_import, repeat)
        emit(
            "coco_import",
            [total / t for t in times],
            unit="instances/s",
            higher_is_better=True,
            target=">= 10000 instances/s",
            instances=total,
            images=n_images,
        )


def _label_map(size: int, cells: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    labels = np.zeros((size, size), np.uint16)
    for k in range(1, cells + 1):
        centre = (int(rng.integers(15, size - 15)), int(rng.integers(15, size - 15)))
        axes = (int(rng.integers(8, 15)), int(rng.integers(8, 15)))
        cv2.ellipse(labels, centre, axes, int(rng.integers(0, 180)), 0, 360, k, -1)
    return labels


def naive_label_map_to_instances(labels: np.ndarray) -> dict[int, list[Polygon]]:
    """The baseline: one full-image comparison and contour search per id."""
    out = {}
    for value in np.unique(labels):
        if value:
            polygons = mask_to_polygons(labels == value)
            if polygons:
                out[int(value)] = polygons
    return out


def bench_label_map(quick: bool, repeat: int) -> None:
    size, cells = (512, 100) if quick else (2048, 1000)
    labels = _label_map(size, cells)
    ours = label_map_to_instances(labels)
    if ours != naive_label_map_to_instances(labels):
        raise SystemExit("label_map_to_instances differs from the naive result")
    t_ours = timeit(lambda: label_map_to_instances(labels), repeat)
    t_naive = timeit(lambda: naive_label_map_to_instances(labels), max(1, repeat // 2), warmup=0)
    emit(
        "label_map_to_instances",
        t_ours,
        baseline=t_naive,
        baseline_name="per-id full-image findContours",
        target="ratio >= 10",
        size=size,
        cells=len(ours),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bench_label_map(args.quick, args.repeat)
    bench_coco(args.quick, args.repeat)


if __name__ == "__main__":
    main()
