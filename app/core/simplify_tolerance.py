"""The project's simplify tolerance: how far (px) a traced outline may move to lose vertices.

Proposals (the GUI's and ``maskloop propose``'s), assists and brush results are traced from
masks and simplified by this one number with :func:`app.core.geometry.simplify_ring`, so
the outlines a person reviews carry the vertex count the project asked for. Outlines
already stored keep theirs: the tolerance applies to the next outline traced. The default
matches labelme's and CVAT's simplification; 0 keeps every pixel corner. Evaluation and
model comparison trace at their own fixed tolerance, so their figures do not move with it.
"""

from __future__ import annotations

from app.core.project_number import ProjectNumber
from app.core.store import ProjectStore
from app.errors import MaskLoopError

DEFAULT_SIMPLIFY_TOLERANCE = 1.4  # px
MAX_SIMPLIFY_TOLERANCE = 10.0  # px: beyond this a nucleus becomes a triangle
TOLERANCE_KEY = "simplify_tolerance"  # project meta, e.g. "1.4"


class SimplifyToleranceError(MaskLoopError):
    """A simplify tolerance outside what the project accepts."""


def check_tolerance(value: float) -> float:
    """``value`` rounded to 0.1 px, refused outside [0, :data:`MAX_SIMPLIFY_TOLERANCE`]."""
    rounded = round(float(value), 1)
    if not 0.0 <= rounded <= MAX_SIMPLIFY_TOLERANCE:
        raise SimplifyToleranceError(
            f"simplify tolerance {value} px must be between 0 (keep every pixel corner) "
            f"and {MAX_SIMPLIFY_TOLERANCE:g} px."
        )
    return rounded


_TOLERANCE = ProjectNumber(
    TOLERANCE_KEY, DEFAULT_SIMPLIFY_TOLERANCE, 1, check_tolerance, "simplify tolerance"
)


def project_tolerance(store: ProjectStore) -> float:
    """The project's simplify tolerance (:data:`DEFAULT_SIMPLIFY_TOLERANCE` until saved)."""
    return _TOLERANCE.read(store)


def set_project_tolerance(store: ProjectStore, value: float) -> float:
    """Save the project's simplify tolerance; returns it as saved (rounded to 0.1 px)."""
    return _TOLERANCE.write(store, value)
