"""Which category of a model is which category of a project or a file: one rule for
proposing, training, evaluation and the Train dialog.

Categories match by case-folded name; a model and a project with one category each match
whatever their names (a "nucleus" model proposing into an "object" project). Ids never
decide: a project's "nucleus" may have id 3 where the model's has id 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.core.types import Category


def match_categories(model: Sequence[Category], other: Sequence[Category]) -> dict[int, int]:
    """Model category id -> the id of the same category in ``other``; unmatched ones are
    left out."""
    by_name = {c.name.casefold(): c.id for c in other}
    matched = {m.id: by_name[m.name.casefold()] for m in model if m.name.casefold() in by_name}
    if not matched and len(model) == 1 and len(other) == 1:
        matched[model[0].id] = other[0].id
    return matched


def model_labels(model: Sequence[Category], other: Sequence[Category]) -> dict[int, int]:
    """``other`` category id -> model label (1-based, in the model's category order) for the
    categories the model knows: the targets evaluation compares its detections with."""
    matched = match_categories(model, other)
    return {matched[m.id]: k for k, m in enumerate(model, start=1) if m.id in matched}


def categories_keeping_heads(
    model: Sequence[Category], project: Sequence[Category]
) -> list[Category] | None:
    """The project's categories in the model's label order when training can keep the
    model's box and mask heads (every category on both sides matches one on the other),
    else None: the heads are then trained from scratch."""
    matched = match_categories(model, project)
    if not (len(matched) == len(model) == len(project)):
        return None
    by_id = {c.id: c for c in project}
    ordered = [by_id[matched[m.id]] for m in model]
    return ordered if len({c.id for c in ordered}) == len(ordered) else None
