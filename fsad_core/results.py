"""Typed results: a ScoreMap per component, a Result per query."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class ScoreMap:
    """An anomaly map and its image score; higher means more anomalous.

    map: float32 (H, W) at the query's own resolution.
    score: the image-level score (for grid-based components: the max of the grid map, taken before
        upsampling, as anomalib does).
    grid: the map on the patch grid before upsampling, when there is one.
    """

    map: np.ndarray
    score: float
    grid: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Result:
    """Every component's ScoreMap for one query. Re-weighting is cheap: `aggregate` only combines."""

    components: Mapping[str, ScoreMap]
    size_hw: tuple[int, int]
    query_sha256: str = ""
    complete: bool = True

    def aggregate(self, weights=None) -> ScoreMap:
        """The aggregate map and score under a weight set (see `fsad_core.aggregate`).

        weights: None (the `paper` preset: Abdali et al. 2025 eq. 2, score = 1/3 text + 1/12 on each
        memory score with four scales), a preset name ("paper", "equal", "winclip+", "one-to-normal",
        "april-gan"), "name=w,..." text, a {name: weight} mapping or a `WeightSet`. Weights on
        components this result lacks drop out; all-zero weights, and presets missing a component they
        need (one-to-normal without `personal`), are errors.
        """
        from .aggregate import combine, resolve_weights

        return combine(self.components, resolve_weights(weights, list(self.components), strict=False))

    def with_components(self, extra: Mapping[str, ScoreMap]) -> "Result":
        """A new Result with more (or replaced) components, e.g. `personal` and `pool`."""
        for name, sm in extra.items():
            if sm.map.shape != tuple(self.size_hw):
                raise ValueError(f"component {name!r} map is {sm.map.shape}, expected {tuple(self.size_hw)}")
        merged = dict(self.components)
        merged.update(extra)
        return Result(merged, self.size_hw, self.query_sha256, self.complete)

    def scores(self) -> dict[str, float]:
        return {k: float(v.score) for k, v in self.components.items()}


def scoremap_from_grid(grid, size_hw: tuple[int, int]) -> ScoreMap:
    """Patch-grid map (torch or numpy, (h, w)) -> ScoreMap at `size_hw`.

    Bilinear upsampling with align_corners=False; the score is the max of the *grid* map (before
    upsampling), as anomalib computes image scores.
    """
    import torch

    g = torch.as_tensor(grid, dtype=torch.float32)
    up = torch.nn.functional.interpolate(g[None, None], size=tuple(int(s) for s in size_hw), mode="bilinear",
                                         align_corners=False)[0, 0]
    return ScoreMap(map=up.numpy().astype(np.float32, copy=False), score=float(g.max()), grid=g.numpy())


def constant_scoremap(value: float, size_hw: tuple[int, int]) -> ScoreMap:
    """An image-level score shown as a flat map (the `text` component)."""
    return ScoreMap(map=np.full(tuple(size_hw), value, dtype=np.float32), score=float(value))
