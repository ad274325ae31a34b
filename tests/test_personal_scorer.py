"""S_P (`personal`) and S_N (`pool`) on the tiny random CLIP: shapes, the paper's formulas, and the
properties that make them anomaly scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import textured

from fsad_core.scorers.personal import (
    LevelFeatures,
    encode_levels,
    level_scoremap,
    personal_components,
    personal_maps,
    pool_maps,
    resolve_levels,
)


def test_levels_default_and_validation(tiny_backbone):
    assert resolve_levels(tiny_backbone) == (0, 1)  # 2 blocks: the evenly spaced four collapse
    assert resolve_levels(tiny_backbone, (-1, 0, 1)) == (0, 1)
    with pytest.raises(ValueError, match="outside"):
        resolve_levels(tiny_backbone, (5,))


def test_encode_levels_shapes(tiny_backbone):
    f = encode_levels(tiny_backbone, [textured(1), textured(2), textured(3)], batch=2)
    assert isinstance(f, LevelFeatures) and len(f) == 3 and f.levels == (0, 1) and f.grid == (15, 15)
    for t in f.feats:
        assert t.shape == (3, 225, 64) and t.dtype == torch.float32
        torch.testing.assert_close(t.norm(dim=-1), torch.ones(3, 225))


def test_personal_is_zero_for_identical_images_and_maps_are_query_size(tiny_backbone):
    q = textured(1, 120, 180)
    comps = personal_components(tiny_backbone, q, q.copy(), [q.copy()])
    assert set(comps) == {"personal", "pool"}
    for sm in comps.values():
        assert sm.map.shape == (120, 180) and sm.map.dtype == np.float32
        assert abs(sm.score) < 1e-5 and np.abs(sm.map).max() < 1e-5
    assert set(personal_components(tiny_backbone, q, q, None)) == {"personal"}


def test_personal_follows_the_paper_formula_and_finds_the_change(tiny_backbone):
    normal = textured(4)
    anomalous = normal.copy()
    anomalous[64:96, 96:128] = (255, 0, 0)  # grid cells rows 6-9, cols 7-9 at 240 px (x1.2 then /16)
    comps = personal_components(tiny_backbone, anomalous, normal, [normal])
    feats = encode_levels(tiny_backbone, [anomalous, normal])
    q = LevelFeatures(tuple(f[:1] for f in feats.feats), feats.levels, feats.grid)
    p = LevelFeatures(tuple(f[1:] for f in feats.feats), feats.levels, feats.grid)
    maps = personal_maps(q, p)
    assert maps.shape == (2, 15, 15)
    # S_P = mean over levels of the max over the grid of 1 - cos
    assert comps["personal"].score == pytest.approx(float(maps.flatten(1).max(1).values.mean()), abs=1e-5)
    np.testing.assert_allclose(comps["personal"].grid, maps.mean(0).numpy(), atol=1e-5)
    # after the first block, the changed patches are the most different ones
    r, c = np.unravel_index(int(maps[0].argmax()), (15, 15))
    assert 5 <= r <= 9 and 6 <= c <= 10
    # the pool holds the normal image: S_N also flags the change, and is no larger than S_P there
    assert comps["pool"].score > 0.0
    assert comps["pool"].score <= comps["personal"].score + 1e-6
    # the map's hot spot is in the defect (defect centre at (80, 112) of a 160x200 image)
    hot = np.unravel_index(int(comps["personal"].map.argmax()), comps["personal"].map.shape)
    assert 48 <= hot[0] <= 112 and 80 <= hot[1] <= 144


def test_pool_min_over_memory_shrinks_with_a_larger_pool(tiny_backbone):
    query = textured(7)
    small = encode_levels(tiny_backbone, [textured(8)])
    big = encode_levels(tiny_backbone, [textured(8), textured(9), query])
    q = encode_levels(tiny_backbone, [query])
    m_small, m_big = pool_maps(q, small), pool_maps(q, big)
    assert (m_big <= m_small + 1e-6).all()
    assert float(m_big.abs().max()) < 1e-5  # the query itself is in the big pool
    # brute force: min over every pool patch of 1 - cos
    mem = small.feats[1][0]
    brute = (1 - q.feats[1][0] @ mem.T).min(dim=1).values.reshape(15, 15)
    torch.testing.assert_close(m_small[1], brute, atol=1e-6, rtol=0)
    # a precomputed pool is accepted as is
    comps = personal_components(tiny_backbone, query, query, big)
    assert comps["pool"].score < 1e-5
    with pytest.raises(ValueError, match="empty"):
        pool_maps(q, LevelFeatures(tuple(f[:0] for f in small.feats), small.levels, small.grid))
    with pytest.raises(ValueError, match="levels"):
        pool_maps(q, encode_levels(tiny_backbone, [textured(8)], levels=(1,)))


def test_level_scoremap_is_mean_of_level_maxima():
    maps = torch.zeros(2, 3, 3)
    maps[0, 0, 0] = 1.0
    maps[1, 2, 2] = 0.5
    sm = level_scoremap(maps, (30, 30))
    assert sm.score == pytest.approx(0.75) and sm.map.shape == (30, 30) and sm.grid.max() == pytest.approx(0.5)


def test_components_merge_into_a_result_and_one_to_normal_preset(tiny_engine, images):
    from fsad_core.aggregate import PRESETS

    tiny_engine.set_class_name("bottle")
    tiny_engine.add_shot(images["normal"], kind="normal")
    result = tiny_engine.score(images["query"])
    comps = personal_components(tiny_engine.backbone, images["query"], images["normal"], [images["normal"]])
    merged = result.with_components(comps)
    assert {"personal", "pool", "zero_shot"} <= set(merged.components)
    agg = merged.aggregate(PRESETS["one-to-normal"])
    z = merged.components["zero_shot"]
    expected = (comps["personal"].map + comps["pool"].map + 0.5 * z.map) / 2.5
    np.testing.assert_allclose(agg.map, expected, rtol=1e-5, atol=1e-6)
