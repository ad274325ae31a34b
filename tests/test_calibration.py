"""Calibration: the conformal guarantee holds on synthetic normal draws, labelled and heuristic
thresholds, verdicts, and the record round-trips through JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fsad_core import calibration as cal


@pytest.mark.parametrize("n", [29, 100])
def test_conformal_false_alarm_rate_stays_below_alpha(n):
    """P(false-alarm rate > alpha) <= 1 - confidence over many calibration sets (exponential scores,
    whose exact false-alarm rate at a threshold t is exp(-t)); the mean rate is <= alpha too."""
    alpha, confidence, draws = 0.1, 0.95, 2000
    rng = np.random.default_rng(1234)
    far = np.empty(draws)
    for i in range(draws):
        c = cal.conformal(rng.exponential(size=n), alpha=alpha, confidence=confidence)
        far[i] = np.exp(-c.threshold)
    violations = float((far > alpha).mean())
    se = np.sqrt(0.05 * 0.95 / draws)
    assert violations <= (1 - confidence) + 3 * se, violations
    assert far.mean() <= alpha
    # and it is not vacuous: the bound is nearly reached (k is chosen as large as it allows)
    assert violations > 0.01 and far.mean() > alpha / 4


def test_conformal_k_and_words():
    c = cal.conformal(np.linspace(0, 1, 29), alpha=0.1, confidence=0.95)
    assert c.k == 1 and c.threshold > 1.0 and c.alpha == 0.1 and c.needed_for_1pct == 299
    assert "29 OK images" in c.text and "at most 10 % false alarms with 95 % confidence" in c.text
    assert "270 more" in c.text
    assert c.verdict(1.0) in ("OK", "uncertain") and cal.verdict(1.0, c.threshold) == "OK"
    # too few images: the maximum, with the honest (weaker) bound and how many more are needed
    few = cal.conformal([0.1, 0.2, 0.3], alpha=0.1)
    assert few.k == 1 and few.alpha > 0.5 and "26 more" in few.text
    many = cal.conformal(np.random.default_rng(0).normal(size=1000), alpha=0.1)
    assert many.k > 60 and 0 < many.false_alarm_rate < 0.1
    with pytest.raises(ValueError, match="OK"):
        cal.conformal([])


def test_n_needed_matches_the_binomial_bound():
    from scipy.stats import binom

    for a, conf in [(0.1, 0.95), (0.01, 0.95), (0.05, 0.99), (0.2, 0.9)]:
        n = cal.n_needed(a, conf)
        assert (1 - a) ** n <= 1 - conf < (1 - a) ** (n - 1)
    n3 = cal.n_needed(0.1, 0.95, k=3)
    assert binom.cdf(2, n3, 0.1) <= 0.05 < binom.cdf(2, n3 - 1, 0.1)


def test_labelled_f1_and_recall_with_confusion_matrix():
    ok, ng = [0.1, 0.2, 0.3, 0.55], [0.5, 0.6, 0.9]
    c = cal.labelled(ok, ng)
    m = c.confusion
    assert m["tp"] + m["fn"] == 3 and m["fp"] + m["tn"] == 4
    assert c.f1 == pytest.approx(max(cal.confusion(ok, ng, t)["f1"] for t in np.linspace(0, 1, 201)))
    r = cal.labelled(ok, ng, recall=1.0)
    assert r.confusion["fn"] == 0 and r.recall == 1.0 and r.threshold <= 0.5
    assert "recall" in r.text and "3 of 3 NG caught" in r.text
    with pytest.raises(ValueError, match="OK and NG"):
        cal.labelled(ok, [])


def test_auto_mode_order():
    rng = np.random.default_rng(0)
    assert cal.calibrate(rng.normal(size=40)).mode == "conformal"
    assert cal.calibrate(rng.normal(size=40), rng.normal(3, 1, 5)).mode == "conformal"  # enough OK: the guarantee
    assert cal.calibrate(rng.normal(size=10), rng.normal(3, 1, 5)).mode == "labelled"  # too few OK for 10 %
    assert cal.calibrate(rng.normal(size=40), [3.0], recall=0.9).mode == "labelled"
    assert cal.calibrate(rng.normal(size=5)).mode == "conformal"
    with pytest.raises(ValueError, match="nothing to calibrate"):
        cal.calibrate()


def test_heuristic_and_manual():
    h = cal.heuristic([0.1, 0.3, 0.2])
    assert h.mode == "heuristic" and h.threshold > 0.3 and "No guarantee" in h.text and "heuristic" in h.notes
    h2 = cal.heuristic([0.1, 0.3, 0.2], [0.7, 0.8])
    assert 0.3 < h2.threshold < 0.7 and h2.confusion == {"tp": 2, "fp": 0, "fn": 0, "tn": 3}
    with pytest.raises(ValueError, match="normal shot"):
        cal.heuristic([])
    m = cal.manual(0.5, 0.05, ok_scores=[0.1, 0.6], ng_scores=[0.7, 0.2])
    assert m.mode == "manual" and m.false_alarm_rate == 0.5 and m.miss_rate == 0.5


def test_verdicts_and_margin():
    assert cal.verdicts([0.1, 0.49, 0.5, 0.9], 0.5, margin=0.02) == ["OK", "uncertain", "uncertain", "NG"]
    assert cal.verdicts([0.1, 0.49, 0.5, 0.9], 0.5) == ["OK", "OK", "NG", "NG"]
    with pytest.raises(ValueError):
        cal.verdict(float("nan"), 0.5)
    assert cal.default_margin([1.0]) == 0.0 and cal.default_margin([0, 1, 2, 3]) > 0


def test_record_round_trips_through_json():
    c = cal.labelled([0.1, 0.2, 0.3], [0.6, 0.7])
    back = cal.Calibration.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    with pytest.raises(ValueError, match="mode"):
        cal.Calibration.from_dict({**c.to_dict(), "mode": "magic"})


def test_engine_calibrate_is_the_same_implementation(tiny_engine):
    from fsad_core import synth

    proj = synth.sample_project(seed=0, size=96)
    tiny_engine.clear_shots()
    tiny_engine.add_shot(proj.normals[0], kind="normal")
    ok_imgs, ng_imgs = [proj.normals[1], proj.queries[0]], [proj.anomalous[0][0]]
    c = tiny_engine.calibrate(ok_images=ok_imgs, ng_images=ng_imgs, mode="labelled")
    ok = [tiny_engine.score(i).aggregate().score for i in ok_imgs]
    ng = [tiny_engine.score(i).aggregate().score for i in ng_imgs]
    assert c.threshold == cal.labelled(ok, ng).threshold and c.n == 3
    h = tiny_engine.calibrate()  # nothing held out: the shots-only heuristic
    assert h.mode == "heuristic"
