"""One-to-Normal's triplet contrastive scores (Li et al., NeurIPS 2024): `personal` and `pool`.

Multi-level CLIP features: the patch tokens after blocks `levels` of the visual transformer (each
token layer-normalised with the model's ln_post, then L2-normalised), on the backbone's patch grid.

    S_P (personal) = mean_l max_grid (1 - cos(F_q,l, F̂_q,l))            query vs its personalized image,
                                                                        position by position
    S_N (pool)     = mean_l max_grid min_{m in pool memory_l} (1 - cos(F_q,l, m))

The maps are the per-level grid maps averaged over levels and upsampled (bilinear) to the query's
size; the image score is the paper's mean over levels of the per-level grid maxima. The text
branch is the engine's `zero_shot`; `PRESETS["one-to-normal"]` = S_P + 1.0 S_N + 0.5 S_text.

Split of the expensive from the cheap step: `encode_levels` encodes images once (the pool once per
project); `personal_maps` / `pool_maps` are pure tensor functions of encodings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..images import ImageInput, to_rgb_array
from ..results import ScoreMap


@dataclass(frozen=True)
class LevelFeatures:
    """Multi-level patch features of N images.

    feats: one float32 CPU tensor (N, P, C) per level, L2-normalised along C (P = grid h*w).
    levels: the transformer block indices (0-based). grid: (h, w). model_id: the backbone's id.
    """

    feats: tuple
    levels: tuple
    grid: tuple
    model_id: str = ""

    def __len__(self) -> int:
        return int(self.feats[0].shape[0]) if self.feats else 0


def resolve_levels(backbone, levels: Sequence[int] | None = None) -> tuple[int, ...]:
    """Block indices to read. None = four evenly spaced blocks ending at the last (ViT-B/16+, 12
    blocks: (2, 5, 8, 11); the tiny 2-block model: (0, 1)); negative indices count from the end;
    duplicates collapse."""
    depth = len(backbone.model.visual.transformer.resblocks)
    if levels is None:
        levels = [max(0, depth * k // 4 - 1) for k in (1, 2, 3, 4)]
    out = []
    for lv in levels:
        i = int(lv) + depth if int(lv) < 0 else int(lv)
        if not 0 <= i < depth:
            raise ValueError(f"feature level {lv} is outside the visual transformer's {depth} blocks "
                             f"(use 0..{depth - 1} or negative indices)")
        if i not in out:
            out.append(i)
    return tuple(sorted(out))


@torch.no_grad()
def encode_levels(backbone, images: Sequence[ImageInput], levels: Sequence[int] | None = None,
                  batch: int = 8) -> LevelFeatures:
    """Images -> LevelFeatures, through `backbone.model.forward_intermediates` under the backbone's
    autocast. Each image is resized (not cropped) by `backbone.preprocess`."""
    lv = resolve_levels(backbone, levels)
    rgbs = [to_rgb_array(im) for im in images]
    per_level: list[list[torch.Tensor]] = [[] for _ in lv]
    for start in range(0, len(rgbs), batch):
        x = torch.cat([backbone.preprocess(r) for r in rgbs[start:start + batch]]).to(backbone.device)
        with backbone.autocast():
            out = backbone.model.forward_intermediates(
                image=x, image_indices=list(lv), image_output_fmt="NLC", intermediates_only=True,
                normalize_intermediates=True,
            )["image_intermediates"]
        for k, t in enumerate(out):
            per_level[k].append(torch.nn.functional.normalize(t.float(), dim=-1).cpu())
    c = int(backbone.model.visual.transformer.width)
    feats = tuple(torch.cat(f) if f else torch.zeros(0, int(np.prod(backbone.grid)), c) for f in per_level)
    return LevelFeatures(feats, lv, tuple(backbone.grid), getattr(backbone, "model_id", ""))


def personal_maps(query: LevelFeatures, personalized: LevelFeatures) -> torch.Tensor:
    """Per-level grid maps of 1 - cos between the query's and its personalized image's features at
    the same position: (L, h, w), in [0, 2]. Both hold one image."""
    _check_pair(query, personalized)
    maps = [1.0 - (q[0] * p[0]).sum(-1) for q, p in zip(query.feats, personalized.feats)]
    return torch.stack(maps).reshape(len(maps), *query.grid)


def pool_maps(query: LevelFeatures, pool: LevelFeatures, chunk: int = 8192) -> torch.Tensor:
    """Per-level grid maps of min over the pool memory (every patch of every pool image at that
    level) of 1 - cos: (L, h, w). One matrix product per level (chunked over the memory)."""
    _check_pair(query, pool)
    if len(pool) == 0:
        raise ValueError("the anomaly-free pool is empty; generate it first (Personalizer.generate_pool)")
    maps = []
    for q, m in zip(query.feats, pool.feats):
        mem = m.reshape(-1, m.shape[-1])  # (M*P, C)
        best = torch.full((q.shape[1],), -2.0)
        for start in range(0, mem.shape[0], chunk):
            best = torch.maximum(best, (q[0] @ mem[start:start + chunk].T).max(dim=1).values)
        maps.append(1.0 - best)
    return torch.stack(maps).reshape(len(maps), *query.grid)


def _check_pair(a: LevelFeatures, b: LevelFeatures):
    if a.levels != b.levels or a.grid != b.grid:
        raise ValueError(f"features were taken at different levels/grids ({a.levels} {a.grid} vs {b.levels} {b.grid}); "
                         "encode both with the same backbone and levels")
    if a.model_id and b.model_id and a.model_id != b.model_id:
        raise ValueError(f"features come from different backbones ({a.model_id} vs {b.model_id}); re-encode the pool")


def level_scoremap(level_maps: torch.Tensor, size_hw: tuple[int, int]) -> ScoreMap:
    """(L, h, w) per-level grid maps -> ScoreMap: map = level mean upsampled to `size_hw`,
    score = mean over levels of each level's grid max (the paper's S_P / S_N)."""
    grid = level_maps.float().mean(0)
    up = torch.nn.functional.interpolate(grid[None, None], size=tuple(int(s) for s in size_hw), mode="bilinear",
                                         align_corners=False)[0, 0]
    score = float(level_maps.flatten(1).max(dim=1).values.mean())
    return ScoreMap(map=up.numpy().astype(np.float32), score=score, grid=grid.numpy().astype(np.float32))


def personal_components(backbone, query_img: ImageInput, personalized_img: ImageInput,
                        pool_imgs: Sequence[ImageInput] | LevelFeatures | None = None,
                        levels: Sequence[int] | None = None) -> dict[str, ScoreMap]:
    """{"personal": S_P, "pool": S_N} as ScoreMaps at the query's size ("pool" only with a pool).

    backbone: the engine's ClipBackbone (`engine.backbone`). personalized_img: the query's
    personalized normal (`PersonalizationResult.chosen`). pool_imgs: the pool images, or their
    `encode_levels` output (encode the pool once per project and pass that).
    """
    q_rgb = to_rgb_array(query_img)
    size_hw = q_rgb.shape[:2]
    pair = encode_levels(backbone, [q_rgb, personalized_img], levels)
    q = LevelFeatures(tuple(f[:1] for f in pair.feats), pair.levels, pair.grid, pair.model_id)
    p = LevelFeatures(tuple(f[1:] for f in pair.feats), pair.levels, pair.grid, pair.model_id)
    out = {"personal": level_scoremap(personal_maps(q, p), size_hw)}
    if pool_imgs is not None:
        mem = pool_imgs if isinstance(pool_imgs, LevelFeatures) else encode_levels(backbone, pool_imgs, pair.levels)
        if len(mem):
            out["pool"] = level_scoremap(pool_maps(q, mem), size_hw)
    return out
