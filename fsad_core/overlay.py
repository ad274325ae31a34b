"""Heatmap colouring, overlays and contours: the one implementation the CLI, the batch report and
the studio share (numpy + Pillow; no UI framework).

Conventions: images uint8 (H, W, 3); maps float (H, W), higher = more anomalous; `unit` maps are
already scaled to [0, 1]; masks bool (H, W). Colours come from matplotlib's perceptual "turbo".
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

CONTOUR_RGB = (0, 255, 255)


@lru_cache(maxsize=4)
def colormap_lut(name: str = "turbo") -> np.ndarray:
    """A matplotlib colormap as a uint8 (256, 3) lookup table (computed once)."""
    from matplotlib import colormaps

    cmap = colormaps[name]
    return (np.asarray(cmap(np.linspace(0.0, 1.0, 256)))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def value_range(values: np.ndarray) -> tuple[float, float]:
    """(lo, hi) of a map for display; a flat map gets a unit-wide range so nothing divides by 0."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if not np.isfinite(lo) or not np.isfinite(hi):
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-12:
        hi = lo + 1.0
    return lo, hi


def normalise(values: np.ndarray, vrange: tuple[float, float] | None = None) -> np.ndarray:
    """float (H, W) -> float32 (H, W) in [0, 1] over `vrange` (default: the map's own min..max).

    >>> normalise(np.array([[0.0, 2.0], [1.0, 4.0]])).tolist()
    [[0.0, 0.5], [0.25, 1.0]]
    """
    lo, hi = vrange if vrange is not None else value_range(values)
    out = (np.nan_to_num(values.astype(np.float32), nan=lo) - lo) / max(hi - lo, 1e-12)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def colorize(unit: np.ndarray, cmap: str = "turbo") -> np.ndarray:
    """float (H, W) in [0, 1] -> uint8 (H, W, 3) through a colormap."""
    idx = np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return colormap_lut(cmap)[idx]


def blend(img: np.ndarray, unit: np.ndarray, opacity: float = 0.5, cmap: str = "turbo") -> np.ndarray:
    """Blend a [0, 1] map over an image: (1 - a) * img + a * cmap(map). Same (H, W) for both.

    opacity 0 shows the image, 1 the bare heatmap (Pillow's C blend: ~10x faster than numpy float
    math, which matters on the studio's slider path).
    """
    a = float(np.clip(opacity, 0.0, 1.0))
    if a <= 0.0:
        return img.copy()
    col = colorize(unit, cmap)
    if a >= 1.0:
        return col
    return np.asarray(Image.blend(Image.fromarray(img), Image.fromarray(col), a))


def overlay(rgb: np.ndarray, score_map: np.ndarray, alpha: float = 0.5,
            vrange: tuple[float, float] | None = None) -> np.ndarray:
    """A raw score map over its image, coloured over `vrange` (default: the map's own range, i.e.
    the map's shape rather than its magnitude). The map is resized to the image if needed."""
    unit = normalise(np.asarray(score_map, dtype=np.float32), vrange)
    if unit.shape != rgb.shape[:2]:
        unit = np.asarray(Image.fromarray(unit, mode="F").resize((rgb.shape[1], rgb.shape[0]), Image.BILINEAR))
    return blend(rgb, unit, alpha)


def boundary(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """bool (H, W) -> bool (H, W): the mask's inner boundary pixels, `thickness` px wide
    (the mask minus its erosion by a (2 t + 1) square; outside the image counts as background).

    >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
    >>> boundary(m).astype(int)[2].tolist()
    [0, 1, 0, 1, 0]
    """
    mask = np.asarray(mask, bool)
    t = max(1, int(thickness))
    padded = np.pad(mask, t, constant_values=False).astype(np.uint8) * 255
    eroded = Image.fromarray(padded).filter(ImageFilter.MinFilter(2 * t + 1))
    inner = np.asarray(eroded)[t:-t, t:-t] > 0
    return mask & ~inner


def draw_contour(img: np.ndarray, mask: np.ndarray, rgb=CONTOUR_RGB, thickness: int = 2) -> np.ndarray:
    """Paint the boundary of `mask` onto a copy of `img` (uint8 H x W x 3)."""
    out = img.copy()
    out[boundary(mask, thickness)] = rgb
    return out
