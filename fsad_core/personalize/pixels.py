"""Pure image helpers of personalization: SSIM and the choice c_q, difference maps, resizing, and the
augmentation of normal shots for training. numpy / PIL / scikit-image only, no model."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two uint8 (H, W, 3) images of the same size (skimage, data_range 255, per channel)."""
    from skimage.metrics import structural_similarity

    if a.shape != b.shape:
        raise ValueError(f"SSIM needs images of the same shape, got {a.shape} and {b.shape}")
    win = min(7, min(a.shape[:2]) // 2 * 2 - 1)  # odd and no larger than the image
    return float(structural_similarity(a, b, channel_axis=2, data_range=255, win_size=max(win, 3)))


def choose_by_ssim(query: np.ndarray, candidates: Sequence[np.ndarray]) -> tuple[int, list[float]]:
    """c_q = argmin_i (1 - SSIM(x_q, x̂_i)): the index of the most similar candidate, and all SSIMs.

    Ties go to the first candidate (prompt order).

    >>> q = np.zeros((16, 16, 3), np.uint8); far = np.full_like(q, 255)
    >>> choose_by_ssim(q, [far, q.copy()])[0]
    1
    """
    if not len(candidates):
        raise ValueError("no candidate reconstructions to choose from")
    scores = [ssim(query, c) for c in candidates]
    return int(np.argmax(scores)), scores


def difference_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| averaged over channels: float32 (H, W) in [0, 1]."""
    return (np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2) / 255.0).astype(np.float32)


def resize_rgb(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h, w, 3), bicubic (no-op when the size already matches)."""
    if tuple(rgb.shape[:2]) == tuple(size_hw):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((int(size_hw[1]), int(size_hw[0])), Image.BICUBIC))


def augment(rgb: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """One random augmentation of a normal shot at `size` x `size`: crop 80-100 % of the shorter
    side at a random place, horizontal / vertical flips, rotation within +-10 degrees (edges
    reflected, not black: black corners would be learnt as "normal"), brightness and contrast +-10 %.
    """
    h, w = rgb.shape[:2]
    side = int(min(h, w) * rng.uniform(0.8, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    img = Image.fromarray(rgb[y:y + side, x:x + side])
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_TOP_BOTTOM)
    angle = float(rng.uniform(-10, 10))
    if abs(angle) > 0.5:
        pad = side // 4
        arr = np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        img = Image.fromarray(arr).rotate(angle, resample=Image.BILINEAR).crop((pad, pad, pad + side, pad + side))
    img = img.resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    arr = (arr - arr.mean()) * rng.uniform(0.9, 1.1) + arr.mean() * rng.uniform(0.9, 1.1)
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)
