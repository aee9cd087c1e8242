"""``maskloop next``: which images to annotate next (active learning)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.core.store import ProjectStore
from app.ml.active import Strategy, cold_start, next_images


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "next",
        help="print the images to annotate next",
        description=(
            "Print the images nobody has worked on yet, most uncertain first, or in a seeded "
            "random order. An image's uncertainty is the number of corrections its review is "
            "expected to need: the sum of min(s, 1 - s) over the objects the model detects "
            "with a score of at least 0.05 (overlapping fragments of one object count once). "
            "It is stored while proposing; fill it for a folder with 'maskloop propose "
            "--score-only'. While no image of the project is done, the uncertainty strategy "
            "gives a seeded random sample: a model that has not learned from the project "
            "ranks its images no better than chance."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument("--count", type=int, default=10, help="how many images (default 10)")
    p.add_argument(
        "--strategy",
        choices=[s.value for s in Strategy],
        default=Strategy.UNCERTAINTY.value,
        help="uncertainty (default) or random",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random order")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_next)


def _next(args: argparse.Namespace) -> int:
    with ProjectStore.open(args.project) as store:
        picked = next_images(store, args.count, args.strategy, seed=args.seed)
        cold = args.strategy == Strategy.UNCERTAINTY.value and cold_start(store)
    if args.json:
        rows = [{"id": r.id, "path": r.path, "uncertainty": r.uncertainty} for r in picked]
        print(json.dumps(rows, indent=2))
        return 0
    if cold:
        print(
            f"No image is done yet: a random sample (seed {args.seed}) to start with; "
            "uncertainty ordering starts once the model has learned from some of them."
        )
    for r in picked:
        score = "   -  " if r.uncertainty is None else f"{r.uncertainty:.3f}"
        print(f"{score}  {r.path}")
    if not picked:
        print("nothing left to annotate")
    return 0
