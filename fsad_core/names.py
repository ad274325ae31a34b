"""File names as they really are: bytes, not always UTF-8, sometimes with control characters.

On POSIX a file name is any bytes but `/` and NUL. Python hands such names over as `str` with the
undecodable bytes as lone surrogates (`os.fsdecode`, PEP 383 "surrogateescape"): b'bad\\xff.png'
becomes 'bad\\udcff.png'. Those strings cannot be written as UTF-8 (CSV, HTML, SQLite, a terminal)
and a name holding ESC or a newline rewrites the terminal or the line it is printed on.

Two forms, used everywhere a name leaves the program:

- `display(name)`: safe to print, to put in a CSV cell, a log line or a report. Undecodable bytes
  read `\\xff`, control and format characters read `\\x1b`, `\\n`, `\\u202e`; everything else,
  backslashes and non-ASCII letters included, is unchanged. A clean name is its own display form.
- `raw_b64(name)`: the name's exact bytes in base64, for the names whose display form is not the
  name itself (None for clean names). `display` + `raw_b64` is lossless: `from_record` gives the
  exact name back.

Records (results.jsonl, scores.csv, fsad_project.json) carry `path` = `display(...)` and, only
for a name that needed escaping, `path_b64` = `raw_b64(...)`.

>>> display('bad\\udcff.png'), raw_b64('bad\\udcff.png')
('bad\\\\xff.png', 'YmFk/y5wbmc=')
>>> display('red\\x1b[31m.png')
'red\\\\x1b[31m.png'
>>> display('crème.png'), raw_b64('crème.png')
('crème.png', None)
>>> from_record('bad\\\\xff.png', 'YmFk/y5wbmc=') == 'bad\\udcff.png'
True
"""
from __future__ import annotations

import base64
import binascii
import os
import unicodedata

__all__ = ["display", "raw_b64", "from_record", "is_clean", "record", "fs_bytes", "to_text", "safe_line"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def fs_bytes(name) -> bytes:
    """The name's bytes as the file system has them (str with surrogates, bytes or a path)."""
    return os.fsencode(name)


def _escape_char(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte, as os.fsdecode carries it
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"


def _unsafe(ch: str) -> bool:
    # Cc: C0/C1 controls (ESC, BEL, newline...); Cf: format chars (U+202E right-to-left override,
    # zero-width joiners); Cs: surrogates (undecodable bytes); Zl/Zp: line/paragraph separators
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")


def to_text(name) -> str:
    """A name as `str` (bytes and paths through `os.fsdecode`, so nothing is lost)."""
    return name if isinstance(name, str) else os.fsdecode(name)


def is_clean(name) -> bool:
    """True when the name is valid UTF-8 without control or format characters."""
    s = to_text(name)
    return not any(_unsafe(ch) for ch in s)


def display(name) -> str:
    """The printable, escaped form of a name (see the module docstring); valid UTF-8 always."""
    s = to_text(name)
    if not any(_unsafe(ch) for ch in s):
        return s
    return "".join(_escape_char(ch) if _unsafe(ch) else ch for ch in s)


def raw_b64(name) -> str | None:
    """base64 of the name's exact bytes when `display(name)` differs from the name, else None."""
    s = to_text(name)
    if is_clean(s):
        return None
    return base64.b64encode(fs_bytes(s)).decode("ascii")


def record(name, key: str = "path") -> dict:
    """{key: display form} plus {key + '_b64': exact bytes} when the name needed escaping."""
    out = {key: display(name)}
    b = raw_b64(name)
    if b is not None:
        out[f"{key}_b64"] = b
    return out


def from_record(text: str, b64: str | None = None) -> str:
    """The exact name back from `display` text and `raw_b64` bytes (the text when b64 is empty).
    A b64 field that is not base64 is a ValueError naming it."""
    if not b64:
        return text
    try:
        return os.fsdecode(base64.b64decode(b64, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError(f"the base64 name field for {text!r} is not base64") from None


def safe_line(text) -> str:
    """A message made safe for one terminal line: line breaks and tabs become spaces, every other
    control/format character and undecodable byte is escaped as in `display`.

    >>> safe_line("bad\\udcff.png:\\n  \\x1b[2Jcorrupt")
    'bad\\\\xff.png:   \\\\x1b[2Jcorrupt'
    """
    s = to_text(text) if isinstance(text, (str, bytes, os.PathLike)) else str(text)
    return display(s.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " "))
