"""Where a store's files live: the default data folder, and the database file, blob folder and
per-project folder that a data folder (or a database named as a file) stands for."""
from __future__ import annotations

import os
from pathlib import Path

DB_FILENAME = "studio.db"
BLOB_DIRNAME = "blobs"
PERSONALIZE_DIRNAME = "personalize"
DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


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


def personalize_root(db_path: Path, blob_root: Path) -> Path:
    """Per-project files beside the store, following `resolve_paths`: `<folder>/personalize/` for a
    data folder, `<stem>-personalize/` beside a database named as a file (like `<stem>-blobs/`)."""
    if blob_root == db_path.parent / BLOB_DIRNAME:
        return db_path.parent / PERSONALIZE_DIRNAME
    return db_path.with_name(db_path.stem + "-" + PERSONALIZE_DIRNAME)
