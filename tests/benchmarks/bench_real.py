"""The bundled model on real, hand-annotated nuclei (one JSON line a case, ``_bench.emit``).

- ``real_val``: cells-mobile (or ``--model``) on the DSB2018 validation split
  (``../shared/data/dsb2018/val.txt``: 62 images, 2,376 nuclei, fluorescence and
  brightfield), measured as ``maskloop evaluate --images --labels`` measures it: the
  Predictor's own proposals, segm AP at up to 1000 detections per image, the median
  predicted/true area of matched nuclei, and the same per kind (manifest ``kind``).
  The time is the whole evaluation's wall clock per image.

    .venv/bin/python tests/benchmarks/bench_real.py [--data DIR] [--model ID] [--quick]

Without the data folder the case says so and exits 0 (a fresh clone without ../shared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for p in (Path(__file__).resolve().parent, REPO):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from _bench import emit  # noqa: E402

from app.ml import zoo  # noqa: E402
from app.ml.eval_sources import eval_images, find_labelled_images  # noqa: E402
from app.ml.evaluate import AP_SCORE_FLOOR, EvalResult, evaluate_predictor  # noqa: E402
from app.ml.predictor import Predictor  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "dsb2018"


def figures(result: EvalResult) -> dict[str, float | None]:
    return {
        "segm_AP50": round(result.segm.ap50, 4),
        "segm_AP": round(result.segm.ap, 4),
        "area_ratio_median": (
            round(result.area_ratio.median, 4) if result.area_ratio is not None else None
        ),
        "images": result.images,
        "instances": result.instances,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DSB2018 folder")
    parser.add_argument("--model", default="cells-mobile", help="zoo card id (cells-mobile)")
    parser.add_argument("--quick", action="store_true", help="the first 8 validation images")
    args = parser.parse_args()
    if not (args.data / "val.txt").is_file():
        print(f'{{"name": "real_val", "skipped": "no data at {args.data}"}}')
        return 0
    only = args.data / "val.txt"
    if args.quick:
        names = only.read_text().split()[:8]
        tmp = Path(tempfile.mkdtemp())
        only = tmp / "val.txt"
        only.write_text("\n".join(names) + "\n")
    pairs = find_labelled_images(
        args.data / "images", args.data / "labels", only=only, manifest=args.data / "manifest.json"
    )
    card = zoo.get_card(args.model)
    predictor = Predictor(card, device="cpu", score_threshold=AP_SCORE_FLOOR)
    t0 = time.perf_counter()
    result = evaluate_predictor(predictor, eval_images(pairs), max_dets=1000)
    per_image = (time.perf_counter() - t0) / max(1, result.images)
    emit(
        "real_val",
        [per_image],
        unit="s/image",
        target="segm AP50 >= 0.90, AP >= 0.55, bright AP50 >= 0.85, area ratio 0.95-1.05",
        what=f"{card.id} on the DSB2018 val split through the Predictor (evaluation s/image)",
        model=card.id,
        **figures(result),
        per_kind={kind: figures(part) for kind, part in result.per_kind.items()},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
