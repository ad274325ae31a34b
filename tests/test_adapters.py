"""APRIL-GAN adapters on the tiny profile: stages, eq. 2/3/4/6, loss, training, checkpoints, scorer, CLI."""
from __future__ import annotations

import doctest
import importlib
import json
import math

import numpy as np
import pytest
import torch

from fsad_core.adapters.checkpoint import AdapterCheckpointError, load_checkpoint, read_header
from fsad_core.adapters.head import StageHeads, memory_map, stage_logits, text_branch, zero_shot_map
from fsad_core.adapters.stages import AdapterBackbone, BackboneRef, stage_indices
from fsad_core.adapters.train import TrainConfig, TrainingCancelled, resume_path, shot_items, train_adapters
from fsad_core.scorers.adapter import AdapterScorer, load_adapter_scorer
from fsad_core.synth import add_defect, normal_image


@pytest.fixture(scope="module")
def bb():
    return AdapterBackbone(BackboneRef.default("tiny"), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def shot():
    rng = np.random.default_rng(3)
    img, m = add_defect(normal_image("brick", rng, 96), "stain", rng, "brick")
    return img, m, normal_image("brick", rng, 96)


@pytest.fixture(scope="module")
def trained(bb, shot, tmp_path_factory):
    img, m, normal = shot
    items, info = shot_items([(img, m), (normal, None)], "brick", copies=1)
    path = tmp_path_factory.mktemp("adapters") / "a.safetensors"
    ckpt = train_adapters(bb, items, path, TrainConfig(epochs=4, batch_size=4, mosaic_p=0.0), info)
    return path, ckpt


@pytest.mark.parametrize("mod", ["fsad_core.adapters.head", "fsad_core.adapters.losses", "fsad_core.adapters.mosaic",
                                 "fsad_core.adapters.stages"])
def test_docstring_examples(mod):
    res = doctest.testmod(importlib.import_module(mod), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and res.attempted > 0


@pytest.mark.parametrize("depth,expected", [(4, (0, 1, 2, 3)), (8, (1, 3, 5, 7)), (12, (2, 5, 8, 11)),
                                            (24, (5, 11, 17, 23))])
def test_stage_split(depth, expected):
    assert stage_indices(depth) == expected


@pytest.mark.parametrize("depth", [0, 2, 3, 6, 10, 26])
def test_stage_split_refuses_other_depths(depth):
    with pytest.raises(ValueError, match="not a positive multiple of 4"):
        stage_indices(depth)


def test_tiny_profile_clip_has_no_stages():
    """The engine's 2-block tiny CLIP cannot be split: the adapters have their own 4-block one."""
    with pytest.raises(ValueError, match="2 block"):
        stage_indices(2)


def test_stage_features_are_the_stage_ends(bb):
    """Each stage's features = the residual stream after its last block, CLS dropped: (B, P, W)."""
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    x = torch.cat([bb.preprocess(rgb), bb.preprocess(rgb[::-1].copy())])
    feats = bb.stage_features(x)
    assert [tuple(f.shape) for f in feats] == [(2, 15 * 15, bb.width)] * 4
    visual = bb.model.visual
    with torch.no_grad():
        h = visual.ln_pre(visual.patch_dropout(visual._embeds(x) if not hasattr(visual, "conv1") else _embeds(visual, x)))
        for i, blk in enumerate(visual.transformer.resblocks):
            h = blk(h)
            if i in bb.stages:
                torch.testing.assert_close(feats[bb.stages.index(i)], h[:, 1:], rtol=1e-5, atol=1e-5)


def _embeds(visual, x):
    x = visual.conv1(x).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    return torch.cat([cls, x], 1) + visual.positional_embedding.to(x.dtype)


def test_heads_shapes(bb):
    heads = StageHeads(bb.width, bb.embed_dim)
    out = heads([torch.randn(3, 225, bb.width)] * 4)
    assert [tuple(o.shape) for o in out] == [(3, 225, bb.embed_dim)] * 4
    with pytest.raises(ValueError, match="4 stages"):
        heads([torch.randn(1, 225, bb.width)] * 3)


def test_eq3_zero_shot_map_by_hand():
    # 2 stages, 1 image, 2 patches, D = 2; text rows [normal, anomalous]
    f1 = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    f2 = torch.tensor([[[0.5, 0.5], [3.0, 1.0]]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # literal eq. 3: softmax over the raw dot products
    def p(a, n):
        return math.exp(a) / (math.exp(a) + math.exp(n))
    want = [p(0.0, 1.0) + p(0.5, 0.5), p(2.0, 0.0) + p(1.0, 3.0)]
    got = zero_shot_map([f1, f2], t, normalize=False, logit_scale=1.0)
    torch.testing.assert_close(got, torch.tensor([want]), rtol=0, atol=1e-6)
    # the reference code's reading: cosine x 100
    c = 1 / math.sqrt(10)
    want100 = [p(0.0, 100.0) + p(100 * 0.5 / math.sqrt(0.5), 100 * 0.5 / math.sqrt(0.5)),
               p(100.0, 0.0) + p(100 * c, 300 * c)]
    torch.testing.assert_close(zero_shot_map([f1, f2], t), torch.tensor([want100]), rtol=0, atol=1e-6)
    # per-image text (B, 2, D) gives the same as shared text
    torch.testing.assert_close(stage_logits(f1, t[None]), stage_logits(f1, t))


def test_eq4_memory_map_by_hand():
    q1 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    q2 = torch.tensor([[[1.0, 1.0], [-1.0, 0.0]]])
    g1 = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    g2 = torch.tensor([[0.0, 1.0]])
    s = 1 / math.sqrt(2)
    want = [(1 - 1) + (1 - s), (1 - s) + (1 - 0)]  # min over memory of 1 - cos, summed over stages
    torch.testing.assert_close(memory_map([q1, q2], [g1, g2]), torch.tensor([want]), rtol=0, atol=1e-6)
    torch.testing.assert_close(memory_map([q1, q2], [g1, g2], chunk=1), torch.tensor([want]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        memory_map([q1], [torch.zeros(0, 2)])


def test_eq6_text_branch_by_hand():
    f1 = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    f2 = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    e = math.e
    p1 = [1 / (1 + e), e**2 / (1 + e**2)]
    p2 = [e / (1 + e), 1 / (1 + e)]
    score, m = text_branch([f1, f2], t, normalize=False, logit_scale=1.0)
    assert float(score[0]) == pytest.approx((max(p1) + max(p2)) / 2, abs=1e-6)
    torch.testing.assert_close(m[0], torch.tensor([(a + b) / 2 for a, b in zip(p1, p2)]), rtol=0, atol=1e-6)


def test_loss_decreases_on_a_synthetic_annotated_shot(trained):
    _, ckpt = trained
    losses = ckpt.metrics["loss_per_epoch"]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.8, losses
    assert ckpt.training["source"] == "project-shots" and ckpt.training["n_anomalous"] == 1


def test_checkpoint_round_trip_is_bit_exact(bb, trained, shot, tiny_engine):
    path, ckpt = trained
    loaded = load_checkpoint(path)
    assert loaded.header() == json.loads(json.dumps(ckpt.header()))
    assert loaded.state.keys() == ckpt.state.keys()
    assert all(torch.equal(loaded.state[k], ckpt.state[k]) for k in ckpt.state)
    hdr = read_header(path)
    assert hdr["backbone"]["name"] == "fsad-tiny-clip-s4" and hdr["stages"] == [0, 1, 2, 3]
    assert hdr["backbone"]["resolution"] == 240 and hdr["training"]["epochs"] == 4
    # predictions: the trained heads and the reloaded ones on a fresh backbone give identical maps
    img, _, normal = shot
    tiny_engine.set_class_name("brick")
    tiny_engine.add_shot(normal, kind="normal")
    a = tiny_engine.add_scorer(AdapterScorer(ckpt, bb))
    r1 = tiny_engine.score(img)
    fresh = load_adapter_scorer(path, tiny_engine.config)
    assert fresh.backbone is not bb
    tiny_engine.add_scorer(fresh)  # replaces the first (same name)
    r2 = tiny_engine.score(img)
    assert a is not fresh
    for n in ("adapter", "adapter_memory", "adapter_text"):
        assert np.array_equal(r1.components[n].map, r2.components[n].map)
        assert r1.components[n].score == r2.components[n].score


def test_bad_checkpoints_are_clear_errors(tmp_path, trained):
    with pytest.raises(AdapterCheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(AdapterCheckpointError, match="not an adapter checkpoint"):
        load_checkpoint(junk)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(AdapterCheckpointError, match="not an fsad adapter"):
        load_checkpoint(tmp_path / "other.safetensors")
    from fsad_core import EngineConfig

    with pytest.raises(ValueError, match="--profile tiny"):
        load_adapter_scorer(trained[0], EngineConfig(profile="standard"))


def test_components_in_result(bb, trained, tiny_engine, images):
    _, ckpt = trained
    tiny_engine.add_scorer(AdapterScorer(ckpt, bb))
    tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"])
    names = tiny_engine.component_names()
    assert "adapter" in names and "adapter_text" in names and "adapter_memory" not in names  # no normal shot yet
    tiny_engine.add_shot(images["normal"], kind="normal")
    names = tiny_engine.component_names()
    assert names[-3:] == ["adapter", "adapter_memory", "adapter_text"]
    res = tiny_engine.score(images["query"])
    for n in ("adapter", "adapter_memory", "adapter_text"):
        sm = res.components[n]
        assert sm.map.shape == images["query"].shape[:2] and sm.map.dtype == np.float32
        assert sm.grid.shape == (15, 15)
    a = res.components["adapter"]
    assert a.score == pytest.approx(float(a.grid.max())) and 0 <= a.score <= 4
    t = res.components["adapter_text"]
    assert np.allclose(t.grid, a.grid / 4, atol=1e-6)  # S_text's map is M / n
    # the normal shot itself scores ~0 against its own memory (eq. 4 wiring)
    same = tiny_engine.score(images["normal"]).components["adapter_memory"]
    assert same.score < 1e-4
    # S_text as a method equals the component
    s = tiny_engine.scorer("adapter").s_text(images["query"])
    assert s.score == t.score and np.array_equal(s.map, t.map)
    agg = res.aggregate({"adapter": 1.0, "adapter_memory": 1.0})
    assert agg.score == pytest.approx((a.score + res.components["adapter_memory"].score) / 2)


def test_training_resumes_exactly(bb, shot, tmp_path):
    img, m, normal = shot
    items, info = shot_items([(img, m)], "brick", copies=3, seed=1)
    cfg = TrainConfig(epochs=2, batch_size=2, mosaic_p=0.5, seed=4)
    whole = train_adapters(bb, items, tmp_path / "whole.safetensors", cfg, info)
    out = tmp_path / "part.safetensors"
    calls = {"n": 0}

    def stop_after_3():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(TrainingCancelled, match="step 3/4"):
        train_adapters(bb, items, out, cfg, info, should_stop=stop_after_3)
    assert resume_path(out).is_file() and not out.exists()
    seen = []
    resumed = train_adapters(bb, items, out, cfg, info, progress=lambda f, m: seen.append((f, m.split(',')[0])))
    assert seen == [(1.0, "step 4/4")] and not resume_path(out).exists()
    assert all(torch.equal(whole.state[k], resumed.state[k]) for k in whole.state)
    assert resumed.metrics["loss_per_epoch"] == whole.metrics["loss_per_epoch"]
    with pytest.raises(TrainingCancelled, match="step 0/4"):  # leaves a resume file for cfg
        train_adapters(bb, items, out, cfg, info, should_stop=lambda: True)
    with pytest.raises(ValueError, match="other data or settings"):  # other settings refuse it
        train_adapters(bb, items, out, TrainConfig(epochs=3, batch_size=2), info)


def test_shot_items_need_an_annotated_shot(shot):
    with pytest.raises(ValueError, match="annotated anomalous shot"):
        shot_items([(shot[2], None)], "brick")
    items, info = shot_items([(shot[0], shot[1]), (shot[2], None)], "brick", copies=2)
    assert len(items) == 6 and info["n_normal"] == 1
    assert all(it.mask is None or np.asarray(it.mask).any() for it in items)  # augmented masks stay non-empty


def test_cli_train_and_score(tmp_path, capsys):
    from fsad_core.__main__ import main
    from fsad_core.synth import make_dataset

    data = tmp_path / "data"
    make_dataset(data, categories=("brick", "grass"), n_train=1, n_test_good=1, n_test_defect=2, size=64)
    ckpt = tmp_path / "a.safetensors"
    rc = main(["adapters", "train", "--data", str(data), "--categories", "brick", "--epochs", "1", "--batch-size", "2",
               "--out", str(ckpt), "--profile", "tiny", "--precision", "fp32", "--device", "cpu"])
    assert rc == 0 and ckpt.is_file()
    hdr = read_header(ckpt)
    assert hdr["training"]["source"] == "folder" and list(hdr["training"]["categories"]) == ["brick"]
    assert hdr["training"]["n_images"] == 3 and hdr["metrics"]["steps"] == 2
    out = tmp_path / "o.json"
    rc = main(["score", "--profile", "tiny", "--precision", "fp32", "--device", "cpu", "--scales", "1,2,3",
               "--normal", str(data / "brick/train/good/000.png"), "--query", str(data / "brick/test/stain/000.png"),
               "--class-name", "brick", "--adapter", str(ckpt), "--json", str(out),
               "--weights", "adapter=1,adapter_memory=1"])
    assert rc == 0
    js = json.loads(out.read_text())
    assert {"adapter", "adapter_memory", "adapter_text"} <= set(js["components"])
    assert set(js["aggregate"]["weights"]) == {"adapter", "adapter_memory"}
    capsys.readouterr()
    # errors: one line, exit 2, nothing written
    rc = main(["adapters", "train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "b.safetensors"),
               "--profile", "tiny"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "does not exist" in err and len(err.strip().splitlines()) == 1
    rc = main(["adapters", "train", "--data", str(data), "--categories", "brick,wood", "--out",
               str(tmp_path / "b.safetensors"), "--profile", "tiny"])
    assert rc == 2 and "wood" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_text("x")
    rc = main(["score", "--profile", "tiny", "--normal", str(data / "brick/train/good/000.png"), "--query",
               str(data / "brick/test/good/000.png"), "--class-name", "brick", "--adapter", str(bad), "--json",
               str(tmp_path / "p.json")])
    assert rc == 2 and "not an adapter checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "b.safetensors").exists() and not (tmp_path / "p.json").exists()
    rc = main(["adapters", "info", str(ckpt)])
    assert rc == 0 and json.loads(capsys.readouterr().out)["format"] == "fsad-adapter/1"
