"""Store: projects, images, masks, defect types, weights, runs and an embeddings cache in SQLite.

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
"""
from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import shutil
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database

from fsad_core.images import ImageError, sha256_of_array, to_mask_array, to_rgb_array
from fsad_core.names import display

from . import health, migrations
from .blobs import BlobDir, check_sha, decode_mask_png, encode_mask_png, encode_rgb_png, fsync_dir
from .decisions import DecisionsMixin

ROLES = ("normal", "anomalous", "query")
MAX_NAME_CHARS = 200  # project names, class names, defect types, preset names, run kinds
MAX_FILENAME_CHARS = 255
BUSY_TIMEOUT_S = 30.0
DB_FILENAME = "studio.db"
BLOB_DIRNAME = "blobs"
DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
DEFAULT_EMBEDDING_CACHE_MB = 512
DEFAULT_IMAGE_CACHE_MB = 256  # decoded images kept in memory per Store (the UI re-reads galleries often)
ORPHAN_GRACE_S = 3600.0  # purge leaves unreferenced blob files younger than this (imports in flight)


class _LockBusy(Exception):
    """Another process holds the database's write lock (`Store._write(wait=False)`)."""


class StoreError(ValueError):
    """A user-facing error about what was asked of the store."""


class DamagedStoreError(StoreError):
    """The database file is damaged (SQLite reports corruption); the message says how to recover."""


class NotFoundError(StoreError, KeyError):
    """No such project / image / preset / run (a ValueError and a KeyError)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def default_data_dir() -> Path:
    """`$FSAD_DATA_DIR`, else `$XDG_DATA_HOME/fsad-studio`, else `~/.local/share/fsad-studio`."""
    env = os.environ.get("FSAD_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "fsad-studio"


def resolve_paths(path: str | os.PathLike | None) -> tuple[Path, Path]:
    """(database file, blob folder) for a data folder or a database file.

    A folder holds `studio.db` and `blobs/`; a path ending in .db/.sqlite/.sqlite3 (or an existing
    file) is the database itself, with its blobs in `<stem>-blobs/` beside it.
    """
    p = Path(path).expanduser() if path is not None else default_data_dir()
    if p.suffix.lower() in DB_SUFFIXES or p.is_file():
        return p, p.with_name(p.stem + "-blobs")
    return p / DB_FILENAME, p / BLOB_DIRNAME


PERSONALIZE_DIRNAME = "personalize"


def _personalize_root(db_path: Path, blob_root: Path) -> Path:
    """Per-project files beside the store, following `resolve_paths`: `<folder>/personalize/` for a
    data folder, `<stem>-personalize/` beside a database named as a file (like `<stem>-blobs/`)."""
    if blob_root == db_path.parent / BLOB_DIRNAME:
        return db_path.parent / PERSONALIZE_DIRNAME
    return db_path.with_name(db_path.stem + "-" + PERSONALIZE_DIRNAME)


def now() -> str:
    """UTC ISO-8601 with microseconds, e.g. '2026-11-02T10:15:03.123456+00:00'."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def check_name(value: Any, what: str, *, max_chars: int = MAX_NAME_CHARS) -> str:
    """A user-typed name: a non-blank str of at most `max_chars` characters, returned unchanged."""
    if not isinstance(value, str):
        raise StoreError(f"The {what} must be text, got {type(value).__name__}.")
    if not value.strip():
        raise StoreError(f"The {what} is empty; type a name.")
    if len(value) > max_chars:
        raise StoreError(f"The {what} is {len(value)} characters long; at most {max_chars} are allowed.")
    if "\x00" in value:
        raise StoreError(f"The {what} contains a NUL character; remove it.")
    if what != "file name" and any("\udc80" <= ch <= "\udcff" for ch in value):
        raise StoreError(f"The {what} '{display(value)}' is not valid UTF-8 text; retype it.")
    return value


def check_filename(value: Any) -> str | bytes:
    """A file name for the `images.filename` column: the name itself (TEXT) when it is valid UTF-8,
    else its exact bytes (a BLOB: SQLite keeps a column's values as given, and a name with bytes that
    are not UTF-8 - `os.fsdecode` carries them as lone surrogates - cannot be stored as TEXT).
    Rows read back carry `filename` as text (escaped for such names: `fsad_core.names.display`) and
    `filename_b64` (the exact bytes, base64) for them, so nothing is lost."""
    if isinstance(value, (bytes, bytearray)):
        value = os.fsdecode(bytes(value))
    value = check_name(value, "file name", max_chars=MAX_FILENAME_CHARS)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(value)
    return value


def _read_filename(row: dict) -> dict:
    """A row's `filename` as text plus `filename_b64` (exact bytes) for names stored as a BLOB."""
    name = row.get("filename")
    row["filename_b64"] = None
    if isinstance(name, (bytes, bytearray)):
        row["filename"] = display(os.fsdecode(bytes(name)))
        row["filename_b64"] = base64.b64encode(bytes(name)).decode("ascii")
    return row


def _json_safe(value: Any) -> Any:
    """Numpy scalars/arrays -> Python; NaN/inf -> None (valid JSON, and 'undefined' is what they mean)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (Path,)):
        return str(value)
    return value


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(_json_safe(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"The {what} must be JSON-serialisable (numbers, text, lists, dicts): {exc}.") from None


class Store(DecisionsMixin):
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
        self.personalize_dir = _personalize_root(self.db_path, blob_root)
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
        return self.personalize_dir / f"project-{_int_id(pid, 'project id')}"

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
                    emb._flush(wait=False)  # best effort: never hold up a close behind another writer
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
        wait=False: try the database's write lock once and raise `_LockBusy` (nothing done) when
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
                    raise _LockBusy() from exc
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
        row = self._one("SELECT * FROM projects WHERE id = ?", [_int_id(pid, "project id")])
        if row is None:
            raise NotFoundError(f"There is no project {pid}.")
        if active and row["deleted_at"] is not None:
            raise StoreError(f"Project {row['name']!r} ({pid}) is deleted; restore it first (restore_project).")
        return row

    def get_project(self, pid: int, *, include_deleted: bool = False) -> dict | None:
        """{id, name, class_name, created_at, updated_at, deleted_at} or None if unknown / deleted."""
        row = self._one("SELECT * FROM projects WHERE id = ?", [_int_id(pid, "project id")])
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
            [_int_id(iid, "image id")],
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
        row = _read_filename(self._image_row(iid))
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
        params: list = [_int_id(pid, "project id")]
        if not include_removed:
            sql += " AND i.removed_at IS NULL"
        if role is not None:
            sql += " AND i.role = ?"
            params.append(role)
        rows = self._all(sql + " ORDER BY i.id", params)
        for r in rows:
            _read_filename(r)
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
            "SELECT name FROM defect_types WHERE project_id = ? ORDER BY id", [_int_id(pid, "project id")])]

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

    # -- weights --------------------------------------------------------------------------------
    def save_weights(self, pid: int, name: str, weights: Mapping[str, float]) -> None:
        """Save (or overwrite) the named preset {component: weight} of a project."""
        name = check_name(name, "preset name")
        if not isinstance(weights, Mapping) or not weights:
            raise StoreError("Weights must be a non-empty mapping {component name: number}.")
        clean = {}
        for k, v in weights.items():
            check_name(k, "component name")
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise StoreError(f"The weight of {k!r} must be a number, got {type(v).__name__}.")
            if not math.isfinite(float(v)):
                raise StoreError(f"The weight of {k!r} is {v}; weights must be finite numbers.")
            clean[k] = float(v)
        text = json.dumps(clean, ensure_ascii=False)
        ts = now()
        with self._write() as db:
            self._project_row(pid)
            if self._one("SELECT 1 AS x FROM weights WHERE project_id = ? AND name = ?", [int(pid), name]):
                db.execute("UPDATE weights SET weights = ?, updated_at = ? WHERE project_id = ? AND name = ?",
                           [text, ts, int(pid), name])
            else:
                db["weights"].insert({"project_id": int(pid), "name": name, "weights": text,
                                      "created_at": ts, "updated_at": ts})

    def load_weights(self, pid: int, name: str) -> dict[str, float]:
        """The named preset; NotFoundError (a KeyError and ValueError) if there is none."""
        row = self._one("SELECT weights FROM weights WHERE project_id = ? AND name = ?",
                        [_int_id(pid, "project id"), name])
        if row is None:
            have = [w["name"] for w in self.list_weights(pid)]
            raise NotFoundError(f"Project {pid} has no weight preset {name!r}"
                                + (f"; saved presets: {', '.join(map(repr, have))}." if have else "; none is saved yet."))
        return json.loads(row["weights"])

    def list_weights(self, pid: int) -> list[dict]:
        """[{name, weights, created_at, updated_at}] in order of creation (NotFoundError for an
        unknown project id; a soft-deleted project's are still listed)."""
        self._project_row(pid, active=False)
        rows = self._all("SELECT name, weights, created_at, updated_at FROM weights WHERE project_id = ? "
                         "ORDER BY created_at, name", [_int_id(pid, "project id")])
        for r in rows:
            r["weights"] = json.loads(r["weights"])
        return rows

    def delete_weights(self, pid: int, name: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM weights WHERE project_id = ? AND name = ?", [_int_id(pid, "project id"), name])

    # -- runs -----------------------------------------------------------------------------------
    def save_run(self, pid: int, kind: str, params: Mapping, results: Any) -> int:
        """Log a batch / tuning / inspection run; params and results are stored as JSON
        (numpy values converted, NaN/inf stored as null). Returns the run id."""
        kind = check_name(kind, "run kind")
        p, r = _dumps(params, "run parameters"), _dumps(results, "run results")
        with self._write() as db:
            self._project_row(pid)
            return int(db["runs"].insert({"project_id": int(pid), "kind": kind, "params": p, "results": r,
                                          "created_at": now()}).last_pk)

    def list_runs(self, pid: int, kind: str | None = None) -> list[dict]:
        """[{id, kind, params, results, created_at}] oldest first (NotFoundError for an unknown
        project id; a soft-deleted project's runs are still listed)."""
        self._project_row(pid, active=False)
        sql, params = "SELECT id, project_id, kind, params, results, created_at FROM runs WHERE project_id = ?", [
            _int_id(pid, "project id")]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._all(sql + " ORDER BY id", params)
        for r in rows:
            r["params"], r["results"] = json.loads(r["params"]), json.loads(r["results"])
        return rows

    def get_run(self, run_id: int) -> dict:
        row = self._one("SELECT * FROM runs WHERE id = ?", [_int_id(run_id, "run id")])
        if row is None:
            raise NotFoundError(f"There is no run {run_id}.")
        row["params"], row["results"] = json.loads(row["params"]), json.loads(row["results"])
        return row

    # -- maintenance ----------------------------------------------------------------------------
    def purge(self, *, grace_s: float = ORPHAN_GRACE_S) -> dict[str, int]:
        """Delete for good: soft-deleted projects, removed images (with their masks), blobs no row
        names any more, and stray blob/temp files older than `grace_s` (files younger than that may
        belong to an import still running in another process; `grace_s` must be >= 0). The
        per-project folders (`project_dir`) of purged projects go too, as do those of project ids
        no row has any more (project ids can be reused: a new project must not inherit an old
        project's LoRA weights). Returns counts."""
        if isinstance(grace_s, (bool, np.bool_)) or not isinstance(grace_s, (int, float, np.integer, np.floating)):
            raise StoreError(f"The grace period must be a number of seconds, got {type(grace_s).__name__}.")
        if not grace_s >= 0:  # also refuses NaN
            raise StoreError(f"The grace period must be 0 or more (got {grace_s}); a negative one would delete "
                             "the files of imports still running in other processes.")
        out = {}
        cutoff = time.time() - float(grace_s)
        with self._write() as db:
            out["projects"] = db.execute("DELETE FROM projects WHERE deleted_at IS NOT NULL").rowcount
            out["images"] = db.execute("DELETE FROM images WHERE removed_at IS NOT NULL").rowcount
            dead = [r["sha256"] for r in self._all(
                "SELECT sha256 FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM images)")]
            db.execute("DELETE FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM images)")
            # files go inside the transaction (write lock held): no add_image can reuse them meanwhile
            out["blobs"] = sum(self.blobs.delete(s) for s in dead)
            known = {r["sha256"] for r in self._all("SELECT sha256 FROM blobs")}
            stray = 0
            for sha, f in list(self.blobs.iter_files()):
                if sha not in known and _mtime(f) < cutoff:
                    f.unlink(missing_ok=True)
                    stray += 1
            for f in list(self.blobs.iter_temp_files()):
                if _mtime(f) < cutoff:
                    f.unlink(missing_ok=True)
                    stray += 1
            out["stray_files"] = stray
            # last, with the write lock still held (no project can be created meanwhile and take a
            # freed id): per-project folders of ids that no longer exist
            live = {int(r["id"]) for r in self._all("SELECT id FROM projects")}
            out["project_dirs"] = self._remove_orphan_project_dirs(live)
        return out

    def _remove_orphan_project_dirs(self, live: set[int]) -> int:
        root = self.personalize_dir
        if not root.is_dir():
            return 0
        n = 0
        for d in sorted(root.iterdir()):
            m = re.fullmatch(r"project-(\d+)", d.name)
            if m is None or int(m.group(1)) in live:
                continue
            if d.is_symlink():  # a folder kept elsewhere: drop the link, never what it points at
                d.unlink(missing_ok=True)
            elif d.is_dir():
                shutil.rmtree(d, ignore_errors=True)  # best effort: what fails stays for the next purge
            else:
                continue
            n += not os.path.lexists(d)
        return n

    def check(self, *, deep: bool = False) -> list[str]:
        """Problems found (empty = healthy): SQLite integrity (each damaged table or index named, and
        which tables cannot be read in full: `storage.health.database_problems`), foreign keys,
        missing blob files, and with `deep=True` blobs whose pixels no longer hash to their name.
        A damaged database is reported, never raised."""
        with self._lock:
            problems = health.database_problems(self.db.conn)
            try:
                problems += [f"foreign key: {tuple(r)}" for r in self.db.conn.execute("PRAGMA foreign_key_check")]
                shas = [r["sha256"] for r in self._all("SELECT sha256 FROM blobs ORDER BY sha256")]
            except sqlite3.DatabaseError as exc:
                if not health.is_corruption(exc):
                    raise
                return problems or [f"database: {exc}"]
        for sha in shas:
            p = self.blobs.path(sha)
            if not p.is_file():
                problems.append(f"missing blob file {p}")
            elif deep:
                try:
                    if sha256_of_array(self.blobs.read(sha)) != sha:
                        problems.append(f"blob {p} does not match its hash")
                except ImageError as exc:
                    problems.append(str(exc))
        return problems

    def quick_check(self) -> list[str]:
        """SQLite's `quick_check` (every page read, no index cross-check; 0.6-0.9 s for a 300 MB
        database on a 2-core machine): [] when the file is sound, else what SQLite reports. The
        studio runs it at start."""
        with self._lock:
            try:
                out = [str(r[0]) for r in self.db.conn.execute("PRAGMA quick_check(20)")]
            except sqlite3.DatabaseError as exc:
                if not health.is_corruption(exc):
                    raise
                return [str(exc)]
        return [] if out == ["ok"] else out

    def backup(self, out: str | os.PathLike) -> Path:
        """Copy a consistent snapshot of the store to `out` (a new folder, or a `.db` file whose
        blobs go to `<stem>-blobs/`) while the studio keeps running. Uses SQLite's online backup
        API; blobs are immutable, so copying the ones the snapshot names completes it. The
        per-project folder tree (`personalize/`: One-to-Normal's LoRA weights and generated pools)
        is copied too when it exists, to the backup's own `personalize/` (`<stem>-personalize/` for
        a `.db` target). `out` opens with `Store(out)`. Returns the database file written."""
        db_out, blob_out = resolve_paths(out)
        if db_out.exists():
            raise StoreError(f"{db_out} already exists; back up to a new folder or file name.")
        if db_out.resolve() == self.db_path.resolve():
            raise StoreError("The backup target is the live database; choose another place.")
        pers_out = _personalize_root(db_out, blob_out)
        if self.personalize_dir.is_dir() and _is_within(pers_out, self.personalize_dir):
            raise StoreError(f"The backup target {out} is inside {self.personalize_dir}; choose another place.")
        db_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = db_out.with_name(f".{db_out.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        _remove_dead_backup_tmp(db_out)  # an interrupted backup's half-written copy
        dst = sqlite3.connect(str(tmp))
        try:
            with self._lock:
                self.db.conn.backup(dst)  # one step: a single consistent snapshot
            dst.execute("PRAGMA journal_mode = DELETE")  # a self-contained file, no -wal beside it
            shas = [r[0] for r in dst.execute("SELECT sha256 FROM blobs")]
            ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dst.close()
        if ok != "ok":
            tmp.unlink(missing_ok=True)
            raise StoreError(f"The backup copy failed its integrity check ({ok}); nothing was written.")
        target = BlobDir(blob_out)
        for sha in shas:
            src = self.blobs.path(sha)
            dst_path = target.path(sha)
            if not dst_path.is_file():  # copied atomically: an interrupted backup never leaves a torn blob
                dst_path.parent.mkdir(parents=True, exist_ok=True)   # that the next one would skip
                part = dst_path.with_name(f".{dst_path.name}.{os.getpid()}.tmp")
                shutil.copyfile(src, part)
                os.replace(part, dst_path)
        if self.personalize_dir.is_dir():
            _copy_tree(self.personalize_dir, pers_out)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, db_out)
        fsync_dir(db_out.parent)
        return db_out


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a folder tree that may change meanwhile (a LoRA training job writing checkpoints):
    files that vanish mid-copy are skipped, `*.tmp` files (writes in progress) are left out,
    symlinks are copied as links and never followed."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        target = dst / rel
        target.mkdir(parents=True, exist_ok=True)
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):  # os.walk does not descend into these
                filenames.append(name)
        for name in filenames:
            if name.endswith(".tmp"):
                continue
            s, d = Path(dirpath) / name, target / name
            try:
                if s.is_symlink():
                    if not os.path.lexists(d):
                        os.symlink(os.readlink(s), d)
                else:
                    shutil.copy2(s, d)
            except FileNotFoundError:
                continue


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


def _remove_dead_backup_tmp(db_out: Path) -> None:
    """Remove `.<name>.<pid>.tmp` database copies beside `db_out` left by backups whose process is gone."""
    for p in db_out.parent.glob(f".{glob_escape(db_out.name)}.*.tmp"):
        pid = p.name[len(db_out.name) + 2:-4]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            p.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's live process, or unknowable: leave its file alone
    return True


def _has_sqlite_header(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(health.SQLITE_HEADER)) == health.SQLITE_HEADER
    except OSError:
        return False


def _is_within(path: Path, root: Path) -> bool:
    a, b = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([a, b]) == b


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _int_id(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, str)):
        raise StoreError(f"The {what} must be an integer, got {type(value).__name__}.")
    try:
        return int(value)
    except ValueError:
        raise StoreError(f"The {what} must be an integer, got {value!r}.") from None


class EmbeddingCache:
    """Encodings keyed by (model id, precision, image sha256, kind), bounded in bytes, LRU-evicted.

    Values are numpy arrays (any numeric dtype, any shape) or raw bytes. `fsad_core` may use it
    through an object with `get`/`put` (it never imports storage): the engine's in-memory cache
    is the fast layer, this one survives restarts.

    Reads never wait for the write lock: `get` is a plain read (WAL readers run alongside a writer
    in another process). The "last used" touch of a hit is queued and written in batches, only
    when the write lock is free at that moment (never waiting for it), and always before `put`
    evicts (inside its transaction), at `flush()` and when the store closes. So LRU order is exact
    for this process's own hits and best effort across processes.
    """

    TOUCH_EVERY_S = 1.0  # at most one touch write per second from gets...
    TOUCH_BATCH = 256  # ...unless this many hits are waiting
    MAX_PENDING = 100_000  # ids kept while the lock stays busy (the oldest are dropped beyond this)

    def __init__(self, store: Store, max_bytes: int):
        self.store = store
        self.max_bytes = int(max_bytes)
        self._pending: OrderedDict[int, None] = OrderedDict()  # row ids hit, least recent first
        self._last_flush = time.monotonic()

    @staticmethod
    def _key(model_id: str, precision: str, sha256: str, kind: str) -> list[str]:
        for v, what in ((model_id, "model id"), (precision, "precision"), (kind, "kind")):
            check_name(v, f"embedding {what}")
        return [model_id, precision, check_sha(sha256), kind]

    def get(self, model_id: str, precision: str, sha256: str, kind: str):
        """The cached value or None; a hit becomes the most recently used entry (recorded in a
        batch, see the class docstring). Never waits for another process's write."""
        key = self._key(model_id, precision, sha256, kind)
        s = self.store
        with s._lock:
            row = s._one("SELECT id, dtype, shape, data FROM embeddings WHERE model_id = ? AND precision = ? "
                         "AND sha256 = ? AND kind = ?", key)
            if row is None:
                return None
            self._pending[int(row["id"])] = None
            self._pending.move_to_end(int(row["id"]))
            while len(self._pending) > self.MAX_PENDING:
                self._pending.popitem(last=False)
            if (len(self._pending) >= self.TOUCH_BATCH or s._depth
                    or time.monotonic() - self._last_flush >= self.TOUCH_EVERY_S):
                self._flush(wait=False)
        if row["dtype"] == "bytes":
            return bytes(row["data"])
        return np.frombuffer(row["data"], dtype=np.dtype(row["dtype"])).reshape(json.loads(row["shape"])).copy()

    def put(self, model_id: str, precision: str, sha256: str, kind: str, value) -> bool:
        """Store a value (replacing any under the same key) and evict least recently used entries
        until the total is within `max_bytes`. A value larger than the cap is not stored (False)."""
        key = self._key(model_id, precision, sha256, kind)
        if isinstance(value, (bytes, bytearray, memoryview)):
            data, dtype, shape = bytes(value), "bytes", [len(value)]
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
            arr = np.ascontiguousarray(value)
            data, dtype, shape = arr.tobytes(), arr.dtype.str, list(arr.shape)
        else:
            raise StoreError(f"Embedding values must be numeric numpy arrays or bytes, got {type(value).__name__}.")
        if len(data) > self.max_bytes:
            return False
        s = self.store
        with s._write() as db:
            self._touch(db)  # this process's hits count before anything is evicted
            db.execute("DELETE FROM embeddings WHERE model_id = ? AND precision = ? AND sha256 = ? AND kind = ?", key)
            db.execute(
                "INSERT INTO embeddings (model_id, precision, sha256, kind, dtype, shape, data, nbytes, created_at,"
                " last_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " (SELECT coalesce(max(last_used), 0) + 1 FROM embeddings))",
                [*key, dtype, json.dumps(shape), data, len(data), now()],
            )
            self._evict(db)
        return True

    def flush(self) -> None:
        """Write the queued "last used" touches now (waiting for the write lock if need be)."""
        self._flush(wait=True)

    def _flush(self, *, wait: bool) -> bool:
        """Write the queued touches; with wait=False only if the write lock is free right now.
        Returns whether they were written (or there were none)."""
        s = self.store
        with s._lock:
            if not self._pending:
                return True
            try:  # inside our own transaction this joins it; otherwise never queue behind a writer
                with s._write(wait=wait or bool(s._depth)) as db:
                    self._touch(db)
            except _LockBusy:  # locked by another process: keep the touches for later
                self._last_flush = time.monotonic()
                return False
            return True

    def _touch(self, db: Database) -> None:
        """Inside a write transaction: make the queued ids the most recently used, in hit order."""
        if not self._pending:
            return
        ids = list(self._pending)
        base = db.execute("SELECT coalesce(max(last_used), 0) FROM embeddings").fetchone()[0]
        db.conn.executemany("UPDATE embeddings SET last_used = ? WHERE id = ?",
                            [(base + k + 1, rid) for k, rid in enumerate(ids)])
        self._pending.clear()
        self._last_flush = time.monotonic()

    def _evict(self, db: Database) -> None:
        total = db.execute("SELECT coalesce(sum(nbytes), 0) FROM embeddings").fetchone()[0]
        if total <= self.max_bytes:
            return
        for rid, nbytes in db.execute("SELECT id, nbytes FROM embeddings ORDER BY last_used").fetchall():
            if total <= self.max_bytes:
                break
            db.execute("DELETE FROM embeddings WHERE id = ?", [rid])
            total -= nbytes

    def total_bytes(self) -> int:
        return int(self.store._one("SELECT coalesce(sum(nbytes), 0) AS n FROM embeddings")["n"])

    def __len__(self) -> int:
        return int(self.store._one("SELECT count(*) AS n FROM embeddings")["n"])

    def clear(self) -> None:
        with self.store._write() as db:
            db.execute("DELETE FROM embeddings")
            self._pending.clear()
