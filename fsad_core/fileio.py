"""Files that are either absent/old or complete: atomic writes (temp file in the same folder, fsync,
rename over, fsync of the folder). Shared by the engine's batch outputs and the studio's store
(`storage.blobs` re-exports these), so there is one implementation of the rule."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_atomic", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Make a rename/unlink inside `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent/old or complete: temp file in the
    same folder, fsync, rename over, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
