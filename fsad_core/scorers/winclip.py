"""WinCLIP+ with an anomalous memory as one scorer: `text`, `zero_shot`, `normal@<px>`, `anomalous@<px>`.

The engine owns the CLIP encoder and the per-image feature cache (every image is encoded once);
this scorer reads those features, builds the per-scale normal and anomalous memories from the
context's shots, and computes the components scale by scale (`score_progressive`: patch level first).
"""
from __future__ import annotations

from collections import deque
from typing import Iterator, Mapping

import torch

from ..aggregate import scale_px
from ..memory import normalize
from ..results import ScoreMap, constant_scoremap, scoremap_from_grid
from ..selection import select_windows
from .anomalous import anomalous_grid
from .base import Query, Scorer, ScorerContext
from .reference import normal_grid
from .text import text_score, zero_shot_grid

ZERO_SHOT_SCALES = (2, 3)  # WinCLIP's zero-shot windows (32 and 48 px)
KINDS = ("normal", "anomalous")


class WinClipScorer(Scorer):
    """text + zero_shot (no shots needed) and the per-scale normal / anomalous memories."""

    name = "winclip"

    def __init__(self, engine):
        self.engine = engine
        self._banks: dict[str, dict[int, torch.Tensor]] | None = None
        self._version: int | None = None

    @property
    def scales(self) -> tuple[int, ...]:
        return self.engine.config.scales

    def prepare(self, ctx: ScorerContext) -> None:
        if self._version != ctx.version or self._banks is None:
            self._banks = self._build_banks(ctx)
            self._version = ctx.version

    def _build_banks(self, ctx: ScorerContext) -> dict[str, dict[int, torch.Tensor]]:
        eng = self.engine
        normal: dict[int, list[torch.Tensor]] = {s: [] for s in self.scales}
        anomalous: dict[int, list[torch.Tensor]] = {s: [] for s in self.scales}
        for shot in ctx.shots:
            feats = eng.shot_features(shot.id)
            for s in self.scales:
                f = eng.scale_features(feats, s)
                if shot.kind == "normal":
                    normal[s].append(f)
                else:
                    bad, clean = select_windows(shot.mask, eng.backbone.grid, s, eng.config.mask_coverage)
                    anomalous[s].append(f[torch.from_numpy(bad)])
                    normal[s].append(f[torch.from_numpy(clean)])
        if eng.config.pool_in_normal_memory:
            for feats in eng.pool_features():
                for s in self.scales:
                    normal[s].append(eng.scale_features(feats, s))
        return {
            "normal": {s: normalize(torch.cat(v)) for s, v in normal.items() if v and sum(len(t) for t in v)},
            "anomalous": {s: normalize(torch.cat(v)) for s, v in anomalous.items() if v and sum(len(t) for t in v)},
        }

    def banks(self) -> dict[str, dict[int, torch.Tensor]]:
        if self._banks is None:
            raise RuntimeError("prepare() the scorer first")
        return self._banks

    def component_names(self) -> list[str]:
        banks = self.banks()
        names = ["text", "zero_shot"]
        names += [f"{k}@{scale_px(s)}" for k in KINDS for s in self.scales if s in banks[k]]
        return names

    def score(self, query: Query) -> dict[str, ScoreMap]:
        last = deque(self.score_progressive(query), maxlen=1)  # the last step holds every component
        return last[0] if last else {}

    def score_progressive(self, query: Query) -> Iterator[dict[str, ScoreMap]]:
        eng = self.engine
        size = query.size_hw
        feats = eng.query_features(query)
        banks = self.banks()
        grid = eng.backbone.grid
        text = eng.text_embeddings()
        t = eng.config.temperature
        comps: dict[str, ScoreMap] = {}
        image_score = text_score(feats.encoding.image_emb, text, t)
        comps["text"] = constant_scoremap(image_score, size)

        def memory_components(scale: int) -> None:
            f = None
            for kind, fn in (("normal", normal_grid), ("anomalous", anomalous_grid)):
                if scale in banks[kind]:
                    f = eng.scale_features(feats, scale) if f is None else f
                    comps[f"{kind}@{scale_px(scale)}"] = scoremap_from_grid(fn(f, banks[kind][scale], grid, scale), size)

        if 1 in self.scales:
            memory_components(1)
        yield self._ordered(comps)
        for s in eng.window_scales:
            eng.scale_features(feats, s)
            if s in self.scales:
                memory_components(s)
            if all(z in feats.windows for z in ZERO_SHOT_SCALES) and "zero_shot" not in comps:
                zs = zero_shot_grid(image_score, {z: feats.windows[z] for z in ZERO_SHOT_SCALES}, text, t, grid)
                comps["zero_shot"] = scoremap_from_grid(zs, size)
            yield self._ordered(comps)

    def _ordered(self, comps: Mapping[str, ScoreMap]) -> dict[str, ScoreMap]:
        order = ["text", "zero_shot"] + [f"{k}@{scale_px(s)}" for k in KINDS for s in self.scales]
        return {n: comps[n] for n in order if n in comps}
