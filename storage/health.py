"""A damaged database, diagnosed and salvaged: `python -m storage check` and `storage recover`.

Disks, power cuts mid-copy and sync tools do damage SQLite files. The rule here is to say what is
damaged and never to hide it behind a generic error:

- `database_problems(conn)`: SQLite's own `integrity_check` (each damaged b-tree named by its table
  or index), then, when that found damage, a read of every table row by row, naming each table that
  cannot be read in full. Works on a connection whose tables cannot all be read, without migrations.
- `diagnose(db_path)`: the same for a file that `Store` cannot even open (a damaged schema page).
- `recover(db_path, blob_root, personalize_root, out)`: pure Python (the `sqlite3` command-line
  tool's `.recover` is not needed): a new data folder whose database holds every row that can
  still be read, table by table in rowid order, stepping over the damaged pages; the schema comes
  from the damaged file (or, if its list of tables is unreadable, from this version's migrations);
  rows that lost a parent (a mask whose image row was on a damaged page) are dropped and counted;
  image files are copied for the rows that survive. The damaged folder is only read.

`RECOVERY_HINT` is what the CLI, the studio and the README tell a user to do.
"""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from fsad_core.names import display

from .paths import BLOB_DIRNAME, DB_FILENAME, PERSONALIZE_DIRNAME
from .values import StoreError

SQLITE_HEADER = b"SQLite format 3\x00"


def recovery_hint(data_dir: str | os.PathLike | None) -> str:
    d = display(str(data_dir)) if data_dir is not None else "DIR"
    return ("How to recover: stop the studio and keep this data folder as it is; then either open your latest "
            "backup (made by `python -m storage backup`; start with --data-dir BACKUP), or salvage what can "
            f"still be read into a new data folder: `python -m storage recover --data-dir {d} --out NEW_DIR`, "
            "check it with `python -m storage check --deep --data-dir NEW_DIR` and use it from then on.")


RECOVERY_HINT = recovery_hint(None)


class DamagedDatabase(Exception):
    """Raised where work must stop because the database is damaged; str() says what and how to recover."""


def is_corruption(exc: BaseException) -> bool:
    """True for SQLite errors that mean a damaged file (not a lock, a full disk or a bad query)."""
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CORRUPT_INDEX", "SQLITE_CORRUPT_SEQUENCE",
                    "SQLITE_CORRUPT_VTAB") or "malformed" in str(exc) or "not a database" in str(exc)


def _objects(conn: sqlite3.Connection) -> list[tuple[str, str, str, int, str | None]]:
    """(type, name, tbl_name, rootpage, sql) of the schema; DatabaseError when it cannot be read."""
    return [tuple(r) for r in conn.execute("SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master")]


def _tables(objects) -> list[str]:
    return [name for typ, name, _tbl, _root, _sql in objects if typ == "table" and not name.startswith("sqlite_")]


def _name_trees(line: str, roots: dict[int, str]) -> str:
    """'On tree page 8 cell 3: ...' -> 'On tree page 8 (table images) cell 3: ...' when page 8 is the
    root of a table or index (SQLite names b-trees by their root page)."""
    def name(m):
        what = roots.get(int(m.group(2)))
        return m.group(0) + (f" ({what})" if what else "")
    return re.sub(r"\b([Tt]ree (?:page )?)(\d+)", name, line)


def _count_readable(conn: sqlite3.Connection, table: str) -> tuple[int, str | None]:
    """(rows read, error or None) for a full scan of `table` in rowid order."""
    n = 0
    try:
        for _ in conn.execute(f'SELECT * FROM "{table}"'):
            n += 1
    except sqlite3.DatabaseError as exc:
        return n, str(exc)
    return n, None


def database_problems(conn: sqlite3.Connection, *, max_lines: int = 50) -> list[str]:
    """What is damaged in the database behind `conn` (empty: nothing). See the module docstring."""
    try:
        objects = _objects(conn)
    except sqlite3.DatabaseError as exc:
        return [f"schema: the list of tables (sqlite_master) cannot be read ({exc}); every table is affected"]
    roots = {int(root): f"{typ} {name}" for typ, name, _t, root, _s in objects if root}
    roots[1] = "the schema, sqlite_master"
    problems = []
    try:
        ic = [str(r[0]) for r in conn.execute(f"PRAGMA integrity_check({int(max_lines)})")]
    except sqlite3.DatabaseError as exc:
        ic = [f"the check itself stopped: {exc}"]
    if ic == ["ok"]:
        return []
    lines = [ln.strip() for x in ic for ln in x.splitlines() if ln.strip() and "*** in database" not in ln]
    problems += [f"integrity_check: {_name_trees(x, roots)}" for x in lines[:max_lines]]
    for table in _tables(objects):
        n, err = _count_readable(conn, table)
        if err is not None:
            problems.append(f"table {table}: only the first {n} row(s) can be read, then: {err}")
    return problems


def _open_ro(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)


def diagnose(db_path: str | os.PathLike) -> list[str]:
    """Problems of a database file opened read-only, for when `Store` cannot open it."""
    db_path = Path(db_path)
    try:
        with open(db_path, "rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        return [f"{display(str(db_path))}: cannot be read ({exc.strerror or exc})"]
    if header != SQLITE_HEADER:
        return [f"{display(str(db_path))}: the file does not start with SQLite's header: it is not a database, "
                "or its first page is destroyed"]
    try:
        conn = _open_ro(db_path)
    except sqlite3.Error as exc:
        return [f"{display(str(db_path))}: cannot be opened ({exc})"]
    try:
        return database_problems(conn) or []
    finally:
        conn.close()


# --- recover -------------------------------------------------------------------------------------
@dataclass
class RecoverySummary:
    out: Path
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    damaged: dict[str, list[str]] = field(default_factory=dict)  # table -> rowid ranges stepped over
    dropped: dict[str, int] = field(default_factory=dict)  # table -> rows dropped (their parent row was lost)
    blobs_copied: int = 0
    blobs_missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _next_readable(src: sqlite3.Connection, table: str, after: int) -> int | None:
    """The first rowid > `after` whose row can be read, probing further and further ahead
    (a damaged leaf page holds a run of consecutive rowids); None when nothing readable follows."""
    if after > -(2 ** 63):  # ids are mostly dense: look at the next few one by one first
        for rid in range(after + 1, after + 257):
            try:
                if src.execute(f'SELECT * FROM "{table}" WHERE rowid = ?', [rid]).fetchall():
                    return rid
            except sqlite3.DatabaseError:
                continue
    step = 1
    while after + step < 2 ** 63:
        probe = after + step
        try:
            row = src.execute(f'SELECT rowid FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT 1',
                              [probe]).fetchone()
            if row is None:
                return None
            # a damaged page can answer with rowids out of order: only a real step forward counts
            if int(row[0]) > after and src.execute(f'SELECT * FROM "{table}" WHERE rowid = ?', [row[0]]).fetchall():
                return int(row[0])
        except sqlite3.DatabaseError:
            pass
        step *= 2
    return None


def _salvage(src: sqlite3.Connection, table: str, cols: list[str]):
    """Yield (rowid, *cols) of every readable row of `table` in rowid order; the generator's return
    value is the list of rowid ranges stepped over (damaged pages)."""
    collist = ", ".join(f'"{c}"' for c in cols)
    last: int | None = None
    skipped: list[str] = []
    while True:
        where, params = ("", []) if last is None else (" WHERE rowid > ?", [last])
        try:
            for row in src.execute(f'SELECT rowid, {collist} FROM "{table}"{where} ORDER BY rowid', params):
                last = int(row[0])
                yield row
            return skipped
        except sqlite3.DatabaseError:
            nxt = _next_readable(src, table, 0 if last is None else last)
            before = "the start" if last is None else f"rowid {last}"
            skipped.append(f"from {before} to " + ("the end" if nxt is None else f"rowid {nxt}"))
            if nxt is None:
                return skipped
            try:  # that one row is readable on its own: take it, so every round makes progress
                row = src.execute(f'SELECT rowid, {collist} FROM "{table}" WHERE rowid = ?', [nxt]).fetchone()
            except sqlite3.DatabaseError:
                row = None
            last = nxt
            if row is not None:
                yield row


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]


def recover(db_path: str | os.PathLike, blob_root: str | os.PathLike, personalize_root: str | os.PathLike | None,
            out: str | os.PathLike) -> RecoverySummary:
    """Salvage a damaged store into the new data folder `out` (module docstring). `out` must not exist
    or be empty; the source is only read. Returns what was copied and what was lost."""
    from .blobs import BlobDir
    from .maintenance import copy_tree

    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StoreError(f"{display(str(out))} already exists and is not an empty folder; recover into a new folder.")
    src = _open_ro(Path(db_path))
    summary = RecoverySummary(out=out)
    try:
        objects, version = _read_schema(src, summary)
        out.mkdir(parents=True, exist_ok=True)
        dst, tables, later = _create_target(out, objects)
        dst.execute("PRAGMA foreign_keys = OFF")
        for table in tables:
            _copy_table(src, dst, table, summary)
        dst.commit()
        # a blob row lost with its file still there: rebuild the row from the file
        src_blobs, dst_blobs = BlobDir(Path(blob_root), create=False), BlobDir(out / BLOB_DIRNAME)
        if {"images", "blobs"} <= set(tables):
            _rebuild_blob_rows(dst, src_blobs, summary)
        _drop_orphans(dst, summary)
        _rebuild_later(dst, later, summary)
        dst.execute(f"PRAGMA user_version = {int(version)}")
        dst.commit()
        shas = [r[0] for r in dst.execute("SELECT sha256 FROM blobs")] if "blobs" in tables else []
        dst.close()
    finally:
        src.close()
    _copy_blobs(shas, src_blobs, dst_blobs, summary)
    if personalize_root is not None and Path(personalize_root).is_dir():
        copy_tree(Path(personalize_root), out / PERSONALIZE_DIRNAME)
    return summary


def _read_schema(src: sqlite3.Connection, summary: RecoverySummary):
    """(schema objects or None when unreadable, user_version) of the damaged file; a note when unreadable."""
    from .migrations import SCHEMA_VERSION

    try:
        objects = _objects(src)
        version = int(src.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        objects, version = None, SCHEMA_VERSION
        summary.notes.append(f"the damaged file's list of tables cannot be read ({exc}); the tables of "
                             f"schema version {SCHEMA_VERSION} were read by name")
    return objects, version


def _create_target(out: Path, objects) -> tuple[sqlite3.Connection, list[str], list[str]]:
    """(connection to the new database, its tables, index/trigger/view SQL to run once filled): the
    damaged file's tables, or this version's schema when `objects` is None."""
    from .store import Store

    dst_path = out / DB_FILENAME
    if objects is None:  # build the current schema, then fill it
        Store(out).close()
        dst = sqlite3.connect(str(dst_path))
        return dst, _tables(_objects(dst)), []
    dst = sqlite3.connect(str(dst_path))
    tables = _tables(objects)
    for typ, name, _t, _r, sql in objects:
        if typ == "table" and sql and not name.startswith("sqlite_"):
            dst.execute(sql)
    later = [sql for typ, name, _t, _r, sql in objects if typ in ("index", "trigger", "view") and sql]
    return dst, tables, later


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, summary: RecoverySummary) -> None:
    """Copy every readable row of `table`, recording the rows copied and the damaged ranges stepped over."""
    try:
        cols = _columns(src, table) or _columns(dst, table)
    except sqlite3.DatabaseError:
        cols = _columns(dst, table)
    marks = ", ".join("?" * (len(cols) + 1))
    collist = ", ".join(f'"{c}"' for c in cols)
    gen = _salvage(src, table, cols)
    n = 0
    while True:
        try:
            row = next(gen)
        except StopIteration as stop:
            if stop.value:
                summary.damaged[table] = list(stop.value)
            break
        dst.execute(f'INSERT OR IGNORE INTO "{table}" (rowid, {collist}) VALUES ({marks})', list(row))
        n += 1
    summary.rows[table] = n


def _rebuild_blob_rows(dst: sqlite3.Connection, src_blobs, summary: RecoverySummary) -> None:
    """Insert a blobs row, read from its image file, for each image whose blob row was lost."""
    from .blobs import check_sha

    for (sha,) in dst.execute("SELECT DISTINCT sha256 FROM images WHERE sha256 NOT IN (SELECT sha256 FROM blobs)"
                              ).fetchall():
        try:
            p = src_blobs.path(check_sha(sha))
            from PIL import Image

            with Image.open(p) as im:
                w, h = im.size
            dst.execute("INSERT INTO blobs (sha256, width, height, bytes, created_at) VALUES (?, ?, ?, ?, "
                        "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))", [sha, w, h, p.stat().st_size])
            summary.notes.append(f"blob row {sha[:12]}… rebuilt from its file")
        except (ValueError, OSError):
            continue


def _drop_orphans(dst: sqlite3.Connection, summary: RecoverySummary) -> None:
    """Delete rows whose parent row was lost (the schema's foreign keys say so), counting them."""
    for _ in range(10):
        orphans = dst.execute("PRAGMA foreign_key_check").fetchall()
        if not orphans:
            break
        for table, rowid, _parent, _fk in orphans:
            dst.execute(f'DELETE FROM "{table}" WHERE rowid = ?', [rowid])
            summary.dropped[table] = summary.dropped.get(table, 0) + 1
            summary.rows[table] = summary.rows.get(table, 0) - 1


def _rebuild_later(dst: sqlite3.Connection, later: list[str], summary: RecoverySummary) -> None:
    """Create the indexes, triggers and views once the rows are in; a note for each that fails."""
    for sql in later:
        try:
            dst.execute(sql)
        except sqlite3.DatabaseError as exc:  # e.g. a unique index over rows the damage duplicated
            summary.notes.append(f"could not rebuild: {sql.split('(')[0].strip()} ({exc})")


def _copy_blobs(shas: list[str], src_blobs, dst_blobs, summary: RecoverySummary) -> None:
    """Copy the image file of each surviving blob row; count those copied and list those missing."""
    from .blobs import check_sha

    for sha in shas:
        try:
            s = src_blobs.path(check_sha(sha))
        except ValueError:
            continue
        d = dst_blobs.path(sha)
        try:
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s, d)
            summary.blobs_copied += 1
        except FileNotFoundError:
            summary.blobs_missing.append(sha)
