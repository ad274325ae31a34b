"""How much bf16 autocast moves the scores: the same project scored in fp32 and in bf16.

Random weights of the real ViT-B-16-plus-240 (weights cannot be downloaded here; the numerics of
the matrix products do not depend on their values), the studio's sample project (3 normal + 2
annotated anomalous shots, 6 queries). Prints, per component, the largest change of the image score
and of any map pixel, and the map's own range for scale.

    .venv/bin/python benchmarks/bench_precision.py
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    import open_clip

    from fsad_core import Engine, EngineConfig
    from fsad_core.models import clip as clip_mod
    from fsad_core.synth import sample_project

    torch.set_num_threads(2)
    torch.manual_seed(0)
    base = open_clip.create_model("ViT-B-16-plus-240", pretrained=None).eval()
    # our backbone on these random weights (the standard loader would fetch pretrained ones)
    clip_mod.build_open_clip = lambda cfg: (base, clip_mod.registry.get("clip", name="ViT-B-16-plus-240"))
    sp = sample_project()
    results = {}
    for prec in ("fp32", "bf16"):
        e = Engine(EngineConfig(precision=prec))
        e.set_class_name(sp.class_name)
        for n in sp.normals:
            e.add_shot(n)
        for img, m, t in sp.anomalous:
            e.add_shot(img, kind="anomalous", mask=m, defect_type=t)
        results[prec] = [e.score(q) for q in sp.queries]
    d_score: dict[str, float] = {}
    d_map: dict[str, float] = {}
    span: dict[str, float] = {}
    for a, b in zip(results["fp32"], results["bf16"]):
        for k, ca in a.components.items():
            cb = b.components[k]
            d_score[k] = max(d_score.get(k, 0.0), abs(ca.score - cb.score))
            d_map[k] = max(d_map.get(k, 0.0), float(np.abs(ca.map - cb.map).max()))
            span[k] = max(span.get(k, 0.0), float(ca.map.max() - ca.map.min()))
        d_score["aggregate"] = max(d_score.get("aggregate", 0.0), abs(a.aggregate().score - b.aggregate().score))
    print(f"{len(sp.queries)} queries, fp32 vs bf16 autocast")
    for k, v in d_score.items():
        extra = f"  max|dmap| {d_map[k]:.1e}  map range {span[k]:.1e}" if k in d_map else ""
        print(f"{k:15s} max|dscore| {v:.1e}{extra}")


if __name__ == "__main__":
    main()
