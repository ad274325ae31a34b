"""Speed and memory: our engine vs anomalib 2.x's WinCLIP on the same unseen queries (CPU).

Same random weights of the real architecture (ViT-B-16-plus-240; weights cannot be downloaded here,
and speed does not depend on their values), one normal shot, scales (1, 2, 3) for both. anomalib runs
in fp32 as shipped; ours at its default precision ("auto": bf16 autocast where the CPU has native bf16,
else fp32) and, for reference, fp32.

Prints: the median per-query time of each and the ratio, time to first map (patch level: text,
normal@16, anomalous@16) and to all four scales (1, 2, 3, 7), text-ensemble setup cold and warm, and
peak RSS. Usage: python benchmarks/bench_vs_anomalib.py [--queries 5] [--threads 2] [--arch NAME]
"""
from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_images(n: int, seed: int = 0, size=(256, 256)) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 255, (size[0] // 8, size[1] // 8, 3)).astype(np.float32)
        out.append(np.clip(cv2.resize(small, size[::-1], interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", default="ViT-B-16-plus-240")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip

    from fsad_core import Engine, EngineConfig
    from fsad_core.models import clip as clip_mod

    torch.manual_seed(0)
    base = open_clip.create_model(args.arch, pretrained=None).eval()
    # our backbone on these exact random weights (the standard loader would fetch pretrained ones)
    orig = clip_mod.build_open_clip
    clip_mod.build_open_clip = lambda cfg: (copy.deepcopy(base), clip_mod.registry.get("clip", name=args.arch))
    shot, *queries = make_images(args.queries + 1)
    mask = np.zeros(shot.shape[:2], bool)
    mask[100:140, 100:150] = True
    results = {}
    engines = {}
    for precision in ("auto", "fp32"):
        cfg = EngineConfig(profile="standard", precision=precision, scales=(1, 2, 3))
        engine = Engine(cfg)
        engine.set_class_name("bottle")
        t = time.perf_counter()
        engine.text_embeddings()
        text_cold = time.perf_counter() - t
        t = time.perf_counter()
        engine.text_embeddings()
        text_warm = time.perf_counter() - t
        engine.add_shot(shot, kind="normal")
        engine.add_shot(make_images(1, seed=99)[0], kind="anomalous", mask=mask)
        engine.score(make_images(1, seed=7)[0])  # warm-up
        engines[precision] = engine
        results[precision] = ([], engine.backbone.precision_name, text_cold, text_warm)
    # time to first map and to all four scales (1, 2, 3, 7), default precision
    engine4 = Engine(EngineConfig(profile="standard", precision="auto"))
    engine4.set_class_name("bottle")
    engine4.add_shot(shot, kind="normal")
    engine4.add_shot(make_images(1, seed=99)[0], kind="anomalous", mask=mask)
    engine4.score(make_images(1, seed=7)[0])
    clip_mod.build_open_clip = orig

    # anomalib, fp32, one normal shot, scales (2, 3) (+ its patch level = our scale 1)
    from anomalib.models.image.winclip import torch_model as tm

    tm.open_clip.create_model_and_transforms = lambda *a, **k: (copy.deepcopy(base), None, None)
    ref = tm.WinClipModel(class_name="bottle", scales=(2, 3)).eval()
    bb = engines["fp32"].backbone
    ref.setup(reference_images=bb.preprocess(shot))
    with torch.no_grad():
        ref(bb.preprocess(make_images(1, seed=7)[0]))
    # interleave the contenders query by query so load drift on a shared machine hits both alike
    theirs_t, first, full = [], [], []
    for q in queries:
        for precision, engine in engines.items():
            t = time.perf_counter()
            engine.score(q)
            results[precision][0].append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad():
            ref(bb.preprocess(q))
        theirs_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        for i, _partial in enumerate(engine4.score_progressive(q)):
            if i == 0:
                first.append(time.perf_counter() - t)
        full.append(time.perf_counter() - t)
    theirs = statistics.median(theirs_t)
    results = {k: (statistics.median(v[0]), *v[1:]) for k, v in results.items()}
    ours, prec, text_cold, text_warm = results["auto"]
    print(f"arch {args.arch}, random weights, {len(queries)} unseen queries, {args.threads} threads, CPU")
    print(f"anomalib WinCLIP fp32 (scales 2,3 + patch): median {theirs:.3f} s/query")
    print(f"ours default precision ({prec}), scales 1,2,3: median {ours:.3f} s/query  -> ratio {ours / theirs:.2f}x")
    print(f"ours fp32, scales 1,2,3:                    median {results['fp32'][0]:.3f} s/query  -> ratio {results['fp32'][0] / theirs:.2f}x")
    print(f"time to first map (patch level): median {statistics.median(first):.3f} s; all four scales (1,2,3,7): median {statistics.median(full):.3f} s")
    print(f"text ensemble (242 prompts): cold {text_cold:.2f} s, warm {text_warm * 1000:.2f} ms")
    print(f"peak RSS {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
