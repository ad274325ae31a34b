"""`--adapter CKPT` for score, eval and inspect: add the APRIL-GAN adapter components
(`adapter`, `adapter_memory` with normal shots, `adapter_text`) to the engine.

    add_adapter_argument(parser)          # in register()
    attach_adapter(engine, args)          # right after Engine(config)
    valid = engine_component_names(config) + adapter_component_names(args)   # weight validation
"""
from __future__ import annotations

ADAPTER_NAMES = ("adapter", "adapter_memory", "adapter_text")


def add_adapter_argument(parser) -> None:
    parser.add_argument("--adapter", default=None, metavar="CKPT",
                        help="APRIL-GAN adapter checkpoint (python -m fsad_core adapters train): adds the components "
                             "adapter, adapter_memory (with normal shots) and adapter_text")


def adapter_component_names(args) -> list[str]:
    """The names `--adapter` may add (for validating --weights before anything loads); checks the file."""
    path = getattr(args, "adapter", None)
    if not path:
        return []
    from fsad_core.adapters.checkpoint import read_header

    read_header(path)  # a missing or foreign file is an error before any model loads
    return list(ADAPTER_NAMES)


def attach_adapter(engine, args):
    """Load `--adapter CKPT` (its own backbone, with the engine's device, precision and profile) and
    add it to `engine`. Returns the AdapterScorer, or None without --adapter."""
    path = getattr(args, "adapter", None)
    if not path:
        return None
    from fsad_core.scorers.adapter import load_adapter_scorer

    return engine.add_scorer(load_adapter_scorer(path, engine.config))
