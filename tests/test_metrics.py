"""Metrics against scikit-learn and hand-computed cases (PRO on known masks)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from fsad_core import metrics as M


def _maps(n=6, h=24, w=20, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), bool)
    for i in range(0, n, 2):
        y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
        masks[i, y:y + rng.integers(2, 6), x:x + rng.integers(2, 6)] = True
    maps = rng.normal(0, 1, (n, h, w)) + 1.5 * masks
    maps = np.round(maps, 1)  # ties on purpose
    return masks, maps


def test_image_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)
    s = rng.normal(size=50) + y
    assert M.image_auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.image_ap(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        f1 = np.nan_to_num(2 * p * r / (p + r))
    assert M.f1_max(y, s) == pytest.approx(f1.max(), abs=1e-12)


def test_image_metrics_hand_cases():
    assert M.image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert M.image_auroc([0, 1], [0.2, 0.9]) == 1.0
    assert M.f1_max([0, 1, 1], [0.1, 0.5, 0.9]) == 1.0
    # threshold 0.1 -> P = 2/3, R = 1, F1 = 0.8 is the best here
    assert M.f1_max([1, 0, 1], [0.1, 0.5, 0.9]) == pytest.approx(0.8)
    assert np.isnan(M.image_auroc([1, 1], [0.1, 0.2]))
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        M.image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="one label per score"):
        M.image_auroc([0, 1, 1], [0.1, 0.2])


def test_pixel_metrics_match_sklearn_exactly():
    masks, maps = _maps()
    y, s = masks.ravel(), maps.ravel()
    assert M.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        f1 = np.nan_to_num(2 * p * r / (p + r))
    assert M.pixel_f1_max(masks, maps) == pytest.approx(f1.max(), abs=1e-12)


def test_pixel_metrics_accept_images_of_different_sizes():
    masks, maps = _maps()
    lm = [masks[0], masks[1, :20, :15], masks[2]]
    la = [maps[0], maps[1, :20, :15], maps[2]]
    y = np.concatenate([m.ravel() for m in lm])
    s = np.concatenate([a.ravel() for a in la])
    assert M.pixel_auroc(lm, la) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError, match="same size"):
        M.pixel_auroc([masks[0]], [maps[0, :5]])


def test_pro_hand_computed():
    """Two 4-px regions; A fully at 1.0, B half at 0.9 half at 0.2; 10 of 92 normal px at 0.5.

    Curve: (0, .5) (0, .75) (10/92, .75) (10/92, 1) -> integral to 0.3 = 0.3 - 0.25*10/92.
    """
    m = np.zeros((10, 10), bool)
    m[0:2, 0:2] = True
    m[5:7, 5:7] = True
    a = np.zeros((10, 10))
    a[0:2, 0:2] = 1.0
    a[5, 5:7] = 0.9
    a[6, 5:7] = 0.2
    normal_idx = np.flatnonzero(~m.ravel())[:10]
    a.ravel()[normal_idx] = 0.5
    expected = (0.3 - 0.25 * 10 / 92) / 0.3
    assert M.pro_auc(m[None], a[None]) == pytest.approx(expected, abs=1e-12)


def test_pro_perfect_and_region_weighting():
    m = np.zeros((2, 8, 8), bool)
    m[0, :2, :2] = True
    assert M.pro_auc(m, m.astype(float)) == pytest.approx(1.0)
    # a big region fully found and a small one missed -> PRO 0.5 (regions count equally, not pixels)
    m = np.zeros((1, 20, 20), bool)
    m[0, :10, :10] = True  # 100 px
    m[0, 15, 15] = True  # 1 px
    a = np.zeros((1, 20, 20))
    a[0, :10, :10] = 1.0
    a[0, 15, 15] = -1.0  # below every normal pixel
    assert M.pro_auc(m, a) == pytest.approx(0.5, abs=1e-9)
    # no regions -> undefined
    assert np.isnan(M.pro_auc(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))))


def _pro_bruteforce(masks, maps, limit=0.3):
    """Explicit threshold loop over every distinct score, as written in the MVTec AD paper."""
    regions = []  # (image index, bool region)
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    neg = ~masks
    pts = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr = (pred & neg).sum() / neg.sum()
        pro = np.mean([pred[i][reg].mean() for i, reg in regions])
        pts.append((fpr, pro))
    x, y = np.array(pts).T
    k = np.searchsorted(x, limit, side="right")
    xi, yi = list(x[:k]), list(y[:k])
    if k < len(x) and xi[-1] < limit:
        yi.append(y[k - 1] + (y[k] - y[k - 1]) * (limit - x[k - 1]) / (x[k] - x[k - 1]))
        xi.append(limit)
    return np.trapezoid(yi, xi) / limit


def test_pro_matches_bruteforce_on_random_masks():
    masks, maps = _maps(n=4, h=16, w=16, seed=3)
    masks[2, 0, 0] = masks[2, 15, 15] = True  # more regions, some of one pixel
    assert M.pro_auc(masks, maps) == pytest.approx(_pro_bruteforce(masks, maps), abs=1e-9)
    assert M.pro_auc(masks, maps, fpr_limit=0.05) == pytest.approx(_pro_bruteforce(masks, maps, 0.05), abs=1e-9)


def test_binned_path_close_to_exact_and_fast():
    rng = np.random.default_rng(0)
    n, h, w = 100, 256, 256
    masks = np.zeros((n, h, w), bool)
    for i in range(0, n, 2):
        y, x = rng.integers(0, 200, 2)
        masks[i, y:y + 40, x:x + 30] = True
    maps = (rng.normal(0, 1, (n, h // 8, w // 8))).repeat(8, 1).repeat(8, 2) + masks * 1.0
    maps = maps.astype(np.float32)
    t = time.perf_counter()
    res = M.evaluate_all(np.arange(n) % 2 == 0, maps.reshape(n, -1).max(1), masks, maps)
    took = time.perf_counter() - t
    assert M.pixel_curves(masks, maps, with_pro=False).binned
    sub = slice(0, 40)  # exact on a subset (under the exact limit) vs sklearn on the same subset
    exact = roc_auc_score(masks[sub].ravel(), maps[sub].ravel())
    assert M.pixel_auroc(masks[sub], maps[sub]) == pytest.approx(exact, abs=1e-9)
    assert res["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-4)
    assert 0 < res["pro"] < 1 and 0 < res["pixel_f1_max"] < 1
    assert took < 10.0, f"evaluate_all on 100x256x256 took {took:.2f}s"


def test_evaluate_all_keys_and_no_pixel_data():
    masks, maps = _maps()
    labels = masks.reshape(len(masks), -1).any(1)
    res = M.evaluate_all(labels, maps.reshape(len(maps), -1).max(1), masks, maps)
    assert tuple(res) == M.METRIC_NAMES
    assert all(np.isfinite(v) for v in res.values())
    res = M.evaluate_all(labels, maps.reshape(len(maps), -1).max(1))
    assert np.isnan(res["pro"]) and np.isfinite(res["image_auroc"])
