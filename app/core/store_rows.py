"""Rows of the project database as records: what :mod:`app.core.store` reads back.

Kept apart from the store's API so the read-side conversions (and their speed tricks for
images with thousands of instances) live in one small place.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence

from app.core.polygon_codec import decode_many
from app.core.types import (
    Category,
    ImageRecord,
    ImageStatus,
    Instance,
    ModelVersion,
    Provenance,
    Source,
)

# ORDER BY clauses of the image listings, by the sort names the UI and CLI use.
ORDERS = {
    "path": "path",
    "name": "path",
    "status": "status, path",
    # Most uncertain first; images without a score last.
    "uncertainty": "uncertainty IS NULL, uncertainty DESC, path",
}


def image_from_row(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(
        id=row["id"],
        path=row["path"],
        width=row["width"],
        height=row["height"],
        status=ImageStatus(row["status"]),
        size_bytes=row["size_bytes"],
        mtime_ns=row["mtime_ns"],
        uncertainty=row["uncertainty"],
        split=row["split"],
        missing=bool(row["missing"]),
        proposed_by=row["proposed_by"],
        scored_by=row["scored_by"],
        error=row["error"],
    )


# Instances are read as plain tuples of these columns (no sqlite3.Row, no enum call per row,
# geometry decoded in one batch): opening an image reads thousands of them.
INSTANCE_COLUMNS = (
    "id, image_id, category_id, geometry, score, source, model_version, crowd, provenance"
)
_SOURCES = {s.value: s for s in Source}
_PROVENANCES = {p.value: p for p in Provenance}


def instances_from_tuples(rows: Sequence[tuple]) -> list[Instance]:
    geometries = decode_many([row[3] for row in rows])
    return [
        Instance(
            id=id_,
            image_id=image_id,
            category_id=category_id,
            polygons=polygons,
            score=score,
            source=_SOURCES.get(source) or Source(source),
            model_version=model_version,
            crowd=bool(crowd),
            provenance=_PROVENANCES.get(provenance) or Provenance(provenance),
        )
        for (
            id_,
            image_id,
            category_id,
            _,
            score,
            source,
            model_version,
            crowd,
            provenance,
        ), polygons in zip(rows, geometries, strict=True)
    ]


def version_from_row(row: sqlite3.Row) -> ModelVersion:
    return ModelVersion(
        id=row["id"],
        card_id=row["card_id"],
        path=row["path"],
        parent_id=row["parent_id"],
        categories=[Category(**c) for c in json.loads(row["categories"])],
        metrics=json.loads(row["metrics"]),
        images_used=row["images_used"],
        name=row["name"],
        created=row["created"],
    )


def status_filter(status: ImageStatus | Iterable[ImageStatus] | None) -> tuple[str, list]:
    if status is None:
        return "", []
    values = (
        [ImageStatus(status).value]
        if isinstance(status, str)
        else [ImageStatus(s).value for s in status]
    )
    return f"status IN ({', '.join('?' * len(values))})", values
