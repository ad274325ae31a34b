"""The synthetic benchmark: layout, exact masks, seeding, and the studio's sample project."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fsad_core import synth


def test_make_dataset_layout_and_exact_masks(tmp_path):
    man = synth.make_dataset(tmp_path, categories=("brick", "gravel"), n_train=2, n_test_good=1,
                             n_test_defect=4, size=96, seed=3)
    assert json.loads((tmp_path / "synth.json").read_text()) == man
    for cat in ("brick", "gravel"):
        d = tmp_path / cat
        assert len(list((d / "train" / "good").glob("*.png"))) == 2
        assert len(list((d / "test" / "good").glob("*.png"))) == 1
        for t in synth.DEFECT_TYPES:
            img = np.asarray(Image.open(d / "test" / t / "000.png"))
            mask = np.asarray(Image.open(d / "ground_truth" / t / "000_mask.png"))
            assert img.shape == (96, 96, 3) and img.dtype == np.uint8
            assert mask.shape == (96, 96) and set(np.unique(mask)) == {0, 255}


@pytest.mark.parametrize("t", synth.DEFECT_TYPES)
def test_defect_changes_exactly_the_mask(t):
    rng = np.random.default_rng(0)
    base = synth.normal_image("grass", rng, 128)
    img, m = synth.add_defect(base, t, rng, "grass")
    assert m.dtype == bool and m.sum() >= 8
    np.testing.assert_array_equal(img[~m], base[~m])  # nothing outside the mask changed
    changed = np.abs(img.astype(int) - base.astype(int)).sum(2) > 0
    assert changed[m].mean() > 0.9  # and (almost) every masked pixel did


def test_seeded_and_categories_independent(tmp_path):
    synth.make_dataset(tmp_path / "a", categories=("brick",), n_train=1, n_test_good=0, n_test_defect=1, size=64)
    synth.make_dataset(tmp_path / "b", categories=("brick", "grass"), n_train=1, n_test_good=0, n_test_defect=1,
                       size=64)
    for rel in ("brick/train/good/000.png", "brick/test/scratch/000.png"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    with pytest.raises(ValueError, match="choose from brick"):
        synth.make_dataset(tmp_path / "c", categories=("marble",))


def test_sample_project():
    p = synth.sample_project(seed=0, size=128)
    assert p.class_name == "brick" and len(p.normals) == 3 and len(p.anomalous) == 2
    for img, m, t in p.anomalous:
        assert img.shape == (128, 128, 3) and m.dtype == bool and m.any() and t in synth.DEFECT_TYPES
    assert len(p.queries) == len(p.query_labels) == len(p.query_masks) == 6
    assert {"good", "hole", "foreign"} <= set(p.query_labels)
    q = synth.sample_project(seed=0, size=128)
    assert all(np.array_equal(a, b) for a, b in zip(p.queries, q.queries))


def test_synth_cli(tmp_path, capsys):
    from fsad_core.__main__ import main

    rc = main(["synth", "--out", str(tmp_path), "--categories", "gravel", "--n-train", "1", "--n-test-good", "1",
               "--n-test-defect", "2", "--size", "64", "--defect-types", "hole,stain"])
    assert rc == 0
    assert (tmp_path / "gravel" / "ground_truth" / "stain" / "000_mask.png").is_file()
    assert "gravel: train 1" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path), "--categories", "wood"]) == 2
