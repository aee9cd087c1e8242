"""``maskloop export-model``: a model version as a deployable ONNX file and its card."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.coco_cmds import _add_overwrite_option
from app.cli.model_ids import model_card
from app.core.output_files import OutputRefusedError, check_output
from app.core.store import MODELS_DIR, ProjectStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-model",
        help="write a model version as an ONNX file (with its card) to run without PyTorch",
        description=(
            "Write the model as OUT.onnx and its deploy card OUT.json beside it (categories, "
            "input conversion, thresholds, input and output names). The graph takes the "
            "converted image (3 x H x W, values 0-1, at its own size), resizes it itself and "
            "returns boxes, scores, labels and each detection's mask probabilities over its "
            "box, for onnxruntime on any machine; docs/examples/onnx_predict.py runs it with "
            "numpy and onnxruntime only and writes COCO. Needs the 'export' extra."
        ),
    )
    p.add_argument("project", type=Path, help="project folder")
    p.add_argument(
        "version",
        help="project version v<N>, or a model card id such as cells-mobile "
        "(see 'maskloop models --project PROJECT')",
    )
    p.add_argument(
        "--onnx", type=Path, required=True, metavar="OUT.onnx", help="ONNX file to write"
    )
    _add_overwrite_option(p)
    p.set_defaults(func=_export_model)


def _check_targets(store: ProjectStore, onnx_path: Path, *, overwrite: bool) -> Path:
    from app.ml.onnx_export import card_path_for

    card_path = card_path_for(onnx_path)
    models = (store.root / MODELS_DIR).resolve()
    for target in (onnx_path, card_path):
        if target.expanduser().resolve().is_relative_to(models):
            raise OutputRefusedError(
                f"{target} is inside the project's model versions folder {models}; write "
                "the export somewhere else"
            )
        check_output(store, target, overwrite=overwrite)
    return card_path


def _export_model(args: argparse.Namespace) -> int:
    from app.ml.onnx_export import export_onnx

    with ProjectStore.open(args.project) as store:
        card = model_card(store, args.version)
        _check_targets(store, args.onnx, overwrite=args.overwrite)
    print(f"exporting {args.version} ({card.architecture}) ...")
    result = export_onnx(card, args.onnx)
    print(f"wrote {result.onnx_path} ({result.onnx_path.stat().st_size / 1e6:.1f} MB)")
    print(f"wrote {result.card_path} (categories, input conversion, thresholds)")
    return 0
