"""Helpers shared by the CLI commands: turning errors into one readable line and an exit code,
checking output paths and aggregation weights before any work is done."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

# How to get a component that a run does not compute, for error messages.
HOW_TO_GET = {
    "personal": "add --personalize fast|paper (One-to-Normal)",
    "pool": "add --personalize fast|paper (One-to-Normal)",
    "adapter": "add --adapter CKPT (APRIL-GAN)",
    "adapter_memory": "add --adapter CKPT (APRIL-GAN) and a normal shot",
    "adapter_text": "add --adapter CKPT (APRIL-GAN)",
    "patchcore": "add --patchcore (PatchCore)",
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
    from fsad_core.names import safe_line

    # messages name files, and file names may hold control characters or bytes that are not UTF-8:
    # the line printed is escaped (safe_line), never raw
    try:
        rc = func(args)
        return int(rc or 0)
    except (ImageError, ModelUnavailableError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {safe_line(str(msg))}", file=sys.stderr)
        return 2
    except OSError as exc:  # FileNotFoundError with our message, or a path that cannot be written
        print(f"error: {safe_line(_os_error_text(exc))}", file=sys.stderr)
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
    """'text=1,normal@16=0.5' -> {'text': 1.0, 'normal@16': 0.5} (see fsad_core.aggregate)."""
    from fsad_core.aggregate import parse_weight_text

    return parse_weight_text(text) if text else None


def engine_component_names(config, extra: Sequence[str] = ()) -> list[str]:
    """Every component name the engine can produce with `config.scales` (stable order), plus the
    names of the scorers a command adds (`extra`, e.g. personal and pool with --personalize)."""
    from fsad_core.aggregate import scale_px

    names = ["text", "zero_shot"] + [f"{k}@{scale_px(s)}" for k in ("normal", "anomalous") for s in config.scales]
    return names + [n for n in extra if n not in names]


def weights_from_arg(text: str | None, valid: Sequence[str], command: str = ""):
    """--weights: None/'default' -> the `paper` preset; a preset name (paper, equal, winclip+,
    one-to-normal, april-gan) or name=w,... -> a checked `WeightSet`. Unknown names (typos, or
    components this run does not compute) are an error that lists the valid names and how to get
    the missing ones; so are negative and all-zero weights."""
    from fsad_core.aggregate import resolve_weights

    return resolve_weights(text or "paper", list(valid), HOW_TO_GET)


def add_personalize_args(p) -> None:
    """--personalize fast|paper [--lora DIR]: add One-to-Normal's `personal` and `pool`."""
    g = p.add_argument_group("One-to-Normal personalization (components personal and pool)")
    g.add_argument("--personalize", default=None, choices=("fast", "paper"),
                   help="compute personal and pool with this One-to-Normal preset; without --lora the customized "
                        "model is trained on the run's normal shots and cached by their fingerprint")
    g.add_argument("--lora", default=None, metavar="DIR", help="a trained customized model (LoRA folder) to use as is")
    g.add_argument("--pool-size", type=int, default=None, metavar="N",
                   help="generated images in the anomaly-free pool (default: the preset's)")
    p.add_argument("--patchcore", action="store_true",
                   help="add the patchcore component (PatchCore: ImageNet CNN features, coreset memory; ResNet-50 "
                        "weights from the model registry, a tiny random CNN on --profile tiny)")


def extra_component_names(args) -> list[str]:
    """Component names the optional scorers of a command line add."""
    from fsad_core.cli.adapter_args import adapter_component_names

    return ((["personal", "pool"] if getattr(args, "personalize", None) else []) + adapter_component_names(args)
            + (["patchcore"] if getattr(args, "patchcore", False) else []))


def check_personalize_args(args) -> None:
    from pathlib import Path

    if getattr(args, "lora", None) and not getattr(args, "personalize", None):
        raise ValueError("--lora needs --personalize fast|paper")
    if getattr(args, "lora", None) and not Path(args.lora).is_dir():
        raise FileNotFoundError(f"--lora {args.lora!r} is not a folder (a trained customized model, as the "
                                "studio's Personalize tab or Personalizer.train writes it)")
    if getattr(args, "pool_size", None) is not None and args.pool_size < 0:
        raise ValueError("--pool-size must be >= 0")


def attach_scorers(engine, args) -> None:
    """Plug the optional scorers a command line asks for into `engine` (after it is built)."""
    if getattr(args, "personalize", None):
        from fsad_core.personalize import PersonalizeConfig, Personalizer
        from fsad_core.progress import printer
        from fsad_core.scorers.one_to_normal import OneToNormalScorer

        kw = dict(profile=engine.config.profile, preset=args.personalize, cache_dir=engine.config.cache_dir)
        if getattr(args, "pool_size", None) is not None:
            kw["pool_size"] = int(args.pool_size)
        if engine.config.device != "auto":
            kw["device"] = engine.config.device
        p = Personalizer(PersonalizeConfig(**kw))
        # each phase's first line at once, then a line at most every 10 s (training has hundreds of steps)
        engine.add_scorer(OneToNormalScorer(engine, p, lora_dir=args.lora,
                                            progress=printer("one-to-normal", every=10.0)))
    from fsad_core.cli.adapter_args import attach_adapter

    attach_adapter(engine, args)  # --adapter CKPT: adapter, adapter_memory, adapter_text
    if getattr(args, "patchcore", False):
        from fsad_core.scorers.patchcore import PatchCoreScorer

        engine.add_scorer(PatchCoreScorer.for_engine(engine))
