"""Model cards and weights: which models exist, and how a card becomes a loaded model.

A card (``model_zoo/<id>.json``, a user card in :func:`user_models_dir`, or a project
version ``PROJECT/models/v<N>.json``) names an architecture, its categories, the input
conversion and where the weights come from: a local file next to the card (checked
against its sha256) or a torchvision weights enum (fetched by torchvision's own weights
API with its hash check, into the torch hub cache). Nothing is downloaded unless a card
that needs it is loaded, and never when ``MASKLOOP_NO_NETWORK`` is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import urllib.error
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from app import paths
from app.core.atomic import write_text_atomic
from app.core.types import Category
from app.errors import MaskLoopError
from app.ml.models import ARCHITECTURES, build_model
from app.ml.preprocess import InputSpec, InputSpecError
from app.paths import model_zoo_dir

log = logging.getLogger(__name__)

BUNDLED_DIR = model_zoo_dir()  # source checkout, pip install and frozen build alike
NO_NETWORK_ENV = "MASKLOOP_NO_NETWORK"
_CARD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# torch hub names cached files "<name>-<first hex digits of sha256>.<ext>".
_HUB_HASH = re.compile(r"-([a-f0-9]*)\.")
# Bounds a card's detection settings must keep: every proposal runs through the box head
# (about 50 KB of features each) and every detection gets a mask, so a card asking for
# millions would pass and then fail allocating. Ten times the dense cells card's values.
MAX_DETECTIONS_PER_IMG = 10_000
MAX_RPN_PROPOSALS = 20_000
_CARD_KEYS = {
    "id", "title", "architecture", "categories", "input", "detections_per_img", "weights",
    "metrics", "license", "recipe", "description", "rpn_proposals",
    "nms_iou",
}  # fmt: skip


class ZooError(MaskLoopError):
    """A model card is missing or invalid."""


class CardError(ZooError):
    """A model card file cannot be read or does not describe a usable model."""


class ModelNotFoundError(ZooError):
    """No card has the requested model id."""


class ModelLoadError(MaskLoopError):
    """A card's weights could not be turned into a model."""


class WeightsDownloadError(ModelLoadError):
    """Weights are not on this machine and could not (or may not) be downloaded."""


class WeightsHashError(ModelLoadError):
    """A weights file is not the file the card names (damaged, truncated or replaced)."""


class CorruptWeightsError(ModelLoadError):
    """A weights file is not a readable PyTorch state_dict."""


class WeightsMismatchError(ModelLoadError):
    """The weights do not fit the card's architecture or category count."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a card's weights come from: ``file`` (+ ``sha256``) or a ``torchvision`` enum."""

    file: str | None = None
    sha256: str | None = None
    torchvision: str | None = None

    def to_dict(self) -> dict[str, str]:
        if self.torchvision:
            return {"torchvision": self.torchvision}
        out = {"file": self.file or ""}
        if self.sha256:
            out["sha256"] = self.sha256
        return out


@dataclass
class ModelCard:
    """One model: architecture, categories (label k is ``categories[k - 1]``), input, weights.

    ``path`` is the card file it was read from; a weights file is looked up beside it.
    Keys this version does not know are kept in ``extra`` and written back unchanged.
    """

    id: str
    title: str
    architecture: str
    categories: list[Category]
    weights: WeightsSource
    input: InputSpec = field(default_factory=InputSpec)
    detections_per_img: int = 300
    # Region proposals kept per image at inference (torchvision's default 1000 when None):
    # an image of hundreds of touching nuclei needs more candidates than detections.
    rpn_proposals: int | None = None
    # Box IoU above which the weaker of two detections is dropped (torchvision's 0.5 when
    # None); touching nuclei rarely overlap that much, duplicate detections do.
    nms_iou: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def num_classes(self) -> int:
        """Model classes, background included."""
        return len(self.categories) + 1

    def category_for_label(self, label: int) -> Category:
        """The card category of model label ``label`` (1-based)."""
        if not 1 <= label <= len(self.categories):
            raise WeightsMismatchError(
                f"Model {self.id} predicted label {label} but its card lists "
                f"{len(self.categories)} categories; the card does not match the weights."
            )
        return self.categories[label - 1]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: Path | None = None) -> ModelCard:
        where = f"model card {path}" if path else "model card"
        try:
            card_id = str(data["id"])
            architecture = str(data["architecture"])
            cats = [
                Category(int(c["id"]), str(c["name"]), str(c.get("color", Category.color)))
                for c in data["categories"]
            ]
            weights = data["weights"]
            source = WeightsSource(
                file=weights.get("file"),
                sha256=(weights.get("sha256") or None),
                torchvision=weights.get("torchvision"),
            )
            spec = InputSpec.from_dict(data.get("input") or {})
            detections = int(data.get("detections_per_img", 300))
            proposals = data.get("rpn_proposals")
            proposals = None if proposals is None else int(proposals)
            nms_iou = data.get("nms_iou")
            nms_iou = None if nms_iou is None else float(nms_iou)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CardError(
                f"{where} is incomplete or malformed ({type(exc).__name__}: {exc}); it needs "
                "id, title, architecture, categories [{id, name}], weights {file, sha256} or "
                "{torchvision}."
            ) from exc
        except InputSpecError as exc:
            raise CardError(f"{where}: invalid input block: {exc}") from exc
        if not _CARD_ID.match(card_id):
            raise CardError(f"{where}: id {card_id!r} must be letters, digits, '.', '_' or '-'.")
        if architecture not in ARCHITECTURES:
            raise CardError(
                f"{where}: unknown architecture {architecture!r}; use one of "
                f"{', '.join(ARCHITECTURES)}."
            )
        if not cats:
            raise CardError(f"{where}: the categories list is empty.")
        if bool(source.file) == bool(source.torchvision):
            raise CardError(
                f'{where}: weights must name either "file" (with "sha256") or "torchvision".'
            )
        if not 1 <= detections <= MAX_DETECTIONS_PER_IMG:
            raise CardError(
                f"{where}: detections_per_img={detections}; use 1 to {MAX_DETECTIONS_PER_IMG}."
            )
        if proposals is not None and not 1 <= proposals <= MAX_RPN_PROPOSALS:
            raise CardError(
                f"{where}: rpn_proposals={proposals}; use 1 to {MAX_RPN_PROPOSALS} (or leave it "
                "out for torchvision's 1000)."
            )
        if nms_iou is not None and not 0.0 < nms_iou <= 1.0:
            raise CardError(f"{where}: nms_iou must be in (0, 1] (or left out).")
        return cls(
            id=card_id,
            title=str(data.get("title", card_id)),
            architecture=architecture,
            categories=cats,
            weights=source,
            input=spec,
            detections_per_img=detections,
            rpn_proposals=proposals,
            nms_iou=nms_iou,
            metrics=dict(data.get("metrics") or {}),
            license=str(data.get("license", "")),
            recipe=dict(data.get("recipe") or {}),
            description=str(data.get("description", "")),
            extra={k: v for k, v in data.items() if k not in _CARD_KEYS},
            path=path,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "architecture": self.architecture,
            "categories": [{"id": c.id, "name": c.name} for c in self.categories],
            "input": self.input.to_dict(),
            "detections_per_img": self.detections_per_img,
            "weights": self.weights.to_dict(),
            "metrics": self.metrics,
            "license": self.license,
            "recipe": self.recipe,
        }
        if self.rpn_proposals is not None:
            out["rpn_proposals"] = self.rpn_proposals
        if self.nms_iou is not None:
            out["nms_iou"] = self.nms_iou
        if self.description:
            out["description"] = self.description
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, text: str, *, path: Path | None = None) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CardError(f"model card {path or ''} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CardError(f"model card {path or ''} must be a JSON object.")
        return cls.from_dict(data, path=path)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: Path | str) -> ModelCard:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CardError(f"cannot read model card {path}: {exc}") from exc
        return cls.from_json(text, path=path)

    def save(self, path: Path | str) -> None:
        """Write the card atomically (a crash never leaves half a card)."""
        path = Path(path)
        write_text_atomic(path, self.to_json() + "\n")
        self.path = path

    def weights_path(self) -> Path | None:
        """The local weights file; it must lie in the card's own folder tree."""
        if not self.weights.file:
            return None
        folder = (self.path.parent if self.path else Path.cwd()).resolve()
        candidate = (folder / self.weights.file).resolve()
        if not candidate.is_relative_to(folder):
            raise CardError(
                f"model card {self.id}: weights file {self.weights.file!r} points outside the "
                f"card's folder {folder}; put the weights beside the card."
            )
        return candidate


# -- finding cards ----------------------------------------------------------------------------


def user_models_dir() -> Path:
    """Where users add their own cards and weights ($MASKLOOP_MODELS_DIR or the data dir)."""
    return paths.user_models_dir()


def card_dirs(extra_dirs: Iterable[Path | str] = ()) -> list[Path]:
    """Card folders in lookup order; a later folder's card replaces an earlier one's id."""
    return [BUNDLED_DIR, user_models_dir(), *(Path(d) for d in extra_dirs)]


def _check_weights_source(card: ModelCard) -> None:
    """Raise :class:`CardError` when ``card``'s weights cannot be located at all.

    A weights file outside the card's folder, or a torchvision name this torchvision does
    not know: such a card could never load, so listings skip it instead of failing later.
    """
    if card.weights.torchvision:
        torchvision_weights(card.weights.torchvision)
    else:
        card.weights_path()


def _cards_in(folder: Path) -> dict[str, ModelCard]:
    """The usable cards of ``folder``; each broken one is logged as a warning and skipped."""
    cards: dict[str, ModelCard] = {}
    if not folder.is_dir():
        return cards
    for path in sorted(folder.glob("*.json")):
        try:
            card = ModelCard.load(path)
            _check_weights_source(card)
        except ZooError as exc:
            log.warning("skipping model card %s: %s", path, exc)
            continue
        cards[card.id] = card
    return cards


def list_cards(extra_dirs: Iterable[Path | str] = ()) -> list[ModelCard]:
    """Every readable card (bundled, user, ``extra_dirs``), sorted by id; bad cards are logged."""
    cards: dict[str, ModelCard] = {}
    for folder in card_dirs(extra_dirs):
        cards.update(_cards_in(folder))
    return sorted(cards.values(), key=lambda c: c.id)


def get_card(model_id: str, project_root: Path | str | None = None) -> ModelCard:
    """The card of a zoo/user model id, or of project version "v<N>" (needs ``project_root``)."""
    from app.ml.versions import version_card_path, version_id  # versions builds on this module

    if version_id(model_id) is not None:
        if project_root is None:
            raise ModelNotFoundError(
                f"{model_id} is a project model version; give the project folder to use it."
            )
        path = version_card_path(project_root, model_id)
        if not path.is_file():
            raise ModelNotFoundError(
                f"The project {project_root} has no model version {model_id} ({path} is missing)."
            )
        return ModelCard.load(path)
    for card in list_cards():
        if card.id == model_id:
            return card
    known = ", ".join(c.id for c in list_cards()) or "none"
    raise ModelNotFoundError(
        f"No model card with id {model_id!r} (available: {known}). Add your own card to "
        f"{user_models_dir()}."
    )


# -- weights ------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses anything but tensors
        raise CorruptWeightsError(
            f"{path} holds more than plain weights (or is damaged) and is refused for safety. "
            "Save weights with torch.save(model.state_dict(), path)."
        ) from exc
    except Exception as exc:  # a damaged file makes the unpickler fail in arbitrary ways
        raise CorruptWeightsError(
            f"{path} is not a readable PyTorch weights file ({exc.__class__.__name__}). "
            "Delete it and fetch or copy it again."
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptWeightsError(
            f"{path} is not a state_dict (a dict of tensors); save weights with "
            "torch.save(model.state_dict(), path)."
        )
    return state


def _file_state_dict(card: ModelCard) -> dict[str, torch.Tensor]:
    path = card.weights_path()
    assert path is not None
    if not path.is_file():
        raise ModelLoadError(
            f"The weights of model {card.id} are missing: expected {path}. Copy the file "
            f"{card.weights.file} there (it must match the card's sha256)."
        )
    if card.weights.sha256:
        actual = sha256_file(path)
        if actual != card.weights.sha256.lower():
            raise WeightsHashError(
                f"{path} does not match model card {card.id} (sha256 {actual[:12]}..., "
                f"expected {card.weights.sha256[:12]}...): the file is damaged or was "
                "replaced. Restore the original file, or update the card's sha256 if you "
                "replaced it on purpose."
            )
    else:
        log.warning("model card %s gives no sha256 for %s; loading it unchecked", card.id, path)
    return _torch_load(path)


def torchvision_weights(name: str) -> Any:
    """The torchvision weights enum entry for ``name`` (e.g. "MaskRCNN_..._Weights.COCO_V1")."""
    from torchvision.models import get_weight

    try:
        return get_weight(name)
    except (ValueError, KeyError, AttributeError) as exc:
        raise CardError(
            f"{name!r} is not a torchvision weights name this torchvision knows "
            "(e.g. MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1)."
        ) from exc


def torchvision_architecture(weights: Any) -> str | None:
    """Which of :data:`ARCHITECTURES` a torchvision weights enum entry belongs to, if any."""
    from torchvision.models import get_model_weights

    for architecture in ARCHITECTURES:
        try:
            if isinstance(weights, get_model_weights(architecture)):
                return architecture
        except ValueError:  # an architecture of MaskLoop's own, without torchvision weights
            continue
    return None


def weights_on_disk(card: ModelCard) -> bool:
    """Whether ``card``'s weights are on this machine (its file, or torchvision's hub cache)
    so it loads without a download; raises :class:`CardError` if they cannot be located."""
    if card.weights.torchvision:
        return hub_cache_path(torchvision_weights(card.weights.torchvision).url).is_file()
    path = card.weights_path()
    return bool(path and path.is_file())


def hub_cache_path(url: str) -> Path:
    """Where torchvision's weights API caches the file of ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Fetch (or reuse from the hub cache) torchvision weights, hash-checked."""
    weights = torchvision_weights(name)
    url: str = weights.url
    cached = hub_cache_path(url)
    match = _HUB_HASH.search(cached.name)
    if cached.is_file():
        # torch only checks the hash while downloading; a damaged cached file is caught here.
        if match and not sha256_file(cached).startswith(match.group(1)):
            raise WeightsHashError(
                f"The cached weights {cached} are damaged (their sha256 does not start with "
                f"{match.group(1)}). Delete the file; it is downloaded again next time."
            )
        return _torch_load(cached)
    if os.environ.get(NO_NETWORK_ENV):
        raise WeightsDownloadError(
            f"The weights {name} are not on this machine and downloads are disabled "
            f"({NO_NETWORK_ENV} is set). Download {url} and put it at {cached}."
        )
    log.info("downloading %s to %s", url, cached)
    try:
        state = weights.get_state_dict(
            progress=True, check_hash=True, weights_only=True, map_location="cpu"
        )
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsDownloadError(
            f"Could not download the weights {name} from {url} ({exc}). Check the network, "
            f"or download the file by hand and put it at {cached}."
        ) from exc
    except RuntimeError as exc:
        if "hash" in str(exc).lower():
            cached.unlink(missing_ok=True)
            raise WeightsHashError(
                f"The download of {url} is damaged (hash mismatch); try again, or download "
                f"it by hand and put it at {cached}."
            ) from exc
        raise CorruptWeightsError(f"The downloaded weights {url} are unreadable: {exc}") from exc
    if not isinstance(state, dict):
        raise CorruptWeightsError(f"The downloaded weights {url} are not a state_dict.")
    return state


def _check_fits(card: ModelCard, state: dict[str, torch.Tensor]) -> None:
    cls_score = state.get("roi_heads.box_predictor.cls_score.weight")
    if cls_score is not None and cls_score.shape[0] != card.num_classes:
        raise WeightsMismatchError(
            f"The weights of model {card.id} predict {cls_score.shape[0] - 1} categories but "
            f"its card lists {len(card.categories)}; fix the card's categories."
        )


def load_model(card: ModelCard, *, device: str | torch.device = "cpu") -> nn.Module:
    """Build ``card``'s architecture, load its weights (hash-checked) and return it in eval mode."""
    if card.weights.torchvision:
        expected = torchvision_architecture(torchvision_weights(card.weights.torchvision))
        if expected != card.architecture:
            raise WeightsMismatchError(
                f"Model card {card.id}: torchvision weights {card.weights.torchvision} are for "
                f"{expected or 'another architecture'}, not {card.architecture}."
            )
        state = torchvision_state_dict(card.weights.torchvision)
    else:
        state = _file_state_dict(card)
    _check_fits(card, state)
    model = build_model(
        card.architecture,
        num_classes=card.num_classes,
        min_size=card.input.min_size,
        max_size=card.input.max_size,
        detections_per_img=card.detections_per_img,
        rpn_proposals=card.rpn_proposals,
        nms_iou=card.nms_iou,
        weights=None,
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise WeightsMismatchError(
            f"The weights of model {card.id} do not fit the architecture "
            f"{card.architecture} named by its card: {' '.join(lines[:3])[:400]}"
        ) from exc
    model.eval()
    return model.to(device)
