"""Helpers shared by the CLI commands: turning errors into one readable line and an exit code."""
from __future__ import annotations

import sys


def run_command(func, args) -> int:
    """Run a command; user errors (bad images, missing weights, bad folders) print one line, exit 2."""
    from fsad_core.images import ImageError
    from fsad_core.models.registry import ModelUnavailableError

    try:
        rc = func(args)
        return int(rc or 0)
    except (ImageError, ModelUnavailableError, FileNotFoundError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def parse_weights(text: str | None) -> dict[str, float] | None:
    """'text=1,normal@16=0.5' -> {'text': 1.0, 'normal@16': 0.5}."""
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"bad weight {part!r}: write name=value, e.g. text=1,normal@16=0.5")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ValueError(f"bad weight value {v!r} for {k!r}: must be a number") from None
    return out
