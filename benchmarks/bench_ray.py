"""Batch scoring images/s: in one process, and on a local Ray with 1 and 2 actors.

    .venv/bin/python benchmarks/bench_ray.py [--arch tiny|standard] [--images 24] [--workers 1 2]

Writes N synthetic 256x256 PNGs, exports a bundle (two shots; `--arch standard` = ViT-B-16-plus-240
with random weights from a local checkpoint), then runs `inspect_batch.run_batch` (one process, one
engine) and `ray_batch.run_batch_ray` with 1 and 2 actors (1 torch thread each), overlays included.
Reported: total wall time (actor start + scoring + writing; `ray.init` apart), start-up (until the
first result), and the scoring rate: images / the busiest actor's scoring seconds (what a long run
converges to when start-up is amortised); s/image/worker = a worker's seconds per image.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _bundle_fixture import make_bundle, texture  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=("tiny", "standard"), default="tiny")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    from fsad_core import Engine
    from fsad_core.inspect_batch import run_batch
    from fsad_core.ray_batch import init_ray, run_batch_ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    bundle = make_bundle(args.arch, tmp, size=args.size)
    inp = tmp / "in"
    inp.mkdir()
    for i in range(args.images):
        Image.fromarray(texture(200 + i, args.size)).save(inp / f"{i:04d}.png")
    engine = Engine.from_bundle(bundle)
    rows = []

    def timed(label, fn):
        stamps, stats = [], {}
        t = time.perf_counter()
        s = fn(lambda fraction, message: stamps.append(time.perf_counter()), stats)
        wall = time.perf_counter() - t
        if stats.get("busy_s"):  # Ray: images / the busiest actor's scoring time
            busy = max(stats["busy_s"].values())
            start = stats["first_result_s"]
        else:  # one process: between the first and the last image
            busy = (stamps[-1] - stamps[0]) * len(stamps) / max(1, len(stamps) - 1)
            start = stamps[0] - t - busy / len(stamps)
        rows.append({"run": label, "images": s.n_scored, "wall_s": wall, "startup_s": start,
                     "images_per_s_total": s.n_scored / wall, "images_per_s_steady": s.n_scored / busy,
                     "s_per_image": busy / s.n_scored * (len(stats.get("busy_s") or [1]))})

    timed("1 process (run_batch)", lambda pr, st: run_batch(engine, inp, tmp / "single",
                                                             weights=engine.default_weights,
                                                             threshold=engine.bundle.threshold, progress=pr))
    t = time.perf_counter()
    init_ray(num_cpus=max(args.workers))
    ray_start = time.perf_counter() - t
    for w in args.workers:
        timed(f"Ray, {w} actor(s)", lambda pr, st, w=w: run_batch_ray(bundle, inp, tmp / f"ray{w}", engine=engine,
                                                                       num_workers=w, batch_size=2, progress=pr,
                                                                       stats=st))
    same = all((tmp / "single" / "scores.csv").read_bytes() == (tmp / f"ray{w}" / "scores.csv").read_bytes()
               for w in args.workers)
    print(f"arch {args.arch}, precision {engine.backbone.precision_name}, {args.images} images {args.size}x{args.size}, "
          f"ray.init {ray_start:.1f} s, load average {os.getloadavg()[0]:.1f}, scores.csv identical: {same}")
    print("| run | images | wall s | start-up s | images/s (wall) | images/s (scoring) | s/image/worker |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['images']} | {r['wall_s']:.1f} | {r['startup_s']:.1f} | "
              f"{r['images_per_s_total']:.2f} | {r['images_per_s_steady']:.2f} | {r['s_per_image']:.3f} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
