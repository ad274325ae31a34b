"""Heatmap colouring and overlays (numpy + OpenCV; no UI framework)."""
from __future__ import annotations

import cv2
import numpy as np


def colorize(score_map: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """float (H, W) -> uint8 RGB (H, W, 3) with the 'jet' colormap (blue = normal, red = anomalous).

    With no vmin/vmax the map's own range is used (shape of the map, not its magnitude).
    """
    m = np.asarray(score_map, dtype=np.float32)
    lo = float(np.nanmin(m)) if vmin is None else float(vmin)
    hi = float(np.nanmax(m)) if vmax is None else float(vmax)
    norm = np.zeros_like(m) if hi - lo < 1e-12 else np.clip((m - lo) / (hi - lo), 0.0, 1.0)
    bgr = cv2.applyColorMap((norm * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(rgb: np.ndarray, score_map: np.ndarray, alpha: float = 0.5, vmin: float | None = None,
            vmax: float | None = None) -> np.ndarray:
    """Blend the coloured map over the image: uint8 (H, W, 3)."""
    heat = colorize(score_map, vmin, vmax)
    if heat.shape[:2] != rgb.shape[:2]:
        heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    a = float(np.clip(alpha, 0.0, 1.0))
    return (rgb.astype(np.float32) * (1 - a) + heat.astype(np.float32) * a + 0.5).astype(np.uint8)


def draw_contour(rgb: np.ndarray, binary: np.ndarray, color=(255, 255, 255), thickness: int = 2) -> np.ndarray:
    """Outline a bool mask on a copy of the image."""
    out = np.ascontiguousarray(rgb.copy())
    contours, _ = cv2.findContours(binary.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, thickness)
    return out
