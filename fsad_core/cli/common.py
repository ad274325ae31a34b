"""Helpers shared by the CLI commands: turning errors into one readable line and an exit code,
checking output paths and aggregation weights before any work is done."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping, Sequence

# Components the WinCLIP engine does not compute (the studio's One-to-Normal tab does personal/pool;
# adapter/patchcore are reserved names). Weights on them cannot be honoured by score/eval/inspect.
NOT_COMPUTED = {
    "personal": "One-to-Normal personalization (the studio's Personalize tab)",
    "pool": "One-to-Normal personalization (the studio's Personalize tab)",
    "adapter": "a reserved name, not implemented",
    "patchcore": "the PatchCoreScorer (Python API and `classify`; score/eval/inspect do not add it yet)",
}


def _os_error_text(exc: OSError) -> str:
    """'[Errno 21] Is a directory: 'x'' -> 'cannot write x: Is a directory'-style text."""
    if exc.filename is not None and exc.strerror:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{where}: {exc.strerror}"
    return str(exc)


def run_command(func, args) -> int:
    """Run a command; user errors (bad images, missing weights, bad folders, unwritable output paths)
    print one `error: ...` line and return 2 (never a traceback)."""
    from fsad_core.images import ImageError
    from fsad_core.models.registry import ModelUnavailableError

    try:
        rc = func(args)
        return int(rc or 0)
    except (ImageError, ModelUnavailableError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:  # FileNotFoundError with our message, or a path that cannot be written
        print(f"error: {_os_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def check_output_file(path, flag: str) -> Path:
    """An output file path must not be a folder, and no parent of it may be a file."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a folder; give a file name (e.g. {str(p / 'out.json')!r})")
    _check_parents(p, flag, path)
    return p


def check_output_dir(path, flag: str) -> Path:
    """An output folder path must be a folder or not exist yet, and no parent of it may be a file."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a folder; give a folder path")
    _check_parents(p, flag, path)
    return p


def _check_parents(p: Path, flag: str, given) -> None:
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag} {str(given)!r}: {str(parent)!r} is a file, not a folder")
            return


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


def engine_component_names(config) -> list[str]:
    """Every component name the WinCLIP engine can produce with `config.scales` (stable order)."""
    from fsad_core.aggregate import scale_px

    return ["text", "zero_shot"] + [f"{k}@{scale_px(s)}" for k in ("normal", "anomalous") for s in config.scales]


def _not_computed_note(names: Sequence[str], command: str) -> str:
    bad = [n for n in names if n in NOT_COMPUTED]
    if not bad:
        return ""
    why = "; ".join(f"{n}: {NOT_COMPUTED[n]}" for n in bad)
    return f" — `{command}` does not compute {', '.join(bad)} ({why})"


def check_weights(weights: Mapping[str, float], valid: Sequence[str], command: str) -> dict[str, float]:
    """Validate user weights against the component names `command` can produce.

    Unknown names (typos such as normal@17, or personal/pool which only the studio computes) are an
    error that lists the valid names; so are negative weights and weights that are all zero.
    """
    from fsad_core.aggregate import validate_weights

    w = validate_weights(weights)
    unknown = [k for k in w if k not in valid]
    if unknown:
        raise ValueError(f"weights for unknown components {', '.join(unknown)}; valid names here: "
                         f"{', '.join(valid)}{_not_computed_note(unknown, command)}")
    if not any(v > 0 for v in w.values()):
        raise ValueError("at least one weight must be positive")
    return w


def check_preset(name: str, valid: Sequence[str], command: str) -> dict[str, float]:
    """A named preset's weights over `valid`; an error if it relies on components `command` lacks
    (e.g. one-to-normal: personal + pool + 0.5 zero_shot would silently measure zero_shot alone)."""
    from fsad_core.aggregate import PRESETS

    preset = PRESETS[name]
    lost = [k for k, v in preset.items() if v > 0 and k in NOT_COMPUTED]
    if lost:
        raise ValueError(f"--weights {name} puts weight on {', '.join(lost)}{_not_computed_note(lost, command)}; "
                         f"with only the rest it would measure something else. Use default, paper, equal or "
                         f"name=w,... over: {', '.join(valid)}")
    return {k: v for k, v in preset.items() if k in valid}


def weights_from_arg(text: str | None, valid: Sequence[str], command: str) -> dict[str, float] | None:
    """--weights: None/'default' -> None (the paper's eq. 2), a preset name, or name=w,... (validated)."""
    from fsad_core.aggregate import PRESETS

    if text is None or text == "default":
        return None
    if text in PRESETS:
        return check_preset(text, valid, command)
    return check_weights(parse_weights(text) or {}, valid, command)
