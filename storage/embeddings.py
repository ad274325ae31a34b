"""The embeddings cache: encodings kept in the store's `embeddings` table across restarts, bounded
in bytes and evicted least recently used first. `Store` opens one as `store.embeddings`; it shares
the store's connection, lock and write transactions."""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
from sqlite_utils import Database

from .blobs import check_sha
from .values import StoreError, WriteLockBusy, check_name, now

if TYPE_CHECKING:
    from .store import Store


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
                self.flush(wait=False)
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

    def flush(self, *, wait: bool = True) -> bool:
        """Write the queued "last used" touches now, waiting for the write lock if need be; with
        wait=False only if the write lock is free right now (the store's close uses that).
        Returns whether they were written (or there were none)."""
        s = self.store
        with s._lock:
            if not self._pending:
                return True
            try:  # inside our own transaction this joins it; otherwise never queue behind a writer
                with s._write(wait=wait or bool(s._depth)) as db:
                    self._touch(db)
            except WriteLockBusy:  # locked by another process: keep the touches for later
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
