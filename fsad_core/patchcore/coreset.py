"""Greedy coreset subsampling (PatchCore §3.2, Algorithm 1; Sener & Savarese's k-center greedy).

    M_C = {m_0}  (m_0 drawn with the seed)
    repeat until |M_C| = n:   m_i = argmax_{m in M \\ M_C}  min_{n in M_C} || psi(m) - psi(n) ||_2
                              M_C = M_C ∪ {m_i}

psi is PatchCore's random linear projection to `projection_dim` dimensions (Johnson-Lindenstrauss,
"to reduce coreset selection time"; None or >= D: the identity). Selection order is a prefix
chain: the first n of a larger coreset are the n-coreset, so the covering radius never increases
as the coreset grows.
"""
from __future__ import annotations

import math

import torch


def coreset_size(n_features: int, ratio: float) -> int:
    """The number of memory rows kept for a ratio in (0, 1] (at least 1)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"coreset ratio must be in (0, 1], got {ratio}")
    return max(1, min(n_features, int(math.ceil(n_features * ratio))))


def greedy_coreset(features: torch.Tensor, n: int, seed: int = 0, projection_dim: int | None = 128) -> torch.Tensor:
    """Indices (n,) of the greedy k-center coreset of features (M, D), in selection order."""
    feats = features.detach().float()
    m = feats.shape[0]
    if m == 0:
        raise ValueError("cannot subsample an empty memory")
    n = max(1, min(int(n), m))
    g = torch.Generator().manual_seed(int(seed))
    if projection_dim is not None and projection_dim < feats.shape[1]:
        proj = torch.randn(feats.shape[1], projection_dim, generator=g) / math.sqrt(projection_dim)
        feats = feats @ proj
    first = int(torch.randint(m, (1,), generator=g))
    selected = [first]
    mind = (feats - feats[first]).norm(dim=1)
    for _ in range(n - 1):
        i = int(torch.argmax(mind))
        selected.append(i)
        mind = torch.minimum(mind, (feats - feats[i]).norm(dim=1))
    return torch.tensor(selected, dtype=torch.long)


def covering_radius(features: torch.Tensor, centers: torch.Tensor) -> float:
    """max over rows of the distance to the nearest center: (M, D), (C, D) -> float."""
    return float(torch.cdist(features.float(), centers.float()).min(dim=1).values.max())
