"""Monte-Carlo weight search: the pure core and the engine-level wrapper on the tiny profile."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fsad_core.tuning import DISTRIBUTIONS, aurocs, monte_carlo, sample_weights


def _noisy(seed, n=60, c=6, informative=2, strength=2.0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(int)
    s = rng.normal(size=(n, c))
    s[:, informative] += strength * y
    return s, y


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_sample_weights_are_simplex_points(dist):
    w = sample_weights(500, 5, dist, 0)
    assert w.shape == (500, 5) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(1), 1.0)
    with pytest.raises(ValueError, match="uniform, normal, student-t"):
        sample_weights(1, 2, "cauchy")


def test_vectorised_auroc_equals_sklearn():
    s, y = _noisy(0)
    s = np.round(s, 1)  # ties
    a = aurocs(s, y)
    for j in range(s.shape[1]):
        assert a[j] == pytest.approx(roc_auc_score(y, s[:, j]), abs=1e-12)


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_informative_component_gets_largest_weight(dist):
    s, y = _noisy(1, informative=3)
    w, a = monte_carlo(s, y, n_samples=300, distribution=dist, seed=0)
    assert int(np.argmax(w)) == 3
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert a == pytest.approx(roc_auc_score(y, s @ w), abs=1e-12)


def test_never_below_default_on_validation_set():
    for seed in range(40):
        s, y = _noisy(seed, n=20, strength=0.5)
        d = np.random.default_rng(seed).random(s.shape[1])
        w, a = monte_carlo(s, y, n_samples=10, seed=seed, default=d)
        assert a >= roc_auc_score(y, s @ (d / d.sum())) - 1e-12
        # the uniform default too
        w, a = monte_carlo(s, y, n_samples=5, seed=seed)
        assert a >= roc_auc_score(y, s.mean(1)) - 1e-12


def test_ties_keep_the_default():
    s, y = _noisy(2, strength=50.0)  # the informative column separates perfectly, so does the mix
    d = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    w, a = monte_carlo(s, y, n_samples=200, seed=0, default=d)
    assert a == 1.0
    np.testing.assert_array_equal(w, d)


def test_seeded_and_validated():
    s, y = _noisy(3)
    assert np.array_equal(monte_carlo(s, y, seed=4)[0], monte_carlo(s, y, seed=4)[0])
    with pytest.raises(ValueError, match="n_images, n_components"):
        monte_carlo(s[:, 0], y)
    with pytest.raises(ValueError, match="both anomalous"):
        monte_carlo(s, np.zeros(len(y)))
    with pytest.raises(ValueError, match="non-negative"):
        monte_carlo(s, y, default=-np.ones(s.shape[1]))


# -- engine level ---------------------------------------------------------------------------------
def _shots(images, n_normal=1, n_anom=1):
    from conftest import textured

    normals = [images["normal"]] + [textured(10 + i) for i in range(n_normal - 1)]
    anoms = []
    for i in range(n_anom):
        a = textured(20 + i)
        m = np.zeros(a.shape[:2], bool)
        m[40 + 10 * i:80 + 10 * i, 50:110] = True
        a[m] = (255, 0, 0) if i % 2 == 0 else (0, 0, 255)
        anoms.append((a, m))
    return normals, anoms


def _fill(engine, normals, anoms):
    images = {}
    for n in normals:
        images[engine.add_shot(n, kind="normal")] = n
    for a, m in anoms:
        images[engine.add_shot(a, kind="anomalous", mask=m, defect_type="stain")] = a
    return images


def test_tune_weights_single_shots_says_self_match(tiny_engine, images):
    from fsad_core.tuning import tune_weights

    engine = tiny_engine
    engine.set_class_name("tile")
    imgs = _fill(engine, *_shots(images))
    before = (list(engine.component_names), [s.id for s in engine.shots])
    calls = []
    r = tune_weights(engine, m=3, n_samples=50, images=imgs, progress=lambda f, msg: calls.append(f))
    assert (list(engine.component_names), [s.id for s in engine.shots]) == before  # engine untouched
    assert set(r.weights) == set(engine.component_names)
    assert sum(r.weights.values()) == pytest.approx(1.0) and min(r.weights.values()) >= 0
    assert r.auroc_tuned >= r.auroc_default
    assert set(r.component_auroc) == set(r.weights)
    assert r.leave_one_out is False and "self-match" in r.notes
    assert r.n_validation == (3, 3)
    assert calls[-1] == pytest.approx(1.0) and len(calls) == 6
    assert engine.last_tuning is r
    assert r.to_dict()["weights"] == r.weights


def test_tune_weights_leave_one_out_with_two_shots_each(tiny_engine, images):
    from fsad_core.tuning import tune_weights, validation_set

    engine = tiny_engine
    imgs = _fill(engine, *_shots(images, n_normal=2, n_anom=2))
    r = tune_weights(engine, m=2, n_samples=30, images=imgs, seed=1)
    assert r.leave_one_out is True and "leave-one-shot-out" in r.notes
    assert r.auroc_tuned >= r.auroc_default
    # self-match scoring gives a different validation set: held-out copies are not matched to themselves
    vs_loo = validation_set(engine, m=1, seed=1, images=imgs)
    vs_self = validation_set(engine, m=1, seed=1, images=imgs, holdout="none")
    j = vs_self.names.index("anomalous@16")
    anom = vs_self.labels == 1
    assert vs_self.scores[anom, j].mean() > vs_loo.scores[anom, j].mean()


def test_tune_weights_needs_both_kinds_and_pixels(tiny_engine, images):
    from fsad_core.tuning import tune_weights

    engine = tiny_engine
    engine.add_shot(images["normal"], kind="normal")
    with pytest.raises(ValueError, match="anomalous shot"):
        tune_weights(engine, images={})
    engine.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"])
    if not callable(getattr(engine, "shot_image", None)):
        with pytest.raises(ValueError, match="pixels"):
            tune_weights(engine, m=1, n_samples=2)


def test_tuning_never_reencodes_a_shot(tiny_engine, images, encoder_calls):
    """The scratch engine of the validation reads the caller's shot encodings: only the augmented
    copies are new images, so encoder passes = copies (and window passes = copies x window scales)."""
    from fsad_core.tuning import tune_weights

    engine, calls = tiny_engine, encoder_calls
    imgs = _fill(engine, *_shots(images, n_normal=2, n_anom=1))
    n_shots, n_scales = 3, len(engine.window_scales)
    assert calls == {"encode": n_shots, "windows": n_shots * n_scales}
    m = 2
    r = tune_weights(engine, m=m, n_samples=10, images=imgs)
    assert r.n_validation == (m * 1, m * 2)
    # 6 copies, each encoded once; the 3 shots (also re-added after leave-one-out) never again
    assert calls["encode"] == n_shots + m * n_shots
    assert calls["windows"] == (n_shots + m * n_shots) * n_scales
    # a second run re-encodes nothing but its new copies either (different seed, new copies)
    tune_weights(engine, m=1, n_samples=5, images=imgs, seed=3)
    assert calls["encode"] == n_shots + m * n_shots + n_shots


def test_validation_only_normal_shot_never_enters_a_memory(tiny_engine, images):
    """Section 4.3: "the normal sample is used exclusively for validation". The validation shot is
    in no bank, gives the negatives, and the run records what ran."""
    from fsad_core.tuning import tune_weights, validation_set

    engine = tiny_engine
    normal, anomalous = images["normal"], images["anomalous"]
    val = np.ascontiguousarray(normal[:, ::-1])
    mem_id = engine.add_shot(normal, kind="normal")
    val_id = engine.add_shot(val, kind="normal", role="validation")
    engine.add_shot(anomalous, kind="anomalous", mask=images["mask"])
    bank = engine.banks()["normal"][1]
    # the memory at patch level holds the memory normal's 225 patches plus the anomalous shot's clean ones
    clean = engine.banks()["normal"][1].shape[0] - 225
    engine.set_shot_role(val_id, "memory")
    assert engine.banks()["normal"][1].shape[0] == 225 * 2 + clean  # the same shot in memory: 225 more
    engine.set_shot_role(val_id, "validation")
    assert engine.banks()["normal"][1].shape[0] == bank.shape[0]
    assert all(s.id != val_id for s in engine.context().shots)
    vs = validation_set(engine, seed=0)
    assert vs.protocol == "validation-normal" and vs.m_total == 10
    assert set(vs.source) == {val_id, engine.shots[2].id} and mem_id not in vs.source
    assert vs.labels.tolist().count(0) == 5 and vs.labels.tolist().count(1) == 5  # 10 split evenly
    r = tune_weights(engine, n_samples=20, m_total=6)
    rec = r.protocol_record()
    assert rec["protocol"] == "validation-normal" and rec["m_total"] == 6 and rec["n_samples"] == 20
    assert r.n_validation == (3, 3) and "validation-only" in r.notes
    with pytest.raises(ValueError, match="only normal shots"):
        engine.add_shot(anomalous, kind="anomalous", mask=images["mask"], role="validation")
