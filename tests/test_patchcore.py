"""PatchCore pieces on tiny inputs: coreset, kNN backends, residuals, the `patchcore` scorer."""
from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch

from fsad_core.patchcore.coreset import coreset_size, covering_radius, greedy_coreset
from fsad_core.patchcore.knn import faiss_available, knn
from fsad_core.patchcore.residuals import nearest, residual_map, residuals, reweighted_score


@pytest.mark.parametrize("name", ["fsad_core.patchcore.knn", "fsad_core.patchcore.residuals"])
def test_docstring_examples(name):
    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and res.attempted > 0


def _brute_force_greedy(x: torch.Tensor, n: int, first: int) -> list[int]:
    """k-center greedy spelled out with Python loops: the reference."""
    sel = [first]
    while len(sel) < n:
        best, best_d = None, -1.0
        for i in range(len(x)):
            d = min(float(torch.dist(x[i], x[j])) for j in sel)
            if d > best_d:
                best, best_d = i, d
        sel.append(best)
    return sel


def test_coreset_equals_brute_force_greedy():
    x = torch.randn(40, 5)
    idx = greedy_coreset(x, 12, seed=3, projection_dim=None)
    assert idx.tolist() == _brute_force_greedy(x, 12, int(idx[0]))
    assert len(set(idx.tolist())) == 12


def test_coreset_covering_radius_non_increasing_and_seeded():
    x = torch.randn(200, 16)
    radii = [covering_radius(x, x[greedy_coreset(x, n, seed=0, projection_dim=8)]) for n in (1, 5, 10, 20, 40, 80, 200)]
    assert all(b <= a + 1e-6 for a, b in zip(radii, radii[1:]))
    assert radii[-1] < 0.01 * radii[0]  # every row selected: radius ~0 (cdist rounding)
    assert torch.equal(greedy_coreset(x, 20, seed=1), greedy_coreset(x, 20, seed=1))
    assert coreset_size(1000, 0.1) == 100 and coreset_size(5, 0.1) == 1
    with pytest.raises(ValueError):
        coreset_size(10, 0.0)


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed")
def test_faiss_and_torch_search_agree():
    g = torch.Generator().manual_seed(0)
    mem, q = torch.randn(500, 24, generator=g), torch.randn(300, 24, generator=g)
    df, if_ = knn(q, mem, 5, backend="faiss")
    dt, it = knn(q, mem, 5, backend="torch")
    assert torch.equal(if_, it)
    assert torch.equal(df, dt)  # distances are recomputed from the vectors: identical, not just close


def test_residuals_against_hand_computed_neighbours():
    mem = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    feats = torch.tensor([[1.0, 2.0, 0.0], [9.0, 1.0, 1.0], [-1.0, 12.0, 0.5], [6.0, 0.0, 0.0]])
    # nearest rows by hand: 0, 1, 2, 1
    want = feats - mem[[0, 1, 2, 1]]
    assert torch.allclose(residuals(feats, mem, backend="torch"), want)
    d, i = nearest(feats, mem, backend="torch")
    assert i.tolist() == [0, 1, 2, 1]
    assert torch.allclose(d, want.norm(dim=1))
    region = torch.tensor([[True, False], [False, True]])
    rmap = residual_map(feats, mem, (2, 2), region, backend="torch")
    assert rmap.shape == (3, 2, 2)
    assert torch.allclose(rmap[:, 0, 0], want[0]) and torch.all(rmap[:, 0, 1] == 0)
    # PatchCore eq. 7 by hand: the worst patch is #3 (d = 4, m* = row 1); N_2(m*) = rows 1 and 0 (or 2)
    s = reweighted_score(feats, mem, d, i, num_neighbors=2, backend="torch")
    d_nb = torch.tensor([4.0, 6.0])  # ||f3 - m1||, ||f3 - m0||
    assert s == pytest.approx(float((1 - torch.softmax(d_nb, 0)[0]) * 4.0), rel=1e-6)


def _ctx(shots, version=1):
    from fsad_core.scorers.base import ScorerContext

    return ScorerContext(tuple(shots), "object", version)


def test_patchcore_scorer_memory_map_and_score():
    from fsad_core.scorers.base import Query, ShotData
    from fsad_core.scorers.patchcore import PatchCoreScorer, grid_mask

    rng = np.random.default_rng(0)
    base = rng.integers(90, 110, (96, 112, 3), dtype=np.uint8)
    normal = [np.clip(base.astype(int) + rng.integers(-5, 6, base.shape), 0, 255).astype(np.uint8) for _ in range(3)]
    bad = normal[0].copy()
    bad[30:60, 40:80] = (255, 0, 0)
    mask = np.zeros(bad.shape[:2], bool)
    mask[30:60, 40:80] = True
    sc = PatchCoreScorer(profile="tiny", ratio=0.25, blur_sigma=0)
    shots = [ShotData(f"n{i}", "normal", im) for i, im in enumerate(normal)]
    sc.prepare(_ctx(shots + [ShotData("a", "anomalous", bad, mask, "stain")]))
    f = sc.features(bad, "a")
    clean = (~grid_mask(mask, f.grid, dilate=1)).sum().item()
    assert sc.memory.shape[0] == coreset_size(3 * f.feats.shape[0] + clean, 0.25)
    assert sc.component_names() == ["patchcore"]
    good = sc.score(Query(normal[1], "n1", normal[1].shape[:2]))["patchcore"]
    out = sc.score(Query(bad, "a", bad.shape[:2]))["patchcore"]
    assert out.map.shape == bad.shape[:2] and out.map.dtype == np.float32
    assert out.grid.shape == f.grid
    assert out.score > good.score  # the red square is far from every remembered patch
    assert out.map[45, 60] > out.map[5, 5]
    # no shots: no component, and a clear error when the memory is asked for
    empty = PatchCoreScorer(profile="tiny")
    empty.prepare(_ctx([], 2))
    assert empty.component_names() == [] and empty.score(Query(bad, "a", bad.shape[:2])) == {}
    with pytest.raises(ValueError, match="no memory"):
        _ = empty.memory


def test_engine_component_and_offline_weights_error(tiny_engine, images, tmp_path):
    from fsad_core.models.registry import ModelUnavailableError
    from fsad_core.patchcore.features import build_cnn
    from fsad_core.scorers.patchcore import PatchCoreScorer

    tiny_engine.add_shot(images["normal"], "normal")
    tiny_engine.add_scorer(PatchCoreScorer(profile="tiny"))
    assert "patchcore" in tiny_engine.component_names
    res = tiny_engine.score(images["query"])
    assert res.components["patchcore"].map.shape == images["query"].shape[:2]
    with pytest.raises(ModelUnavailableError, match="models pull cnn --name resnet50"):
        build_cnn("resnet50", "standard", cache_dir=str(tmp_path), weights=None) if not _online() else \
            pytest.skip("online")


def _online() -> bool:
    import socket

    try:
        socket.create_connection(("download.pytorch.org", 443), timeout=1.0).close()
        return True
    except OSError:
        return False
