"""The SQLite project store: one ``maskloop.sqlite`` file in the project folder.

Every public write is one transaction that is committed before the call returns (WAL,
``synchronous=NORMAL``), so an annotator never loses an edit and a crash never leaves a
half-written image. Writes can be grouped with :meth:`ProjectStore.transaction`.

A store object belongs to the thread that opened it; other threads open their own
(WAL lets readers and one writer work side by side).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.core.polygon_codec import encode_polygons
from app.core.schema import MIGRATIONS, SCHEMA_VERSION
from app.core.store_errors import (
    CategoryInUseError,
    NotFoundError,
    ProjectNotFoundError,
    SchemaTooNewError,
    StoreError,
    store_error,
)
from app.core.store_rows import (
    INSTANCE_COLUMNS,
    ORDERS,
    image_from_row,
    instances_from_tuples,
    status_filter,
    version_from_row,
)
from app.core.types import (
    Category,
    ImageRecord,
    ImageStatus,
    Instance,
    ModelVersion,
    ProposalOutcomes,
    Provenance,
    Source,
)

log = logging.getLogger(__name__)

DB_NAME = "maskloop.sqlite"
MODELS_DIR = "models"

DEFAULT_COLORS = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
    "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000",
)  # fmt: skip


LOCK_TIMEOUT_S = 30.0  # how long a write waits for another process's write to finish


@dataclass(frozen=True)
class NewImage:
    """An image about to be added: path relative to the project folder, POSIX style."""

    path: str
    width: int
    height: int
    size_bytes: int = 0
    mtime_ns: int = 0


def default_color(index: int) -> str:
    """The colour the ``index``-th category gets when none is given."""
    return DEFAULT_COLORS[index % len(DEFAULT_COLORS)]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ProjectStore:
    """A project: a folder whose ``maskloop.sqlite`` holds images, categories, instances and models."""

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = root
        self._conn = conn
        self._depth = 0
        self._lock_timeout = LOCK_TIMEOUT_S  # the connection's own, set when it was opened

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def create(cls, folder: Path | str) -> ProjectStore:
        """Create a new project in ``folder`` (made if missing); refuse an existing one."""
        folder = Path(folder)
        if (folder / DB_NAME).exists():
            raise StoreError(f"{folder} already holds a MaskLoop project; open it instead.")
        return cls.open(folder, create=True)

    @classmethod
    def open(cls, folder: Path | str, *, create: bool = False) -> ProjectStore:
        """Open the project in ``folder``; with ``create`` a missing one is made."""
        folder = Path(folder).expanduser().resolve()
        db = folder / DB_NAME
        if not db.exists():
            if not create:
                raise ProjectNotFoundError(
                    f"{folder} is not a MaskLoop project (no {DB_NAME}). "
                    f"Create one with: maskloop init {folder} --images IMAGE_FOLDER"
                )
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create project folder {folder}: {exc.strerror}") from exc
        try:
            conn = sqlite3.connect(db, isolation_level=None, timeout=LOCK_TIMEOUT_S)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(folder, conn)
            store._migrate()
        except sqlite3.OperationalError as exc:
            raise store_error(exc, db) from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{db} is not a readable MaskLoop project database: {exc}") from exc
        return store

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self._conn.close()
            raise SchemaTooNewError(
                f"{self.root} was written by a newer MaskLoop (project schema {version}, "
                f"this version reads up to {SCHEMA_VERSION}). Update MaskLoop to open it."
            )
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            # Read again under the write lock: another process may have migrated meanwhile.
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version, SCHEMA_VERSION):
                log.info("migrating project %s: schema %d -> %d", self.root, step, step + 1)
                for statement in MIGRATIONS[step]:
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ProjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @contextmanager
    def transaction(self, *, lock_timeout: float | None = None) -> Iterator[None]:
        """Group writes: all of them are committed together, or none if an exception escapes.

        SQLite's own failures (locked by another writer past ``lock_timeout`` seconds,
        default :data:`LOCK_TIMEOUT_S`; disk full) leave as :class:`StoreLockedError` /
        :class:`StoreFullError`.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            if lock_timeout is not None:
                self._conn.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise store_error(exc, self.db_path) from exc
        finally:
            if lock_timeout is not None:
                self._conn.execute(f"PRAGMA busy_timeout = {int(self._lock_timeout * 1000)}")
        self._depth = 1
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException as exc:
            if self._conn.in_transaction:  # SQLite may have rolled back already (disk full)
                self._conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise store_error(exc, self.db_path) from exc
            raise
        finally:
            self._depth = 0

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (Ctrl+S in the GUI; edits are durable without it)."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def integrity_ok(self) -> bool:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- meta -------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- images -----------------------------------------------------------------------------

    def add_images(self, rows: Iterable[NewImage]) -> list[int]:
        """Add images whose path is not in the project yet; returns the new ids."""
        new_ids: list[int] = []
        with self.transaction():
            for row in rows:
                cur = self._conn.execute(
                    "INSERT INTO images (path, width, height, size_bytes, mtime_ns) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO NOTHING",
                    (row.path, row.width, row.height, row.size_bytes, row.mtime_ns),
                )
                if cur.rowcount:
                    new_ids.append(cur.lastrowid)
        return new_ids

    def image(self, image_id: int) -> ImageRecord:
        row = self._conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"image {image_id} is not in the project")
        return image_from_row(row)

    def image_by_path(self, path: str) -> ImageRecord | None:
        row = self._conn.execute("SELECT * FROM images WHERE path = ?", (path,)).fetchone()
        return image_from_row(row) if row else None

    def images(
        self,
        *,
        status: ImageStatus | Iterable[ImageStatus] | None = None,
        order: str = "path",
        offset: int = 0,
        limit: int | None = None,
        include_missing: bool = False,
    ) -> list[ImageRecord]:
        """Images filtered by status, in a stable order, one page at a time."""
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; use one of {sorted(ORDERS)}")
        where, params = status_filter(status)
        clauses = [c for c in (where, "" if include_missing else "missing = 0") if c]
        sql = "SELECT * FROM images"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY {ORDERS[order]} LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        return [image_from_row(r) for r in self._conn.execute(sql, params)]

    def count_images(self, status: ImageStatus | Iterable[ImageStatus] | None = None) -> int:
        where, params = status_filter(status)
        sql = "SELECT COUNT(*) FROM images WHERE missing = 0" + (f" AND {where}" if where else "")
        return self._conn.execute(sql, params).fetchone()[0]

    def status_counts(self) -> dict[ImageStatus, int]:
        counts = dict.fromkeys(ImageStatus, 0)
        for status, n in self._conn.execute(
            "SELECT status, COUNT(*) FROM images WHERE missing = 0 GROUP BY status"
        ):
            counts[ImageStatus(status)] = n
        return counts

    def count_missing(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM images WHERE missing = 1").fetchone()[0]

    def _update_image(self, image_id: int, column: str, value: object) -> None:
        with self.transaction():
            cur = self._conn.execute(
                f"UPDATE images SET {column} = ? WHERE id = ?", (value, image_id)
            )
            if not cur.rowcount:
                raise NotFoundError(f"image {image_id} is not in the project")

    def set_image_status(self, image_id: int, status: ImageStatus) -> None:
        self._update_image(image_id, "status", ImageStatus(status).value)

    def set_uncertainty(self, image_id: int, value: float | None) -> None:
        self._update_image(image_id, "uncertainty", value)

    def set_split(self, image_id: int, split: str | None) -> None:
        if split not in ("train", "val", None):
            raise ValueError(f"split must be 'train', 'val' or None, not {split!r}")
        self._update_image(image_id, "split", split)

    def set_proposed_by(self, image_id: int, model_id: str | None) -> None:
        """Record the model whose proposals the image now holds (write it with them); None
        has the next proposal pass propose it again."""
        self._update_image(image_id, "proposed_by", model_id)

    def set_scored_by(self, image_id: int, model_id: str) -> None:
        """Record the model that computed the image's stored uncertainty."""
        self._update_image(image_id, "scored_by", model_id)

    def set_error(self, image_id: int, reason: str | None) -> None:
        """Record why proposing failed on the image (None: it did not)."""
        self._update_image(image_id, "error", reason)

    def failed_images(self) -> list[ImageRecord]:
        """Images the last proposal run could not propose, by path."""
        rows = self._conn.execute("SELECT * FROM images WHERE error IS NOT NULL ORDER BY path")
        return [image_from_row(r) for r in rows]

    def set_missing(self, image_ids: Iterable[int], missing: bool) -> None:
        with self.transaction():
            self._conn.executemany(
                "UPDATE images SET missing = ? WHERE id = ?", [(int(missing), i) for i in image_ids]
            )

    def abspath(self, image: ImageRecord) -> Path:
        return (self.root / image.path).resolve()

    # -- categories ---------------------------------------------------------------------------

    def categories(self) -> list[Category]:
        return [
            Category(r["id"], r["name"], r["color"])
            for r in self._conn.execute("SELECT * FROM categories ORDER BY id")
        ]

    def category(self, category_id: int) -> Category:
        row = self._conn.execute("SELECT * FROM categories WHERE id = ?", (category_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"category {category_id} is not in the project")
        return Category(row["id"], row["name"], row["color"])

    def category_by_name(self, name: str) -> Category | None:
        row = self._conn.execute("SELECT * FROM categories WHERE name = ?", (name,)).fetchone()
        return Category(row["id"], row["name"], row["color"]) if row else None

    def add_category(self, name: str, color: str | None = None, id: int | None = None) -> Category:
        """Add a category; ``id`` keeps a foreign id (COCO import), else the next free one."""
        name = name.strip()
        if not name:
            raise StoreError("a category needs a non-empty name")
        if self.category_by_name(name) is not None:
            raise StoreError(f"a category named {name!r} already exists")
        if (
            id is not None
            and self._conn.execute("SELECT 1 FROM categories WHERE id = ?", (id,)).fetchone()
        ):
            raise StoreError(f"category id {id} is already used")
        if color is None:
            n = self._conn.execute("SELECT COUNT(*) FROM categories").fetchone()[0]
            color = default_color(n)
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO categories (id, name, color) VALUES (?, ?, ?)", (id, name, color)
            )
        return Category(cur.lastrowid if id is None else id, name, color)

    def used_category_ids(self) -> set[int]:
        """Ids of the categories that have instances (one indexed query)."""
        return {r[0] for r in self._conn.execute("SELECT DISTINCT category_id FROM instances")}

    def update_category(
        self, category_id: int, *, name: str | None = None, color: str | None = None
    ) -> Category:
        current = self.category(category_id)
        new_name = current.name if name is None else name.strip()
        if not new_name:
            raise StoreError("a category needs a non-empty name")
        other = self.category_by_name(new_name)
        if other is not None and other.id != category_id:
            raise StoreError(f"a category named {new_name!r} already exists")
        updated = Category(category_id, new_name, current.color if color is None else color)
        with self.transaction():
            self._conn.execute(
                "UPDATE categories SET name = ?, color = ? WHERE id = ?",
                (updated.name, updated.color, category_id),
            )
        return updated

    def delete_category(
        self, category_id: int, *, reassign_to: int | None = None, delete_instances: bool = False
    ) -> None:
        """Delete a category. Its instances must be moved (``reassign_to``) or deleted explicitly."""
        self.category(category_id)
        used = self._conn.execute(
            "SELECT COUNT(*) FROM instances WHERE category_id = ?", (category_id,)
        ).fetchone()[0]
        with self.transaction():
            if used:
                if reassign_to is not None:
                    if reassign_to == category_id:
                        raise StoreError("cannot reassign a category's instances to itself")
                    self.category(reassign_to)
                    self._conn.execute(
                        "UPDATE instances SET category_id = ?, modified = ? WHERE category_id = ?",
                        (reassign_to, _now(), category_id),
                    )
                elif delete_instances:
                    self._conn.execute(
                        "DELETE FROM instances WHERE category_id = ?", (category_id,)
                    )
                else:
                    raise CategoryInUseError(
                        f"category {self.category(category_id).name!r} has {used} instances; "
                        "choose a category to move them to, or delete them explicitly"
                    )
            self._conn.execute("DELETE FROM categories WHERE id = ?", (category_id,))

    # -- instances ----------------------------------------------------------------------------

    def _instances_where(self, where: str, value: int) -> list[Instance]:
        cur = self._conn.cursor()
        cur.row_factory = None
        query = f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE {where}"
        return instances_from_tuples(cur.execute(query, (value,)).fetchall())

    def instances(self, image_id: int) -> list[Instance]:
        return self._instances_where("image_id = ? ORDER BY id", image_id)

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the project."""
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def instance(self, instance_id: int) -> Instance:
        found = self._instances_where("id = ?", instance_id)
        if not found:
            raise NotFoundError(f"instance {instance_id} is not in the project")
        return found[0]

    def count_instances(self, image_id: int | None = None) -> int:
        if image_id is None:
            return self._conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        return self._conn.execute(
            "SELECT COUNT(*) FROM instances WHERE image_id = ?", (image_id,)
        ).fetchone()[0]

    def images_with_human_work(self) -> set[int]:
        """Ids of the images holding an instance a person drew or edited (one query; the
        proposal pass leaves these images alone)."""
        return {
            row[0]
            for row in self._conn.execute(
                "SELECT DISTINCT image_id FROM instances WHERE source != ?", (Source.MODEL.value,)
            )
        }

    def instance_counts_by_source(self) -> dict[Source, int]:
        counts = dict.fromkeys(Source, 0)
        for source, n in self._conn.execute(
            "SELECT source, COUNT(*) FROM instances GROUP BY source"
        ):
            counts[Source(source)] = n
        return counts

    def instance_counts_by_provenance(self) -> dict[Provenance, int]:
        """How the project's outlines were made (what the assists saved drawing by hand)."""
        counts = dict.fromkeys(Provenance, 0)
        for provenance, n in self._conn.execute(
            "SELECT provenance, COUNT(*) FROM instances GROUP BY provenance"
        ):
            counts[Provenance(provenance)] = n
        return counts

    def _insert_instance(self, image_id: int, inst: Instance, now: str) -> Instance:
        try:
            cur = self._conn.execute(
                "INSERT INTO instances (id, image_id, category_id, geometry, score, source, "
                "model_version, crowd, provenance, created, modified) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    inst.id,
                    image_id,
                    inst.category_id,
                    encode_polygons(inst.polygons),
                    inst.score,
                    Source(inst.source).value,
                    inst.model_version,
                    int(inst.crowd),
                    inst.made_as.value,
                    now,
                    now,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(
                f"cannot add instance to image {image_id}: unknown image or category "
                f"{inst.category_id}, or id {inst.id} in use ({exc})"
            ) from exc
        saved = inst.copy()
        saved.id = cur.lastrowid if inst.id is None else inst.id
        saved.image_id = image_id
        saved.provenance = inst.made_as
        return saved

    def add_instances(self, image_id: int, instances: Iterable[Instance]) -> list[Instance]:
        """Add instances in one transaction; an instance with an ``id`` keeps it (undo of delete)."""
        now = _now()
        with self.transaction():
            return [self._insert_instance(image_id, inst, now) for inst in instances]

    def add_instance(self, image_id: int, instance: Instance) -> Instance:
        return self.add_instances(image_id, [instance])[0]

    def apply_edit(
        self,
        image_id: int,
        *,
        add: Iterable[Instance] = (),
        update: Iterable[Instance] = (),
        delete: Iterable[int] = (),
        status: ImageStatus | None = None,
        discard: Iterable[int] = (),
    ) -> list[Instance]:
        """One annotator edit on one image, committed as one transaction.

        ``status`` sets the image status; when it is None an image that is still ``new`` or
        ``proposed`` becomes ``in_progress``, because a person has now worked on it (and
        proposals must never overwrite it). ``discard`` deletes like ``delete`` but a
        proposal deleted this way is not logged as rejected (it was hidden below the score
        threshold: nobody saw it). Returns the added instances with their ids.
        """
        now = _now()
        with self.transaction():
            image = self.image(image_id)
            delete, discard = list(delete), list(discard)
            rejected = set(delete)
            for instance_id in [*delete, *discard]:
                if instance_id in rejected:
                    self._log_if_rejected(image_id, instance_id, now)
                cur = self._conn.execute(
                    "DELETE FROM instances WHERE id = ? AND image_id = ?", (instance_id, image_id)
                )
                if not cur.rowcount:
                    raise NotFoundError(f"instance {instance_id} is not on image {image_id}")
            for inst in update:
                if inst.id is None:
                    raise StoreError("cannot update an instance that was never saved")
                source = Source(inst.source).value
                # Only an unchanged proposal can be accepted: an edit made by a person ends it.
                cur = self._conn.execute(
                    "UPDATE instances SET category_id = ?, geometry = ?, score = ?, source = ?, "
                    "model_version = ?, crowd = ?, provenance = ?, modified = ?, "
                    "accepted = accepted AND ? WHERE id = ? AND image_id = ?",
                    (
                        inst.category_id,
                        encode_polygons(inst.polygons),
                        inst.score,
                        source,
                        inst.model_version,
                        int(inst.crowd),
                        inst.made_as.value,
                        now,
                        source == Source.MODEL.value,
                        inst.id,
                        image_id,
                    ),
                )
                if not cur.rowcount:
                    raise NotFoundError(f"instance {inst.id} is not on image {image_id}")
            added = [self._insert_instance(image_id, inst, now) for inst in add]
            # Re-adding a deleted proposal with its id is the undo of its rejection.
            self._conn.executemany(
                "DELETE FROM rejected_proposals WHERE instance_id = ?",
                [(inst.id,) for inst in add if inst.id is not None],
            )
            if status is not None:
                new_status = ImageStatus(status)
            elif image.status in (ImageStatus.NEW, ImageStatus.PROPOSED):
                new_status = ImageStatus.IN_PROGRESS
            else:
                new_status = image.status
            if new_status != image.status:
                self._conn.execute(
                    "UPDATE images SET status = ? WHERE id = ?", (new_status.value, image_id)
                )
        return added

    def accepted_ids(self, image_id: int) -> set[int]:
        """The image's proposals a reviewer accepted unchanged."""
        rows = self._conn.execute(
            "SELECT id FROM instances WHERE image_id = ? AND accepted = 1", (image_id,)
        )
        return {row[0] for row in rows}

    def set_accepted(self, instance_ids: Iterable[int], accepted: bool) -> None:
        """Mark proposals accepted unchanged (or not); only ``source=model`` ones can be."""
        ids = list(dict.fromkeys(instance_ids))
        sql = "UPDATE instances SET accepted = ? WHERE id = ?"
        if accepted:
            sql += f" AND source = '{Source.MODEL.value}'"
        with self.transaction():
            cur = self._conn.executemany(sql, [(int(accepted), i) for i in ids])
            if cur.rowcount != len(ids):
                self._raise_not_acceptable(ids)

    def _raise_not_acceptable(self, ids: list[int]) -> None:
        found = {
            row[0]: row[1]
            for row in self._conn.execute(
                f"SELECT id, source FROM instances WHERE id IN ({', '.join('?' * len(ids))})", ids
            )
        }
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFoundError(f"instances {missing} are not in the project")
        edited = [i for i in ids if found[i] != Source.MODEL.value]
        raise StoreError(
            f"instances {edited} are not unchanged model proposals; only those can be accepted"
        )

    def _log_if_rejected(self, image_id: int, instance_id: int, now: str) -> None:
        row = self._conn.execute(
            "SELECT source, model_version FROM instances WHERE id = ? AND image_id = ?",
            (instance_id, image_id),
        ).fetchone()
        if row is not None and row["source"] == Source.MODEL.value:
            self._conn.execute(
                "INSERT OR REPLACE INTO rejected_proposals (instance_id, image_id, "
                "model_version, at) VALUES (?, ?, ?, ?)",
                (instance_id, image_id, row["model_version"], now),
            )

    def proposal_outcomes(self, min_score: float = 0.0) -> list[ProposalOutcomes]:
        """Per model version: proposals accepted, edited, rejected, pending, and hand-drawn
        instances on the done images it proposed for (the measure of what the loop saves).

        Pending proposals scoring below ``min_score`` (the score threshold: hidden, not yet
        anything to review) are not counted.
        """
        out: dict[int | None, ProposalOutcomes] = {}

        def get(version: int | None) -> ProposalOutcomes:
            return out.setdefault(version, ProposalOutcomes(version))

        done = ImageStatus.DONE.value
        for version, source, is_done, shown, n in self._conn.execute(
            "SELECT i.model_version, i.source, im.status = ?, "
            "i.score IS NULL OR i.score >= ?, COUNT(*) FROM instances i "
            "JOIN images im ON im.id = i.image_id WHERE i.source != ? "
            "GROUP BY 1, 2, 3, 4",
            (done, min_score, Source.HUMAN.value),
        ):
            stats = get(version)
            if source == Source.MODEL_EDITED.value:
                stats.edited += n
            elif is_done:
                stats.accepted += n
            elif shown:
                stats.pending += n
        for version, n in self._conn.execute(
            "SELECT model_version, COUNT(*) FROM rejected_proposals GROUP BY model_version"
        ):
            get(version).rejected += n
        for version, n in self._conn.execute(
            "SELECT v.model_version, COUNT(*) FROM instances h JOIN images im "
            "ON im.id = h.image_id AND im.status = ? JOIN ("
            "  SELECT DISTINCT image_id, model_version FROM instances WHERE source != ? "
            "  UNION SELECT image_id, model_version FROM rejected_proposals"
            ") v ON v.image_id = h.image_id WHERE h.source = ? GROUP BY v.model_version",
            (done, Source.HUMAN.value, Source.HUMAN.value),
        ):
            get(version).added_by_hand += n
        return sorted(
            out.values(), key=lambda o: (o.model_version is not None, o.model_version or 0)
        )

    def replace_proposals(
        self, image_id: int, instances: Sequence[Instance], model_version: int | None
    ) -> bool:
        """Store model proposals for an image nobody has worked on; False if it was left alone.

        Proposals never overwrite human work: an image that is in progress, done or skipped,
        or that holds any human or edited instance, is not touched.
        """
        now = _now()
        with self.transaction():
            image = self.image(image_id)
            if image.status not in (ImageStatus.NEW, ImageStatus.PROPOSED):
                return False
            human = self._conn.execute(
                "SELECT COUNT(*) FROM instances WHERE image_id = ? AND source != ?",
                (image_id, Source.MODEL.value),
            ).fetchone()[0]
            if human:
                return False
            self._conn.execute("DELETE FROM instances WHERE image_id = ?", (image_id,))
            for inst in instances:
                proposal = inst.copy()
                proposal.id = None
                proposal.source = Source.MODEL
                proposal.provenance = Provenance.PROPOSAL
                proposal.model_version = model_version
                self._insert_instance(image_id, proposal, now)
            self._conn.execute(
                "UPDATE images SET status = ? WHERE id = ?", (ImageStatus.PROPOSED.value, image_id)
            )
        return True

    # -- model versions -----------------------------------------------------------------------

    def add_model_version(
        self,
        card_id: str,
        path: str,
        *,
        parent_id: int | None = None,
        categories: Iterable[Category] = (),
        metrics: dict[str, float] | None = None,
        images_used: int = 0,
        name: str = "",
    ) -> ModelVersion:
        cats = [{"id": c.id, "name": c.name, "color": c.color} for c in categories]
        created = _now()
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO model_versions (card_id, path, parent_id, categories, metrics, "
                "images_used, name, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    card_id,
                    path,
                    parent_id,
                    json.dumps(cats),
                    json.dumps(metrics or {}),
                    images_used,
                    name,
                    created,
                ),
            )
        return self.model_version(cur.lastrowid)

    def model_versions(self) -> list[ModelVersion]:
        return [
            version_from_row(r)
            for r in self._conn.execute("SELECT * FROM model_versions ORDER BY id")
        ]

    def model_version(self, version_id: int) -> ModelVersion:
        row = self._conn.execute(
            "SELECT * FROM model_versions WHERE id = ?", (version_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"model version {version_id} is not in the project")
        return version_from_row(row)

    def next_model_version_id(self) -> int:
        """The id the next registered version will get (names its files before the row exists)."""
        row = self._conn.execute("SELECT MAX(id) FROM model_versions").fetchone()
        return (row[0] or 0) + 1

    # -- lookups answered in SQL (no listing of the whole project) ------------------------------

    def next_image(
        self,
        current_id: int | None,
        *,
        status: ImageStatus | Iterable[ImageStatus],
        order: str = "path",
    ) -> int | None:
        """The first image with ``status`` after ``current_id`` in ``order``, wrapping round
        to the first; never ``current_id`` itself; None when no other image qualifies.

        One query however large the project (the GUI asks on every "next image").
        """
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; use one of {sorted(ORDERS)}")
        where, params = status_filter(status)
        current = -1 if current_id is None else current_id
        row = self._conn.execute(
            f"WITH listed AS (SELECT id, status, ROW_NUMBER() OVER (ORDER BY {ORDERS[order]}) "
            "AS pos FROM images WHERE missing = 0) "
            f"SELECT id FROM listed WHERE {where} AND id != ? "
            "ORDER BY pos <= (SELECT pos FROM listed WHERE id = ?), pos LIMIT 1",
            [*params, current, current],
        ).fetchone()
        return None if row is None else row[0]

    def instance_ids(self, image_id: int) -> list[int]:
        """Ids of an image's instances, without decoding their outlines."""
        rows = self._conn.execute(
            "SELECT id FROM instances WHERE image_id = ? ORDER BY id", (image_id,)
        )
        return [r[0] for r in rows]
