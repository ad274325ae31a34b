"""Which windows of an annotated anomalous shot go to which memory (pure numpy/torch).

The rule (documented in docs/engine.md):
- patch coverage = fraction of a patch's area under the mask, computed by area-averaging the mask
  onto the patch grid (the image is resized, not cropped, to the model's square input, so grid cell
  (i, j) covers the same fraction of the original image);
- window coverage = mean patch coverage over the window's s x s patches (= fraction of its area);
- anomalous memory: windows with coverage >= `threshold` (default 0.5), plus, for every connected
  defect region (8-connectivity), the window that covers the largest fraction of that region's own
  mask (ties: the window whose centre is nearest the region's centroid) — so a small scratch still
  has a window at 112 px;
- normal memory: windows that do not touch the mask at all (coverage == 0); a mask covering the
  whole image gives none.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy import ndimage

from .images import ImageError
from .windows import incidence, window_indices

_EPS = 1e-6


def patch_coverage(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """bool (H, W) -> float32 (gh*gw,) fraction of each grid cell covered, row-major."""
    cov = cv2.resize(mask.astype(np.float32), (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
    return np.clip(cov, 0.0, 1.0).reshape(-1)


def _window_centres(grid: tuple[int, int], scale: int) -> np.ndarray:
    idx = window_indices(grid, scale).numpy()
    rows, cols = idx // grid[1], idx % grid[1]
    return np.stack([rows.mean(axis=1), cols.mean(axis=1)], axis=1)  # (n_win, 2) in patch units


def select_windows(mask: np.ndarray, grid: tuple[int, int], scale: int, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """-> (anomalous window indices, clean window indices), both sorted int64 arrays.

    Raises ImageError for an empty mask: an anomalous shot must show where its defect is.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ImageError("The defect mask is empty: paint or click the defect before saving an anomalous shot.")
    inc = incidence(grid, scale).numpy()  # (P, n_win)
    area = float(scale * scale)
    win_cov = patch_coverage(mask, grid) @ inc / area
    chosen = set(np.flatnonzero(win_cov >= threshold - _EPS).tolist())
    labels, n_regions = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    centres = _window_centres(grid, scale)
    h, w = mask.shape
    for region in range(1, n_regions + 1):
        region_mask = labels == region
        cov = patch_coverage(region_mask, grid) @ inc / area
        best = cov.max()
        if best <= _EPS:
            continue
        ys, xs = np.nonzero(region_mask)
        centroid = np.array([ys.mean() / h * grid[0] - 0.5, xs.mean() / w * grid[1] - 0.5])
        ties = np.flatnonzero(cov >= best - _EPS)
        dist = np.linalg.norm(centres[ties] - centroid, axis=1)
        chosen.add(int(ties[np.argmin(dist)]))
    anomalous = np.array(sorted(chosen), dtype=np.int64)
    clean = np.flatnonzero(win_cov <= _EPS).astype(np.int64)
    return anomalous, clean
