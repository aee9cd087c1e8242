"""The models a user can pick: zoo cards and this project's trained versions."""

from __future__ import annotations

import logging
import os

from app.core.store import ProjectStore
from app.ml.metric_keys import SEGM_AP50
from app.ui.panels.model_panel import ModelEntry

log = logging.getLogger(__name__)


def model_entries(store: ProjectStore) -> list[ModelEntry]:
    """Bundled/user zoo cards (marked when their weights still need downloading; unusable
    when downloads are switched off with MASKLOOP_NO_NETWORK) followed by the project's
    versions, newest first."""
    from app.ml import zoo

    entries: list[ModelEntry] = []
    for card in zoo.list_cards():
        usable, note = True, ""
        if card.weights.torchvision:
            try:
                if not zoo.weights_on_disk(card):
                    usable = not os.environ.get(zoo.NO_NETWORK_ENV)
                    note = " (downloads on first use)" if usable else " (needs a download)"
            except zoo.CardError as exc:  # a card naming weights this torchvision lacks
                log.warning("model card %s: %s", card.id, exc)
                usable, note = False, " (unavailable)"
        entries.append(ModelEntry(card.id, f"{card.title}{note}", usable))
    for version in reversed(store.model_versions()):
        ap = version.metrics.get(SEGM_AP50)
        metric = f", AP50 {ap:.2f}" if isinstance(ap, int | float) else ""
        name = version.name or version.card_id
        entries.append(ModelEntry(f"v{version.id}", f"v{version.id}: {name}{metric}"))
    return entries
