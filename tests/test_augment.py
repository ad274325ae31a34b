"""Augmentations keep defect masks aligned with the defect."""
from __future__ import annotations

import numpy as np
import pytest

from fsad_core import augment as A


def _scene(seed=0, h=96, w=128):
    """Grey noisy texture with a saturated red square; the mask marks the red square."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(110, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    img[..., 0] = np.minimum(img[..., 0], 170)
    mask = np.zeros((h, w), bool)
    mask[30:54, 70:100] = True
    img[mask] = (255, 0, 0)
    return img, mask


def _red(img):
    return (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("name", ["rotate", "hflip", "vflip", "elastic", "skew"])
def test_each_transform_keeps_mask_on_the_defect(name):
    img, mask = _scene()
    rng = np.random.default_rng(1)
    fn = {
        "rotate": lambda: A.rotate(img, mask, 23.0),
        "hflip": lambda: A.flip(img, mask, horizontal=True),
        "vflip": lambda: A.flip(img, mask, horizontal=False),
        "elastic": lambda: A.elastic(img, mask, rng, alpha=0.05),
        "skew": lambda: A.skew(img, mask, rng, magnitude=0.15),
    }[name]
    out, m = fn()
    assert out.shape == img.shape and out.dtype == np.uint8
    assert m.shape == mask.shape and m.dtype == bool
    assert _iou(_red(out), m) > 0.85, name
    # the transform really moved the defect (except where a flip maps it onto itself, not here)
    assert _iou(m, mask) < 0.95 or name == "elastic"


def test_elastic_moves_pixels_but_keeps_alignment():
    img, mask = _scene(2)
    out, m = A.elastic(img, mask, np.random.default_rng(0), alpha=0.05)
    assert np.abs(out.astype(int) - img.astype(int)).mean() > 5  # it did distort
    assert _iou(_red(out), m) > 0.85


def test_augment_shot_copies_are_aligned_seeded_and_nonempty():
    img, mask = _scene(3)
    copies = A.augment_shot(img, mask, m=8, rng=5)
    assert len(copies) == 8
    for out, m in copies:
        assert m.any() and _iou(_red(out), m) > 0.8
    again = A.augment_shot(img, mask, m=8, rng=5)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(copies, again))
    assert not np.array_equal(copies[0][0], copies[1][0])


def test_normal_shot_has_no_mask_and_bad_input_teaches():
    img, _ = _scene()
    copies = A.augment_shot(img, None, m=3, rng=0)
    assert all(m is None and c.shape == img.shape for c, m in copies)
    with pytest.raises(ValueError, match="to_rgb_array"):
        A.rotate(img[..., 0], None, 10)
    with pytest.raises(ValueError, match="image's size"):
        A.rotate(img, np.zeros((5, 5), bool), 10)
    with pytest.raises(ValueError, match="at least 1"):
        A.augment_shot(img, None, m=0)
