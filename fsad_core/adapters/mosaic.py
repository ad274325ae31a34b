"""APRIL-GAN's mosaic augmentation: with probability 0.2 a training image is replaced by a 2 x 2
mosaic of four images of the same class (masks stitched alike), then resized to the training
resolution, so that the heads see several objects and more defect sizes per image.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def mosaic(items: Sequence[tuple[np.ndarray, np.ndarray]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Four (uint8 (H, W, 3) image, bool (H, W) mask) pairs -> one (size, size) image and mask, tiles
    in reading order (top-left, top-right, bottom-left, bottom-right), each resized to half the size
    (images bilinear, masks nearest).

    >>> tiles = [(np.full((8, 8, 3), i, np.uint8), np.full((8, 8), i == 3)) for i in range(4)]
    >>> img, m = mosaic(tiles, 4); img[..., 0].tolist(), m.astype(int).tolist()
    ([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]], [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    """
    if len(items) != 4:
        raise ValueError(f"a mosaic takes 4 images, got {len(items)}")
    half = (size // 2, size - size // 2)  # (top/left, bottom/right) extents
    img = np.zeros((size, size, 3), np.uint8)
    msk = np.zeros((size, size), bool)
    for i, (im, m) in enumerate(items):
        r, c = divmod(i, 2)
        h, w = half[r], half[c]
        y, x = r * half[0], c * half[0]
        img[y:y + h, x:x + w] = cv2.resize(np.ascontiguousarray(im), (w, h), interpolation=cv2.INTER_LINEAR)
        msk[y:y + h, x:x + w] = cv2.resize(np.asarray(m, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return img, msk
