"""``maskloop init`` and ``maskloop info``: create a project from a folder, and describe one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.core.provenance import ProvenanceCounts
from app.core.score_threshold import project_threshold
from app.core.store import ProjectStore
from app.core.types import Provenance
from app.errors import MaskLoopError

SHOW_UNREADABLE = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="create a project from a folder of images (or rescan it)",
        description=(
            "Create a MaskLoop project in PROJECT and add every supported image found under "
            "--images (recursively). Images are not copied; their paths are stored relative to "
            "the project folder. Running it again adds new images and flags missing ones."
        ),
    )
    p.add_argument("project", type=Path, help="project folder (created if missing)")
    p.add_argument("--images", type=Path, required=True, help="folder of images to scan")
    p.add_argument(
        "--category",
        action="append",
        default=[],
        metavar="NAME",
        help="add a category (repeatable); default: 'object' for a new empty project",
    )
    p.set_defaults(func=_init)

    p = sub.add_parser(
        "info",
        help="summarise a project",
        description=(
            "Images by status, categories, instances by source and by how their outlines "
            "were made (proposal kept as is, assisted, drawn by hand, edited, imported), "
            "model versions and how reviewers treated their proposals."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_info)


def _init(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from app.core.scan import scan_folder

    if not args.images.is_dir():
        raise MaskLoopError(f"image folder {args.images} does not exist or is not a folder")
    with ProjectStore.open(args.project, create=True) as store:
        with store.transaction():  # check and add under the write lock: init may run twice
            for name in args.category:
                if store.category_by_name(name) is None:
                    store.add_category(name)
            if not store.categories():
                store.add_category("object")
        with tqdm(desc="scanning", unit="img", leave=False) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            report = scan_folder(store, args.images, progress=progress)
        print(f"project: {store.root}")
        print(
            f"images: {report.added} added, {report.existing} already there, "
            f"{report.missing} missing, {report.reappeared} back again"
        )
        if report.unreadable:
            print(f"unreadable: {len(report.unreadable)} files skipped, e.g.:")
            for path, reason in report.unreadable[:SHOW_UNREADABLE]:
                print(f"  {path}: {reason}")
        print(f"next: maskloop gui {store.root}")
    return 0


def project_summary(store: ProjectStore) -> dict:
    """Everything ``info`` shows, as plain data."""
    from app.ml.versions import active_model  # torch: only when asked

    return {
        "project": str(store.root),
        "images": {s.value: n for s, n in store.status_counts().items()},
        "missing_images": store.count_missing(),
        "categories": [{"id": c.id, "name": c.name, "color": c.color} for c in store.categories()],
        "instances": {s.value: n for s, n in store.instance_counts_by_source().items()},
        "provenance": ProvenanceCounts.of(store).to_dict(),
        "model_versions": [
            {
                "id": v.id,
                "name": v.name,
                "card_id": v.card_id,
                "parent_id": v.parent_id,
                "images_used": v.images_used,
                "metrics": v.metrics,
                "created": v.created,
            }
            for v in store.model_versions()
        ],
        "active_model": active_model(store),
        "proposal_outcomes": [
            o.to_dict() for o in store.proposal_outcomes(project_threshold(store))
        ],
        "failed_images": [{"path": im.path, "error": im.error} for im in store.failed_images()],
    }


def _info(args: argparse.Namespace) -> int:
    with ProjectStore.open(args.project) as store:
        summary = project_summary(store)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"project: {summary['project']}")
    total = sum(summary["images"].values())
    print(f"images: {total}  " + "  ".join(f"{k}={v}" for k, v in summary["images"].items()))
    if summary["missing_images"]:
        print(f"missing on disk: {summary['missing_images']}")
    if summary["failed_images"]:
        failed = summary["failed_images"]
        print(f"could not be proposed: {len(failed)} (maskloop propose tries them again)")
        for image in failed[:SHOW_UNREADABLE]:
            print(f"  {image['path']}: {image['error']}")
    print(
        "categories: "
        + (", ".join(f"{c['id']}:{c['name']}" for c in summary["categories"]) or "none")
    )
    print("instances: " + "  ".join(f"{k}={v}" for k, v in summary["instances"].items()))
    made = ProvenanceCounts({Provenance(k): n for k, n in summary["provenance"].items()})
    print(f"outlines: {made.sentence()}")
    if summary["model_versions"]:
        print("model versions:")
        for v in summary["model_versions"]:
            metrics = " ".join(
                f"{k}={val:.3f}" for k, val in v["metrics"].items() if isinstance(val, int | float)
            )
            print(f"  v{v['id']} {v['name'] or v['card_id']} images={v['images_used']} {metrics}")
    else:
        print("model versions: none")
    if summary["active_model"]:
        print(f"active model: {summary['active_model']}")
    if summary["proposal_outcomes"]:
        print("how reviewers treated the proposals:")
        for o in summary["proposal_outcomes"]:
            name = "zoo model" if o["model_version"] is None else f"v{o['model_version']}"
            print(
                f"  {name}: accepted={o['accepted']} edited={o['edited']} "
                f"rejected={o['rejected']} pending={o['pending']} "
                f"drawn by hand={o['added_by_hand']}"
            )
    return 0
