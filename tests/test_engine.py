"""Engine behaviour on the tiny profile: components, memories, caches, aggregation, bad input."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fsad_core import Engine, EngineConfig, Result, ScoreMap
from fsad_core.aggregate import PRESETS, WeightSet, combine, default_weights, paper_weights, resolve_weights
from fsad_core.images import ImageError
from fsad_core.selection import patch_coverage, select_windows

ALL = ["text", "zero_shot", "normal@16", "normal@32", "normal@48", "normal@112",
       "anomalous@16", "anomalous@32", "anomalous@48", "anomalous@112"]


def test_every_component_shape_and_range(tiny_engine, images):
    tiny_engine.set_class_name("metal_nut")
    tiny_engine.add_shot(images["normal"], kind="normal")
    tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"], defect_type="crack")
    assert tiny_engine.component_names == ALL
    result = tiny_engine.score(images["query"])
    assert isinstance(result, Result) and list(result.components) == ALL
    for name, sm in result.components.items():
        assert isinstance(sm, ScoreMap)
        assert sm.map.shape == images["query"].shape[:2] and sm.map.dtype == np.float32, name
        assert 0.0 <= sm.map.min() and sm.map.max() <= 1.0 + 1e-6, name
        assert 0.0 <= sm.score <= 1.0 + 1e-6, name
        if sm.grid is not None:  # image score = max of the grid map, before upsampling
            assert sm.score == pytest.approx(float(sm.grid.max()), abs=1e-7)
            assert sm.grid.shape == (15, 15)


def test_query_equal_to_anomalous_shot_scores_one(tiny_engine, images):
    tiny_engine.add_shot(images["normal"], kind="normal")
    tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"])
    result = tiny_engine.score(images["anomalous"])
    assert result.components["anomalous@16"].score == pytest.approx(1.0, abs=1e-5)


def test_one_annotated_anomalous_image_alone_gives_both_memories(tiny_engine, images):
    tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"])
    names = tiny_engine.component_names
    assert "normal@16" in names and "anomalous@16" in names
    # the clean part of the shot is "seen": its normal distance is 0 there
    r = tiny_engine.score(images["anomalous"])
    grid = r.components["normal@16"].grid
    assert grid[0, 0] == pytest.approx(0.0, abs=1e-6)


def test_empty_mask_is_a_clear_error(tiny_engine, images):
    with pytest.raises(ImageError, match="empty"):
        tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=np.zeros_like(images["mask"]))
    with pytest.raises(ImageError, match="needs a defect mask"):
        tiny_engine.add_shot(images["anomalous"], kind="anomalous")
    with pytest.raises(ImageError, match="must match"):
        tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=np.ones((5, 5), bool))
    assert tiny_engine.shots == []


def test_mask_covering_all_gives_no_normal_windows(tiny_engine, images):
    full = np.ones(images["mask"].shape, bool)
    for s in (1, 2, 3, 7):
        bad, clean = select_windows(full, (15, 15), s)
        assert len(clean) == 0 and len(bad) == (16 - s) ** 2
    tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=full)
    assert not any(n.startswith("normal@") for n in tiny_engine.component_names)


def test_selection_rules_on_hand_made_masks():
    grid = (15, 15)
    # one patch exactly: 16x16 px cell (2, 3) of a 240x240 image
    mask = np.zeros((240, 240), bool)
    mask[32:48, 48:64] = True
    cov = patch_coverage(mask, grid).reshape(grid)
    assert cov[2, 3] == pytest.approx(1.0) and cov.sum() == pytest.approx(1.0)
    bad, clean = select_windows(mask, grid, 1)
    assert bad.tolist() == [2 * 15 + 3]
    assert 2 * 15 + 3 not in clean and len(clean) == 224
    # at 112 px (7x7 windows) one patch covers 1/49 < 0.5: the best-covered window is still taken
    bad7, clean7 = select_windows(mask, grid, 7)
    assert len(bad7) == 1
    # windows touching the patch are not clean; all others are
    n_touch = sum(1 for r in range(9) for c in range(9) if r <= 2 <= r + 6 and c <= 3 <= c + 6)
    assert len(clean7) == 81 - n_touch
    # two separate small regions each contribute a window at 112 px
    mask2 = mask.copy()
    mask2[200:210, 200:210] = True
    bad7b, _ = select_windows(mask2, grid, 7)
    assert len(bad7b) == 2
    # a half-covered 2x2 window at 32 px is included (coverage >= 0.5)
    m3 = np.zeros((240, 240), bool)
    m3[0:32, 0:16] = True
    bad2, _ = select_windows(m3, grid, 2)
    assert 0 in bad2.tolist()


def test_scoring_again_or_reweighting_never_reencodes(tiny_engine, images, request):
    tiny_engine.add_shot(images["normal"], kind="normal")
    tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"])
    calls = request.getfixturevalue("encoder_calls")  # counting starts after the shots
    r1 = tiny_engine.score(images["query"])
    assert calls == {"encode": 1, "windows": 3}
    # new mask, new shot set, new weights: no re-encoding of the query or the shots
    sid = [s.id for s in tiny_engine.shots if s.kind == "anomalous"][0]
    m = images["mask"].copy()
    m[:10, :10] = True
    tiny_engine.update_mask(sid, m)
    r2 = tiny_engine.score(images["query"])
    r2.aggregate({"text": 1.0, "normal@16": 0.5})
    assert calls == {"encode": 1, "windows": 3}
    assert r1.components["normal@16"].score == pytest.approx(r2.components["normal@16"].score)


def test_progressive_scoring_patch_level_first(tiny_engine, images):
    tiny_engine.add_shot(images["normal"], kind="normal")
    tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"])
    steps = list(tiny_engine.score_progressive(images["query"]))
    assert list(steps[0].components) == ["text", "normal@16", "anomalous@16"] and not steps[0].complete
    assert steps[-1].complete and list(steps[-1].components) == ALL
    sizes = [len(s.components) for s in steps]
    assert sizes == sorted(sizes) and len(steps) == 4  # patch level, then 32, 48, 112 px


def test_default_aggregation_is_paper_eq2(tiny_engine, images):
    """Abdali et al. 2025 eq. 2: A = 1/3 (a_zs + max M^W + max M^W+), a_zs = the image-level text
    score, E = (1/3, 1/12 x 8); the map combines the spatial components only."""
    tiny_engine.add_shot(images["normal"], kind="normal")
    tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"])
    r = tiny_engine.score(images["query"])
    c = r.scores()
    memory = [f"{k}@{p}" for k in ("normal", "anomalous") for p in (16, 32, 48, 112)]
    expected = c["text"] / 3 + sum(c[n] for n in memory) / 12
    agg = r.aggregate()
    assert agg.score == pytest.approx(expected, abs=1e-6)
    assert r.aggregate("paper").score == pytest.approx(expected, abs=1e-6)
    expected_map = np.mean([r.components[n].map for n in memory], axis=0)  # 1/12 each, renormalised
    np.testing.assert_allclose(agg.map, expected_map, atol=1e-6)
    # zero_shot keeps its map and slider but weighs 0 in `paper`
    assert paper_weights(r.components)["zero_shot"] == 0.0


def test_aggregation_algebra():
    size = (4, 5)
    comps = {n: ScoreMap(np.full(size, v, np.float32), v) for n, v in
             [("text", 0.2), ("zero_shot", 0.4), ("normal@16", 0.6), ("anomalous@16", 0.9)]}
    # single component = that component
    assert combine(comps, {"text": 3.0}).score == pytest.approx(0.2)
    # weights are scale-free
    a = combine(comps, {"zero_shot": 1, "normal@16": 1})
    b = combine(comps, {"zero_shot": 5, "normal@16": 5})
    assert a.score == pytest.approx(b.score) == pytest.approx(0.5)
    np.testing.assert_allclose(a.map, b.map)
    # text is one number per image: it counts in the score, not in the map
    t = combine(comps, {"text": 1, "normal@16": 1})
    assert t.score == pytest.approx(0.4)
    np.testing.assert_allclose(t.map, 0.6)
    # unknown/missing components drop out and the rest renormalise
    assert combine(comps, {"text": 1, "pool": 7}).score == pytest.approx(0.2)
    # zero weights drop out; convexity
    s = combine(comps, {"text": 0, "zero_shot": 1, "anomalous@16": 3}).score
    assert s == pytest.approx((0.4 + 3 * 0.9) / 4)
    with pytest.raises(ValueError, match="non-negative"):
        combine(comps, {"text": -1})
    with pytest.raises(ValueError, match="no positive weight"):
        combine(comps, {"pool": 1})
    # no anomalous shot: paper weights renormalise to 1/2 text + 1/2 mean normal
    w = default_weights(["text", "zero_shot", "normal@16"])
    assert combine({k: comps[k] for k in ("text", "zero_shot", "normal@16")}, w).score == pytest.approx(0.4)
    assert set(PRESETS) >= {"paper", "equal", "winclip+", "one-to-normal", "april-gan"}


def test_max_of_map_rule_is_max_of_the_mean_not_mean_of_maxima():
    g1 = np.array([[1.0, 0.0]], np.float32)
    g2 = np.array([[0.0, 1.0]], np.float32)
    comps = {"text": ScoreMap(np.full((1, 2), 0.5, np.float32), 0.5),
             "normal@16": ScoreMap(g1, 1.0, grid=g1), "normal@32": ScoreMap(g2, 1.0, grid=g2)}
    ws = WeightSet({"text": 0.5, "normal@16": 0.25, "normal@32": 0.25}, "max_of_map")
    assert combine(comps, ws).score == pytest.approx(0.5 * 0.5 + 0.25)  # max(mean) = 0.5, not 1
    assert combine(comps, WeightSet(ws.weights)).score == pytest.approx(0.5 * 0.5 + 0.5)


def test_weight_resolution_errors():
    names = ["text", "zero_shot", "normal@16"]
    assert resolve_weights("winclip+", names).rule == "max_of_map"
    assert resolve_weights("text=1,normal@16=2", names).weights == {"text": 1.0, "normal@16": 2.0}
    with pytest.raises(ValueError, match="every weight is 0"):
        resolve_weights("text=0,normal@16=0", names)
    with pytest.raises(ValueError, match="normal@17"):
        resolve_weights("normal@17=1", names)
    with pytest.raises(ValueError, match="need personal, pool"):
        resolve_weights("one-to-normal", names)
    with pytest.raises(ValueError, match="unknown preset|bad weight"):
        resolve_weights("papr", names)


def test_studio_style_display_maps_give_the_same_score(tiny_engine, images):
    """combine() takes plain (display-size) arrays for the map; the score stays the Result's."""
    tiny_engine.add_shot(images["normal"], kind="normal")
    r = tiny_engine.score(images["query"])
    small = {n: sm.map[::4, ::4] for n, sm in r.components.items()}
    for name in ("paper", "winclip+", "equal"):
        full = r.aggregate(name)
        disp = combine(r.components, resolve_weights(name, list(r.components)), maps=small)
        assert disp.score == full.score and disp.map.shape == small["text"].shape
        np.testing.assert_allclose(disp.map, full.map[::4, ::4], atol=1e-6)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_bad_images_are_clear_errors(tiny_engine, images):
    png = _png(Image.fromarray(images["normal"]))
    with pytest.raises(ImageError, match="truncated or corrupt|not a readable"):
        tiny_engine.score(png[: len(png) // 2])
    with pytest.raises(ImageError, match="not a readable image"):
        tiny_engine.score(b"this is not an image")
    with pytest.raises(ImageError, match="at least 8 px"):
        tiny_engine.score(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match="empty"):
        tiny_engine.score(b"")
    # huge: a 9000x9000 PNG header claims 81 MP; rejected before decoding the pixels
    huge = _png(Image.new("L", (9000, 9000)))
    with pytest.raises(ImageError, match="MP"):
        tiny_engine.score(huge)


def test_odd_but_valid_images_are_accepted(tiny_engine, images):
    rgb = images["normal"]
    cmyk = Image.fromarray(rgb).convert("CMYK")
    gray16 = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257), mode="I;16")
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    for img in (cmyk, gray16, rgba, Image.fromarray(rgb).convert("P"), Image.fromarray(rgb[..., 0])):
        r = tiny_engine.score(img)
        assert r.components["text"].map.shape == rgb.shape[:2]
    # 16-bit gray decodes to the same pixels as its 8-bit version
    from fsad_core.images import to_rgb_array

    np.testing.assert_array_equal(to_rgb_array(gray16)[..., 0], rgb[..., 0])


def test_config_validation():
    with pytest.raises(ValueError, match="profile"):
        EngineConfig(profile="huge")
    with pytest.raises(ValueError, match="precision"):
        EngineConfig(precision="int4")
    with pytest.raises(ValueError, match="scales"):
        EngineConfig(scales=(0, 2))
    assert EngineConfig(scales=(3, 1, 2)).scales == (1, 2, 3)


def test_engine_with_other_scales(tiny_config, tiny_backbone, images):
    e = Engine(tiny_config.replace(scales=(1, 2)), backbone=tiny_backbone)
    e.add_shot(images["normal"])
    r = e.score(images["query"])
    assert list(r.components) == ["text", "zero_shot", "normal@16", "normal@32"]


def test_truncated_text_context_equals_open_clip_encode_text(tiny_backbone):
    from fsad_core.prompts import winclip_ensemble

    prompts = winclip_ensemble("metal_nut")[1][:20]
    ours = tiny_backbone.encode_text(prompts)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(tiny_backbone.model.encode_text(tiny_backbone._tokenizer(prompts)), dim=-1)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_generated_pool_joins_normal_memory_only_when_switched_on(tiny_engine, images):
    tiny_engine.add_shot(images["normal"], kind="normal")
    before = tiny_engine.score(images["query"]).components["normal@16"].score
    assert tiny_engine.set_pool([images["query"]]) == 1
    assert tiny_engine.banks()["normal"][1].shape[0] == 225  # off by default: pool not in memory
    tiny_engine.set_pool_in_normal_memory(True)
    assert tiny_engine.banks()["normal"][1].shape[0] == 450
    after = tiny_engine.score(images["query"]).components["normal@16"].score
    assert after == pytest.approx(0.0, abs=1e-6) and before > 0.0  # the query is now "seen"


def test_tune_weights_from_the_engine_alone(tiny_engine, images):
    tiny_engine.add_shot(images["normal"], kind="normal")
    sid = tiny_engine.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"])
    np.testing.assert_array_equal(tiny_engine.shot_image(sid), images["anomalous"])
    res = tiny_engine.tune_weights(m=2, n_samples=20, seed=0)
    assert abs(sum(res.weights.values()) - 1.0) < 1e-6
    assert res.auroc_tuned >= res.auroc_default - 1e-12
    assert tiny_engine.last_tuning is res


def test_persistent_encoding_store_survives_a_new_engine(tiny_config, tiny_backbone, images, tmp_path, monkeypatch):
    from fsad_core import Engine
    from storage import Store

    store = Store(tmp_path / "data")
    e1 = Engine(tiny_config, backbone=tiny_backbone, encoding_store=store.embeddings)
    e1.add_shot(images["normal"])
    r1 = e1.score(images["query"])
    calls = {"n": 0}
    real = tiny_backbone.window_embeddings

    def count(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(tiny_backbone, "encode", lambda *a, **k: pytest.fail("re-encoded a stored image"))
    monkeypatch.setattr(tiny_backbone, "window_embeddings", count)
    e2 = Engine(tiny_config, backbone=tiny_backbone, encoding_store=store.embeddings)  # "after a restart"
    e2.add_shot(images["normal"])
    r2 = e2.score(images["query"])
    assert calls["n"] == 0
    for name in r1.components:
        np.testing.assert_array_equal(r1.components[name].map, r2.components[name].map)
    store.close()
