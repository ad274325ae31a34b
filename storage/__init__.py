"""storage: the studio's embedded SQLite store (projects, images, masks, labels, weights, runs).

    from storage import Store
    store = Store(path)          # a data folder (studio.db + blobs/) or a .db file; None = default_data_dir()

Torch-free: it shares image decoding with the engine through `fsad_core.images` only.
See docs/storage.md for the data directory, the schema, backup and import/export.
"""
from __future__ import annotations

from .store import (
    ROLES,
    EmbeddingCache,
    NotFoundError,
    Store,
    StoreError,
    default_data_dir,
    resolve_paths,
)

__all__ = ["Store", "StoreError", "NotFoundError", "EmbeddingCache", "ROLES", "default_data_dir",
           "resolve_paths", "export_project", "import_folder"]


def __getattr__(name):  # folders pulls in nothing heavy, but keep `import storage` minimal
    if name in ("export_project", "import_folder"):
        from . import folders

        return getattr(folders, name)
    raise AttributeError(f"module 'storage' has no attribute {name!r}")
