"""Geometric augmentations that keep defect masks aligned: rotation, flip, elastic distortion, skew.

Abdali et al. 2025 (section 3.3) validate the aggregation weights on augmented copies of the shots
(rotation, flipping, random elastic distortion, skew/perspective). Every function here applies ONE
geometric transform to the image (bilinear) and the SAME transform to the mask (nearest neighbour),
so a defect mask still covers the defect afterwards. Borders are filled by reflection for image and
mask alike: black corners would themselves look like defects to the scorers, and reflecting the
mask with the image keeps a defect near the border labelled where its reflection appears.

All functions are pure numpy/OpenCV: image uint8 (H, W, 3), mask bool (H, W) or None; they return
`(image, mask)` of the same size and dtypes.

>>> img = np.zeros((32, 32, 3), np.uint8); m = np.zeros((32, 32), bool); m[:4, :4] = True
>>> a, b = flip(img, m, horizontal=True); bool(b[0, -1]), bool(b[0, 0])
(True, False)
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_BORDER = cv2.BORDER_REFLECT_101

__all__ = ["rotate", "flip", "elastic", "skew", "augment_shot", "AugmentParams"]


def _check(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}; "
                         "convert with fsad_core.images.to_rgb_array first")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask.shape} must have the image's size {image.shape[:2]}")
        mask = mask.astype(bool)
    return image, mask


def _warp_mask(mask: np.ndarray | None, fn) -> np.ndarray | None:
    if mask is None:
        return None
    return fn(mask.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)


def rotate(image: np.ndarray, mask: np.ndarray | None, angle: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Rotate about the centre by `angle` degrees (counter-clockwise), same size, reflected border."""
    image, mask = _check(image, mask)
    h, w = image.shape[:2]
    a = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(angle), 1.0)

    def warp(x, interp):
        return cv2.warpAffine(x, a, (w, h), flags=interp, borderMode=_BORDER)

    return warp(image, cv2.INTER_LINEAR), _warp_mask(mask, warp)


def flip(image: np.ndarray, mask: np.ndarray | None, horizontal: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirror left-right (`horizontal=True`) or top-bottom."""
    image, mask = _check(image, mask)
    ax = 1 if horizontal else 0
    return (np.ascontiguousarray(np.flip(image, ax)),
            None if mask is None else np.ascontiguousarray(np.flip(mask, ax)))


def elastic(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, alpha: float = 0.03,
            sigma: float = 0.08) -> tuple[np.ndarray, np.ndarray | None]:
    """Random elastic distortion: a smooth random displacement field applied with `cv2.remap`.

    alpha: largest displacement as a fraction of the short side (0.03 -> ~8 px at 256 px);
    sigma: smoothness of the field (Gaussian std as a fraction of the short side).
    """
    image, mask = _check(image, mask)
    h, w = image.shape[:2]
    short = min(h, w)
    s = max(sigma * short, 1.0)
    k = int(2 * round(3 * s) + 1)
    fields = []
    for _ in range(2):
        f = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (k, k), s, borderType=_BORDER)
        peak = float(np.abs(f).max())
        fields.append(f / peak * alpha * short if peak > 0 else f)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xs + fields[0], ys + fields[1]

    def warp(x, interp):
        return cv2.remap(x, map_x, map_y, interpolation=interp, borderMode=_BORDER)

    return warp(image, cv2.INTER_LINEAR), _warp_mask(mask, warp)


def skew(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator,
         magnitude: float = 0.1) -> tuple[np.ndarray, np.ndarray | None]:
    """Random perspective skew: each corner moves inwards/outwards by up to `magnitude` of the side."""
    image, mask = _check(image, mask)
    h, w = image.shape[:2]
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    jitter = rng.uniform(-magnitude, magnitude, (4, 2)) * np.float32([w, h])
    dst = (src + jitter).astype(np.float32)
    p = cv2.getPerspectiveTransform(src, dst)

    def warp(x, interp):
        return cv2.warpPerspective(x, p, (w, h), flags=interp, borderMode=_BORDER)

    return warp(image, cv2.INTER_LINEAR), _warp_mask(mask, warp)


@dataclass(frozen=True)
class AugmentParams:
    """How strong `augment_shot` is. The defaults are mild enough to keep an object recognisable.

    max_rotation: degrees, uniform in [-max, max]; p_hflip / p_vflip: flip probabilities;
    p_elastic / p_skew: probability of each; elastic_alpha, skew_magnitude: strengths (see above).
    """

    max_rotation: float = 20.0
    p_hflip: float = 0.5
    p_vflip: float = 0.25
    p_elastic: float = 0.7
    elastic_alpha: float = 0.03
    p_skew: float = 0.7
    skew_magnitude: float = 0.08


def augment_shot(image: np.ndarray, mask: np.ndarray | None, m: int = 10,
                 rng: np.random.Generator | int | None = 0,
                 params: AugmentParams = AugmentParams()) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """m augmented copies of one shot: each a random rotation, then maybe flips, elastic and skew.

    image: uint8 (H, W, 3); mask: bool (H, W) (anomalous shot) or None (normal shot).
    Returns m pairs `(image, mask)`; masks follow their images pixel for pixel. For an anomalous
    shot, a draw that pushes the whole defect out of the frame is redrawn (up to 20 times), so
    every returned mask is non-empty.
    """
    image, mask = _check(image, mask)
    if m < 1:
        raise ValueError(f"m (number of augmented copies) must be at least 1, got {m}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = []
    for _ in range(m):
        for _attempt in range(20):
            img, msk = rotate(image, mask, rng.uniform(-params.max_rotation, params.max_rotation))
            if rng.random() < params.p_hflip:
                img, msk = flip(img, msk, horizontal=True)
            if rng.random() < params.p_vflip:
                img, msk = flip(img, msk, horizontal=False)
            if rng.random() < params.p_elastic:
                img, msk = elastic(img, msk, rng, alpha=params.elastic_alpha)
            if rng.random() < params.p_skew:
                img, msk = skew(img, msk, rng, magnitude=params.skew_magnitude)
            if msk is None or msk.any():
                break
        else:
            raise ValueError("the defect mask keeps leaving the frame under augmentation; it is too small or "
                             "too close to the border: repaint it or use milder AugmentParams")
        out.append((img, msk))
    return out
