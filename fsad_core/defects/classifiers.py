"""Few-shot classifiers over residual maps (D, h, w): RelationNet-style baseline and contrastive.

Both share the conv encoder: a 1x1 convolution D -> `width` (the residual maps are 1024-d for
ResNet-50), then RelationNet's four 3x3 conv blocks (conv, GroupNorm, ReLU; 2x2 max-pool after the
first two). GroupNorm instead of RelationNet's BatchNorm: episodes hold a handful of maps and the
pretrained statistics must not drift from synthetic to real defects (our choice; the relation
module uses a single group).

- `RelationClassifier` (§3.3): class embedding = sum of its support embeddings (RelationNet's K-shot
  rule); relation module g(concat(f(q), f(c))) -> score in [0, 1] (two conv blocks, global pooling,
  two linear layers, sigmoid); loss = class-weighted binary cross-entropy (the one matching class
  weighted N - 1 against the N - 1 others). Probabilities = relation scores normalised to sum 1.
- `ContrastiveClassifier` (§3.6): embedding = L2-normalised projection (two linear layers) of the
  encoder map averaged over the classified region's cells (`region_pool`);
  InfoNCE between a query and the support embeddings, the same-class supports being the positives:
  p(c | q) = sum_{s in c} exp(q.s / tau) / sum_s exp(q.s / tau), loss = -log p(y | q). With one shot
  per class this is the nearest-prototype softmax (`predict_proba`'s rule too).

Both: `episode_loss(support, support_y, query, query_y) -> (loss, accuracy)` and
`predict_proba(support, support_y, query) -> (Q, C)` over classes 0..C-1 (C = support_y.max() + 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int, pool: bool, groups: int = 8) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(groups, cout), cout), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """(B, D, h, w) residual maps -> (B, width, h/4, w/4) feature maps (inputs rescaled by `scale_residuals`)."""

    def __init__(self, in_dim: int, width: int = 64):
        super().__init__()
        self.reduce = nn.Conv2d(in_dim, width, 1, bias=False)  # zero stays zero outside the region
        self.blocks = nn.Sequential(_block(width, width, True), _block(width, width, True),
                                    _block(width, width, False), _block(width, width, False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.reduce(scale_residuals(x)))


def scale_residuals(x: torch.Tensor) -> torch.Tensor:
    """Each map divided by the root-mean-square of its non-zero cells: (B, D, h, w) -> same. Residuals
    are small (1e-4..1e-1 for ResNet features) next to a convolution's bias, and their size says how
    anomalous a region is rather than which defect it is; their direction is kept."""
    cells = (x.abs().sum(1, keepdim=True) > 0).float()
    ms = (x * x).sum((1, 2, 3), keepdim=True) / (cells.sum((1, 2, 3), keepdim=True) * x.shape[1]).clamp_min(1)
    return x / ms.sqrt().clamp_min(1e-12)


def _n_classes(support_y: torch.Tensor) -> int:
    return int(support_y.max()) + 1


def region_of(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, D, h, w) residual maps (zero outside the classified region) -> (B, 1, *size) float mask of the
    cells that touch the region (the whole map when a map is all zero)."""
    m = (x.abs().sum(1, keepdim=True) > 0).float()
    m = F.adaptive_max_pool2d(m, size)
    empty = m.flatten(1).sum(1) == 0
    return torch.where(empty[:, None, None, None], torch.ones_like(m), m)


def region_pool(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Average of feature maps f (B, C, h', w') over the region of the input maps x: (B, C). Zeros
    outside the region would otherwise dilute the embedding by the region's area."""
    m = region_of(x, f.shape[-2:])
    return (f * m).sum((2, 3)) / m.sum((2, 3))


class FewShotClassifier(nn.Module):
    kind = "base"

    def __init__(self, in_dim: int, width: int = 64):
        super().__init__()
        self.in_dim, self.width = int(in_dim), int(width)
        self.encoder = Encoder(in_dim, width)

    def config(self) -> dict:
        return {"kind": self.kind, "in_dim": self.in_dim, "width": self.width}

    def logits_and_loss(self, support, support_y, query, query_y=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def episode_loss(self, support, support_y, query, query_y) -> tuple[torch.Tensor, float]:
        probs, loss = self.logits_and_loss(support, support_y, query, query_y)
        acc = float((probs.argmax(1) == query_y).float().mean())
        return loss, acc

    @torch.no_grad()
    def predict_proba(self, support, support_y, query) -> torch.Tensor:
        self.eval()
        probs, _ = self.logits_and_loss(support, support_y, query, None)
        return probs


class RelationClassifier(FewShotClassifier):
    kind = "relation"

    def __init__(self, in_dim: int, width: int = 64, hidden: int = 8):
        super().__init__(in_dim, width)
        # one normalisation group: the relation maps may be pooled down to 1 x 1, where 8 groups of a
        # few channels each would normalise every value to +-1
        self.relation = nn.Sequential(_block(2 * width, width, True, 1), _block(width, width, True, 1),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, hidden), nn.ReLU(),
                                      nn.Linear(hidden, 1))

    def logits_and_loss(self, support, support_y, query, query_y=None):
        c = _n_classes(support_y)
        fs, fq = self.encoder(support), self.encoder(query)
        classes = torch.stack([fs[support_y == k].sum(0) for k in range(c)])           # (C, w, h', w')
        q, n = fq.shape[0], classes.shape[0]
        pairs = torch.cat([fq[:, None].expand(q, n, *fq.shape[1:]), classes[None].expand(q, n, *classes.shape[1:])], 2)
        logits = self.relation(pairs.reshape(q * n, *pairs.shape[2:])).reshape(q, n)
        scores = torch.sigmoid(logits)
        probs = scores / scores.sum(1, keepdim=True).clamp_min(1e-12)
        loss = None
        if query_y is not None:
            target = F.one_hot(query_y, n).float()
            pos_weight = torch.tensor(float(max(n - 1, 1)))
            loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
        return probs, loss


class ContrastiveClassifier(FewShotClassifier):
    kind = "contrastive"

    def __init__(self, in_dim: int, width: int = 64, dim: int = 64, temperature: float = 0.1):
        super().__init__(in_dim, width)
        self.temperature = float(temperature)
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, dim))

    def config(self) -> dict:
        return {**super().config(), "temperature": self.temperature}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(region_pool(self.encoder(x), x)), dim=-1)

    def logits_and_loss(self, support, support_y, query, query_y=None):
        c = _n_classes(support_y)
        zs, zq = self.embed(support), self.embed(query)
        sim = zq @ zs.T / self.temperature                                            # (Q, S)
        onehot = F.one_hot(support_y, c).float()                                       # (S, C)
        # log sum_{s in c} exp(sim): InfoNCE with the class's supports as positives
        log_class = torch.logsumexp(sim[:, :, None] + torch.log(onehot.clamp_min(1e-30))[None], dim=1)  # (Q, C)
        log_p = log_class - torch.logsumexp(sim, dim=1, keepdim=True)
        loss = None if query_y is None else F.nll_loss(log_p, query_y)
        return log_p.exp(), loss

    @torch.no_grad()
    def prototype_proba(self, support, support_y, query) -> torch.Tensor:
        """Nearest prototype (1 shot per type, no fine-tuning): softmax over classes of cos(q, mean_c)/tau."""
        self.eval()
        c = _n_classes(support_y)
        zs, zq = self.embed(support), self.embed(query)
        protos = F.normalize(torch.stack([zs[support_y == k].mean(0) for k in range(c)]), dim=-1)
        return torch.softmax(zq @ protos.T / self.temperature, dim=1)


KINDS = ("contrastive", "relation", "prototype")


def make_classifier(kind: str, in_dim: int, **kw) -> FewShotClassifier:
    """'contrastive' | 'prototype' (the contrastive network, nearest prototype) | 'relation'."""
    if kind in ("contrastive", "prototype"):
        return ContrastiveClassifier(in_dim, **kw)
    if kind == "relation":
        return RelationClassifier(in_dim, **kw)
    raise ValueError(f"unknown classifier {kind!r}; choose one of {', '.join(KINDS)}")


def from_config(cfg: dict) -> FewShotClassifier:
    kw = {k: v for k, v in cfg.items() if k not in ("kind", "in_dim")}
    return make_classifier(cfg["kind"], cfg["in_dim"], **kw)
