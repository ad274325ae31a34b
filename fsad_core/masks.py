"""Mask helpers for the Shots tab: merge a SAM proposal with brush strokes, and the geometry of the
mask assistant's zoom mode (crop around the prompts, paste the crop's mask back).

Pure numpy, no torch: the UI and `storage` may use them freely. Masks are bool (H, W), True = defect.
Boxes are ``(x0, y0, x1, y1)`` in image pixels with ``x1``/``y1`` exclusive, so
``mask[y0:y1, x0:x1]`` is the crop. Points are ``(x, y)`` pixel indices, as Gradio's ``SelectData``
gives them.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .images import to_mask_array

MERGE_MODES = ("union", "subtract", "intersect", "replace")

CropBox = tuple[int, int, int, int]


def merge(base, proposal, mode: str = "union") -> np.ndarray:
    """Combine the current mask (e.g. brush strokes) with a new one (e.g. a SAM proposal).

    base, proposal: masks of the same (H, W) (bool, or anything `to_mask_array` takes: > 0 = defect);
        `base` may be None (nothing drawn yet) and then counts as empty.
    mode: "union" (add the proposal), "subtract" (erase the proposal from the base),
        "intersect" (keep only what both cover), "replace" (take the proposal).
    Returns a new bool (H, W) array; the inputs are not modified.

    >>> a = np.array([[1, 1, 0, 0]], bool); b = np.array([[0, 1, 1, 0]], bool)
    >>> merge(a, b).astype(int).tolist(), merge(a, b, "subtract").astype(int).tolist()
    ([[1, 1, 1, 0]], [[1, 0, 0, 0]])
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"unknown merge mode {mode!r}; choose one of {MERGE_MODES}")
    prop = to_mask_array(proposal, what="proposed mask")
    if base is None:
        cur = np.zeros_like(prop)
    else:
        cur = to_mask_array(base, what="current mask")
        if cur.shape != prop.shape:
            raise ValueError(
                f"The proposed mask is {prop.shape[1]}x{prop.shape[0]} px but the current mask is "
                f"{cur.shape[1]}x{cur.shape[0]} px; both must be at the image's size (did the image change?)."
            )
    if mode == "union":
        return cur | prop
    if mode == "subtract":
        return cur & ~prop
    if mode == "intersect":
        return cur & prop
    return prop.copy()


def crop_box_around(point: Sequence[float], image_hw: tuple[int, int], size: int) -> CropBox:
    """A ``size`` x ``size`` square centred on ``point`` = (x, y), shifted to lie inside the image.

    Where the image is smaller than ``size`` along an axis the box spans that whole axis.
    Returns (x0, y0, x1, y1), ints, x1/y1 exclusive.

    >>> crop_box_around((10, 470), (480, 640), 256)   # near the bottom-left corner: shifted inside
    (0, 224, 256, 480)
    >>> crop_box_around((320, 100), (200, 640), 256)  # image only 200 px tall: full height
    (192, 0, 448, 200)
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    size = int(size)
    if size < 1:
        raise ValueError(f"crop size must be a positive number of pixels, got {size}")
    x, y = float(point[0]), float(point[1])
    return _box(_span(x, w, size), _span(y, h, size))


def _span(c: float, n: int, size: int) -> tuple[int, int]:
    """[a, a + size) centred on c, clamped into [0, n)."""
    if size >= n:
        return 0, n
    a = int(round(c - size / 2))
    a = min(max(a, 0), n - size)
    return a, a + size


def _box(xs: tuple[int, int], ys: tuple[int, int]) -> CropBox:
    return xs[0], ys[0], xs[1], ys[1]


def prompt_extent(points: Iterable[Sequence[float]] = (), box: Sequence[float] | None = None) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of the prompt points and the prompt box, in image pixels."""
    xs, ys = [], []
    for p in points:
        xs.append(float(p[0]))
        ys.append(float(p[1]))
    if box is not None:
        xs += [float(box[0]), float(box[2])]
        ys += [float(box[1]), float(box[3])]
    if not xs:
        raise ValueError("give at least one point or a box")
    return min(xs), min(ys), max(xs), max(ys)


def crop_box_for_prompts(
    points: Iterable[Sequence[float]],
    box: Sequence[float] | None,
    image_hw: tuple[int, int],
    min_size: int = 256,
    context: float = 3.0,
) -> CropBox:
    """The zoom crop for a prompt: a square around the prompts' extent.

    Its side is ``context`` x the extent's longer side (SAM needs to see what surrounds the defect to
    find its border), at least ``min_size`` px, and no larger than the image. Centred on the extent.

    >>> crop_box_for_prompts([(100, 100, True)], None, (480, 640))
    (0, 0, 256, 256)
    >>> crop_box_for_prompts([], (300, 200, 400, 240), (480, 640))   # a 100 px wide box -> 300 px crop
    (200, 70, 500, 370)
    """
    ex0, ey0, ex1, ey1 = prompt_extent(points, box)
    side = max(int(min_size), int(np.ceil(context * max(ex1 - ex0, ey1 - ey0))))
    cx, cy = (ex0 + ex1) / 2, (ey0 + ey1) / 2
    return crop_box_around((cx, cy), image_hw, side)


def box_contains(outer: Sequence[float], inner: Sequence[float], margin: float = 0.0) -> bool:
    """True if box ``inner`` lies inside box ``outer`` shrunk by ``margin`` px on every side.

    >>> box_contains((0, 0, 100, 100), (20, 20, 30, 30), margin=12), box_contains((0, 0, 100, 100), (5, 5, 9, 9), 12)
    (True, False)
    """
    return (inner[0] >= outer[0] + margin and inner[1] >= outer[1] + margin
            and inner[2] <= outer[2] - margin and inner[3] <= outer[3] - margin)


def paste(crop_mask: np.ndarray, crop: CropBox, image_hw: tuple[int, int]) -> np.ndarray:
    """Put a crop's mask (h, w) back into an all-False (H, W) mask at ``crop`` = (x0, y0, x1, y1).

    >>> paste(np.ones((2, 2), bool), (1, 0, 3, 2), (3, 4)).astype(int).tolist()
    [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    x0, y0, x1, y1 = (int(v) for v in crop)
    if crop_mask.shape[:2] != (y1 - y0, x1 - x0):
        raise ValueError(f"crop mask is {crop_mask.shape[1]}x{crop_mask.shape[0]} px but the crop box {crop} is "
                         f"{x1 - x0}x{y1 - y0} px")
    if x0 < 0 or y0 < 0 or y1 > image_hw[0] or x1 > image_hw[1]:
        raise ValueError(f"crop box {crop} does not fit in the {image_hw[1]}x{image_hw[0]} image")
    out = np.zeros(tuple(image_hw), dtype=bool)
    out[y0:y1, x0:x1] = crop_mask
    return out
