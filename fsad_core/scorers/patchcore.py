"""PatchCore (Roth et al. 2022) as a scorer: component `patchcore`.

Memory = the locally aware patch features (fsad_core/patchcore/features.py) of every normal shot
plus the mask-free patches of every anomalous shot (a patch is mask-free when no defect pixel lies
in its cell or the 8 neighbouring cells, since its 3x3 neighbourhood aggregation sees them), greedy
coreset subsampled to `ratio` (default 10 %, as PatchCore), seeded.

Map: each patch's distance to its nearest memory row, bilinearly upsampled to the query's size and
Gaussian-smoothed (sigma 4 px at the 256-px input, PatchCore's smoothing), float32, higher = more
anomalous. Score: PatchCore's re-weighted image score (eq. 7, b = `num_neighbors`).

The scorer also serves defect-type classification (fsad_core/defects): `residual_map` gives the
residual features (Liu et al. 2024, eq. 2) of an image's region against this memory.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from ..images import sha256_of_array
from ..patchcore.coreset import coreset_size, greedy_coreset
from ..patchcore.features import PatchFeatureExtractor, PatchFeatures, build_extractor
from ..patchcore.residuals import nearest, residual_map, reweighted_score
from ..results import ScoreMap
from .base import Query, Scorer, ScorerContext


def grid_mask(mask: np.ndarray, grid: tuple[int, int], dilate: int = 0) -> torch.Tensor:
    """(H, W) bool -> (h, w) bool: cells holding any True pixel, dilated by `dilate` cells."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    g = F.adaptive_max_pool2d(m, grid)
    if dilate:
        g = F.max_pool2d(g, 2 * dilate + 1, stride=1, padding=dilate)
    return g[0, 0] > 0


class PatchCoreScorer(Scorer):
    """The `patchcore` component. `extractor`: a PatchFeatureExtractor (default: built lazily from
    `profile` and `backbone` through the model registry)."""

    name = "patchcore"

    def __init__(self, extractor: PatchFeatureExtractor | None = None, profile: str = "standard",
                 backbone: str = "resnet50", ratio: float = 0.1, seed: int = 0, num_neighbors: int = 9,
                 blur_sigma: float = 4.0, projection_dim: int | None = 128, cache_dir: str | None = None,
                 knn_backend: str = "auto", max_cached: int = 256):
        coreset_size(1, ratio)  # validates the ratio
        self._extractor = extractor
        self.profile, self.backbone, self.cache_dir = profile, backbone, cache_dir
        self.ratio, self.seed, self.num_neighbors = float(ratio), int(seed), int(num_neighbors)
        self.blur_sigma, self.projection_dim, self.knn_backend = float(blur_sigma), projection_dim, knn_backend
        self._feats: OrderedDict[str, PatchFeatures] = OrderedDict()
        self._max_cached = int(max_cached)
        self._memory: torch.Tensor | None = None
        self._version: int | None = None
        self._memory_key = ""

    @classmethod
    def for_engine(cls, engine, **kw) -> "PatchCoreScorer":
        cfg = engine.config
        return cls(profile=cfg.profile, cache_dir=cfg.cache_dir, **kw)

    # -- features -----------------------------------------------------------------------------------
    @property
    def extractor(self) -> PatchFeatureExtractor:
        if self._extractor is None:
            self._extractor = build_extractor(self.profile, self.backbone, cache_dir=self.cache_dir)
        return self._extractor

    def features(self, rgb: np.ndarray, sha: str | None = None) -> PatchFeatures:
        """Patch features of an image, computed once per content hash (LRU)."""
        sha = sha or sha256_of_array(rgb)
        hit = self._feats.get(sha)
        if hit is not None:
            self._feats.move_to_end(sha)
            return hit
        f = self.extractor([rgb])[0]
        self._feats[sha] = f
        while len(self._feats) > self._max_cached:
            self._feats.popitem(last=False)
        return f

    # -- memory -------------------------------------------------------------------------------------
    def prepare(self, ctx: ScorerContext) -> None:
        if self._version == ctx.version and self._memory is not None:
            return
        rows = []
        for shot in ctx.shots:
            f = self.features(shot.rgb, shot.id)
            if shot.kind == "normal":
                rows.append(f.feats)
            elif shot.mask is not None:
                clean = ~grid_mask(shot.mask, f.grid, dilate=1).reshape(-1)
                rows.append(f.feats[clean])
        feats = torch.cat(rows) if rows else torch.zeros(0, 1)
        if feats.shape[0]:
            idx = greedy_coreset(feats, coreset_size(feats.shape[0], self.ratio), self.seed, self.projection_dim)
            self._memory = feats[idx].contiguous()
        else:
            self._memory = None
        self._version = ctx.version
        h = hashlib.sha256(self.extractor.id.encode())
        for s in ctx.shots:
            h.update(s.id.encode())
            if s.mask is not None:
                h.update(np.packbits(s.mask).tobytes())
        h.update(f"{self.ratio}|{self.seed}|{self.projection_dim}".encode())
        self._memory_key = h.hexdigest()[:16]

    @property
    def memory(self) -> torch.Tensor:
        if self._memory is None:
            raise ValueError("PatchCore has no memory: add at least one normal shot (or an anomalous shot with a "
                             "defect-free area)")
        return self._memory

    @property
    def memory_key(self) -> str:
        """A fingerprint of what the memory was built from (extractor, shots, masks, coreset settings)."""
        return self._memory_key

    def component_names(self) -> list[str]:
        return ["patchcore"] if self._memory is not None else []

    # -- scoring ------------------------------------------------------------------------------------
    def score(self, query: Query) -> dict[str, ScoreMap]:
        if self._memory is None:
            return {}
        f = self.features(query.rgb, query.sha256)
        d, i = nearest(f.feats, self._memory, self.knn_backend)
        score = reweighted_score(f.feats, self._memory, d, i, self.num_neighbors, self.knn_backend)
        grid = d.reshape(f.grid)
        return {"patchcore": ScoreMap(map=self._upsample(grid, query.size_hw), score=score, grid=grid.numpy())}

    def _upsample(self, grid: torch.Tensor, size_hw: tuple[int, int]) -> np.ndarray:
        up = F.interpolate(grid[None, None].float(), size=tuple(int(s) for s in size_hw), mode="bilinear",
                           align_corners=False)[0, 0].numpy()
        if self.blur_sigma > 0:
            import cv2

            sigma = self.blur_sigma * max(size_hw) / self.extractor.image_size
            up = cv2.GaussianBlur(up, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
        return up.astype(np.float32, copy=False)

    def residual_map(self, rgb: np.ndarray, region: np.ndarray | None = None, sha: str | None = None) -> torch.Tensor:
        """Residual features (eq. 2) of an image against the memory, (D, h, w), zero outside `region`
        ((H, W) bool at the image's size: cells holding any region pixel count)."""
        f = self.features(rgb, sha)
        g = None if region is None else grid_mask(region, f.grid)
        return residual_map(f.feats, self.memory, f.grid, g, self.knn_backend)
