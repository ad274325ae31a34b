"""fsad_core: the few-shot anomaly detection engine of fsad-studio.

Public API: Engine, EngineConfig, ScoreMap, Result. Imports are lazy so that torch-free modules
(`fsad_core.images`, `fsad_core.metrics`) can be used without loading torch.
"""
from __future__ import annotations

__all__ = ["Engine", "EngineConfig", "ScoreMap", "Result"]
__version__ = "0.1.0"


def __getattr__(name):
    if name == "EngineConfig":
        from .config import EngineConfig

        return EngineConfig
    if name in ("ScoreMap", "Result"):
        from . import results

        return getattr(results, name)
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module 'fsad_core' has no attribute {name!r}")
