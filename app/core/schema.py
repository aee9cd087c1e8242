"""The project database's schema, as forward migrations.

``MIGRATIONS[k]`` brings a store from ``PRAGMA user_version`` k to k + 1; a new schema
version is a new list appended here, never an edit of an old one.
"""

from app.core.types import ImageStatus, Source

_STATUSES = ", ".join(f"'{s.value}'" for s in ImageStatus)
_SOURCES = ", ".join(f"'{s.value}'" for s in Source)

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
]
SCHEMA_VERSION = len(MIGRATIONS)
