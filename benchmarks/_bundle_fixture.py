"""Shared by bench_serve.py and bench_ray.py: a bundle of synthetic shots on the tiny model or on the
real ViT-B-16-plus-240 architecture with random weights (weights cannot be downloaded here; speed does
not depend on weight values), and synthetic query images."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def texture(seed: int, size: int = 256) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 8 + 1, size // 8 + 1, 3)).astype(np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


def make_bundle(arch: str, folder: Path, precision: str = "auto", size: int = 256) -> Path:
    """arch: 'tiny' or 'standard' (ViT-B-16-plus-240, random weights saved to a local checkpoint)."""
    from fsad_core import Engine, EngineConfig
    from fsad_core.bundle import export_bundle

    if arch == "tiny":
        config = EngineConfig(profile="tiny", precision=precision)
    else:
        import open_clip
        import torch

        ckpt = folder / "random-vit-b-16-plus-240.pt"
        if not ckpt.is_file():
            torch.manual_seed(0)
            torch.save(open_clip.create_model("ViT-B-16-plus-240", pretrained=None).state_dict(), ckpt)
        config = EngineConfig(profile="standard", clip_pretrained=str(ckpt), precision=precision)
    engine = Engine(config)
    engine.set_class_name("tile")
    engine.add_shot(texture(1, size), kind="normal")
    bad = texture(1, size).copy()
    bad[size // 3:size // 2, size // 3:size // 2] = (255, 0, 0)
    mask = np.zeros(bad.shape[:2], bool)
    mask[size // 3:size // 2, size // 3:size // 2] = True
    engine.add_shot(bad, kind="anomalous", mask=mask)
    thr = engine.score(texture(2, size)).aggregate().score
    return export_bundle(engine, folder / f"bench-{arch}.fsad.zip", threshold=thr, margin=0.0)
