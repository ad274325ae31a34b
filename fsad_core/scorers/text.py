"""`text` and `zero_shot`: WinCLIP's language-guided scores (no shots needed).

text:      softmax(cos(image_emb, [t_normal, t_anomalous]) / T)[1], T = 0.07.
zero_shot: the same score for every window at scales 2 and 3, harmonic-aggregated onto the patch grid,
           then the harmonic mean of [image-level score, scale-2 map, scale-3 map] per patch.
t_state = mean of the L2-normalised text embeddings of that state's prompt ensemble.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..memory import class_scores
from ..prompts import winclip_ensemble
from ..windows import harmonic_aggregate


def text_embeddings(encode_text, class_name: str) -> torch.Tensor:
    """(2, D): [t_normal, t_anomalous]; `encode_text(prompts) -> (N, D)` L2-normalised rows."""
    normal, anomalous = winclip_ensemble(class_name)
    emb = encode_text(normal + anomalous)
    return torch.stack([emb[: len(normal)].mean(0), emb[len(normal):].mean(0)])


def text_score(image_emb: torch.Tensor, text: torch.Tensor, temperature: float) -> float:
    return float(class_scores(image_emb[None], text, temperature)[0])


def zero_shot_grid(image_score: float, windows: Mapping[int, torch.Tensor], text: torch.Tensor,
                   temperature: float, grid: tuple[int, int]) -> torch.Tensor:
    """(h, w) harmonic mean over [image score, per-scale window maps]; windows: {scale: (n_win, D)}."""
    maps = [torch.full(grid, float(image_score))]
    for scale, emb in sorted(windows.items()):
        maps.append(harmonic_aggregate(class_scores(emb, text, temperature)[None], grid, scale)[0])
    stack = torch.stack(maps)
    return len(maps) / torch.reciprocal(stack).sum(dim=0)
