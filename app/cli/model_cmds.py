"""``maskloop models`` and ``maskloop propose``: the model zoo, and batch proposals."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app import paths
from app.cli.model_ids import model_card
from app.core.store import ProjectStore
from app.core.store_errors import StoreError
from app.errors import MaskLoopError
from app.ml.defaults import Precision

if TYPE_CHECKING:
    from app.core.types import ImageRecord
    from app.ml.propose import ImageOutcome, SupportsPredict
    from app.ml.zoo import ModelCard

log = logging.getLogger(__name__)

SHOW_FAILED = 10
MAX_FAILURES_IN_A_ROW = 5  # the model, not the images, is broken: stop


class ProposeFailedError(MaskLoopError):
    """The model failed on image after image: the model or its card is the problem."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the models that can propose (zoo, user and project models)",
        description=(
            "List the model cards MaskLoop knows: the bundled zoo (model_zoo/), your own "
            f"cards in {paths.user_models_dir()} (or ${paths.USER_MODELS_ENV}), and with "
            "--project the project's registered versions (v1, v2, ...). A card is a JSON file "
            "naming the architecture, categories, input conversion and weights (a file "
            "beside the card with its sha256, or torchvision weights downloaded on first use)."
        ),
    )
    p.add_argument("--project", type=Path, help="also list this project's model versions")
    p.add_argument("--json", action="store_true", help="print the cards as JSON")
    p.set_defaults(func=_models)

    p = sub.add_parser(
        "propose",
        help="let a model propose instances for a project's new images",
        description=(
            "Run a model on the project's new and proposed images and store its instances as "
            "proposals (source=model, with scores) for review. Images a person has worked on "
            "are never touched. Each image is saved as soon as it is done: after Ctrl-C, run "
            "the same command again to continue (images this model already proposed are "
            "skipped unless --force). An image that cannot be read or that the model fails on "
            "is named and skipped (exit code 1 at the end); five failures in a row stop. "
            "Use --shard to split a project between machines, each "
            "writing to its own copy, and merge the results back with import-coco. "
            "Each image's uncertainty (how unsure the model was, from every detection "
            "scoring 0.05 or more) is stored too; 'maskloop next' orders images by it. "
            "--score-only stores just the uncertainty, no proposals."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument(
        "--model",
        help="model card id (see 'maskloop models') or project version v<N>; "
        "default: the project's active model",
    )
    p.add_argument(
        "--images",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="only images whose project-relative path matches one of these shell patterns "
        "(e.g. 'plate1/*.tif'; quote them so the shell does not expand them)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="also save this as the project's score threshold (0.05-1): proposals scoring "
        "below it are hidden in the GUI, rejected when an image is marked done and left out "
        "of exports. Every detection scoring 0.05 or more is stored whatever the threshold, "
        "so it can be changed later without proposing again",
    )
    p.add_argument(
        "--simplify",
        type=float,
        default=None,
        metavar="PX",
        help="also save this as the project's simplify tolerance (0-10 px): how far a "
        "proposal's outline may move from its mask to lose vertices, as the GUI's Simplify "
        "box; default: the project's (1.4 px until set; 0 keeps every pixel corner)",
    )
    p.add_argument(
        "--nms-iou",
        type=float,
        default=None,
        help="box overlap above which the weaker of two same-class detections is dropped "
        "(default: the model card's, else 0.5)",
    )
    p.add_argument(
        "--max-detections",
        type=int,
        default=None,
        metavar="N",
        help="most instances per image (default: the model card's, e.g. 1000 for cells)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps",
    )
    p.add_argument(
        "--precision",
        choices=[p.value for p in Precision],
        default=Precision.AUTO.value,
        help="precision of the model's convolutions (box regression stays fp32): auto is "
        "bf16 on CUDA and fp32 on the CPU; bf16 on a CPU with native bf16 (AVX512-BF16/AMX) "
        "is about 1.4x faster, same AP, single masks may differ by a few pixels",
    )
    p.add_argument(
        "--tile-size",
        type=int,
        default=None,
        metavar="PX",
        help="cut images larger than this into overlapping tiles (default: the card's max_size)",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="only part I of N (1-based); a hash of each path decides, so N machines "
        "running 1/N .. N/N cover every image exactly once",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="propose (or score) again images this model already proposed (or scored)",
    )
    p.add_argument(
        "--score-only",
        action="store_true",
        help="only compute and store each image's uncertainty for 'maskloop next'; "
        "write no proposals and leave image statuses as they are",
    )
    p.set_defaults(func=_propose)


def _card_row(card: ModelCard) -> dict:
    from app.ml import zoo

    row = card.to_dict()
    row["weights_available"] = zoo.weights_on_disk(card)
    row["card_path"] = str(card.path) if card.path else None
    return row


def _listed_cards(project: Path | None) -> list[tuple[ModelCard, dict]]:
    """Every card with its listing row; a broken one is a warning line, the rest are listed."""
    from app.ml import zoo
    from app.ml.versions import version_model_id

    cards: list[ModelCard] = zoo.list_cards()
    if project is not None:
        with ProjectStore.open(project) as store:
            # The store's rows, not the files: a run killed before its row was committed
            # leaves files of a version that does not exist.
            for version in store.model_versions():
                model_id = version_model_id(version.id)
                try:
                    cards.append(model_card(store, model_id))
                except zoo.ZooError as exc:
                    log.warning("skipping project model version %s: %s", model_id, exc)
    listed = []
    for card in cards:
        try:
            listed.append((card, _card_row(card)))
        except zoo.ZooError as exc:
            log.warning("skipping model card %s: %s", card.path or card.id, exc)
    return listed


def _models(args: argparse.Namespace) -> int:
    listed = _listed_cards(args.project)
    if args.json:
        print(json.dumps([row for _, row in listed], indent=2))
        return 0
    for card, row in listed:
        source = (
            f"torchvision {card.weights.torchvision}"
            if card.weights.torchvision
            else f"file {card.weights.file}"
        )
        state = "ready" if row["weights_available"] else "not downloaded"
        if card.weights.file and not row["weights_available"]:
            state = "weights missing"
        metrics = " ".join(
            f"{k}={v:g}" for k, v in card.metrics.items() if isinstance(v, int | float)
        )
        print(f"{card.id}  ({card.title})")
        print(
            f"    {card.architecture}, {len(card.categories)} categories, "
            f"input {card.input.min_size}-{card.input.max_size} px, {source} [{state}]"
            + (f"\n    {metrics}" if metrics else "")
        )
    print(f"\nAdd your own cards to {paths.user_models_dir()}")
    return 0


def _propose_each(
    store: ProjectStore,
    predictor: SupportsPredict,
    card: ModelCard,
    images: Sequence[ImageRecord],
    **options: object,
) -> Iterator[ImageOutcome]:
    """Propose image by image: one the model fails on is reported by name and skipped.

    Store errors and Ctrl-C stop the run; so do :data:`MAX_FAILURES_IN_A_ROW` model
    failures in a row, since then the model is at fault, not the images.
    """
    from app.ml.propose import ImageOutcome, propose_images

    in_a_row = 0
    for image in images:
        try:
            yield from propose_images(store, predictor, card, [image], **options)
            in_a_row = 0
        except StoreError:
            raise
        except Exception as exc:  # the model on this image: any library's error type
            log.warning("proposing %s failed", image.path, exc_info=True)
            reason = f"the model failed on it: {type(exc).__name__}: {exc}".splitlines()[0]
            in_a_row += 1
            if in_a_row >= MAX_FAILURES_IN_A_ROW:
                raise ProposeFailedError(
                    f"the model failed on {in_a_row} images in a row (last {image.path}: "
                    f"{reason}); check the model card, or see the log for details"
                ) from exc
            yield ImageOutcome(image, error=reason)


def _propose(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from app.core.score_threshold import SCORE_FLOOR, migrate_score_floor, set_project_threshold
    from app.core.simplify_tolerance import project_tolerance, set_project_tolerance
    from app.ml.active import rescore_uncertainty
    from app.ml.predictor import Predictor
    from app.ml.propose import Shard, detection_threshold, select_images
    from app.ml.versions import active_model, version_id

    with ProjectStore.open(args.project) as store:
        if args.threshold is not None:
            saved = set_project_threshold(store, args.threshold)
            rescored = rescore_uncertainty(store, saved)  # images this run will not propose
            print(f"score threshold of the project: {saved:.2f} ({rescored} images rescored)")
        if args.simplify is not None:
            px = set_project_tolerance(store, args.simplify)
            print(f"simplify tolerance of the project: {px:.1f} px")
        again = migrate_score_floor(store)
        if again:
            print(
                f"{again} proposed images are proposed again to store every detection down to "
                f"score {SCORE_FLOOR} (the threshold then needs no new run)"
            )
        model_id = args.model or active_model(store)
        card = model_card(store, model_id)
        chosen = select_images(
            store,
            model_id,
            patterns=args.images,
            shard=Shard.parse(args.shard) if args.shard else None,
            force=args.force,
            score_only=args.score_only,
        )
        verb = "score" if args.score_only else "propose"
        skipped = []
        if chosen.already_proposed:
            done = "scored" if args.score_only else "proposed"
            skipped.append(f"{chosen.already_proposed} already {done} by {model_id}")
        if chosen.human_work:
            skipped.append(f"{chosen.human_work} with annotations by a person")
        if chosen.other_shards:
            skipped.append(f"{chosen.other_shards} in other shards")
        if chosen.not_matching:
            skipped.append(f"{chosen.not_matching} not matching --images")
        print(
            f"{len(chosen.images)} images to {verb} with {model_id}"
            + (f" ({', '.join(skipped)} skipped)" if skipped else "")
        )
        if not chosen.images:
            return 0
        predictor = Predictor(
            card,
            device=args.device,
            precision=args.precision,
            score_threshold=detection_threshold(SCORE_FLOOR),
            nms_iou=args.nms_iou,
            max_detections=args.max_detections,
            tile_size=args.tile_size,
            polygon_tolerance=project_tolerance(store),
            model_version=version_id(model_id),
        )
        print(f"model {card.id} on {predictor.device_name}")
        proposed = instances = left_alone = 0
        failed: list[tuple[str, str]] = []
        bar = tqdm(total=len(chosen.images), unit="img", desc=f"{verb[:-1]}ing")
        try:
            for outcome in _propose_each(
                store,
                predictor,
                card,
                chosen.images,
                model_id=model_id,
                model_version=version_id(model_id),
                threshold=SCORE_FLOOR,
                score_only=args.score_only,
            ):
                bar.update(1)
                if outcome.error:
                    failed.append((outcome.image.path, outcome.error))
                elif outcome.stored:
                    proposed += 1
                    instances += outcome.instances
                else:
                    left_alone += 1
                if (outcome.error or None) != outcome.image.error:
                    store.set_error(outcome.image.id, outcome.error)
                if not args.score_only:
                    bar.set_postfix(instances=instances)
        except KeyboardInterrupt:
            bar.close()
            print(f"interrupted after {proposed} images; run the same command again to continue")
            return 130
        bar.close()
    if args.score_only:
        print(f"stored the uncertainty of {proposed} images; see them with: maskloop next")
    else:
        print(f"proposed {instances} instances on {proposed} images")
    if left_alone:
        print(f"{left_alone} images left alone: someone started annotating them meanwhile")
    if failed:
        print(f"{len(failed)} images could not be proposed (skipped), e.g.:")
        for path, reason in failed[:SHOW_FAILED]:
            print(f"  {path}: {reason}")
        return 1
    return 0
