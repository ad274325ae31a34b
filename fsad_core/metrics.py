"""The papers' evaluation metrics: image AUROC / AP / F1-max, pixel AUROC / F1-max, PRO.

Torch-free (numpy, scipy, scikit-learn). Higher scores mean "more anomalous"; labels are 1 for
anomalous, 0 for normal. Undefined metrics (a single class present) return ``nan`` rather than raise,
so that an evaluation over many categories reports what it can.

Pixel metrics on big inputs
---------------------------
100 maps of 256x256 are 6.5 M pixels. Every pixel-level metric here is computed from one pass over
the pixels *sorted by score* (or binned), sharing the work between pixel AUROC, pixel F1-max and
PRO (`pixel_curves`). Up to `EXACT_LIMIT` pixels (4 M) the sort is exact and the numbers equal
scikit-learn's to float precision. Above it the scores are quantised into `N_BINS` (65 536) equal-width
bins between the min and max score, and a threshold is placed at every bin edge: pixels that share a
bin are treated as tied. This is an O(n) `np.bincount` instead of an O(n log n) sort, and the error is
bounded by the mass of positive/negative pixels sharing a bin (measured: < 1e-4 in AUROC on
100x256x256 random-ish maps; see tests/test_metrics.py). Nothing is subsampled.

PRO (per-region overlap, Bergmann et al. 2021, MVTec AD) follows the reference implementation of the
MVTec evaluation code: ground-truth regions are 8-connected components of each mask; at each
threshold PRO is the mean over all regions (of all images) of the fraction of the region above the
threshold, FPR is the fraction of normal pixels above it; the PRO-vs-FPR curve is integrated with the
trapezoid rule up to FPR = 0.3 (interpolating at the limit) and divided by 0.3, so a perfect map
scores 1.0.

>>> round(image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
0.75
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

EXACT_LIMIT = 4_000_000  # pixels; above this the pixel curves are binned
N_BINS = 65_536
PRO_FPR_LIMIT = 0.3

__all__ = [
    "image_auroc", "image_ap", "f1_max", "pixel_auroc", "pixel_f1_max", "pro_auc", "pixel_curves",
    "PixelCurves", "evaluate_all", "METRIC_NAMES",
]

METRIC_NAMES = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_f1_max", "pro")


def _as_1d(x, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contain NaN or infinite values; check the scores before computing metrics")
    return a


def _labels(labels, n: int | None = None) -> np.ndarray:
    y = np.asarray(labels).ravel()
    if y.dtype != bool:
        u = np.unique(y)
        if not np.isin(u, (0, 1)).all():
            raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), got values {u[:5].tolist()}")
    y = y.astype(bool)
    if n is not None and y.size != n:
        raise ValueError(f"{y.size} labels for {n} scores; give one label per score")
    return y


# -- image level -------------------------------------------------------------------------------------
def image_auroc(labels, scores) -> float:
    """Area under the ROC curve of image scores (scikit-learn's `roc_auc_score`); nan with one class.

    labels: (N,) 0/1; scores: (N,) float, higher = more anomalous.
    """
    from sklearn.metrics import roc_auc_score

    s = _as_1d(scores, "scores")
    y = _labels(labels, s.size)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def image_ap(labels, scores) -> float:
    """Average precision (area under the precision-recall curve, step-wise); nan without anomalies."""
    from sklearn.metrics import average_precision_score

    s = _as_1d(scores, "scores")
    y = _labels(labels, s.size)
    if not y.any() or y.all():
        return float("nan")
    return float(average_precision_score(y, s))


def f1_max(labels, scores) -> float:
    """Best F1 over all thresholds (the papers' "F1-max"), from `precision_recall_curve`."""
    from sklearn.metrics import precision_recall_curve

    s = _as_1d(scores, "scores")
    y = _labels(labels, s.size)
    if not y.any():
        return float("nan")
    p, r, _ = precision_recall_curve(y, s)
    return float(_f1(p, r).max())


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    denom = p + r
    return np.divide(2 * p * r, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)


# -- pixel level -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelCurves:
    """Cumulative counts at every distinct threshold, from the highest score down.

    tp, fp: (T,) positive / negative pixels with score >= threshold; pro: (T,) mean per-region overlap;
    n_pos, n_neg: totals; n_regions: ground-truth connected components; binned: True if quantised.
    """

    tp: np.ndarray
    fp: np.ndarray
    pro: np.ndarray | None
    n_pos: int
    n_neg: int
    n_regions: int
    binned: bool


def _stack(masks, maps) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Flatten lists of (H_i, W_i) masks/maps (sizes may differ between images) into 1-D arrays."""
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks, maps = [masks], [maps]
    masks = [np.asarray(m) for m in masks]
    maps = [np.asarray(a) for a in maps]
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks for {len(maps)} maps; give one ground-truth mask per map")
    for i, (m, a) in enumerate(zip(masks, maps)):
        if m.shape != a.shape or m.ndim != 2:
            raise ValueError(f"image {i}: mask {m.shape} and map {a.shape} must be 2-D and the same size")
    y = np.concatenate([m.ravel() for m in masks]).astype(bool) if masks else np.zeros(0, bool)
    s = np.concatenate([a.ravel() for a in maps]).astype(np.float64) if maps else np.zeros(0)
    if not np.isfinite(s).all():
        raise ValueError("anomaly maps contain NaN or infinite values")
    return y, s, masks


def _region_weights(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """Per pixel 1 / (n_regions * |region|) inside a ground-truth region, 0 elsewhere (flattened)."""
    from scipy import ndimage

    structure = np.ones((3, 3), dtype=int)  # 8-connectivity, as the MVTec reference code
    labelled = []
    n_regions = 0
    for m in masks:
        lab, n = ndimage.label(np.asarray(m, bool), structure=structure)
        labelled.append((lab, n))
        n_regions += n
    out = []
    for lab, n in labelled:
        w = np.zeros(lab.size, np.float64)
        if n:
            sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(np.float64)
            inv = np.zeros(n + 1)
            inv[1:] = 1.0 / (sizes[1:] * max(n_regions, 1))
            w = inv[lab.ravel()]
        out.append(w)
    return (np.concatenate(out) if out else np.zeros(0)), n_regions


def pixel_curves(masks, maps, with_pro: bool = True, exact_limit: int = EXACT_LIMIT,
                 n_bins: int = N_BINS) -> PixelCurves:
    """One sort (or binning) of all pixels -> cumulative TP / FP / PRO at every threshold.

    masks: (N, H, W) bool or a list of (H_i, W_i); maps: same shapes, float, higher = anomalous.
    """
    y, s, mask_list = _stack(masks, maps)
    if with_pro:
        rw, n_regions = _region_weights(mask_list)
    else:
        rw, n_regions = None, 0
    pos = y.astype(np.float64)
    neg = 1.0 - pos
    binned = s.size > exact_limit
    if binned:
        lo, hi = float(s.min()), float(s.max())
        if hi > lo:
            idx = np.minimum(((s - lo) / (hi - lo) * n_bins).astype(np.int64), n_bins - 1)
        else:
            idx = np.zeros(s.size, np.int64)
        idx = n_bins - 1 - idx  # bin 0 = highest scores, so cumsum runs from the top
        tp = np.cumsum(np.bincount(idx, weights=pos, minlength=n_bins))
        fp = np.cumsum(np.bincount(idx, weights=neg, minlength=n_bins))
        pro = np.cumsum(np.bincount(idx, weights=rw, minlength=n_bins)) if rw is not None else None
        keep = np.bincount(idx, minlength=n_bins) > 0
        tp, fp = tp[keep], fp[keep]
        pro = pro[keep] if pro is not None else None
    else:
        order = np.argsort(-s)  # quicksort: order within ties is irrelevant, runs are collapsed below
        ss = s[order]
        # last index of each run of tied scores: thresholds sit between distinct values
        last = np.r_[np.nonzero(np.diff(ss))[0], ss.size - 1] if ss.size else np.zeros(0, np.int64)
        tp = np.cumsum(pos[order])[last]
        fp = np.cumsum(neg[order])[last]
        pro = np.cumsum(rw[order])[last] if rw is not None else None
    return PixelCurves(tp=tp, fp=fp, pro=pro, n_pos=int(y.sum()), n_neg=int(y.size - y.sum()),
                       n_regions=n_regions, binned=binned)


def _auroc_from_curves(c: PixelCurves) -> float:
    if c.n_pos == 0 or c.n_neg == 0:
        return float("nan")
    tpr = np.r_[0.0, c.tp / c.n_pos]
    fpr = np.r_[0.0, c.fp / c.n_neg]
    return float(np.trapezoid(tpr, fpr))


def _f1max_from_curves(c: PixelCurves) -> float:
    if c.n_pos == 0:
        return float("nan")
    precision = c.tp / np.maximum(c.tp + c.fp, 1e-12)
    recall = c.tp / c.n_pos
    return float(_f1(precision, recall).max())


def _pro_from_curves(c: PixelCurves, fpr_limit: float) -> float:
    if c.n_regions == 0 or c.n_neg == 0 or c.pro is None:
        return float("nan")
    fpr = np.r_[0.0, c.fp / c.n_neg]
    pro = np.r_[0.0, np.minimum(c.pro, 1.0)]
    # integrate up to fpr_limit, interpolating the curve at the limit (MVTec reference `trapezoid`)
    k = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, yv = fpr[:k], pro[:k]
    if k < fpr.size and x[-1] < fpr_limit:
        x0, x1, y0, y1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0) if x1 > x0 else y1
        x, yv = np.r_[x, fpr_limit], np.r_[yv, y_lim]
    return float(np.trapezoid(yv, x) / fpr_limit)


def pixel_auroc(masks, maps) -> float:
    """ROC AUC over all pixels of all images; nan if no defect pixel (or no normal pixel)."""
    return _auroc_from_curves(pixel_curves(masks, maps, with_pro=False))


def pixel_f1_max(masks, maps) -> float:
    """Best F1 over thresholds, all pixels pooled; nan if no defect pixel."""
    return _f1max_from_curves(pixel_curves(masks, maps, with_pro=False))


def pro_auc(masks, maps, fpr_limit: float = PRO_FPR_LIMIT) -> float:
    """Area under the PRO-vs-FPR curve up to `fpr_limit`, divided by `fpr_limit` (1.0 = perfect).

    >>> m = np.zeros((1, 4, 4), bool); m[0, :2, :2] = True
    >>> pro_auc(m, m.astype(float))
    1.0
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    return _pro_from_curves(pixel_curves(masks, maps, with_pro=True), fpr_limit)


def evaluate_all(labels, image_scores, masks=None, maps=None, fpr_limit: float = PRO_FPR_LIMIT) -> dict[str, float]:
    """Every metric of the papers' tables in one dict (keys: `METRIC_NAMES`).

    labels: (N,) 0/1 image labels; image_scores: (N,); masks/maps: ground-truth masks and anomaly
    maps for the same N images (None -> pixel metrics are nan). Good images carry all-False masks.
    """
    out = {
        "image_auroc": image_auroc(labels, image_scores),
        "image_ap": image_ap(labels, image_scores),
        "image_f1_max": f1_max(labels, image_scores),
    }
    if masks is None or maps is None:
        out.update(pixel_auroc=float("nan"), pixel_f1_max=float("nan"), pro=float("nan"))
        return out
    c = pixel_curves(masks, maps, with_pro=True)
    out.update(pixel_auroc=_auroc_from_curves(c), pixel_f1_max=_f1max_from_curves(c),
               pro=_pro_from_curves(c, fpr_limit))
    return out
