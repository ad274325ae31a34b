"""Slider -> new aggregate image: how long the studio's fast path takes on the server.

    .venv/bin/python benchmarks/bench_ui_aggregate.py [--sizes 256 1024] [--repeats 50]

Scores one query per size with the tiny engine (the maps have the same shapes as with the real
model), then times what a weight-slider event runs: `ui.result_view.reaggregate` (weighted
combination of the cached maps + colouring + contour) and the PNG encoding Gradio does before
sending the image (the studio writes PNGs at zlib level 1 itself, `ui.render.PngCache`). The first
call per query also shrinks its maps to display size (cached); the median is the steady state of a
slider drag. Network and browser decode are not included (local: a few ms).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from fsad_core import Engine, EngineConfig
    from ui import render, result_view
    from ui.context import StudioContext
    from ui.weights import WEIGHT_NAMES

    engine = Engine(EngineConfig(profile="tiny"))
    rng = np.random.default_rng(0)
    engine.add_shot(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), kind="normal")
    mask = np.zeros((256, 256), bool)
    mask[100:140, 100:160] = True
    engine.add_shot(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), kind="anomalous", mask=mask)
    ctx = StudioContext(store=None, profile="tiny")
    print(f"{'query':>10} {'components':>10} {'reaggregate ms (median / p95)':>32} {'+ PNG encode ms':>16}")
    for size in args.sizes:
        query = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        result = engine.score(query)
        sha = result.query_sha256
        ctx.put_result(1, sha, result)
        ctx.queries.put(sha, query)
        names = list(result.components)
        times, png_times = [], []
        for _ in range(args.repeats):
            w = {n: float(rng.random()) for n in WEIGHT_NAMES}
            t0 = time.perf_counter()
            out = result_view.reaggregate(ctx, 1, sha, w, 0.5, 0.5)
            t1 = time.perf_counter()
            render.png_file(out["aggregate_map"])  # what the studio hands to Gradio (zlib level 1)
            t2 = time.perf_counter()
            times.append((t1 - t0) * 1000)
            png_times.append((t2 - t1) * 1000)
        times.sort()
        p95 = times[int(0.95 * (len(times) - 1))]
        print(f"{size:>6} px² {len(names):>10} {statistics.median(times):>18.1f} / {p95:<8.1f}"
              f" {statistics.median(png_times):>14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
