"""APRIL-GAN's linear heads and its maps as pure tensor functions (Chen et al. 2023).

eq. 2   F'_n = k_n F_n + b_n                       one linear layer per stage, width W -> joint dim D
eq. 3   M = sum_n softmax(F'_n F_t^T)[anomalous]    zero-shot map; F_t = [t_normal, t_anomalous]
eq. 4   M_f(i,j) = sum_n min_{f in G_n} (1 - <F_n(i,j), f>)   few-shot map; G_n = stage-n memory of
        the normal shots' raw (unprojected) stage features, <.,.> the cosine
eq. 6 (One-to-Normal, Li et al. 2024)  S_text = (1/n) sum_l max_G softmax(F'_{q,l} F_text^T)[anomalous]

Reading of eq. 3 (switchable): the reference code L2-normalises F'_n and F_t and multiplies the
dot product by CLIP's logit scale 100 before the softmax (`normalize=True, logit_scale=100`, the
default); `normalize=False, logit_scale=1` is the equation read literally.

Layouts: stage features (B, P, W) with P = h*w patches; text (2, D); maps (B, P), higher = more
anomalous. The zero-shot map lies in [0, n_stages], the few-shot map in [0, 2 n_stages].
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class StageHeads(nn.Module):
    """One `nn.Linear(width, embed_dim)` per stage (eq. 2)."""

    def __init__(self, width: int, embed_dim: int, n_stages: int = 4):
        super().__init__()
        self.width, self.embed_dim, self.n_stages = int(width), int(embed_dim), int(n_stages)
        self.linears = nn.ModuleList(nn.Linear(self.width, self.embed_dim) for _ in range(self.n_stages))

    def forward(self, stage_feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """4 x (B, P, W) -> 4 x (B, P, D)."""
        if len(stage_feats) != self.n_stages:
            raise ValueError(f"expected {self.n_stages} stages of features, got {len(stage_feats)}")
        return [lin(f) for lin, f in zip(self.linears, stage_feats)]


def stage_logits(projected: torch.Tensor, text: torch.Tensor, normalize: bool = True,
                 logit_scale: float = 100.0) -> torch.Tensor:
    """(B, P, D) projected tokens, text (2, D) or per image (B, 2, D) -> (B, P, 2) logits F'_n F_t^T
    (see the module docstring).

    >>> f = torch.tensor([[[1.0, 0.0]]]); t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> stage_logits(f, t, logit_scale=1.0)
    tensor([[[1., 0.]]])
    """
    if normalize:
        projected = nn.functional.normalize(projected, dim=-1)
        text = nn.functional.normalize(text, dim=-1)
    return logit_scale * projected @ text.transpose(-1, -2)


def stage_probabilities(projected: Sequence[torch.Tensor], text: torch.Tensor, normalize: bool = True,
                        logit_scale: float = 100.0) -> torch.Tensor:
    """4 x (B, P, D) -> (n, B, P) anomalous-state probability softmax(F'_n F_t^T)[..., 1] per stage."""
    return torch.stack([stage_logits(p, text, normalize, logit_scale).softmax(-1)[..., 1] for p in projected])


def zero_shot_map(projected: Sequence[torch.Tensor], text: torch.Tensor, normalize: bool = True,
                  logit_scale: float = 100.0) -> torch.Tensor:
    """Eq. 3: M = sum_n softmax(F'_n F_t^T)[anomalous] -> (B, P) in [0, n].

    >>> f = [torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])] * 2          # 2 stages, 1 image, 2 patches
    >>> t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])                   # [normal, anomalous]
    >>> zero_shot_map(f, t, logit_scale=1.0)                         # 2 * [1/(1+e), e/(1+e)]
    tensor([[0.5379, 1.4621]])
    """
    return stage_probabilities(projected, text, normalize, logit_scale).sum(0)


def text_branch(projected: Sequence[torch.Tensor], text: torch.Tensor, normalize: bool = True,
                logit_scale: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-Normal's eq. 6 -> (score (B,), map (B, P)): score = (1/n) sum_l max_G p_l, the mean over
    levels of each level's largest anomalous probability; map = (1/n) sum_l p_l (= M / n)."""
    p = stage_probabilities(projected, text, normalize, logit_scale)
    return p.max(dim=-1).values.mean(0), p.mean(0)


def memory_map(stage_feats: Sequence[torch.Tensor], memory: Sequence[torch.Tensor], chunk: int = 8192) -> torch.Tensor:
    """Eq. 4: M_f = sum_n min_{f in G_n} (1 - cos(F_n, f)) -> (B, P) in [0, 2n].

    stage_feats: n x (B, P, W) raw query features; memory: n x (M_n, W) raw memory features
    (normalised here; cos = 1 for identical directions).

    >>> q = [torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])]               # 1 stage, 2 patches
    >>> g = [torch.tensor([[1.0, 0.0], [1.0, 1.0]])]                # memory of 2 features
    >>> memory_map(q, g)                                              # [1 - 1, 1 - 1/sqrt(2)]
    tensor([[0.0000, 0.2929]])
    """
    if len(stage_feats) != len(memory):
        raise ValueError(f"{len(stage_feats)} query stages but {len(memory)} memory stages")
    total = None
    for q, mem in zip(stage_feats, memory):
        if mem.shape[0] == 0:
            raise ValueError("a stage memory is empty: add at least one normal shot")
        qn = nn.functional.normalize(q.float(), dim=-1)
        mn = nn.functional.normalize(mem.float(), dim=-1)
        best = torch.full(qn.shape[:2], -2.0)
        for start in range(0, mn.shape[0], chunk):  # bounded memory: (B, P, chunk) at a time
            best = torch.maximum(best, (qn @ mn[start:start + chunk].T).max(dim=-1).values)
        d = 1.0 - best
        total = d if total is None else total + d
    return total


def grid_maps(flat: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, P) -> (B, h, w)."""
    return flat.reshape(flat.shape[0], *grid)
