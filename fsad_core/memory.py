"""Memory banks and nearest-neighbour scores (pure torch).

Shapes: queries (N, D), memory (M, D) -> (N,). Cosines are computed in fp32 on L2-normalised rows,
chunked over the memory so a large bank never materialises an (N, M) matrix bigger than needed.
"""
from __future__ import annotations

import torch


def normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def max_cosine(queries: torch.Tensor, memory: torch.Tensor, chunk: int = 8192, normalized: bool = False) -> torch.Tensor:
    """max_r cos(q, r) for each query row: (N, D), (M, D) -> (N,).

    `normalized=True` says the memory rows are already unit length (banks are normalised once when
    built); queries are always normalised here.
    """
    if memory.shape[0] == 0:
        raise ValueError("the memory bank is empty")
    q = normalize(queries)
    best = torch.full((q.shape[0],), -1.0)
    for start in range(0, memory.shape[0], chunk):
        m = memory[start:start + chunk]
        m = m.float() if normalized else normalize(m)
        best = torch.maximum(best, (q @ m.T).max(dim=1).values)
    return best.clamp(-1.0, 1.0)


def normal_distance(queries: torch.Tensor, memory: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """WinCLIP's reference association: min_r 1/2 (1 - cos(q, r)), in [0, 1]; 0 = seen before.

    >>> normal_distance(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    tensor([0.1464, 0.0000])
    """
    return (1.0 - max_cosine(queries, memory, normalized=normalized)) / 2.0


def anomalous_similarity(queries: torch.Tensor, memory: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """Abdali et al. 2025 eq. 1: max_r 1/2 (1 + cos(q, r)), in [0, 1]; 1 = identical to a known defect.

    >>> anomalous_similarity(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    tensor([1.])
    """
    return (1.0 + max_cosine(queries, memory, normalized=normalized)) / 2.0


def class_scores(embeddings: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """WinCLIP zero-shot score: softmax(cos(e, [t_normal, t_anomalous]) / T)[..., 1]: (N, D) -> (N,)."""
    cos = normalize(embeddings) @ normalize(text).T
    return torch.softmax(cos / temperature, dim=-1)[..., 1]
