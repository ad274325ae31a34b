"""Keeping a store sound: `check` / `quick_check` (integrity: the database through `storage.health`,
then the blob files), `backup` (a consistent online copy), `purge` (deleting for good what was
soft-deleted, plus unused blobs and stray files) and `delete_unused_blobs`.

A mixin of `Store` (it uses the store's connection, lock and write transactions), as
`storage.decisions` is. Two file helpers live here too: `copy_tree` (a folder tree that may change
while it is copied; `backup` and `health.recover`) and `pid_alive` (whether the process that left
a temporary file is gone; `backup` and the folder export).
"""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
from glob import escape as glob_escape
from pathlib import Path

import numpy as np

from fsad_core.images import ImageError, sha256_of_array

from . import health
from .blobs import BlobDir, fsync_dir
from .paths import personalize_root, resolve_paths
from .values import StoreError

ORPHAN_GRACE_S = 3600.0  # purge leaves unreferenced blob files younger than this (imports in flight)


class MaintenanceMixin:
    """Store methods that check, back up and purge the whole store (see the module docstring)."""

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

    def delete_unused_blobs(self, shas) -> int:
        """Delete the blob rows and files among `shas` that no image row names (checked inside one
        write transaction, so no `add_image` can start using them meanwhile). The clean-up after a
        bulk insert whose blob files were written ahead of it failed. Returns how many files went."""
        n = 0
        with self._write() as db:
            for sha in shas:
                if self._one("SELECT 1 AS x FROM images WHERE sha256 = ?", [sha]) is None:
                    db.execute("DELETE FROM blobs WHERE sha256 = ?", [sha])
                    n += self.blobs.delete(sha)
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
        pers_out = personalize_root(db_out, blob_out)
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
            copy_tree(self.personalize_dir, pers_out)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, db_out)
        fsync_dir(db_out.parent)
        return db_out


def copy_tree(src: Path, dst: Path) -> None:
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


def _remove_dead_backup_tmp(db_out: Path) -> None:
    """Remove `.<name>.<pid>.tmp` database copies beside `db_out` left by backups whose process is gone."""
    for p in db_out.parent.glob(f".{glob_escape(db_out.name)}.*.tmp"):
        pid = p.name[len(db_out.name) + 2:-4]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            p.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` may still be running (True when that cannot be known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's live process, or unknowable: leave its file alone
    return True


def _is_within(path: Path, root: Path) -> bool:
    a, b = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([a, b]) == b


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return float("inf")
