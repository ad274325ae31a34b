"""The scoring service's throughput and latency with 1 and 4 concurrent clients.

    .venv/bin/python benchmarks/bench_serve.py [--arch tiny|standard] [--requests 40] [--clients 1 4]

Exports a bundle (two synthetic shots; `--arch standard` = ViT-B-16-plus-240 with random weights
saved to a local checkpoint), starts `python -m fsad_core serve` as a real server process on
127.0.0.1, and posts 256x256 PNGs from client threads (httpx, one connection per thread). Latency is
measured per request at the client (upload + queue + score + JSON); throughput = requests / wall time.
One engine per process scores on one worker thread, so more clients add queueing, not throughput.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _bundle_fixture import make_bundle, texture  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _png(rgb) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=("tiny", "standard"), default="tiny")
    p.add_argument("--requests", type=int, default=40, help="requests per client setting")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    p.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args(argv)
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    bundle = make_bundle(args.arch, tmp, size=args.size)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fsad_core", "serve", "--bundle", str(bundle), "--port", str(port),
                             "--threads", str(args.threads), "--max-pending", "64"], cwd=str(ROOT), env=env)
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
            if proc.poll() is not None or time.perf_counter() - t0 > 600:
                raise SystemExit("server did not start")
        startup = time.perf_counter() - t0
        for i in range(2):  # warm-up: first-call costs (allocator, caches)
            httpx.post(base + "/score", files={"file": ("w.png", _png(texture(50 + i, args.size)), "image/png")},
                       timeout=600)
        for n, c in enumerate(args.clients):
            # unseen images in every setting: the engine caches query encodings by content hash
            imgs = [_png(texture(1000 * (n + 1) + i, args.size)) for i in range(args.requests)]
            lat = []

            def worker(k, c=c, imgs=imgs, lat=lat):
                with httpx.Client(timeout=600) as cl:
                    for i in range(k, args.requests, c):
                        t = time.perf_counter()
                        r = cl.post(base + "/score", files={"file": (f"{i}.png", imgs[i], "image/png")})
                        r.raise_for_status()
                        lat.append(time.perf_counter() - t)

            t = time.perf_counter()
            with ThreadPoolExecutor(c) as pool:
                list(pool.map(worker, range(c)))
            wall = time.perf_counter() - t
            q = np.percentile(np.array(lat) * 1000, [50, 90, 99])
            rows.append({"clients": c, "requests": len(lat), "images_per_s": len(lat) / wall,
                         "p50_ms": q[0], "p90_ms": q[1], "p99_ms": q[2]})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"arch {args.arch}, {args.size}x{args.size} PNG, server torch threads {args.threads}, "
          f"server start {startup:.1f} s, load average {os.getloadavg()[0]:.1f}")
    print("| clients | requests | images/s | p50 ms | p90 ms | p99 ms |\n|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['images_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p90_ms']:.0f} "
              f"| {r['p99_ms']:.0f} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
