"""Synthetic pseudo-classes for pretraining (Liu et al. 2024, §3.5).

For a normal image: a foreground mask (flood fill from the image border, or GrabCut); a Perlin-noise
map thresholded into a mask and intersected with the foreground; a texture pasted through that mask
and blended (DRAEM's rule: I' = (1 - M) I + (1 - beta) M T + beta M I, beta ~ U[0, 0.8)). The
pseudo-class of the result is the texture.

Textures: DTD is not available offline, so the built-in set is scikit-image's bundled images and
procedurally generated patterns (`builtin_textures`); `load_textures(DIR)` reads a folder of images
(e.g. DTD's `images/<class>/` tree: one pseudo-class per sub-folder, else per file).
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

# -- textures ---------------------------------------------------------------------------------------
_SKIMAGE = ("brick", "grass", "gravel", "camera", "coins", "moon", "text", "coffee", "chelsea", "astronaut",
            "rocket", "page", "cell", "hubble_deep_field")


def _procedural(name: str, size: int = 256) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rng = np.random.default_rng(sum(map(ord, name)))
    if name == "stripes":
        g = 0.5 + 0.5 * np.sin(2 * np.pi * 12 * x)
    elif name == "diagonal":
        g = 0.5 + 0.5 * np.sin(2 * np.pi * 10 * (x + y))
    elif name == "checker":
        g = ((np.floor(x * 12) + np.floor(y * 12)) % 2).astype(np.float32)
    elif name == "dots":
        g = (((x * 10) % 1 - 0.5) ** 2 + ((y * 10) % 1 - 0.5) ** 2 < 0.08).astype(np.float32)
    elif name == "rings":
        g = 0.5 + 0.5 * np.sin(2 * np.pi * 14 * np.hypot(x - 0.5, y - 0.5))
    elif name == "noise":
        g = rng.random((size, size)).astype(np.float32)
    elif name == "perlin":
        g = perlin(size, size, 8, rng)
        g = (g - g.min()) / (np.ptp(g) + 1e-6)
    elif name == "cells":
        pts = rng.random((40, 2)).astype(np.float32)
        d = np.min(np.hypot(x[..., None] - pts[:, 0], y[..., None] - pts[:, 1]), axis=-1)
        g = np.clip(d * 8, 0, 1)
    else:
        raise KeyError(name)
    colour = rng.uniform(0.2, 1.0, 3).astype(np.float32)
    return np.clip(g[..., None] * colour * 255, 0, 255).astype(np.uint8)


PROCEDURAL = ("stripes", "diagonal", "checker", "dots", "rings", "noise", "perlin", "cells")


def builtin_textures() -> dict[str, np.ndarray]:
    """{name: uint8 (H, W, 3)}: scikit-image's bundled images and procedural patterns (22 classes)."""
    import skimage.data

    out = {}
    for name in _SKIMAGE:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # an image that needs pooch/network in this scikit-image version
            continue
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out[name] = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    for name in PROCEDURAL:
        out[name] = _procedural(name)
    return out


def load_textures(folder, per_class: int = 8) -> dict[str, list[np.ndarray]]:
    """Textures from a folder: one pseudo-class per sub-folder (up to `per_class` of its images, e.g.
    DTD's `images/<class>/`), or one per image file at the top level. {name: [uint8 (H, W, 3), ...]}."""
    from ..images import to_rgb_array

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"textures folder {str(root)!r} does not exist")
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    out: dict[str, list[np.ndarray]] = {}
    for p in sorted(root.iterdir()):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in exts)[:per_class]
            if files:
                out[p.name] = [to_rgb_array(f) for f in files]
        elif p.suffix.lower() in exts:
            out[p.stem] = [to_rgb_array(p)]
    if len(out) < 2:
        raise ValueError(f"{str(root)!r} holds {len(out)} texture class(es); pretraining needs at least 2 "
                         "(one image per file or one sub-folder per texture class, as DTD's images/)")
    return out


# -- masks ------------------------------------------------------------------------------------------
def perlin(h: int, w: int, res: int, rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin gradient noise (h, w) with `res` lattice cells along the longer side, in about [-1, 1]."""
    ry = max(1, int(round(res * h / max(h, w))))
    rx = max(1, int(round(res * w / max(h, w))))
    ang = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    grad = np.stack([np.cos(ang), np.sin(ang)], -1)
    yy, xx = np.mgrid[0:h, 0:w]
    fy, fx = yy * ry / h, xx * rx / w
    iy, ix = fy.astype(int), fx.astype(int)
    ty, tx = fy - iy, fx - ix

    def dot(oy, ox):
        g = grad[iy + oy, ix + ox]
        return g[..., 0] * (tx - ox) + g[..., 1] * (ty - oy)

    def fade(t):
        return 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3

    u, v = fade(tx), fade(ty)
    top = dot(0, 0) * (1 - u) + dot(0, 1) * u
    bot = dot(1, 0) * (1 - u) + dot(1, 1) * u
    return (math.sqrt(2) * (top * (1 - v) + bot * v)).astype(np.float32)


def foreground_mask(rgb: np.ndarray, method: str = "floodfill", tolerance: int = 12) -> np.ndarray:
    """bool (H, W), True on the object. floodfill: everything reachable from the border through
    similar colours is background; GrabCut: initialised with a 5 %-margin rectangle. A fill that
    reaches less than half of the border, or a result under 5 % or over 98 % of the image (textures,
    busy backgrounds), means "no separable background": the whole image is the foreground."""
    h, w = rgb.shape[:2]
    if method == "grabcut":
        mask = np.zeros((h, w), np.uint8)
        m = max(1, int(0.05 * min(h, w)))
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(np.ascontiguousarray(rgb[..., ::-1]), mask, (m, m, w - 2 * m, h - 2 * m), bgd, fgd, 3,
                        cv2.GC_INIT_WITH_RECT)
            fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        except cv2.error:
            fg = np.ones((h, w), bool)
    elif method == "floodfill":
        img = cv2.GaussianBlur(np.ascontiguousarray(rgb), (5, 5), 0)
        ff = np.zeros((h + 2, w + 2), np.uint8)
        flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (255 << 8)
        tol = (tolerance,) * 3
        step = max(1, min(h, w) // 16)
        border = [(x, 0) for x in range(0, w, step)] + [(x, h - 1) for x in range(0, w, step)] + \
                 [(0, y) for y in range(0, h, step)] + [(w - 1, y) for y in range(0, h, step)]
        for x, y in border:
            if ff[y + 1, x + 1] == 0:
                cv2.floodFill(img, ff, (x, y), (0, 0, 0), tol, tol, flags)
        fg = ff[1:-1, 1:-1] == 0
        border_bg = np.concatenate([~fg[0], ~fg[-1], ~fg[:, 0], ~fg[:, -1]]).mean()
        if border_bg < 0.5:  # most of the border is not one uniform background: a texture, not an object
            return np.ones((h, w), bool)
    else:
        raise ValueError(f"foreground method must be floodfill or grabcut, got {method!r}")
    frac = fg.mean()
    return fg if 0.05 <= frac <= 0.98 else np.ones((h, w), bool)


def anomaly_mask(foreground: np.ndarray, rng: np.random.Generator, threshold: float = 0.5,
                 min_pixels: int = 16) -> np.ndarray:
    """Thresholded Perlin noise (lattice 2^k, k in 1..4, rotated at random) ∩ foreground; non-empty."""
    h, w = foreground.shape
    for _ in range(20):
        n = perlin(h, w, 2 ** int(rng.integers(1, 5)), rng)
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-90, 90)), 1.0)
        n = cv2.warpAffine(n, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
        m = (n > threshold) & foreground
        if m.sum() >= min_pixels and m.mean() < 0.5:
            return m
    # fallback: a disc at a foreground pixel
    ys, xs = np.nonzero(foreground)
    i = int(rng.integers(len(ys)))
    disc = np.zeros((h, w), np.uint8)
    cv2.circle(disc, (int(xs[i]), int(ys[i])), max(3, min(h, w) // 12), 1, -1)
    return disc.astype(bool) & foreground


def _texture_patch(texture: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    th, tw = texture.shape[:2]
    scale = max(h / th, w / tw) * rng.uniform(1.0, 1.5)
    t = cv2.resize(texture, (max(w, int(tw * scale) + 1), max(h, int(th * scale) + 1)), interpolation=cv2.INTER_AREA)
    y0 = int(rng.integers(0, t.shape[0] - h + 1))
    x0 = int(rng.integers(0, t.shape[1] - w + 1))
    return t[y0:y0 + h, x0:x0 + w]


def paste_texture(rgb: np.ndarray, texture: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  beta: float | None = None) -> np.ndarray:
    """DRAEM's blend through `mask`: (1 - M) I + (1 - beta) M T + beta M I; pixels outside M untouched."""
    beta = float(rng.uniform(0.0, 0.8)) if beta is None else float(beta)
    t = _texture_patch(texture, *rgb.shape[:2], rng).astype(np.float32)
    out = rgb.astype(np.float32).copy()
    m = mask[..., None]
    out = np.where(m, (1 - beta) * t + beta * out, out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def synthetic_anomaly(rgb: np.ndarray, texture: np.ndarray, rng: np.random.Generator,
                      foreground: np.ndarray | None = None, method: str = "floodfill") -> tuple[np.ndarray, np.ndarray]:
    """(image with a pasted texture, bool mask of the pasted region ⊆ foreground)."""
    fg = foreground_mask(rgb, method) if foreground is None else foreground
    m = anomaly_mask(fg, rng)
    return paste_texture(rgb, texture, m, rng), m
