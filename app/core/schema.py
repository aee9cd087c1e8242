"""The project database's schema, as forward migrations.

``MIGRATIONS[k]`` brings a store from ``PRAGMA user_version`` k to k + 1; a new schema
version is a new list appended here, never an edit of an old one.
"""

from app.core.types import ImageStatus, Source

_STATUSES = ", ".join(f"'{s.value}'" for s in ImageStatus)
_SOURCES = ", ".join(f"'{s.value}'" for s in Source)

# Meta-table key prefixes of schema 2, moved into columns by the schema-3 migration.
_PROPOSED_BY = "proposed_by/"
_SCORED_BY = "scored_by/"
_ACCEPTED = "accepted:"

# Forward migrations: MIGRATIONS[k] brings a store from user_version k to k + 1.
MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            size_bytes INTEGER NOT NULL DEFAULT 0,
            mtime_ns INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'new' CHECK (status IN ({_STATUSES})),
            uncertainty REAL,
            split TEXT CHECK (split IN ('train', 'val')),
            missing INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX images_status ON images (status, path)",
        "CREATE INDEX images_uncertainty ON images (uncertainty)",
        """CREATE TABLE categories (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            color TEXT NOT NULL
        )""",
        """CREATE TABLE model_versions (
            id INTEGER PRIMARY KEY,
            card_id TEXT NOT NULL,
            path TEXT NOT NULL,
            parent_id INTEGER REFERENCES model_versions (id),
            categories TEXT NOT NULL DEFAULT '[]',
            metrics TEXT NOT NULL DEFAULT '{}',
            images_used INTEGER NOT NULL DEFAULT 0,
            name TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL
        )""",
        f"""CREATE TABLE instances (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
            category_id INTEGER NOT NULL REFERENCES categories (id),
            geometry BLOB NOT NULL,
            score REAL,
            source TEXT NOT NULL CHECK (source IN ({_SOURCES})),
            model_version INTEGER,
            created TEXT NOT NULL,
            modified TEXT NOT NULL
        )""",
        "CREATE INDEX instances_image ON instances (image_id)",
        "CREATE INDEX instances_category ON instances (category_id)",
    ],
    [
        # Proposals a reviewer deleted: the one outcome the instances table cannot show.
        """CREATE TABLE rejected_proposals (
            instance_id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
            model_version INTEGER,
            at TEXT NOT NULL
        )""",
    ],
    [
        # Per-image and per-instance review facts move out of the key/value meta table into
        # columns, so they go with their row and cannot outlive it.
        "ALTER TABLE images ADD COLUMN proposed_by TEXT",
        "ALTER TABLE images ADD COLUMN scored_by TEXT",
        "ALTER TABLE instances ADD COLUMN accepted INTEGER NOT NULL DEFAULT 0 "
        "CHECK (accepted IN (0, 1))",
        f"""UPDATE images SET
            proposed_by = (SELECT value FROM meta WHERE key = '{_PROPOSED_BY}' || images.id),
            scored_by = (SELECT value FROM meta WHERE key = '{_SCORED_BY}' || images.id)""",
        # ``accepted:<image_id>`` held a JSON list of instance ids; only unchanged proposals
        # on that image count (unreadable lists count as empty, as nothing could use them).
        f"""UPDATE instances SET accepted = 1
        WHERE source = '{Source.MODEL.value}' AND (image_id, id) IN (
            SELECT CAST(substr(m.key, {len(_ACCEPTED) + 1}) AS INTEGER), j.value
            FROM meta AS m, json_each(
                CASE WHEN json_valid(m.value) AND json_type(m.value) = 'array'
                THEN m.value ELSE '[]' END
            ) AS j
            WHERE m.key GLOB '{_ACCEPTED}*'
        )""",
        f"""DELETE FROM meta WHERE key GLOB '{_PROPOSED_BY}*' OR key GLOB '{_SCORED_BY}*'
            OR key GLOB '{_ACCEPTED}*'""",
    ],
    [
        # COCO crowd regions (iscrowd=1): kept through import and export, left out of
        # training targets, kept for evaluation.
        "ALTER TABLE instances ADD COLUMN crowd INTEGER NOT NULL DEFAULT 0 CHECK (crowd IN (0, 1))",
    ],
    [
        # Why the last proposal run could not propose the image (shown by `maskloop info`).
        "ALTER TABLE images ADD COLUMN error TEXT",
    ],
    [
        # How each outline was made (proposal, assisted, drawn, edited, imported). Rows of
        # older projects get what their source says; a person's instances count as drawn,
        # since nothing tells drawn, assisted and imported ones apart any more.
        "ALTER TABLE instances ADD COLUMN provenance TEXT NOT NULL DEFAULT 'drawn' "
        "CHECK (provenance IN ('proposal', 'assisted', 'drawn', 'edited', 'imported'))",
        "UPDATE instances SET provenance = CASE source WHEN 'model' THEN 'proposal' "
        "WHEN 'model_edited' THEN 'edited' ELSE 'drawn' END",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
