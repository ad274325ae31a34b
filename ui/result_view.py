"""How a scored query is shown: one colour-barred panel per component, and the aggregate panel
with its score, recombined from cached maps whenever a weight, the threshold or the preset moves.

Shared by Inspect (Score, sliders, presets, tuning), Personalize (new components), Inspect's
decision widgets (the contour follows a calibrated threshold) and the session restore.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from fsad_core.aggregate import WeightSet, combine, missing_required

from . import render
from .common import friendly
from .context import LRU, StudioContext
from .weights import ordered_names, studio_weight_set

_DISPLAY = LRU(16)  # (result id, component names) -> (result, display image, display maps)


def panels(ctx: StudioContext, result, img: np.ndarray, opacity: float) -> list[tuple[np.ndarray, str]]:
    """The heatmap gallery: each component's map over the query, with a colour bar and its score."""
    out = []
    for name in ordered_names(result.components):
        sm = result.components[name]
        lo, hi = render.value_range(np.asarray(sm.map))
        out.append((render.with_colorbar(render.heat_panel(img, sm.map, opacity), lo, hi),
                    f"{name} · {float(sm.score):.4f}"))
    return out


def display_maps(result, img: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The query and every component map at the aggregate view's size, computed once per result.

    Weighted combination is linear and so is resampling, so combining the small maps equals
    shrinking the combined map: the slider path then touches ~0.25 MP whatever the query's size.
    """
    key = (id(result), tuple(result.components))
    hit = _DISPLAY.get(key)
    if hit is not None and hit[0] is result:
        return hit[1], hit[2]
    side = min(render.AGGREGATE_SIDE, max(render.MIN_AGGREGATE_SIDE, max(img.shape[:2])))
    hw = render.fit_size(img.shape[:2], side)
    small = render.resize_image(img, hw)
    maps = {n: render.resize_map(sm.map, hw) for n, sm in result.components.items()}
    _DISPLAY.put(key, (result, small, maps))
    return small, maps


def aggregate_view(result, wset: WeightSet, img: np.ndarray, opacity: float, threshold: float):
    """(aggregate panel uint8 HxWx3, score text): `fsad_core.aggregate.combine` — the function behind
    `Result.aggregate` — on display-size maps (the score comes from the full result). The threshold
    is in aggregate-score units: the contour encloses the map at or above it."""
    comps = result.components
    small, maps = display_maps(result, img)
    lost = missing_required(wset, list(comps))
    if lost:
        return small.copy(), (f"— the {wset.name} preset needs {', '.join(lost)}, which this result lacks "
                              "(Personalize the query first)")
    if not any(v > 0 and k in comps for k, v in wset.weights.items()):
        return small.copy(), "— every weight is 0 on this result's components: raise at least one"
    agg = combine(comps, wset, maps=maps)
    lo, hi = render.value_range(agg.map)
    panel = render.aggregate_panel(small, agg.map, opacity, threshold, score_units=True)
    return render.with_colorbar(panel, lo, hi), f"{agg.score:.4f}"


@friendly
def reaggregate(ctx: StudioContext, pid, sha, weights: Mapping[str, float], opacity: float, threshold: float,
                preset: str | None = None) -> dict:
    """The fast path behind every weight slider: combine cached maps, colour, done (no encoding)."""
    cached = ctx.get_result(pid, sha)
    img = ctx.queries.get(sha) if sha else None
    if cached is None or img is None:
        return {}
    comps = cached.result.components
    panel, text = aggregate_view(cached.result, studio_weight_set(preset, weights, comps), img, opacity, threshold)
    return {"aggregate_map": panel, "aggregate_score": text}
