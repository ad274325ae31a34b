"""Store: projects, images, masks and defect types in SQLite, and the plumbing every part shares.

One database file plus a folder of content-addressed image blobs per studio. Durability rules:

- WAL journal, `synchronous=FULL`, foreign keys on, a busy timeout; every change that touches more
  than one row runs in one `BEGIN IMMEDIATE` transaction (taking the write lock up front, so two
  processes writing at once queue behind the busy timeout instead of failing on a lock upgrade).
- An image blob is written atomically (temp + fsync + rename) *inside* the write transaction,
  before the row naming it commits; blob files are deleted only inside a write transaction after
  checking that no row names them. So every committed row names a complete file.
- Masks are 1-bit PNGs stored in the masks table itself: a mask version commits or it does not.
- Bad input raises `ValueError` (`fsad_core.images.ImageError` for pixels) before anything is
  written; text users type is bound as SQL parameters and stored as given.

The connection is shared by the threads of one process behind a lock (Gradio runs handlers in a
thread pool); other processes open their own `Store` on the same folder.

`Store` is assembled from one module per job: `storage.paths` (where the files live),
`storage.values` (error types and checks on what users give), `storage.embeddings`
(`store.embeddings`, the embeddings cache), and the mixins `storage.records` (weight presets and
runs), `storage.decisions` (thresholds, verdicts, review labels), `storage.bulk` (a whole project
in one transaction, for folder imports) and `storage.maintenance` (check, backup, purge). The
names this module has always offered are still importable from it.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from sqlite_utils import Database

from fsad_core.images import sha256_of_array, to_mask_array, to_rgb_array
from fsad_core.names import display

from . import health, migrations
from .blobs import BlobDir, decode_mask_png, encode_mask_png, encode_rgb_png
from .bulk import BulkInsertMixin, NewImage
from .decisions import DecisionsMixin
from .embeddings import EmbeddingCache
from .maintenance import ORPHAN_GRACE_S, MaintenanceMixin
from .paths import (
    BLOB_DIRNAME,
    DB_FILENAME,
    DB_SUFFIXES,
    PERSONALIZE_DIRNAME,
    default_data_dir,
    personalize_root,
    resolve_paths,
)
from .records import RecordsMixin
from .values import (
    MAX_FILENAME_CHARS,
    MAX_NAME_CHARS,
    ROLES,
    DamagedStoreError,
    NotFoundError,
    StoreError,
    WriteLockBusy,
    check_filename,
    check_name,
    int_id,
    now,
    read_filename,
)

__all__ = [  # this module's public names, the moved ones included (callers import them from here)
    "BLOB_DIRNAME", "BUSY_TIMEOUT_S", "DB_FILENAME", "DB_SUFFIXES", "DEFAULT_EMBEDDING_CACHE_MB",
    "DEFAULT_IMAGE_CACHE_MB", "MAX_FILENAME_CHARS", "MAX_NAME_CHARS", "ORPHAN_GRACE_S", "PERSONALIZE_DIRNAME",
    "ROLES", "DamagedStoreError", "EmbeddingCache", "NewImage", "NotFoundError", "Store", "StoreError",
    "check_filename", "check_name", "default_data_dir", "now", "resolve_paths",
]

BUSY_TIMEOUT_S = 30.0
DEFAULT_EMBEDDING_CACHE_MB = 512
DEFAULT_IMAGE_CACHE_MB = 256  # decoded images kept in memory per Store (the UI re-reads galleries often)


class Store(DecisionsMixin, RecordsMixin, BulkInsertMixin, MaintenanceMixin):
    """The studio's persistent state. See the module docstring for the durability rules.

    >>> import tempfile; s = Store(tempfile.mkdtemp())
    >>> pid = s.create_project("bottles", class_name="bottle")
    >>> s.get_project(pid)["name"]
    'bottles'
    >>> s.close()
    """

    def __init__(self, path: str | os.PathLike | None = None, *, embedding_cache_mb: float = DEFAULT_EMBEDDING_CACHE_MB,
                 image_cache_mb: float = DEFAULT_IMAGE_CACHE_MB, create: bool = True):
        """Open the store at `path` (see `resolve_paths`), applying pending migrations.

        `create=False` opens an existing store only: a path without a database raises
        `NotFoundError` and creates nothing (the read-only CLI commands use it, so a typo in
        `--data-dir` is an error rather than a new empty studio). Either way the database is opened
        and checked before any folder is made, so a path naming something that is not an
        fsad-studio database fails with `StoreError` and leaves nothing behind.
        """
        self.db_path, blob_root = resolve_paths(path)
        self.path = Path(path).expanduser() if path is not None else self.db_path.parent
        self.personalize_dir = personalize_root(self.db_path, blob_root)
        self._lock = threading.RLock()
        self._depth = 0  # nesting of _write() blocks on this connection
        if not create and not self.db_path.is_file():
            raise NotFoundError(
                f"There is no fsad-studio database at {self.db_path}; check the data folder "
                "(--data-dir / FSAD_DATA_DIR). Nothing was created."
            )
        if create:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = None
        try:
            if create:
                conn = sqlite3.connect(str(self.db_path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            else:  # mode=rw: never create the file, even if it vanished since the check above
                conn = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=rw", uri=True,
                                       timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            self.db = Database(conn, execute_plugins=False)  # no third-party hooks on our connection
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = _enable_wal(conn)  # reads the header first: fails here on a file that is not a database
            if str(mode).lower() != "wal":
                raise StoreError(f"Could not switch {self.db_path} to WAL mode (got {mode!r}); is it on a network drive?")
            conn.execute("PRAGMA synchronous = FULL")  # a power cut never loses a save that returned
            conn.execute("PRAGMA foreign_keys = ON")
            migrations.migrate(self.db)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
                if _has_sqlite_header(self.db_path):  # a database, but a damaged one: say so
                    raise DamagedStoreError(
                        f"The database {display(str(self.db_path))} is damaged ({exc}); nothing was changed. "
                        f"`python -m storage check --data-dir {display(str(self.path))}` says what is damaged. "
                        + health.recovery_hint(self.path)) from None
                raise StoreError(f"{self.db_path} is not an fsad-studio database ({exc}); point --data-dir / "
                                 "FSAD_DATA_DIR at a data folder or a studio .db file.") from None
            if isinstance(exc, sqlite3.OperationalError) and not create and "unable to open" in str(exc):
                raise NotFoundError(f"Could not open the database {self.db_path} ({exc}).") from None
            raise
        # only now that the database is known to be ours: the blob folder (not for create=False)
        self.blobs = BlobDir(blob_root, create=create)
        self.embeddings = EmbeddingCache(self, max_bytes=int(embedding_cache_mb * 1_000_000))
        # decoded pixels by sha256: blobs are immutable, so this cache can never be stale
        self._pixels: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pixels_budget = int(image_cache_mb * 1_000_000)

    def project_dir(self, pid: int) -> Path:
        """`<data dir>/personalize/project-<id>/`: files kept next to the store for one project
        (One-to-Normal's LoRA weights and generated pool). `backup` copies them; `purge` removes
        a purged project's folder. The folder is not created here."""
        return self.personalize_dir / f"project-{int_id(pid, 'project id')}"

    # -- plumbing -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            emb = getattr(self, "embeddings", None)
            if emb is not None:
                with contextlib.suppress(sqlite3.Error, StoreError):
                    emb.flush(wait=False)  # best effort: never hold up a close behind another writer
            try:
                self.db.conn.close()
            except sqlite3.ProgrammingError:
                pass

    @property
    def schema_version(self) -> int:
        with self._lock:
            return migrations.user_version(self.db)

    @contextlib.contextmanager
    def _write(self, *, wait: bool = True):
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); nested blocks join the outer one.
        wait=False: try the database's write lock once and raise `WriteLockBusy` (nothing done) when
        another process holds it, instead of queueing up to the busy timeout."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.db
                finally:
                    self._depth -= 1
                return
            conn = self.db.conn
            if wait:
                conn.execute("BEGIN IMMEDIATE")
            else:
                conn.execute("PRAGMA busy_timeout = 0")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    raise WriteLockBusy() from exc
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._depth = 1
            try:
                yield self.db
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                self._depth = 0

    def _one(self, sql: str, params: Iterable = ()) -> dict | None:
        with self._lock:
            rows = list(self.db.query(sql, list(params)))
        return rows[0] if rows else None

    def _all(self, sql: str, params: Iterable = ()) -> list[dict]:
        with self._lock:
            return list(self.db.query(sql, list(params)))

    # -- projects -------------------------------------------------------------------------------
    def create_project(self, name: str, class_name: str = "object") -> int:
        """A new project; names are unique among active (not deleted) projects."""
        name = check_name(name, "project name")
        class_name = check_name(class_name, "object class name")
        ts = now()
        with self._write() as db:
            if self._active_by_name(name) is not None:
                raise StoreError(f"A project named {name!r} already exists; open it or choose another name.")
            return int(db["projects"].insert(
                {"name": name, "class_name": class_name, "created_at": ts, "updated_at": ts, "deleted_at": None}
            ).last_pk)

    def _active_by_name(self, name: str) -> dict | None:
        return self._one("SELECT * FROM projects WHERE name = ? AND deleted_at IS NULL", [name])

    def _project_row(self, pid: int, *, active: bool = True) -> dict:
        row = self._one("SELECT * FROM projects WHERE id = ?", [int_id(pid, "project id")])
        if row is None:
            raise NotFoundError(f"There is no project {pid}.")
        if active and row["deleted_at"] is not None:
            raise StoreError(f"Project {row['name']!r} ({pid}) is deleted; restore it first (restore_project).")
        return row

    def get_project(self, pid: int, *, include_deleted: bool = False) -> dict | None:
        """{id, name, class_name, created_at, updated_at, deleted_at} or None if unknown / deleted."""
        row = self._one("SELECT * FROM projects WHERE id = ?", [int_id(pid, "project id")])
        if row is None or (row["deleted_at"] is not None and not include_deleted):
            return None
        return row

    def find_project(self, name: str) -> dict | None:
        """The active project with exactly this name, or None."""
        if not isinstance(name, str):
            return None
        return self._active_by_name(name)

    def list_projects(self, *, include_deleted: bool = False) -> list[dict]:
        """Projects in creation order, with image counts per role (`n_normal`, `n_anomalous`, `n_query`)."""
        where = "" if include_deleted else "WHERE p.deleted_at IS NULL"
        return self._all(
            f"""SELECT p.*,
                  (SELECT count(*) FROM images i WHERE i.project_id = p.id AND i.removed_at IS NULL
                     AND i.role = 'normal') AS n_normal,
                  (SELECT count(*) FROM images i WHERE i.project_id = p.id AND i.removed_at IS NULL
                     AND i.role = 'anomalous') AS n_anomalous,
                  (SELECT count(*) FROM images i WHERE i.project_id = p.id AND i.removed_at IS NULL
                     AND i.role = 'query') AS n_query
                FROM projects p {where} ORDER BY p.id"""
        )

    def rename_project(self, pid: int, name: str) -> None:
        name = check_name(name, "project name")
        with self._write() as db:
            row = self._project_row(pid)
            other = self._active_by_name(name)
            if other is not None and other["id"] != row["id"]:
                raise StoreError(f"A project named {name!r} already exists; choose another name.")
            db["projects"].update(row["id"], {"name": name, "updated_at": now()})

    def set_class_name(self, pid: int, class_name: str) -> None:
        class_name = check_name(class_name, "object class name")
        with self._write() as db:
            row = self._project_row(pid)
            db["projects"].update(row["id"], {"class_name": class_name, "updated_at": now()})

    def delete_project(self, pid: int) -> None:
        """Soft delete: hidden from lists, restorable with `restore_project` until `purge`."""
        with self._write() as db:
            row = self._project_row(pid)
            ts = now()
            db["projects"].update(row["id"], {"deleted_at": ts, "updated_at": ts})

    def restore_project(self, pid: int) -> None:
        with self._write() as db:
            row = self._project_row(pid, active=False)
            if row["deleted_at"] is None:
                return
            if self._active_by_name(row["name"]) is not None:
                raise StoreError(
                    f"Another project is now named {row['name']!r}; rename that one first, then restore."
                )
            db["projects"].update(row["id"], {"deleted_at": None, "updated_at": now()})

    # -- images ---------------------------------------------------------------------------------
    def add_image(self, pid: int, data, role: str = "normal", filename: str | bytes | None = None) -> int:
        """Store an image (bytes, path, PIL image or array) in project `pid`; returns the image id.

        The pixels are decoded and normalised to uint8 RGB exactly as the engine does
        (`fsad_core.images.to_rgb_array`); the blob is named by their sha256, so the same picture
        added twice is one file (and two rows, each with its own role and filename). `filename` may
        be any file name, bytes that are not UTF-8 included (see `check_filename`).
        """
        if role not in ROLES:
            raise StoreError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
        if filename is None and isinstance(data, (str, os.PathLike)):
            filename = Path(data).name
        if filename is not None:
            filename = check_filename(filename)
        self._project_row(pid)  # fail fast, before decoding
        rgb = to_rgb_array(data)
        sha = sha256_of_array(rgb)
        h, w = rgb.shape[:2]
        png = None if self.blobs.exists(sha) else encode_rgb_png(rgb)  # the slow part, outside the lock
        with self._write() as db:
            self._project_row(pid)
            self._ensure_blob(sha, rgb, png, w, h)
            return int(db["images"].insert({
                "project_id": int(pid), "sha256": sha, "role": role, "filename": filename,
                "defect_type_id": None, "created_at": now(), "removed_at": None,
            }).last_pk)

    def _ensure_blob(self, sha: str, rgb: np.ndarray | None, png: bytes | None, w: int, h: int) -> int:
        """Inside a write transaction: make sure the blob file and its row exist; returns its size."""
        path = self.blobs.path(sha)
        if not path.is_file():
            if png is None:
                if rgb is None:
                    raise StoreError(f"The blob {sha} vanished before it was recorded; add the image again.")
                png = encode_rgb_png(rgb)
            self.blobs.write(sha, png)
        size = path.stat().st_size
        self.db.execute(
            "INSERT OR IGNORE INTO blobs (sha256, width, height, bytes, created_at) VALUES (?, ?, ?, ?, ?)",
            [sha, int(w), int(h), int(size), now()],
        )
        return size

    def _image_row(self, iid: int, *, active: bool = False) -> dict:
        row = self._one(
            """SELECT i.*, b.width, b.height, b.bytes, d.name AS defect_type, p.deleted_at AS project_deleted_at
               FROM images i JOIN blobs b ON b.sha256 = i.sha256 JOIN projects p ON p.id = i.project_id
               LEFT JOIN defect_types d ON d.id = i.defect_type_id WHERE i.id = ?""",
            [int_id(iid, "image id")],
        )
        if row is None:
            raise NotFoundError(f"There is no image {iid}.")
        if active and row["removed_at"] is not None:
            raise StoreError(f"Image {iid} was removed; restore it first (restore_image).")
        if active and row["project_deleted_at"] is not None:
            raise StoreError(f"Image {iid} belongs to a deleted project; restore the project first.")
        return row

    def get_image(self, iid: int) -> dict:
        """{id, project_id, sha256, role, filename, filename_b64, width, height, size, bytes, defect_type,
        has_mask, created_at, removed_at, path} - `path` is the blob file (read-only: never modify it);
        `filename_b64` is None unless the name is not UTF-8 (see `check_filename`)."""
        row = read_filename(self._image_row(iid))
        row.pop("project_deleted_at", None)
        row.pop("defect_type_id", None)
        last = self._one("SELECT area FROM masks WHERE image_id = ? ORDER BY id DESC LIMIT 1", [row["id"]])
        row["has_mask"] = bool(last and last["area"] > 0)
        row["size"] = (row["width"], row["height"])
        row["path"] = str(self.blobs.path(row["sha256"]))
        return row

    def read_image(self, iid: int) -> np.ndarray:
        """The image's pixels, uint8 (H, W, 3) (a fresh copy: the caller may modify it)."""
        sha = self._image_row(iid)["sha256"]
        with self._lock:
            cached = self._pixels.get(sha)
            if cached is not None:
                self._pixels.move_to_end(sha)
                return cached.copy()
        rgb = self.blobs.read(sha)  # PNG decoding: ~50 ms per megapixel, outside the lock
        if rgb.nbytes <= self._pixels_budget:
            with self._lock:
                self._pixels[sha] = rgb
                total = sum(a.nbytes for a in self._pixels.values())
                while total > self._pixels_budget:
                    total -= self._pixels.popitem(last=False)[1].nbytes
        return rgb.copy()

    def list_images(self, pid: int, role: str | None = None, *, include_removed: bool = False) -> list[dict]:
        """Images of a project in the order they were added, as dicts with id, sha256, role,
        filename, filename_b64 (see `get_image`), size ((width, height)), width, height, bytes (PNG blob size), defect_type,
        has_mask (latest mask non-empty), mask_versions, created_at, removed_at.

        NotFoundError for an unknown project id. A soft-deleted project's images are still listed
        (reads work on deleted projects until they are purged; only changes are refused)."""
        if role is not None and role not in ROLES:
            raise StoreError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
        self._project_row(pid, active=False)
        sql = """SELECT i.id, i.project_id, i.sha256, i.role, i.filename, b.width, b.height, b.bytes,
                   d.name AS defect_type, i.created_at, i.removed_at, i.validation_only,
                   (SELECT m.area FROM masks m WHERE m.image_id = i.id ORDER BY m.id DESC LIMIT 1) AS mask_area,
                   (SELECT count(*) FROM masks m WHERE m.image_id = i.id) AS mask_versions
                 FROM images i JOIN blobs b ON b.sha256 = i.sha256
                 LEFT JOIN defect_types d ON d.id = i.defect_type_id
                 WHERE i.project_id = ?"""
        params: list = [int_id(pid, "project id")]
        if not include_removed:
            sql += " AND i.removed_at IS NULL"
        if role is not None:
            sql += " AND i.role = ?"
            params.append(role)
        rows = self._all(sql + " ORDER BY i.id", params)
        for r in rows:
            read_filename(r)
            area = r.pop("mask_area")
            r["has_mask"] = bool(area)
            r["size"] = (r["width"], r["height"])
            r["validation_only"] = bool(r["validation_only"])
        return rows

    def set_role(self, iid: int, role: str) -> None:
        if role not in ROLES:
            raise StoreError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
        with self._write() as db:
            row = self._image_row(iid, active=True)
            db["images"].update(row["id"], {"role": role})

    def set_validation_only(self, iid: int, on: bool) -> None:
        """Mark a normal shot "for tuning only": weight tuning validates on it, no memory holds it."""
        with self._write() as db:
            row = self._image_row(iid, active=True)
            if on and row["role"] != "normal":
                raise StoreError("Only normal shots can be used for tuning only.")
            db["images"].update(row["id"], {"validation_only": 1 if on else 0})

    def remove_image(self, iid: int) -> None:
        """Take an image out of its project; its row, blob and masks stay until `purge`."""
        with self._write() as db:
            row = self._image_row(iid)
            if row["removed_at"] is None:
                db["images"].update(row["id"], {"removed_at": now()})

    def restore_image(self, iid: int) -> None:
        with self._write() as db:
            row = self._image_row(iid)
            db["images"].update(row["id"], {"removed_at": None})

    # -- masks ----------------------------------------------------------------------------------
    def save_mask(self, iid: int, mask, defect_type: str | None = None) -> int:
        """Save a new version of the image's mask (bool HxW, same size as the image); earlier
        versions are kept. `defect_type`, when given, also becomes the image's defect type.
        Returns the id of the saved version."""
        row = self._image_row(iid, active=True)
        if mask is None:
            raise StoreError("No mask was given; pass a bool HxW array (True = defect).")
        m = to_mask_array(mask, (row["height"], row["width"]))  # binary arrays only: see its docstring
        if defect_type is not None:
            defect_type = check_name(defect_type, "defect type")
        png = encode_mask_png(m)
        with self._write() as db:
            row = self._image_row(iid, active=True)
            dt_id = row["defect_type_id"]
            if defect_type is not None:
                dt_id = self._defect_type_id(row["project_id"], defect_type, create=True)
                db["images"].update(row["id"], {"defect_type_id": dt_id})
            return int(db["masks"].insert({
                "image_id": row["id"], "png": png, "width": int(m.shape[1]), "height": int(m.shape[0]),
                "area": int(m.sum()), "defect_type_id": dt_id, "created_at": now(),
            }).last_pk)

    def get_mask(self, iid: int) -> np.ndarray | None:
        """The latest mask, bool (H, W), or None if none was ever saved."""
        self._image_row(iid)
        last = self._one("SELECT png FROM masks WHERE image_id = ? ORDER BY id DESC LIMIT 1", [int(iid)])
        return None if last is None else decode_mask_png(last["png"])

    def mask_history(self, iid: int) -> list[dict]:
        """Every saved version, oldest first: {id, version (1-based), mask, area, defect_type, created_at}."""
        self._image_row(iid)
        rows = self._all(
            """SELECT m.id, m.png, m.area, d.name AS defect_type, m.created_at FROM masks m
               LEFT JOIN defect_types d ON d.id = m.defect_type_id WHERE m.image_id = ? ORDER BY m.id""",
            [int(iid)],
        )
        return [{"id": r["id"], "version": k + 1, "mask": decode_mask_png(r["png"]), "area": r["area"],
                 "defect_type": r["defect_type"], "created_at": r["created_at"]} for k, r in enumerate(rows)]

    # -- defect types ---------------------------------------------------------------------------
    def _defect_type_id(self, pid: int, name: str, *, create: bool) -> int | None:
        row = self._one("SELECT id FROM defect_types WHERE project_id = ? AND name = ?", [int(pid), name])
        if row is not None:
            return int(row["id"])
        if not create:
            return None
        return int(self.db["defect_types"].insert(
            {"project_id": int(pid), "name": name, "created_at": now()}).last_pk)

    def defect_types(self, pid: int) -> list[str]:
        """The project's defect-type names in order of creation (NotFoundError for an unknown
        project id; a soft-deleted project's are still listed)."""
        self._project_row(pid, active=False)
        return [r["name"] for r in self._all(
            "SELECT name FROM defect_types WHERE project_id = ? ORDER BY id", [int_id(pid, "project id")])]

    def add_defect_type(self, pid: int, name: str) -> None:
        name = check_name(name, "defect type")
        with self._write():
            self._project_row(pid)
            self._defect_type_id(pid, name, create=True)

    def set_defect_type(self, iid: int, name: str | None) -> None:
        """Label an image with a defect type (created if new); None clears the label."""
        if name is not None:
            name = check_name(name, "defect type")
        with self._write() as db:
            row = self._image_row(iid, active=True)
            dt_id = None if name is None else self._defect_type_id(row["project_id"], name, create=True)
            db["images"].update(row["id"], {"defect_type_id": dt_id})

    def rename_defect_type(self, pid: int, old: str, new: str) -> None:
        """Rename a defect type everywhere (images and mask history follow)."""
        new = check_name(new, "defect type")
        with self._write() as db:
            self._project_row(pid)
            old_id = self._defect_type_id(pid, old, create=False)
            if old_id is None:
                raise NotFoundError(f"Project {pid} has no defect type {old!r}.")
            if old == new:
                return
            if self._defect_type_id(pid, new, create=False) is not None:
                raise StoreError(f"The defect type {new!r} already exists; merge the two instead (merge_defect_types).")
            db["defect_types"].update(old_id, {"name": new})

    def merge_defect_types(self, pid: int, sources: str | Iterable[str], into: str) -> None:
        """Relabel every image and mask version of `sources` as `into` (created if new), then drop
        the source types. One transaction."""
        into = check_name(into, "defect type")
        sources = [sources] if isinstance(sources, str) else list(sources)
        with self._write() as db:
            self._project_row(pid)
            ids = []
            for s in sources:
                sid = self._defect_type_id(pid, s, create=False)
                if sid is None:
                    raise NotFoundError(f"Project {pid} has no defect type {s!r}.")
                ids.append(sid)
            target = self._defect_type_id(pid, into, create=True)
            ids = [i for i in ids if i != target]
            if not ids:
                return
            marks = ",".join("?" * len(ids))
            db.execute(f"UPDATE images SET defect_type_id = ? WHERE defect_type_id IN ({marks})", [target, *ids])
            db.execute(f"UPDATE masks SET defect_type_id = ? WHERE defect_type_id IN ({marks})", [target, *ids])
            db.execute(f"DELETE FROM defect_types WHERE id IN ({marks})", ids)


def _enable_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL (a no-op when another connection already did) and return the journal mode.

    SQLite answers "database is locked" to the switch without calling the busy handler while
    another connection is opening a brand-new database, so two processes (or threads) opening a new
    store at once need a retry here, up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return mode
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _has_sqlite_header(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(health.SQLITE_HEADER)) == health.SQLITE_HEADER
    except OSError:
        return False
