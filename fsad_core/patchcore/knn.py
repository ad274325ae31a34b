"""Exact nearest-neighbour search (L2): faiss-cpu when installed, else chunked torch. Same results.

Both backends find the indices by search (faiss `IndexFlatL2`; torch: ||q||^2 - 2 q.m + ||m||^2 in
chunks) and then the *distances are recomputed* as ||q - m_idx|| in float32 from the vectors, so
the two backends return identical distances whenever they pick the same neighbours (they differ
only on exact ties).
"""
from __future__ import annotations

import os

import torch


def faiss_available() -> bool:
    if os.environ.get("FSAD_NO_FAISS") == "1":  # force the torch path (tests, comparisons)
        return False
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _search_torch(queries: torch.Tensor, memory: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    m2 = (memory * memory).sum(1)
    out = []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        d2 = (q * q).sum(1, keepdim=True) - 2.0 * q @ memory.T + m2[None]
        out.append(torch.topk(d2, k, dim=1, largest=False).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


def _search_faiss(queries: torch.Tensor, memory: torch.Tensor, k: int) -> torch.Tensor:
    import faiss
    import numpy as np

    index = faiss.IndexFlatL2(memory.shape[1])
    index.add(np.ascontiguousarray(memory.numpy(), dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(queries.numpy(), dtype=np.float32), k)
    return torch.from_numpy(idx.astype("int64"))


def knn(queries: torch.Tensor, memory: torch.Tensor, k: int = 1, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest memory rows of each query row: (N, D), (M, D) -> distances (N, k) ascending, indices (N, k).

    backend: "auto" (faiss when installed) | "faiss" | "torch".

    >>> d, i = knn(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0], [3.0, 3.0]]), backend="torch")
    >>> d, i
    (tensor([[1.],
            [1.]]), tensor([[0],
            [1]]))
    """
    if memory.ndim != 2 or queries.ndim != 2 or memory.shape[1] != queries.shape[1]:
        raise ValueError(f"knn needs (N, D) queries and (M, D) memory, got {tuple(queries.shape)} and {tuple(memory.shape)}")
    if memory.shape[0] == 0:
        raise ValueError("the memory bank is empty")
    k = min(int(k), memory.shape[0])
    q = queries.detach().float().cpu().contiguous()
    m = memory.detach().float().cpu().contiguous()
    if backend == "auto":
        backend = "faiss" if faiss_available() else "torch"
    if backend == "faiss":
        idx = _search_faiss(q, m, k)
    elif backend == "torch":
        idx = _search_torch(q, m, k)
    else:
        raise ValueError(f"backend must be auto, faiss or torch, got {backend!r}")
    dist = (q[:, None, :] - m[idx]).norm(dim=-1) if q.shape[0] * k * q.shape[1] < 50_000_000 else torch.cat(
        [(q[s:s + 1024, None, :] - m[idx[s:s + 1024]]).norm(dim=-1) for s in range(0, q.shape[0], 1024)])
    order = torch.argsort(dist, dim=1, stable=True)  # exact distances decide the order within the k
    return torch.gather(dist, 1, order), torch.gather(idx, 1, order)
