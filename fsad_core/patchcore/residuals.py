"""Nearest-neighbour distances, PatchCore's re-weighted image score and residual features (pure torch).

Shapes: patch features (P, D) on a grid (h, w) with P = h * w; memory (M, D).

- distance map (PatchCore eq. 6 per patch): s(p) = min_{m in M} || f_p - m ||_2
- image score (PatchCore eq. 7): m_test*, m* = the query patch with the largest s and its nearest
  memory row; N_b(m*) = the b nearest memory rows of m* (m* itself first);
  s = (1 - exp||m_test* - m*|| / sum_{m in N_b(m*)} exp||m_test* - m||) * s*,
  computed as 1 - softmax over those b distances (the first entry), as anomalib does.
- residual (Liu et al. 2024, eq. 2): r_p = f_p - NN_M(f_p), the feature minus its nearest memory row.
"""
from __future__ import annotations

import torch

from .knn import knn


def nearest(feats: torch.Tensor, memory: torch.Tensor, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(P, D), (M, D) -> distances (P,), indices (P,) of each patch's nearest memory row."""
    d, i = knn(feats, memory, 1, backend)
    return d[:, 0], i[:, 0]


def reweighted_score(feats: torch.Tensor, memory: torch.Tensor, distances: torch.Tensor, indices: torch.Tensor,
                     num_neighbors: int = 9, backend: str = "auto") -> float:
    """PatchCore's image score (eq. 7) from the patch distances/indices `nearest` returned.

    >>> mem = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    >>> f = torch.tensor([[0.0, 2.0]])
    >>> d, i = nearest(f, mem, backend="torch")
    >>> round(reweighted_score(f, mem, d, i, num_neighbors=2, backend="torch"), 4)   # (1 - e^2/(e^2+e^sqrt5)) * 2
    1.1175
    """
    p = int(torch.argmax(distances))
    s_star = float(distances[p])
    if num_neighbors <= 1 or memory.shape[0] == 1:
        return s_star
    _, nb = knn(memory[indices[p]][None], memory, num_neighbors, backend)  # m* itself first (distance 0)
    nb = nb[0]
    if int(nb[0]) != int(indices[p]):  # duplicates of m* in memory: put m* itself first
        nb = torch.cat([indices[p][None], nb[nb != indices[p]]])[:num_neighbors]
    d = (feats[p][None] - memory[nb].float()).norm(dim=1)
    w = 1.0 - torch.softmax(d, dim=0)[0]
    return float(w) * s_star


def residuals(feats: torch.Tensor, memory: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Eq. 2: each patch feature minus its nearest memory row: (P, D), (M, D) -> (P, D).

    >>> residuals(torch.tensor([[1.0, 1.0], [4.0, 0.0]]), torch.tensor([[0.0, 0.0], [5.0, 0.0]]), backend="torch")
    tensor([[ 1.,  1.],
            [-1.,  0.]])
    """
    _, idx = nearest(feats, memory, backend)
    return feats.float() - memory[idx].float()


def residual_map(feats: torch.Tensor, memory: torch.Tensor, grid: tuple[int, int], region: torch.Tensor | None = None,
                 backend: str = "auto") -> torch.Tensor:
    """Residuals as a (D, h, w) map for a convolutional classifier; `region` (h, w) bool/float zeroes
    the patches outside the anomalous region (only the anomalous region is classified)."""
    r = residuals(feats, memory, backend).T.reshape(-1, *grid)
    if region is not None:
        r = r * region.to(r.dtype)[None]
    return r
