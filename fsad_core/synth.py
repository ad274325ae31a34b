"""A synthetic MVTec-layout benchmark from textures that ship with scikit-image: our offline test set.

Normal images are random crops (small offset, scale and brightness jitter) of one bundled texture per
category (`skimage.data.brick()`, `grass()`, `gravel()`), tinted to colour. Defects are painted
through a mask, so the ground truth is exact by construction: the painted pixels ARE the mask.

Defect types:
- scratch: a thin curved stroke, much brighter or darker than the surface;
- stain: an irregular blob that discolours the surface (blended, not opaque);
- hole: a dark ellipse with a darker core, like a puncture;
- foreign: an irregular patch of another texture (foreign material).

Layout written by `make_dataset` (the MVTec AD layout, which `fsad_core.evaluate` reads)::

    ROOT/<category>/train/good/000.png
    ROOT/<category>/test/good/000.png
    ROOT/<category>/test/<defect_type>/000.png
    ROOT/<category>/ground_truth/<defect_type>/000_mask.png    (0 / 255)
    ROOT/synth.json                                            (parameters and counts)

Everything is seeded: the same arguments give byte-identical PNGs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

DEFECT_TYPES = ("scratch", "stain", "hole", "foreign")

# category -> (skimage.data loader name, RGB tint)
TEXTURES: dict[str, tuple[str, tuple[float, float, float]]] = {
    "brick": ("brick", (1.0, 0.55, 0.42)),
    "grass": ("grass", (0.55, 0.9, 0.4)),
    "gravel": ("gravel", (0.92, 0.86, 0.76)),
}

__all__ = ["make_dataset", "sample_project", "SampleProject", "normal_image", "add_defect", "DEFECT_TYPES",
           "TEXTURES"]


def _texture(name: str) -> np.ndarray:
    """Grayscale float32 (H, W) in [0, 1] of a bundled scikit-image texture."""
    import skimage.data

    if name not in TEXTURES:
        raise ValueError(f"unknown synthetic category {name!r}; choose from {', '.join(TEXTURES)}")
    g = getattr(skimage.data, TEXTURES[name][0])()
    if g.ndim == 3:
        g = g.mean(axis=2)
    return g.astype(np.float32) / 255.0


def _tint(gray: np.ndarray, tint: Sequence[float]) -> np.ndarray:
    g = 0.15 + 0.85 * gray
    return np.clip(g[..., None] * np.asarray(tint, np.float32)[None, None] * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _crop(gray: np.ndarray, size: int, rng: np.random.Generator, scale: float = 0.6) -> np.ndarray:
    """A random crop of `scale` (±10%) of the texture, resized to size x size."""
    h, w = gray.shape
    side = int(min(h, w) * scale * rng.uniform(0.9, 1.1))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    patch = gray[y:y + side, x:x + side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=cv2.INTER_AREA)


def normal_image(category: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """One defect-free uint8 (size, size, 3) image of `category`."""
    gray = _crop(_texture(category), size, rng)
    gray = np.clip(gray * rng.uniform(0.92, 1.08) + rng.uniform(-0.03, 0.03), 0, 1)
    return _tint(gray, TEXTURES[category][1])


# -- defects: each returns (image, mask) with the image changed exactly where mask is True -----------
def _blob(size: int, rng: np.random.Generator, radius: float, irregular: float = 0.35) -> np.ndarray:
    """An irregular filled blob (bool size x size) around a random centre away from the border."""
    r = max(3.0, radius)
    cy, cx = rng.uniform(r + 2, size - r - 2, 2)
    n = 24
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * (1 + irregular * cv2.GaussianBlur(rng.uniform(-1, 1, (1, n)).astype(np.float32), (1, 5), 1).ravel())
    pts = np.stack([cx + rad * np.cos(ang) * rng.uniform(0.7, 1.3), cy + rad * np.sin(ang)], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _scratch(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    length = rng.uniform(0.3, 0.6) * size
    start = rng.uniform(0.2, 0.8, 2) * size
    ang = rng.uniform(0, 2 * np.pi)
    pts = [start]
    for _ in range(12):  # a gently curving stroke
        ang += rng.normal(0, 0.15)
        pts.append(pts[-1] + length / 12 * np.array([np.cos(ang), np.sin(ang)]))
    pts = np.clip(np.array(pts), 2, size - 3)
    mask = np.zeros((size, size), np.uint8)
    cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1, thickness=int(rng.integers(2, 5)))
    m = mask.astype(bool)
    out = img.copy()
    bright = rng.random() < 0.5
    out[m] = (235, 235, 230) if bright else (25, 22, 20)
    return out, m


def _stain(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    m = _blob(size, rng, rng.uniform(0.06, 0.12) * size)
    colour = np.array(rng.choice([(90, 60, 20), (40, 40, 90), (140, 20, 90), (20, 20, 20)]), np.float32)
    out = img.astype(np.float32)
    out[m] = 0.35 * out[m] + 0.65 * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), m


def _hole(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    ry, rx = rng.uniform(0.035, 0.08, 2) * size
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    m = d <= 1.0
    shade = 0.05 + 0.25 * d[m]  # darkest in the core, a little light at the rim
    out = img.astype(np.float32)
    out[m] = out[m] * shade[:, None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), m


def _foreign(img: np.ndarray, rng: np.random.Generator, category: str) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    others = [c for c in TEXTURES if c != category] or list(TEXTURES)
    other = others[int(rng.integers(len(others)))]
    tint = tuple(np.clip(np.asarray(TEXTURES[other][1]) * rng.uniform(0.6, 1.2, 3), 0.2, 1.2))
    patch = _tint(_crop(_texture(other), size, rng, scale=0.3), tint)
    m = _blob(size, rng, rng.uniform(0.08, 0.15) * size, irregular=0.25)
    out = img.copy()
    out[m] = patch[m]
    return out, m


def add_defect(img: np.ndarray, defect_type: str, rng: np.random.Generator,
               category: str = "brick") -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect: returns (uint8 image, bool mask); pixels outside the mask are untouched."""
    fns: dict[str, Callable] = {"scratch": _scratch, "stain": _stain, "hole": _hole,
                                "foreign": lambda i, r: _foreign(i, r, category)}
    if defect_type not in fns:
        raise ValueError(f"unknown defect type {defect_type!r}; choose from {', '.join(DEFECT_TYPES)}")
    for _ in range(10):
        out, m = fns[defect_type](img, rng)
        if m.sum() >= 8:
            return out, m
    raise RuntimeError(f"could not place a {defect_type} defect on a {img.shape[0]} px image; use size >= 64")


# -- dataset ------------------------------------------------------------------------------------------
def _save(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, optimize=False)


def make_dataset(root, categories: Sequence[str] = ("brick", "grass", "gravel"), n_train: int = 10,
                 n_test_good: int = 6, n_test_defect: int = 8, size: int = 256, seed: int = 0,
                 defect_types: Sequence[str] = DEFECT_TYPES) -> dict:
    """Write the benchmark under `root` (MVTec layout, see the module docstring); returns the manifest.

    n_test_defect images per category are spread round-robin over `defect_types`.
    """
    root = Path(root)
    if size < 64:
        raise ValueError(f"size must be at least 64 px, got {size}")
    for c in categories:
        _texture(c)  # validates the name early
    bad = [t for t in defect_types if t not in DEFECT_TYPES]
    if bad or not defect_types:
        raise ValueError(f"defect types must be among {', '.join(DEFECT_TYPES)}, got {list(defect_types)}")
    manifest = {"generator": "fsad_core.synth", "seed": seed, "size": size, "categories": {}}
    for ci, cat in enumerate(categories):
        # one child generator per category: adding a category never changes the others' images
        rng = np.random.default_rng([seed, ci, sum(map(ord, cat))])
        d = root / cat
        for i in range(n_train):
            _save(d / "train" / "good" / f"{i:03d}.png", normal_image(cat, rng, size))
        for i in range(n_test_good):
            _save(d / "test" / "good" / f"{i:03d}.png", normal_image(cat, rng, size))
        counts: dict[str, int] = {}
        for i in range(n_test_defect):
            t = defect_types[i % len(defect_types)]
            k = counts.get(t, 0)
            counts[t] = k + 1
            img, m = add_defect(normal_image(cat, rng, size), t, rng, cat)
            _save(d / "test" / t / f"{k:03d}.png", img)
            _save(d / "ground_truth" / t / f"{k:03d}_mask.png", m.astype(np.uint8) * 255)
        manifest["categories"][cat] = {"train_good": n_train, "test_good": n_test_good, "test_defect": counts}
    root.mkdir(parents=True, exist_ok=True)
    (root / "synth.json").write_text(json.dumps(manifest, indent=2))
    return manifest


# -- the studio's one-click sample project ----------------------------------------------------------
@dataclass(frozen=True)
class SampleProject:
    """Shots and queries for a ready-made demo project.

    normals: uint8 (H, W, 3) images; anomalous: (image, bool mask, defect type);
    queries: images to inspect; query_labels: "good" or the defect type of each query;
    query_masks: the exact defect mask of each query (all False for good ones).
    """

    class_name: str
    normals: list[np.ndarray]
    anomalous: list[tuple[np.ndarray, np.ndarray, str]]
    queries: list[np.ndarray]
    query_labels: list[str] = field(default_factory=list)
    query_masks: list[np.ndarray] = field(default_factory=list)


def sample_project(seed: int = 0, size: int = 256, category: str = "brick") -> SampleProject:
    """A small brick-wall project: 3 normal shots, 2 annotated anomalous shots (scratch, stain) and
    6 queries (2 good, one of each defect type). Deterministic for a given seed; ~0.1 s.
    """
    rng = np.random.default_rng([seed, 7919])
    normals = [normal_image(category, rng, size) for _ in range(3)]
    anomalous = []
    for t in ("scratch", "stain"):
        img, m = add_defect(normal_image(category, rng, size), t, rng, category)
        anomalous.append((img, m, t))
    queries, labels, masks = [], [], []
    for t in ("good", "scratch", "stain", "good", "hole", "foreign"):
        img = normal_image(category, rng, size)
        m = np.zeros((size, size), bool)
        if t != "good":
            img, m = add_defect(img, t, rng, category)
        queries.append(img)
        labels.append(t)
        masks.append(m)
    return SampleProject(class_name=category, normals=normals, anomalous=anomalous, queries=queries,
                         query_labels=labels, query_masks=masks)
