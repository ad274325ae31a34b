"""Anomalous-window selection on big images with tiny defects (no model: the rule works on the grid)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fsad_core.selection import patch_coverage, patch_pixel_counts, select_windows

GRID = (15, 15)
SCALES = (1, 2, 3, 7)  # 16 / 32 / 48 / 112 px


def _touching(cells: set[tuple[int, int]], scale: int) -> set[int]:
    """Window indices (row-major over top-left corners) whose s x s patches include any of `cells`."""
    n = GRID[0] - scale + 1
    return {r * n + c for r in range(n) for c in range(n)
            if any(r <= i < r + scale and c <= j < c + scale for i, j in cells)}


def _check(mask: np.ndarray, cells: set[tuple[int, int]]) -> None:
    for s in SCALES:
        bad, clean = select_windows(mask, GRID, s)
        touching = _touching(cells, s)
        n_win = (GRID[0] - s + 1) ** 2
        assert len(bad) >= 1, f"no anomalous window at scale {s}"
        assert set(bad.tolist()) <= touching, f"an anomalous window misses the defect at scale {s}"
        assert set(clean.tolist()) == set(range(n_win)) - touching, f"a window touching the defect is 'clean' at scale {s}"


@pytest.mark.parametrize("size,side", [(4000, 1), (6000, 2)])
def test_tiny_defect_on_a_big_image_gets_an_anomalous_window_at_every_scale(size, side):
    # 1 px in 4000x4000 and 2x2 px in 6000x6000: area-averaged window coverage at 112 px is ~3e-7,
    # below any float epsilon; the selection must still see the defect.
    mask = np.zeros((size, size), bool)
    c = size // 2  # pixel rows/cols c..c+side-1 lie inside grid cell 7 (cell 7 spans 7.0-8.0 x size/15)
    mask[c:c + side, c:c + side] = True
    assert (c * 15 // size, (c + side) * 15 // size) == (7, 7)
    _check(mask, {(7, 7)})
    counts = patch_pixel_counts(mask, GRID).reshape(GRID)
    assert counts[7, 7] == side * side and counts.sum() == side * side
    # the best window at 112 px is the one centred on the defect: top-left (4, 4) of a 9 x 9 layout
    bad7, clean7 = select_windows(mask, GRID, 7)
    assert bad7.tolist() == [4 * 9 + 4] and len(clean7) == 81 - 49


def test_pixel_straddling_a_cell_boundary_touches_both_cells():
    # 4000 / 15 = 266.67 px per cell: pixel column 266 spans [266, 267), across the boundary at 266.67
    mask = np.zeros((4000, 4000), bool)
    mask[2000, 266] = True
    counts = patch_pixel_counts(mask, GRID).reshape(GRID)
    assert counts[7, 0] == 1 and counts[7, 1] == 1 and counts.sum() == 2
    _check(mask, {(7, 0), (7, 1)})


def test_each_tiny_region_gets_its_own_window_at_112px():
    mask = np.zeros((6000, 6000), bool)
    mask[100:102, 100:102] = True  # cell (0, 0)
    mask[5900:5902, 5900:5902] = True  # cell (14, 14)
    bad, clean = select_windows(mask, GRID, 7)
    assert bad.tolist() == [0, 80]  # the corner windows, one per region
    assert len(clean) == 81 - 2
    _check(mask, {(0, 0), (14, 14)})


def test_coverage_equals_opencv_area_average():
    rng = np.random.default_rng(0)
    for shape in [(160, 200), (240, 240), (333, 517)]:
        m = rng.random(shape) > 0.7
        ref = cv2.resize(m.astype(np.float32), GRID[::-1], interpolation=cv2.INTER_AREA).reshape(-1)
        assert np.abs(patch_coverage(m, GRID) - ref).max() < 1e-6


def test_big_defect_still_selected_by_coverage():
    mask = np.zeros((4000, 4000), bool)
    mask[:2000, :2000] = True  # the top-left quarter: cells 0..6 full, row/column 7 half covered
    f = np.array([1.0] * 7 + [0.5] + [0.0] * 7)  # coverage of cell i along one axis
    n = 14
    cov = {r * n + c: f[r:r + 2].sum() * f[c:c + 2].sum() / 4 for r in range(n) for c in range(n)}
    bad, clean = select_windows(mask, GRID, 2)
    assert set(bad.tolist()) == {k for k, v in cov.items() if v >= 0.5}
    assert set(clean.tolist()) == {k for k, v in cov.items() if v == 0}
