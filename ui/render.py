"""Pixels for the browser: heatmap colouring, overlays, contours, mask layers and panels.

Pure numpy/Pillow functions (no gradio, no torch) so they are testable and fast. Everything the
studio shows as a heatmap or a mask goes through here and leaves as uint8 RGB(A) arrays; the
components that show them use ``format="png"`` so nothing is re-encoded lossily on the way.

Conventions: images are uint8 (H, W, 3); maps are float32 (H, W), higher = more anomalous;
masks are bool (H, W).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from fsad_core.overlay import blend as overlay

# colouring, overlays and contours are shared with the CLI and the batch report
from fsad_core.overlay import colorize, colormap_lut, draw_contour, normalise, value_range

#: Longest side of the images sent to the browser. Maps stay at full resolution in the engine;
#: the display copy is smaller so a slider move re-encodes a small PNG (the < 100 ms budget).
PANEL_SIDE = 320
AGGREGATE_SIDE = 512
MIN_AGGREGATE_SIDE = 384  # small queries are enlarged to this so the contour stays readable
CLICK_SIDE = 560  # the SAM click view: small images are enlarged so a click can be precise

MASK_RGB = (255, 40, 40)


def resize_image(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h, w, 3), bilinear (area when shrinking)."""
    if img.shape[:2] == tuple(size_hw):
        return img
    pil = Image.fromarray(img)
    shrink = size_hw[0] < img.shape[0]
    return np.asarray(pil.resize((size_hw[1], size_hw[0]), Image.BOX if shrink else Image.BILINEAR))


def resize_map(values: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """float (H, W) -> float32 (h, w), bilinear (Pillow's 32-bit float mode, no quantisation)."""
    if values.shape == tuple(size_hw):
        return values.astype(np.float32, copy=False)
    pil = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(pil.resize((size_hw[1], size_hw[0]), Image.BILINEAR), dtype=np.float32)


def display_size(size_hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Fit (H, W) inside max_side, keeping the aspect ratio; never upscale."""
    h, w = size_hw
    s = min(1.0, max_side / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def fit_size(size_hw: tuple[int, int], side: int) -> tuple[int, int]:
    """(H, W) scaled so the longer side is exactly `side` (up or down), aspect kept."""
    h, w = size_hw
    s = side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def click_view(img: np.ndarray, side: int = CLICK_SIDE) -> np.ndarray:
    """The image as shown for SAM clicks (longer side = `side`); see `click_to_image`."""
    return resize_image(img, fit_size(img.shape[:2], side))


def click_to_image(xy: Sequence[float], size_hw: tuple[int, int], side: int = CLICK_SIDE) -> tuple[int, int]:
    """A click in `click_view` pixels -> (x, y) in the image's own pixels, clamped inside it.

    >>> click_to_image((280, 100), (100, 200), side=400)
    (140, 50)
    """
    vh, vw = fit_size(size_hw, side)
    h, w = size_hw
    x = min(w - 1, max(0, int(float(xy[0]) * w / vw)))
    y = min(h - 1, max(0, int(float(xy[1]) * h / vh)))
    return x, y


def tint_mask(img: np.ndarray, mask: np.ndarray, rgb=MASK_RGB, alpha: float = 0.45) -> np.ndarray:
    """The image with `mask` tinted and outlined (for the SAM click view and shot thumbnails)."""
    out = img.astype(np.float32)
    m = np.asarray(mask, bool)
    out[m] = out[m] * (1.0 - alpha) + np.asarray(rgb, np.float32) * alpha
    out = (out + 0.5).astype(np.uint8)
    return draw_contour(out, m, rgb, thickness=max(1, round(max(img.shape[:2]) / 256)))


def draw_prompts(img: np.ndarray, points: Sequence[tuple[int, int, bool]] = (), box: Sequence[int] | None = None) -> np.ndarray:
    """Mark SAM prompts on a copy of the image: green dots (add), red dots (remove), a yellow box."""
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    r = max(3, round(max(img.shape[:2]) / 90))
    if box is not None:
        x0, y0, x1, y1 = box
        d.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=(255, 220, 0), width=max(1, r // 2))
    for x, y, positive in points:
        fill = (40, 220, 70) if positive else (240, 40, 40)
        d.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255), width=max(1, r // 3))
    return np.asarray(pil)


def mask_to_layer(mask: np.ndarray, rgb=MASK_RGB, alpha: int = 255) -> np.ndarray:
    """bool (H, W) -> uint8 (H, W, 4) editor layer: `rgb` with `alpha` where the mask is set, clear elsewhere."""
    m = np.asarray(mask, bool)
    layer = np.zeros(m.shape + (4,), np.uint8)
    layer[m, :3] = rgb
    layer[m, 3] = alpha
    return layer


def layer_to_mask(layer: np.ndarray | None, size_hw: tuple[int, int] | None = None) -> np.ndarray | None:
    """An editor layer -> bool (H, W) from its alpha channel, which marks the painted pixels (never
    from its RGB, the brush's colour; docs/ui.md: "Masks never travel as editor layers").

    RGB/grey layers (no alpha) count any non-black pixel. With `size_hw` a layer of another size is
    resized (nearest) to it, which happens when the editor's canvas differs from the image.
    """
    if layer is None:
        return None
    arr = np.asarray(layer)
    if arr.ndim == 3 and arr.shape[2] == 4:
        m = arr[..., 3] > 0
    elif arr.ndim == 3:
        m = arr.max(axis=2) > 0
    else:
        m = arr > 0
    if size_hw is not None and m.shape != tuple(size_hw):
        pil = Image.fromarray(m.astype(np.uint8) * 255).resize((size_hw[1], size_hw[0]), Image.NEAREST)
        m = np.asarray(pil) > 127
    return m


def editor_value(img: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """The gr.ImageEditor value for an image whose current mask is `mask`.

    The mask is drawn into the *background* (tinted and outlined) and the editable layer starts
    empty: Gradio 6.31's editor keeps server-sent layers in its value but does not draw them, so a
    mask sent as a layer would be invisible and lost at the first brush stroke. The studio keeps the
    mask on the server and reads only the user's new strokes from the layer (`editor_mask`).
    """
    shown = tint_mask(img, mask) if mask is not None and np.asarray(mask).any() else img
    return {"background": shown, "layers": [], "composite": None}


def editor_mask(value, size_hw: tuple[int, int]) -> np.ndarray:
    """The strokes painted in a gr.ImageEditor value: union of its layers' alpha, bool (H, W)."""
    mask = np.zeros(size_hw, bool)
    if not value:
        return mask
    for layer in value.get("layers") or []:
        m = layer_to_mask(layer, size_hw)
        if m is not None:
            mask |= m
    return mask


def heat_panel(img: np.ndarray, values: np.ndarray, opacity: float, max_side: int = PANEL_SIDE,
               vrange: tuple[float, float] | None = None, cmap: str = "turbo") -> np.ndarray:
    """A component panel: the query with its map overlaid, at display size (uint8 h x w x 3).

    `img` and `values` may have different sizes (the map is resized to the display size).
    """
    hw = display_size(img.shape[:2], max_side)
    small = resize_image(img, hw)
    unit = normalise(resize_map(values, hw), vrange or value_range(values))
    return overlay(small, unit, opacity, cmap)


def aggregate_panel(img: np.ndarray, values: np.ndarray, opacity: float, threshold: float | None,
                    max_side: int = AGGREGATE_SIDE, cmap: str = "turbo", score_units: bool = False) -> np.ndarray:
    """The aggregate view: overlay plus the contour of {map >= threshold}. score_units=True (the
    studio's Inspect tab): `threshold` is a map value, so the same number draws the same contour on
    every image (None or <= 0 draws none); else a fraction in (0, 1) of this map's display range.
    The longer side is the query's, clamped to [MIN_AGGREGATE_SIDE, max_side]."""
    side = min(max_side, max(MIN_AGGREGATE_SIDE, max(img.shape[:2])))
    hw = fit_size(img.shape[:2], side)
    small = resize_image(img, hw)
    resized = resize_map(values, hw)
    unit = normalise(resized, value_range(values))
    out = overlay(small, unit, opacity, cmap)
    thickness = max(1, round(max(hw) / 200))
    if score_units:
        if threshold is not None and threshold > 0 and np.isfinite(threshold):
            out = draw_contour(out, resized >= threshold, thickness=thickness)
    elif threshold is not None and 0.0 < threshold < 1.0:
        out = draw_contour(out, unit >= threshold, thickness=thickness)
    return out


def side_by_side(images: Iterable[np.ndarray], gap: int = 6, max_side: int = PANEL_SIDE) -> np.ndarray:
    """Images resized to a common height and placed left to right on white (uint8 H x W x 3)."""
    imgs = [np.asarray(i) for i in images]
    if not imgs:
        raise ValueError("side_by_side needs at least one image")
    h = min(max_side, max(i.shape[0] for i in imgs))
    row = []
    for i in imgs:
        if i.ndim == 2:
            i = np.repeat(i[..., None], 3, axis=2)
        w = max(1, round(i.shape[1] * h / i.shape[0]))
        row.append(resize_image(i[..., :3], (h, w)))
    width = sum(r.shape[1] for r in row) + gap * (len(row) - 1)
    out = np.full((h, width, 3), 255, np.uint8)
    x = 0
    for r in row:
        out[:, x:x + r.shape[1]] = r
        x += r.shape[1] + gap
    return out


def difference_image(a: np.ndarray, b: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """|a - b| (mean over RGB) as a colour heatmap at a's size, uint8 (H, W, 3)."""
    b = resize_image(b, a.shape[:2])
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2)
    return colorize(normalise(diff), cmap)


def thumbnail(img: np.ndarray, max_side: int = 160) -> np.ndarray:
    return resize_image(img, display_size(img.shape[:2], max_side))


class PngCache:
    """Arrays -> PNG files written with zlib level 1, handed to Gradio as paths.

    Gradio encodes numpy outputs as PNG at zlib level 6 (~4x slower on heatmaps, where most of a
    slider round trip goes); a path is served as it is. Lossless either way. Keeps the newest
    `keep` files and deletes older ones.
    """

    def __init__(self, keep: int = 600):
        import collections
        import itertools
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="fsad-ui-png-"))
        self.keep = keep
        self._files: "collections.deque[Path]" = collections.deque()
        self._n = itertools.count()
        self._lock = threading.Lock()

    def __call__(self, arr: np.ndarray, name: str = "img") -> str:
        with self._lock:
            path = self.dir / f"{name}-{next(self._n)}.png"
        Image.fromarray(np.ascontiguousarray(arr)).save(path, format="png", compress_level=1)
        with self._lock:
            self._files.append(path)
            while len(self._files) > self.keep:
                self._files.popleft().unlink(missing_ok=True)
        return str(path)


png_file = PngCache()


def with_colorbar(panel: np.ndarray, lo: float, hi: float, cmap: str = "turbo") -> np.ndarray:
    """The panel with a colour bar underneath, labelled at both ends in the map's own units
    (each panel is coloured over its own range: the labels say what blue and red mean)."""
    from PIL import ImageDraw, ImageFont

    h, w = panel.shape[:2]
    bar_h, text_h = 8, 13
    out = np.full((h + bar_h + text_h + 2, w, 3), 255, np.uint8)
    out[:h] = panel
    out[h + 1:h + 1 + bar_h] = colormap_lut(cmap)[np.linspace(0, 255, w).astype(np.uint8)][None]
    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    y = h + bar_h + 1
    left, right = f"{lo:.3g}", f"{hi:.3g}"
    draw.text((2, y), left, fill=(40, 40, 40), font=font)
    tw = draw.textlength(right, font=font)
    draw.text((max(2, w - tw - 2), y), right, fill=(40, 40, 40), font=font)
    return np.asarray(img)
