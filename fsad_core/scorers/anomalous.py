"""`anomalous@<px>`: the anomalous memory at one scale (Abdali et al. 2025, eq. 1).

M+(q) = max over anomalous memory r of 1/2 (1 + cos(q, r)) per window, harmonic-aggregated onto the
grid. The memory holds the annotated defect windows (see `fsad_core.selection`).
"""
from __future__ import annotations

import torch

from ..memory import anomalous_similarity
from ..windows import harmonic_aggregate


def anomalous_grid(features: torch.Tensor, bank: torch.Tensor, grid: tuple[int, int], scale: int) -> torch.Tensor:
    """features (n_win, D), bank (M, D) normalised -> (h, w) grid map in [0, 1]."""
    return harmonic_aggregate(anomalous_similarity(features, bank, normalized=True)[None], grid, scale)[0]
