"""Model versions: trained models registered in a project, and which model is active.

A version is three things that must agree: PROJECT/models/v<N>.pt (the state_dict),
PROJECT/models/v<N>.json (its model card, with the weights' sha256) and the store's row N.
They are written so that a killed or failed run leaves no row behind: files go to
temporary names first, are renamed into place, and only then is the row added (the files
are removed again if that fails). A half-made version is never selectable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.core.atomic import remove_stale_temps, write_bytes_atomic
from app.core.store import MODELS_DIR, NotFoundError, ProjectStore
from app.core.types import Category, ModelVersion
from app.errors import MaskLoopError
from app.ml import zoo

log = logging.getLogger(__name__)

ACTIVE_MODEL_KEY = "active_model"
DEFAULT_MODEL = "cells-mobile"
# The one spelling of a project version's model id; version_id parses it, version_model_id
# writes it. MODELS_DIR (PROJECT/models) comes from the store, since scanning skips it too.
_VERSION_ID = re.compile(r"v(\d+)")


class VersionError(MaskLoopError):
    """A model version cannot be registered or selected."""


def version_id(model_id: str) -> int | None:
    """N for a project version id "v<N>", None for a zoo card id."""
    match = _VERSION_ID.fullmatch(model_id)
    return int(match.group(1)) if match else None


def version_model_id(number: int) -> str:
    """The model id "v<N>" of project version ``number``."""
    return f"v{number}"


def version_card_path(project_root: Path | str, model_id: str) -> Path:
    """PROJECT/models/v<N>.json, the card of project version ``model_id``."""
    return Path(project_root) / MODELS_DIR / f"{model_id}.json"


def _version_card(
    card_base: zoo.ModelCard,
    *,
    number: int,
    weights_file: str,
    sha256: str,
    categories: Sequence[Category],
    metrics: dict[str, float],
    images_used: int,
    parent_id: int | None,
    name: str,
    project: Path,
    recipe: dict[str, Any] | None,
) -> zoo.ModelCard:
    """The base card with this version's identity, categories, weights and metrics."""
    return dataclasses.replace(
        card_base,
        id=version_model_id(number),
        title=name or f"{project.name} {version_model_id(number)} (from {card_base.id})",
        categories=list(categories),
        weights=zoo.WeightsSource(file=weights_file, sha256=sha256),
        metrics=dict(metrics),
        recipe={
            "base_model": card_base.id,
            "parent_version": parent_id,
            "images_used": images_used,
            **(recipe or {}),
        },
        description="",
        path=None,
    )


def register_version(
    store: ProjectStore,
    model: nn.Module,
    card_base: zoo.ModelCard,
    *,
    parent_id: int | None,
    categories: Sequence[Category],
    metrics: dict[str, float],
    images_used: int,
    name: str = "",
    recipe: dict[str, Any] | None = None,
) -> ModelVersion:
    """Save ``model`` as the project's next version and add its row; all or nothing.

    ``categories`` are the project categories in model-label order (label k is
    ``categories[k - 1]``); ``card_base`` is the card the run started from (architecture,
    input conversion and detection settings carry over); ``recipe`` (e.g. the training
    options) is recorded in the new card.
    """
    models_dir = store.root / MODELS_DIR
    models_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    weights = buffer.getvalue()
    sha256 = hashlib.sha256(weights).hexdigest()
    with store.transaction():
        # The transaction holds the database's write lock: no other run takes this number.
        number = store.next_model_version_id()
        pt = models_dir / f"{version_model_id(number)}.pt"
        card_path = version_card_path(store.root, version_model_id(number))
        card = _version_card(
            card_base,
            number=number,
            weights_file=pt.name,
            sha256=sha256,
            categories=categories,
            metrics=metrics,
            images_used=images_used,
            parent_id=parent_id,
            name=name,
            project=store.root,
            recipe=recipe,
        )
        remove_stale_temps(models_dir, {pt.name, card_path.name})
        try:
            write_bytes_atomic(pt, weights)
            write_bytes_atomic(card_path, card.to_json().encode("utf-8"))
            version = store.add_model_version(
                card_base.id,
                f"{MODELS_DIR}/{pt.name}",
                parent_id=parent_id,
                categories=categories,
                metrics=metrics,
                images_used=images_used,
                name=name,
            )
            if version.id != number:
                raise VersionError(
                    f"The project gave the new model version number {version.id}, expected "
                    f"{number}; another program is writing to {store.root}. Try again."
                )
        except BaseException:
            pt.unlink(missing_ok=True)
            card_path.unlink(missing_ok=True)
            raise
    log.info("registered model version v%d (%s) in %s", number, card_base.id, store.root)
    return version


def active_model(store: ProjectStore) -> str:
    """The model id proposals and training start from ("v<N>" or a zoo card id)."""
    return store.get_meta(ACTIVE_MODEL_KEY) or DEFAULT_MODEL


def set_active_model(store: ProjectStore, model_id: str) -> None:
    """Make ``model_id`` (a zoo card id or a project version "v<N>") the active model."""
    number = version_id(model_id)
    if number is not None:
        try:
            store.model_version(number)
        except NotFoundError as exc:
            known = (
                ", ".join(version_model_id(v.id) for v in store.model_versions()) or "none yet"
            )
            raise VersionError(
                f"The project has no model version {model_id} (versions: {known})."
            ) from exc
    else:
        zoo.get_card(model_id, store.root)
    store.set_meta(ACTIVE_MODEL_KEY, model_id)
