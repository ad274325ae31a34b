"""Monte-Carlo search of aggregation weights on augmented shots (Abdali et al. 2025, section 3.3).

Two layers:

- `monte_carlo(scores, labels, ...)`: the pure core. Given the image scores of every component on a
  labelled validation set, draw N weight vectors, keep the one with the best AUROC of the weighted
  sum. The default vector is always evaluated too and wins ties, so the result is never worse than
  the default weights *on the validation set*.
- `tune_weights(engine, ...)`: builds that validation set from the engine's shots (augmented copies
  of the anomalous shot(s), label 1, and of the normal shot(s), label 0), scores it with every
  component, runs `monte_carlo`, and returns a `TuningResult` with named weights.

Self-matches. An augmented copy of a shot scored against a memory that holds the shot itself
matches its own (distorted) windows: `anomalous@s` saturates near 1 on every anomalous copy and
`normal@s` drops near 0 on every normal copy, so those components reach AUROC 1 trivially and the
search cannot tell good weights from bad. We therefore score each shot's copies against memories
built *without that shot* (leave-one-shot-out) whenever another shot of the same kind remains to
fill its memory. With a single shot of a kind there is no such memory; that shot's copies are scored
with the shot in memory (the augmentation's strength is then the only thing standing between the
copy and its original), and the result says so (`leave_one_out=False`, `notes`). docs/evaluation.md
reports the measured effect of both choices.

Weights apply to raw component scores exactly as `Result.aggregate` combines them (a weighted mean
of the raw scores), so the tuned vector can be used as is.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .progress import Progress, steps

DISTRIBUTIONS = ("uniform", "normal", "student-t")
STUDENT_T_DF = 3.0
TIE_TOL = 1e-12

__all__ = ["monte_carlo", "sample_weights", "aurocs", "tune_weights", "TuningResult", "validation_set",
           "ValidationSet", "DISTRIBUTIONS", "PROTOCOLS", "split_evenly"]


def sample_weights(n_samples: int, n_components: int, distribution: str = "uniform",
                   rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """(n_samples, n_components) non-negative weight vectors, each summing to 1.

    uniform: U(0, 1) per weight (the paper's default); normal: |N(0, 1)| (half-normal);
    student-t: |t(3)| (half Student-t: heavier tails, so more vectors dominated by one component).
    Each row is then divided by its sum.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    if n_samples < 1 or n_components < 1:
        raise ValueError("n_samples and n_components must be at least 1")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    shape = (n_samples, n_components)
    if distribution == "uniform":
        w = rng.random(shape)
    elif distribution == "normal":
        w = np.abs(rng.standard_normal(shape))
    else:
        w = np.abs(rng.standard_t(STUDENT_T_DF, shape))
    w = np.maximum(w, 1e-12)  # a row of exact zeros is (practically) impossible; guard the division anyway
    return w / w.sum(axis=1, keepdims=True)


def aurocs(combined: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of every column of `combined` (n_images, K) at once, via the Mann-Whitney rank sum.

    Ties get average ranks, so each value equals `sklearn.metrics.roc_auc_score(labels, column)`.
    """
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the validation set needs both anomalous (1) and normal (0) images")
    ranks = rankdata(np.asarray(combined, np.float64), axis=0)
    return (ranks[y].sum(axis=0) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def monte_carlo(scores, labels, n_samples: int = 100, distribution: str = "uniform", seed: int = 0,
                default: Sequence[float] | None = None) -> tuple[np.ndarray, float]:
    """Best-AUROC weight vector among `n_samples` random draws and the default vector.

    scores: (n_images, n_components) image scores, higher = more anomalous; labels: (n_images,) 0/1.
    default: (n_components,) non-negative (default: uniform 1/n). It is evaluated first and kept on
    ties, and among equal-AUROC draws the one closest (L1) to it wins, so the returned AUROC is never
    below the default's. Returns `(weights, auroc)`: weights (n_components,) >= 0 summing to 1.

    >>> s = np.array([[0.1, 0.9], [0.2, 0.8], [0.9, 0.1], [0.8, 0.3]]); y = [0, 0, 1, 1]
    >>> w, a = monte_carlo(s, y, n_samples=50); a, bool(w[0] > w[1])   # the default 1/2, 1/2 gets 0.75
    (1.0, True)
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (n_images, n_components), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    y = np.asarray(labels).ravel()
    if y.size != s.shape[0]:
        raise ValueError(f"{y.size} labels for {s.shape[0]} images")
    n_comp = s.shape[1]
    if default is None:
        d = np.full(n_comp, 1.0 / n_comp)
    else:
        d = np.asarray(default, dtype=np.float64).ravel()
        if d.size != n_comp or (d < 0).any() or not np.isfinite(d).all() or d.sum() <= 0:
            raise ValueError(f"default must be {n_comp} non-negative weights with a positive sum, got {d}")
        d = d / d.sum()
    cand = np.vstack([d[None], sample_weights(n_samples, n_comp, distribution, seed)])
    a = aurocs(s @ cand.T, y)  # (n_images, 1 + N): every candidate's weighted sum at once
    best = a.max()
    if a[0] >= best - TIE_TOL:
        return d, float(a[0])
    tied = np.flatnonzero(a >= best - TIE_TOL)
    k = tied[np.argmin(np.abs(cand[tied] - d).sum(axis=1))]
    return cand[k], float(a[k])


# -- engine level -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationSet:
    """Image scores of augmented shot copies. scores: (n, C) over `names`; labels: (n,) 1 = anomalous."""

    names: tuple[str, ...]
    scores: np.ndarray
    labels: np.ndarray
    source: tuple[str, ...]  # shot id each copy came from
    leave_one_out: dict[str, bool]  # per kind: were that kind's copies scored without their own shot?
    protocol: str = "leave-one-out"  # one of PROTOCOLS
    m_total: int = 0  # augmented images in total
    aggregate: np.ndarray | None = None  # (n,) aggregate scores under the `aggregate=` weight set, if asked


@dataclass(frozen=True)
class TuningResult:
    """What the "Auto-tune weights" button and `engine.tune_weights()` return.

    weights: tuned weights by component name (sum 1); default_weights: the paper's eq. 2 weights they
    are compared with; auroc_default / auroc_tuned: validation AUROC of each; component_auroc: each
    component's own validation AUROC (Table 2 of Abdali et al. 2025 for the shots at hand);
    leave_one_out: True when every shot's copies were scored without that shot; notes: plain words.
    """

    weights: dict[str, float]
    auroc_default: float
    auroc_tuned: float
    component_auroc: dict[str, float]
    leave_one_out: bool
    notes: str
    default_weights: dict[str, float] = field(default_factory=dict)
    n_validation: tuple[int, int] = (0, 0)  # (anomalous copies, normal copies)
    m: int = 10
    n_samples: int = 100
    distribution: str = "uniform"
    seed: int = 0
    seconds: float = 0.0
    protocol: str = "leave-one-out"  # validation-normal | leave-one-out | self-match (PROTOCOLS)
    m_total: int = 10  # augmented images in total (the paper: "onto 10 total images")
    rule: str = "mean_of_scores"  # how the tuned weights combine scores (fsad_core.aggregate)

    def protocol_record(self) -> dict:
        """What actually ran, for metrics.json and the studio's tuning log."""
        return {"protocol": self.protocol, "n_samples": self.n_samples, "distribution": self.distribution,
                "seed": self.seed, "m_total": self.m_total, "m_per_shot": self.m,
                "n_validation": list(self.n_validation), "leave_one_out": self.leave_one_out}

    def to_dict(self) -> dict:
        """JSON-ready, for storing the run."""
        d = asdict(self)
        d["n_validation"] = list(self.n_validation)
        return d


def _shot_image(engine, shot, images: Mapping[str, object] | None):
    if images is not None and shot.id in images:
        return images[shot.id]
    getter = getattr(engine, "shot_image", None)
    if callable(getter):
        return getter(shot.id)
    img = getattr(shot, "image", None)
    if img is not None:
        return img
    raise ValueError(
        f"weight tuning needs the pixels of shot {shot.id[:12]}: pass images={{shot_id: image}} "
        "(this engine does not keep shot images)"
    )


PROTOCOLS = ("validation-normal", "leave-one-out", "self-match")


def split_evenly(total: int, k: int) -> list[int]:
    """`total` augmented images over `k` sources, as evenly as possible, at least 1 each.

    >>> split_evenly(10, 2), split_evenly(10, 3), split_evenly(2, 3)
    ([5, 5], [4, 3, 3], [1, 1, 1])
    """
    if k < 1:
        return []
    base, extra = divmod(int(total), k)
    return [max(1, base + (1 if i < extra else 0)) for i in range(k)]


def validation_set(engine, m: int | None = None, seed: int = 0, images: Mapping[str, object] | None = None,
                   holdout: str = "auto", progress: Progress | None = None,
                   require_anomalous: bool = True, m_total: int = 10, aggregate=None) -> ValidationSet:
    """Augment the validation sources and score the copies with every component.

    Sources (Abdali et al. 2025, section 4.3: "the normal sample is used exclusively for validation"):
    - with validation-only normal shots (`role="validation"`, never in a memory): those shots give the
      negatives and the anomalous shots the positives (protocol "validation-normal");
    - without: every shot is a source; holdout "auto" scores each shot's copies leave-one-shot-out for
      each kind with >= 2 shots, else against a memory that holds the shot itself (self-match);
      "none" always scores against all shots (for measuring the self-match effect).
    m_total: augmented images in total, split evenly over the sources (the paper augments its two
    samples "onto 10 total images"); `m` (legacy) = that many copies per source instead.
    Uses a second Engine on the same backbone that reads the caller's shot encodings
    (`share_features_from`), so the caller's engine is never modified and no shot is re-encoded.
    require_anomalous=False allows normal shots only (all labels 0; for thresholds, not for tuning).
    aggregate: a weight set (`fsad_core.aggregate`) whose aggregate score of each copy is recorded too
    (thresholds need it: a max-of-map rule is not a function of the component scores alone).
    """
    from .augment import augment_shot
    from .engine import Engine
    from .images import to_rgb_array

    if holdout not in ("auto", "none"):
        raise ValueError(f"holdout must be 'auto' or 'none', got {holdout!r}")
    shots = list(engine.shots)
    memory = [s for s in shots if getattr(s, "role", "memory") == "memory"]
    held_out = [s for s in shots if getattr(s, "role", "memory") == "validation"]
    kinds = {k: [s for s in memory if s.kind == k] for k in ("normal", "anomalous")}
    if not kinds["anomalous"] and require_anomalous:
        raise ValueError("weight tuning needs an anomalous shot with its defect mask: add one first")
    if not kinds["normal"] and not held_out:
        raise ValueError("weight tuning needs at least one normal shot (used as the validation negatives): add one")
    if held_out:
        sources = kinds["anomalous"] + held_out
        # validation-only shots are never in memory: their copies are always scored without them
        loo = {"normal": True, "anomalous": holdout == "auto" and len(kinds["anomalous"]) >= 2}
    else:
        sources = list(memory)
        loo = {k: holdout == "auto" and len(v) >= 2 for k, v in kinds.items()}
    counts = [int(m)] * len(sources) if m is not None else split_evenly(m_total, len(sources))
    rng = np.random.default_rng(seed)
    # a scratch engine on the same backbone that reuses the caller's shot encodings (no shot is encoded
    # twice: only the augmented copies are new images)
    share = engine if callable(getattr(engine, "peek_features", None)) else None
    tmp = Engine(engine.config, backbone=engine.backbone, share_features_from=share)
    tmp.set_class_name(engine.class_name)
    rgbs = {}
    for s in memory:  # validation-only shots never enter the scratch engine's memory either
        rgbs[s.id] = to_rgb_array(_shot_image(engine, s, images))
        tmp.add_shot(rgbs[s.id], kind=s.kind, mask=s.mask, defect_type=s.defect_type)
    for s in held_out:
        rgbs[s.id] = to_rgb_array(_shot_image(engine, s, images))
    names = list(tmp.component_names)
    rows, labels, source, aggs = [], [], [], []
    total, done = sum(counts), 0
    for s, n_copies in zip(sources, counts):
        copies = augment_shot(rgbs[s.id], s.mask if s.kind == "anomalous" else None, n_copies, rng)
        leave = loo[s.kind] and getattr(s, "role", "memory") == "memory"  # validation shots are in no memory
        if leave:
            tmp.remove_shot(s.id)  # cheap: memories rebuild from cached encodings
        try:
            for img, _ in copies:
                res = tmp.score(img)
                comps = res.components
                if aggregate is not None:
                    aggs.append(float(res.aggregate(aggregate).score))
                names = [n for n in names if n in comps]
                rows.append({n: float(sm.score) for n, sm in comps.items()})
                labels.append(1 if s.kind == "anomalous" else 0)
                source.append(s.id)
                done += 1
                steps(progress, done, total, "augmented copies scored")
        finally:
            if leave:
                tmp.add_shot(rgbs[s.id], kind=s.kind, mask=s.mask, defect_type=s.defect_type)
    scores = np.array([[r[n] for n in names] for r in rows], dtype=np.float64)
    protocol = "validation-normal" if held_out else ("leave-one-out" if all(loo.values()) else "self-match")
    return ValidationSet(tuple(names), scores, np.array(labels), tuple(source), loo, protocol, total,
                         np.array(aggs, dtype=np.float64) if aggregate is not None else None)


def tune_weights(engine, m: int | None = None, n_samples: int = 100, distribution: str = "uniform", seed: int = 0,
                 progress: Progress | None = None, images: Mapping[str, object] | None = None,
                 holdout: str = "auto", m_total: int = 10) -> TuningResult:
    """Tune the aggregation weights of `engine`'s components on augmented copies of its shots.

    m_total: augmented images in total, split evenly over the validation sources (see
    `validation_set`); m: copies per source instead (legacy); n_samples: random weight vectors; distribution: uniform | normal |
    student-t; progress(fraction, message) is called as copies are scored. `images` maps shot id to
    its pixels where the engine does not keep them. The run is also kept as `engine.last_tuning`.
    """
    from .aggregate import default_weights
    from .metrics import image_auroc

    t0 = time.perf_counter()
    vs = validation_set(engine, m=m, seed=seed, images=images, holdout=holdout, progress=progress, m_total=m_total)
    names = list(vs.names)
    dflt = default_weights(names)
    dvec = np.array([dflt[n] for n in names])
    w, a_tuned = monte_carlo(vs.scores, vs.labels, n_samples=n_samples, distribution=distribution, seed=seed,
                             default=dvec)
    a_default = float(aurocs((vs.scores @ (dvec / dvec.sum()))[:, None], vs.labels)[0])
    comp = {n: image_auroc(vs.labels, vs.scores[:, j]) for j, n in enumerate(names)}
    notes = []
    if vs.protocol == "validation-normal":
        notes.append("normal copies come from validation-only normal shots, which no memory holds")
    for kind, on in vs.leave_one_out.items():
        if vs.protocol == "validation-normal" and kind == "normal":
            continue
        if on:
            notes.append(f"{kind} copies scored leave-one-shot-out")
        elif holdout == "none":
            notes.append(f"{kind} copies scored against all shots, their own included (holdout='none')")
        else:
            notes.append(f"only one {kind} shot: its copies were scored with it in memory (self-match; "
                         f"components matching it are optimistic); add another {kind} shot for leave-one-out")
    saturated = [n for n, v in comp.items() if v >= 1.0 - 1e-12]
    if saturated:
        notes.append(f"components at validation AUROC 1.0: {', '.join(saturated)}")
    if np.allclose(w, dvec / dvec.sum()):
        notes.append("no random vector beat the default weights; the default weights are kept")
    n_anom = int(vs.labels.sum())
    result = TuningResult(
        weights={n: float(x) for n, x in zip(names, w)}, auroc_default=a_default, auroc_tuned=float(a_tuned),
        component_auroc=comp, leave_one_out=all(vs.leave_one_out.values()), notes="; ".join(notes),
        default_weights={n: float(dflt[n]) for n in names}, n_validation=(n_anom, len(vs.labels) - n_anom),
        m=int(m) if m is not None else max(1, m_total // max(1, len(set(vs.source)))), n_samples=n_samples,
        distribution=distribution, seed=seed, seconds=time.perf_counter() - t0, protocol=vs.protocol,
        m_total=int(vs.m_total),
    )
    try:
        engine.last_tuning = result
    except AttributeError:  # an engine with __slots__ or a read-only proxy: returning is enough
        pass
    return result
