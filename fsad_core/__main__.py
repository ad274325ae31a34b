"""`python -m fsad_core <command>`: score, eval, inspect, classify, synth, models, bundle, serve, adapters.

Each command lives in `fsad_core/cli/<name>.py` with `register(subparsers)` (adds its parser and
sets `func`) and keeps its heavy imports inside the function it runs, so `--help` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("score", "eval", "inspect", "classify", "synth", "models", "bundle", "serve", "adapters")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fsad_core", description="fsad-studio engine command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"fsad_core.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"fsad_core.cli.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fsad_core.cli.common import run_command

    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
