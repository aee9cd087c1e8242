"""How a project's outlines were made, counted once for ``maskloop info`` and the
Model versions dock: what the proposals and the assists saved drawing by hand."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.store import ProjectStore
from app.core.types import Provenance

# How each provenance reads in a sentence, in the order it is listed.
PHRASES = {
    Provenance.PROPOSAL: "proposals kept as is",
    Provenance.ASSISTED: "assisted",
    Provenance.DRAWN: "drawn by hand",
    Provenance.EDITED: "edited",
    Provenance.IMPORTED: "imported",
}


@dataclass(frozen=True)
class ProvenanceCounts:
    """Instances per provenance in one project."""

    counts: dict[Provenance, int]

    @classmethod
    def of(cls, store: ProjectStore) -> ProvenanceCounts:
        return cls(store.instance_counts_by_provenance())

    def __getitem__(self, provenance: Provenance) -> int:
        return self.counts.get(provenance, 0)

    @property
    def assisted_share(self) -> float | None:
        """Of the outlines a person added (assisted or drawn), the share an assist made;
        None before any."""
        made = self[Provenance.ASSISTED] + self[Provenance.DRAWN]
        return self[Provenance.ASSISTED] / made if made else None

    def to_dict(self) -> dict[str, int]:
        return {p.value: self[p] for p in Provenance}

    def sentence(self) -> str:
        """One line, e.g. '12 proposals kept as is, 30 assisted, 5 drawn by hand, ...'."""
        text = ", ".join(f"{self[p]} {phrase}" for p, phrase in PHRASES.items())
        share = self.assisted_share
        if share is not None:
            text += f"; assists made {share:.0%} of the outlines a person added"
        return text
