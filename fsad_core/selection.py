"""Which windows of an annotated anomalous shot go to which memory (pure numpy).

The rule (documented in docs/engine.md):
- the image is resized, not cropped, to the model's square input, so grid cell (i, j) covers the
  same part of the original image: rows [i H/gh, (i+1) H/gh), columns [j W/gw, (j+1) W/gw);
- a patch **touches** the mask when any defect pixel overlaps its cell (a boolean, from integer
  pixel counts: a 1-pixel defect on a 6000 x 6000 image touches its patch exactly like a big one);
  a window touches the mask when any of its patches does;
- patch coverage = fraction of a patch's area under the mask (exact area average, what OpenCV's
  INTER_AREA computes); window coverage = mean patch coverage over its s x s patches;
- anomalous memory: the touching windows with coverage >= `threshold` (default 0.5), plus, for every
  connected defect region (8-connectivity), its best-covered window: the largest fraction of the
  window's area under that region (exact area overlaps in float64, computed from the region's own
  pixels, so a 1-pixel region on a 6000 x 6000 image still has a clear maximum; ties within 1e-9
  relative: the window whose centre is nearest the region's centroid) — so a small scratch still has
  a window at 112 px;
- normal memory: windows that do not touch the mask at all; a mask covering the whole image gives none.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .images import ImageError
from .windows import incidence, window_indices

_EPS = 1e-6  # only for the coverage threshold (coverage >= 0.5 is never near underflow)
_CHUNK_ELEMS = 1 << 22  # rows of the mask are converted to float64 ~4 M pixels at a time


def _cell_spans(n_px: int, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel ranges [lo, hi) of the pixels overlapping each cell (a pixel straddling a
    boundary belongs to both cells). Exact integer arithmetic.

    >>> [a.tolist() for a in _cell_spans(10, 3)]
    [[0, 3, 6], [4, 7, 10]]
    """
    i = np.arange(n_cells, dtype=np.int64)
    lo = (i * n_px) // n_cells
    hi = -((-(i + 1) * n_px) // n_cells)
    return lo, hi


def _membership(n_px: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(len(lo), n_px) float64: 1 where pixel p lies in [lo, hi)."""
    p = np.arange(n_px)
    return ((p >= lo[:, None]) & (p < hi[:, None])).astype(np.float64)


def _overlap(n_px: int, n_cells: int) -> np.ndarray:
    """(n_cells, n_px) float64: length of the overlap of pixel p = [p, p+1) with cell i, in pixels."""
    edges = np.arange(n_cells + 1, dtype=np.float64) * n_px / n_cells
    p = np.arange(n_px, dtype=np.float64)
    return np.clip(np.minimum(p + 1, edges[1:, None]) - np.maximum(p, edges[:-1, None]), 0.0, None)


def _project(mask: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """left @ mask @ right.T in float64, a few million pixels at a time (bounded memory)."""
    out = np.zeros((left.shape[0], right.shape[0]))
    step = max(1, _CHUNK_ELEMS // max(1, mask.shape[1]))
    for r0 in range(0, mask.shape[0], step):
        m = mask[r0:r0 + step]
        if m.any():
            out += left[:, r0:r0 + step] @ (m.astype(np.float64) @ right.T)
    return out


def patch_coverage(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """bool (H, W) -> float32 (gh*gw,) fraction of each grid cell covered, row-major."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    cov = _project(mask, _overlap(h, grid[0]), _overlap(w, grid[1])) / ((h / grid[0]) * (w / grid[1]))
    return np.clip(cov, 0.0, 1.0).astype(np.float32).reshape(-1)


def patch_pixel_counts(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """bool (H, W) -> int64 (gh*gw,) number of mask pixels overlapping each grid cell, row-major.

    A patch touches the mask iff its count is > 0. Pixels straddling a cell boundary count in both.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    rows, cols = _cell_spans(h, grid[0]), _cell_spans(w, grid[1])
    counts = _project(mask, _membership(h, *rows), _membership(w, *cols))
    return np.rint(counts).astype(np.int64).reshape(-1)


def _window_centres(grid: tuple[int, int], scale: int) -> np.ndarray:
    idx = window_indices(grid, scale).numpy()
    rows, cols = idx // grid[1], idx % grid[1]
    return np.stack([rows.mean(axis=1), cols.mean(axis=1)], axis=1)  # (n_win, 2) in patch units


def _window_overlap(n_px: int, n_cells: int, scale: int) -> np.ndarray:
    """(n_cells - scale + 1, n_px) float64: overlap length of pixel p with each window's span,
    divided by the span's length (window k spans cells k .. k + scale - 1)."""
    edges = np.arange(n_cells + 1, dtype=np.float64) * n_px / n_cells
    lo, hi = edges[:n_cells - scale + 1], edges[scale:]
    p = np.arange(n_px, dtype=np.float64)
    ov = np.clip(np.minimum(p + 1, hi[:, None]) - np.maximum(p, lo[:, None]), 0.0, None)
    return ov / (hi - lo)[:, None]


def _best_region_windows(mask: np.ndarray, grid: tuple[int, int], scale: int) -> list[int]:
    """For each 8-connected region: its best-covered window (ties: nearest centre)."""
    h, w = mask.shape
    wy, wx = _window_overlap(h, grid[0], scale), _window_overlap(w, grid[1], scale)
    # label only inside the mask's bounding box: a speck on a huge image costs nothing
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    by0, bx0 = int(ys[0]), int(xs[0])
    box = mask[by0:int(ys[-1]) + 1, bx0:int(xs[-1]) + 1]
    labels, n_regions = ndimage.label(box, structure=np.ones((3, 3), dtype=bool))
    centres = _window_centres(grid, scale)
    chosen = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        region = labels[sl] == k
        y0, x0 = by0 + sl[0].start, bx0 + sl[1].start
        ry, rx = np.arange(y0, y0 + region.shape[0]), np.arange(x0, x0 + region.shape[1])
        # (n_win,) fraction of each window's area under this region
        cover = _project(region, wy[:, ry], wx[:, rx]).reshape(-1)
        best = cover.max()
        if best <= 0:  # cannot happen: every pixel lies in some window
            continue
        row_n, col_n = region.sum(axis=1), region.sum(axis=0)
        n = row_n.sum()
        cy = (ry + 0.5) @ row_n / n  # centroid in pixel coordinates (pixel centres)
        cx = (rx + 0.5) @ col_n / n
        centroid = np.array([cy / h * grid[0] - 0.5, cx / w * grid[1] - 0.5])  # in patch-index units
        ties = np.flatnonzero(cover >= best * (1 - 1e-9))
        dist = np.linalg.norm(centres[ties] - centroid, axis=1)
        chosen.append(int(ties[np.argmin(dist)]))
    return chosen


def select_windows(mask: np.ndarray, grid: tuple[int, int], scale: int, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """-> (anomalous window indices, clean window indices), both sorted int64 arrays.

    Raises ImageError for an empty mask: an anomalous shot must show where its defect is.

    >>> m = np.zeros((4000, 4000), bool); m[2000, 2000] = True      # 1 px on a 16 MP image
    >>> bad, clean = select_windows(m, (15, 15), 7)
    >>> bad.tolist(), len(clean)                                      # 49 of 81 windows touch it
    ([40], 32)
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ImageError(f"The defect mask must be 2-D (H, W), got shape {mask.shape}.")
    if not mask.any():
        raise ImageError("The defect mask is empty: paint or click the defect before saving an anomalous shot.")
    inc = incidence(grid, scale).numpy().astype(np.float64)  # (P, n_win)
    touched = (patch_pixel_counts(mask, grid) > 0).astype(np.float64)
    touches = (touched @ inc) > 0  # (n_win,) any of the window's patches holds a defect pixel
    win_cov = patch_coverage(mask, grid).astype(np.float64) @ inc / float(scale * scale)
    chosen = set(np.flatnonzero(touches & (win_cov >= threshold - _EPS)).tolist())
    chosen.update(_best_region_windows(mask, grid, scale))
    anomalous = np.array(sorted(chosen), dtype=np.int64)
    clean = np.flatnonzero(~touches).astype(np.int64)
    return anomalous, clean
