"""Sliding windows over the patch grid, and harmonic aggregation of window scores onto the grid.

Pure torch, no model. A window of scale ``s`` is the ``s x s`` block of patches starting at every
grid position where it fits (stride 1). Window ``w``'s patch indices are in row-major order, windows
ordered as `torch.nn.functional.unfold` orders them (the same order as anomalib's `make_masks`).

Harmonic aggregation (WinCLIP eq. 6): the score of patch ``p`` is the harmonic mean of the scores of
all windows that contain it. WinCLIP's and anomalib's reference code loop over the patches; here it is
one product with a (P, n_windows) incidence matrix ``I``:

    score[p] = (sum_w I[p, w]) / (sum_w I[p, w] / window_score[w])

Scale 1 is the identity (each patch is its own window), so every scale goes through the same code.
"""
from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=32)
def window_indices(grid: tuple[int, int], scale: int) -> torch.Tensor:
    """Patch indices of every window: LongTensor (n_windows, scale*scale).

    >>> window_indices((3, 3), 2).tolist()
    [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    """
    h, w = grid
    if not 1 <= scale <= min(h, w):
        raise ValueError(f"window scale {scale} does not fit a {h}x{w} patch grid")
    ids = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    cols = torch.nn.functional.unfold(ids, kernel_size=scale, stride=1)  # (1, s*s, n_windows)
    return cols[0].T.round().long().contiguous()


@lru_cache(maxsize=32)
def incidence(grid: tuple[int, int], scale: int) -> torch.Tensor:
    """Float (P, n_windows) matrix with 1 where patch p lies in window w.

    >>> incidence((2, 2), 2).tolist()
    [[1.0], [1.0], [1.0], [1.0]]
    """
    idx = window_indices(grid, scale)
    n_win = idx.shape[0]
    inc = torch.zeros(grid[0] * grid[1], n_win)
    inc.scatter_(0, idx.T.contiguous(), 1.0)
    return inc


def harmonic_aggregate(window_scores: torch.Tensor, grid: tuple[int, int], scale: int) -> torch.Tensor:
    """Harmonic mean of window scores per patch: (B, n_windows) -> (B, H, W), float32.

    A zero window score makes its patches' harmonic mean zero (1/0 = inf -> count/inf = 0), as in
    anomalib (`nan_to_num(posinf=0)` there handles the same limit).

    >>> harmonic_aggregate(torch.tensor([[1.0, 0.5, 0.25, 0.2]]), (3, 3), 2)[0]
    tensor([[1.0000, 0.6667, 0.5000],
            [0.4000, 0.3333, 0.2857],
            [0.2500, 0.2222, 0.2000]])
    """
    inc = incidence(grid, scale).to(window_scores.device)
    scores = window_scores.float()
    with torch.no_grad():
        inv = torch.reciprocal(scores)  # inf where a score is 0
        denom = inv @ inc.T  # (B, P)
        out = inc.sum(dim=1) / denom
    return torch.nan_to_num(out, nan=0.0, posinf=0.0).reshape(-1, grid[0], grid[1])


def window_coverage(patch_coverage: torch.Tensor, grid: tuple[int, int], scale: int) -> torch.Tensor:
    """Mean patch coverage inside each window: (P,) -> (n_windows,).

    `patch_coverage[p]` is the fraction of patch p's pixels that the mask covers, so this is the
    fraction of the window's area that the mask covers.
    """
    inc = incidence(grid, scale)
    return (patch_coverage.float() @ inc) / float(scale * scale)
