"""Defect-type classification (Liu et al. 2024) on tiny backbones: classifiers, synthetic pseudo-classes,
pretraining, the engine API and the `classify` command end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fsad_core.defects.classifiers import ContrastiveClassifier, RelationClassifier
from fsad_core.defects.episodes import finetune_pass, finetune_passes, sample_episode
from fsad_core.defects.synthetic import anomaly_mask, builtin_textures, foreground_mask, synthetic_anomaly


def _episode_data(seed=0, d=8, n_cls=3, k=2):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_cls, d, 1, 1, generator=g) * 2
    sy = torch.arange(n_cls).repeat_interleave(k)
    qy = torch.arange(n_cls)
    noise = lambda n: torch.randn(n, d, 8, 8, generator=g)  # noqa: E731
    return centers[sy] + noise(len(sy)), sy, centers[qy] + noise(len(qy)), qy


@pytest.mark.parametrize("cls", [RelationClassifier, ContrastiveClassifier])
def test_training_steps_reduce_the_loss(cls):
    torch.manual_seed(0)
    s, sy, q, qy = _episode_data()
    clf = cls(in_dim=8, width=16)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        clf.train()
        loss, _ = clf.episode_loss(s, sy, q, qy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]
    p = clf.predict_proba(s, sy, q)
    assert p.shape == (3, 3) and torch.allclose(p.sum(1), torch.ones(3), atol=1e-5)


def test_relation_loss_is_class_weighted_bce():
    s, sy, q, qy = _episode_data(n_cls=4)
    clf = RelationClassifier(in_dim=8, width=16).eval()
    with torch.no_grad():
        _, loss = clf.logits_and_loss(s, sy, q, qy)
        fs, fq = clf.encoder(s), clf.encoder(q)
        classes = torch.stack([fs[sy == c].sum(0) for c in range(4)])
        logits = torch.stack([torch.cat([clf.relation(torch.cat([fq[i], classes[c]])[None]) for c in range(4)])[:, 0]
                              for i in range(4)])
        target = torch.eye(4)
        want = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(3.0))
    assert float(loss) == pytest.approx(float(want), rel=1e-5)


def test_episodes_follow_algorithm_1():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12), 5)
    ep = sample_episode(labels, 10, 2, 2, rng)
    assert len(set(ep.support_y)) == 10 and len(ep.support) == 20 and len(ep.query) == 20
    assert not set(ep.support) & set(ep.query)
    assert all(len(set(labels[ep.support[ep.support_y == c]])) == 1 for c in range(10))
    passes = finetune_pass(np.array([0, 0, 0, 1, 1, 1]), rng)
    assert len(passes) == 3
    assert sorted(int(e.query[0]) for e in passes) == [0, 1, 2]  # each shot of class 0 is a query once
    assert all(not set(e.support) & set(e.query) for e in passes)
    assert [finetune_passes(k) for k in (1, 2, 3, 4, 5)] == [0, 45, 25, 15, 15]
    with pytest.raises(ValueError, match="at least 2 shots"):
        finetune_pass(np.array([0, 0, 1]), rng)


def test_synthetic_pseudo_class_pasted_inside_the_foreground():
    rng = np.random.default_rng(1)
    img = np.full((128, 128, 3), 230, np.uint8)
    img[24:104, 32:112] = (70, 100, 40)  # the object on a plain background
    fg = foreground_mask(img)
    truth = np.zeros((128, 128), bool)
    truth[24:104, 32:112] = True
    # (the 5x5 blur before the fill may add a 1-px rim)
    assert (fg & ~truth).sum() < 0.08 * truth.sum() and (truth & ~fg).sum() < 0.05 * truth.sum()
    tex = builtin_textures()
    assert len(tex) >= 10
    for name in ("brick", "checker", "stripes"):
        out, m = synthetic_anomaly(img, tex[name], rng, foreground=fg)
        assert m.any() and not (m & ~fg).any()
        assert np.array_equal(out[~m], img[~m])
        assert (out[m] != img[m]).any()
    assert foreground_mask(img, "grabcut").mean() < 0.7
    # a texture-like image has no separable background: the whole image is the foreground
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert foreground_mask(noise).all()
    assert anomaly_mask(np.zeros((32, 32), bool) | (np.arange(32)[:, None] < 8), rng).any()


TYPES = ("scratch", "stain", "hole")
PRETRAIN = dict(n_per_class=4, max_iters=60, window=5)


@pytest.fixture(scope="module")
def typed_engine(tiny_config, tiny_backbone, tmp_path_factory):
    """A tiny engine with 2 normal shots and 3 painted shots each of scratch, stain and hole, its
    contrastive classifier pretrained on synthetic pseudo-classes (cached under a temp dir) and fine-tuned."""
    from fsad_core import Engine
    from fsad_core.scorers.patchcore import PatchCoreScorer
    from fsad_core.synth import add_defect, normal_image

    torch.manual_seed(0)
    eng = Engine(tiny_config.replace(cache_dir=str(tmp_path_factory.mktemp("weights"))), backbone=tiny_backbone)
    rng = np.random.default_rng(0)
    for _ in range(2):
        eng.add_shot(normal_image("brick", rng, 128), "normal")
    for t in TYPES:
        for _ in range(3):
            img, m = add_defect(normal_image("brick", rng, 128), t, rng)
            eng.add_shot(img, "anomalous", mask=m, defect_type=t)
    eng.add_scorer(PatchCoreScorer(profile="tiny"))
    eng.train_defect_classifier("contrastive", pretrained="auto", seed=0, pretrain_kwargs=PRETRAIN)
    return eng


def test_end_to_end_classifies_distinct_defect_types_above_chance(typed_engine):
    from fsad_core.synth import add_defect, normal_image

    model = typed_engine.defect_classifier
    assert model.types == ["hole", "scratch", "stain"] and model.finetune_log.iterations == 25 * 3
    assert model.finetune_log.losses[-1] < model.finetune_log.losses[0]
    rng = np.random.default_rng(7)
    hits, n = 0, 0
    for t in TYPES:
        for _ in range(10):
            img, m = add_defect(normal_image("brick", rng, 128), t, rng)
            pred = typed_engine.classify_defect(img, mask=m)
            assert set(pred.probabilities) == set(TYPES)
            assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
            assert np.array_equal(pred.region_mask, m)
            hits += pred.type == t
            n += 1
    assert hits / n > 0.5, f"accuracy {hits}/{n} (chance 1/3)"
    assert typed_engine.defect_classifier is model  # same shots and settings: not retrained
    # without a mask the region is the aggregate map above the threshold (never empty)
    pred = typed_engine.classify_defect(img)
    assert pred.region_mask.shape == img.shape[:2] and pred.region_mask.any()


def test_pretraining_stops_at_the_target_and_is_cached(typed_engine):
    from fsad_core.defects.api import _patchcore
    from fsad_core.defects.pretrain import load_classifier, pretrain

    log = typed_engine.defect_classifier.pretrain_log
    assert not log.cached and 5 <= log.iterations <= 60
    assert log.iterations == 60 or log.accuracy > 0.4
    assert "fsad-tiny-cnn" in log.path
    loaded, meta = load_classifier(log.path)
    assert meta["iterations"] == log.iterations
    scorer = _patchcore(typed_engine)
    from fsad_core.defects.synthetic import builtin_textures

    clf2, log2 = pretrain(scorer, [s.rgb for s in typed_engine.context().normal], builtin_textures(), "contrastive",
                          cache_dir=typed_engine.config.cache_dir, **PRETRAIN)
    assert log2.cached and log2.path == log.path
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), clf2.state_dict().values()))


def test_relation_and_prototype_and_clear_errors(typed_engine, tiny_config, tiny_backbone):
    from fsad_core import Engine
    from fsad_core.synth import add_defect, normal_image

    rng = np.random.default_rng(3)
    img, m = add_defect(normal_image("brick", rng, 128), "hole", rng)
    for kind in ("relation", "prototype"):
        pred = typed_engine.classify_defect(img, mask=m, classifier=kind, pretrained="none")
        assert typed_engine.defect_classifier.kind == kind
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    one = Engine(tiny_config, backbone=tiny_backbone)
    one.add_shot(img, "anomalous", mask=m, defect_type="hole")
    with pytest.raises(ValueError, match="at least 2 defect types"):
        one.classify_defect(img, mask=m)
    with pytest.raises(ValueError, match="unknown classifier"):
        typed_engine.train_defect_classifier("svm")


def test_classify_cli(tmp_path, capsys):
    from fsad_core.__main__ import main
    from fsad_core.synth import make_dataset

    make_dataset(tmp_path / "d", categories=("brick",), n_train=1, n_test_good=0, n_test_defect=4, size=96,
                 defect_types=("scratch", "hole"))
    shots = tmp_path / "d" / "brick"
    q = shots / "test" / "hole" / "000.png"
    out = tmp_path / "out.json"
    rc = main(["classify", "--shots", str(shots), "--query", str(q), "--profile", "tiny", "--pretrained", "none",
               "--classifier", "prototype", "--json", str(out), "--scales", "1,2,3"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["queries"][0]["query"] == str(q) and data["queries"][0]["type"] in ("scratch", "hole")
    assert set(data["queries"][0]["probabilities"]) == {"scratch", "hole"}
    # one defect type only: one error line, exit 2
    import shutil

    shutil.rmtree(shots / "test" / "scratch")
    rc = main(["classify", "--shots", str(shots), "--query", str(q), "--profile", "tiny", "--json", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "at least 2" in err and "Traceback" not in err


def test_eval_type_shots_writes_accuracy_table_and_confusion(tmp_path):
    from fsad_core.__main__ import main
    from fsad_core.synth import make_dataset

    make_dataset(tmp_path / "d", categories=("brick",), n_train=1, n_test_good=0, n_test_defect=6, size=96,
                 defect_types=("scratch", "hole"))
    out = tmp_path / "runs"
    rc = main(["eval", "--data", str(tmp_path / "d"), "--category", "brick", "--type-shots", "1", "--seed", "1,2",
               "--type-classifier", "prototype", "--type-pretrained", "none", "--profile", "tiny", "--scales", "1,2,3",
               "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "defect_types.json").read_text())
    assert set(data["categories"]["brick"]["seeds"]) == {"1", "2"}
    run = data["runs"][0]
    assert run["types"] == ["hole", "scratch"] and sum(map(sum, run["confusion"])) == 4  # 2 queries per type
    assert 0.0 <= data["mean"] <= 1.0 and (out / "defect_types_confusion.png").stat().st_size > 1000
    assert "| **mean** |" in (out / "defect_types.md").read_text()


def test_texture_folder_one_class_per_subfolder(tmp_path):
    from PIL import Image

    from fsad_core.defects.synthetic import load_textures

    rng = np.random.default_rng(0)
    for cls in ("banded", "dotted"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.jpg")
    tex = load_textures(tmp_path, per_class=2)
    assert sorted(tex) == ["banded", "dotted"] and len(tex["banded"]) == 2 and tex["banded"][0].shape == (40, 50, 3)
    from fsad_core.defects.pretrain import synthetic_set
    from fsad_core.scorers.base import ScorerContext, ShotData
    from fsad_core.scorers.patchcore import PatchCoreScorer

    base = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    sc = PatchCoreScorer(profile="tiny")
    sc.prepare(ScorerContext((ShotData("b", "normal", base),), "x", 1))
    maps, labels = synthetic_set(sc, [base], tex, 2)
    assert maps.shape[0] == 4 and labels.tolist() == [0, 0, 1, 1]
    (tmp_path / "dotted" / "0.jpg").unlink()
    for f in (tmp_path / "dotted").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="at least 2"):
        load_textures(tmp_path)
