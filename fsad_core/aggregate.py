"""Weights and the weighted combination of component maps.

Default (Abdali et al. 2025, eq. 2): A = 1/3 (a_zs + mean_s a_normal@s + mean_s a_anomalous@s), i.e.
weight 1/3 on `zero_shot`, 1/(3 n_scales) on each `normal@s` and each `anomalous@s`, 0 on `text`.
`combine` renormalises over the components present, so with no anomalous shot the same weights give
1/2 (a_zs + mean a_normal@s) — WinCLIP+'s own mix.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from .results import ScoreMap

STABLE_NAMES: tuple[str, ...] = (
    "text", "zero_shot",
    "normal@16", "normal@32", "normal@48", "normal@112",
    "anomalous@16", "anomalous@32", "anomalous@48", "anomalous@112",
    "adapter", "adapter_memory", "adapter_text", "patchcore", "personal", "pool",
)


def scale_px(scale: int, patch_px: int = 16) -> int:
    return scale * patch_px


def paper_weights(names: Iterable[str]) -> dict[str, float]:
    """Eq. 2 weights over the given component names (those not named there get 0)."""
    names = list(names)
    normal = [n for n in names if n.startswith("normal@")]
    anomalous = [n for n in names if n.startswith("anomalous@")]
    w = {n: 0.0 for n in names}
    if "zero_shot" in w:
        w["zero_shot"] = 1 / 3
    for group in (normal, anomalous):
        for n in group:
            w[n] = 1 / (3 * len(group))
    return w


def default_weights(names: Iterable[str]) -> dict[str, float]:
    return paper_weights(names)


def equal_weights(names: Iterable[str]) -> dict[str, float]:
    names = list(names)
    return {n: 1.0 / len(names) for n in names} if names else {}


# Presets over the stable names; `combine` drops what a result does not have.
PRESETS: dict[str, dict[str, float]] = {
    "paper": paper_weights(STABLE_NAMES[:10]),
    "equal": equal_weights(STABLE_NAMES[:10]),
    # One-to-Normal (Li et al. 2024): A = S_P + 1.0 S_N + 0.5 S_text, the text branch being zero_shot.
    "one-to-normal": {"personal": 1.0, "pool": 1.0, "zero_shot": 0.5},
}


def validate_weights(weights: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for k, v in weights.items():
        v = float(v)
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"weight for {k!r} must be a finite non-negative number, got {v}")
        out[str(k)] = v
    return out


def combine(components: Mapping[str, ScoreMap], weights: Mapping[str, float]) -> ScoreMap:
    """sum_c w_c X_c / sum_c w_c over components present with w_c > 0, for maps and scores alike.

    Unknown names in `weights` (components this result lacks) drop out; the rest renormalise.
    """
    w = {k: v for k, v in validate_weights(weights).items() if v > 0 and k in components}
    if not w:
        raise ValueError(
            "no positive weight on any component of this result "
            f"(components: {', '.join(components) or 'none'}; weights given for: {', '.join(weights) or 'none'})"
        )
    total = sum(w.values())
    first = components[next(iter(w))]
    acc = np.zeros_like(first.map, dtype=np.float32)
    score = 0.0
    for name, wt in w.items():
        acc += np.float32(wt / total) * components[name].map
        score += wt / total * float(components[name].score)
    return ScoreMap(map=acc, score=float(score))
