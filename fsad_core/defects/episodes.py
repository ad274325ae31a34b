"""Episodes (Liu et al. 2024, Algorithm 1): which samples are support and which are query.

- Pretraining (synthetic pseudo-classes): draw `n_way` classes, then `k_shot` support and `n_query`
  query samples of each, without overlap; labels are re-indexed 0..n_way-1 in draw order.
- Fine-tuning (real shots): the query is split from the support. One pass over the shots = as many
  episodes as the smallest class has shots; in episode j every class lends its j-th shot (in a
  seeded permutation) as the query and keeps the others as support, so each shot of the smallest
  class is a query once per pass (larger classes: their first shots in the permutation).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Episode:
    support: np.ndarray   # indices into the sample list
    support_y: np.ndarray  # 0..C-1
    query: np.ndarray
    query_y: np.ndarray


def sample_episode(labels, n_way: int, k_shot: int, n_query: int, rng: np.random.Generator) -> Episode:
    """An N-way K-shot episode from samples with `labels` (any hashables). Classes with fewer than
    k_shot + n_query samples are not drawn."""
    labels = np.asarray(labels)
    classes = [c for c in np.unique(labels) if (labels == c).sum() >= k_shot + n_query]
    if len(classes) < 2:
        raise ValueError(f"an episode needs at least 2 classes with {k_shot + n_query} samples each")
    chosen = rng.choice(len(classes), size=min(n_way, len(classes)), replace=False)
    s, sy, q, qy = [], [], [], []
    for new, ci in enumerate(chosen):
        idx = rng.permutation(np.flatnonzero(labels == classes[ci]))[:k_shot + n_query]
        s += list(idx[:k_shot]); sy += [new] * k_shot
        q += list(idx[k_shot:]); qy += [new] * n_query
    return Episode(np.array(s), np.array(sy), np.array(q), np.array(qy))


def finetune_pass(labels, rng: np.random.Generator) -> list[Episode]:
    """One pass over real shots (labels 0..C-1, each class with >= 2 shots): leave-one-out episodes."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    per = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    k = min(len(v) for v in per.values())
    if k < 2:
        raise ValueError("fine-tuning needs at least 2 shots of every defect type (one is the query)")
    out = []
    for j in range(k):
        s, sy, q, qy = [], [], [], []
        for c in classes:
            idx = per[c]
            q.append(idx[j]); qy.append(c)
            rest = np.delete(idx, j)
            s += list(rest); sy += [c] * len(rest)
        out.append(Episode(np.array(s), np.array(sy), np.array(q), np.array(qy)))
    return out


def finetune_passes(shots_per_type: int) -> int:
    """Passes over the real shots (§4.1.3): 45 with 2 shots per type, 25 with 3, 15 with 4 or more;
    0 with 1 (the pretrained model classifies directly)."""
    if shots_per_type <= 1:
        return 0
    return {2: 45, 3: 25}.get(int(shots_per_type), 15)
