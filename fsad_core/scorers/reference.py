"""`normal@<px>`: the normal reference memory at one scale (WinCLIP+ eq. 4).

M(q) = min over memory r of 1/2 (1 - cos(q, r)) per window, harmonic-aggregated onto the grid.
Scale 1 (16 px) uses the unprojected patch tokens, larger scales the projected window embeddings.
"""
from __future__ import annotations

import torch

from ..memory import normal_distance
from ..windows import harmonic_aggregate


def normal_grid(features: torch.Tensor, bank: torch.Tensor, grid: tuple[int, int], scale: int) -> torch.Tensor:
    """features (n_win, D), bank (M, D) normalised -> (h, w) grid map in [0, 1]."""
    return harmonic_aggregate(normal_distance(features, bank, normalized=True)[None], grid, scale)[0]
