"""What goes into a row and how the store refuses the rest: its error types, the checks on names,
ids and file names users give, and the encodings of file names, JSON and timestamps."""
from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fsad_core.names import display

ROLES = ("normal", "anomalous", "query")
MAX_NAME_CHARS = 200  # project names, class names, defect types, preset names, run kinds
MAX_FILENAME_CHARS = 255


class StoreError(ValueError):
    """A user-facing error about what was asked of the store."""


class DamagedStoreError(StoreError):
    """The database file is damaged (SQLite reports corruption); the message says how to recover."""


class NotFoundError(StoreError, KeyError):
    """No such project / image / preset / run (a ValueError and a KeyError)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class WriteLockBusy(Exception):
    """Another process holds the database's write lock (a write transaction asked not to wait)."""


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


def read_filename(row: dict) -> dict:
    """A row's `filename` as text plus `filename_b64` (exact bytes) for names stored as a BLOB."""
    name = row.get("filename")
    row["filename_b64"] = None
    if isinstance(name, (bytes, bytearray)):
        row["filename"] = display(os.fsdecode(bytes(name)))
        row["filename_b64"] = base64.b64encode(bytes(name)).decode("ascii")
    return row


def json_safe(value: Any) -> Any:
    """Numpy scalars/arrays -> Python; NaN/inf -> None (valid JSON, and 'undefined' is what they mean)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (Path,)):
        return str(value)
    return value


def dumps(value: Any, what: str) -> str:
    """Strict JSON text of `value` (see `json_safe`); StoreError naming `what` if it cannot be."""
    try:
        return json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"The {what} must be JSON-serialisable (numbers, text, lists, dicts): {exc}.") from None


def int_id(value, what: str) -> int:
    """A row id given as an int (numpy included) or a numeric string; StoreError for anything else."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, str)):
        raise StoreError(f"The {what} must be an integer, got {type(value).__name__}.")
    try:
        return int(value)
    except ValueError:
        raise StoreError(f"The {what} must be an integer, got {value!r}.") from None
