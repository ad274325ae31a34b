"""APRIL-GAN adapters on the real architecture: training step time, scoring time per query, peak memory.

Random weights of the paper's ViT-L/14-336 (open_clip `create_model('ViT-L-14-336', pretrained=None)`,
QuickGELU as the openai tag), run at the paper's 518 px (37 x 37 patches, positional embeddings
interpolated): the cost of the matrix products does not depend on the weights' values. The code
path is the one `adapters train` and `--adapter` run (`AdapterBackbone`, `batch_loss`,
`AdapterScorer`); only the weights are random.

    .venv/bin/python benchmarks/bench_adapters.py                       # ViT-L-14-336 at 518 px
    .venv/bin/python benchmarks/bench_adapters.py --batch 16 --steps 1  # the paper's batch
    .venv/bin/python benchmarks/bench_adapters.py --model fsad-tiny-clip-s4 --profile tiny --resolution 240

Peak memory is the process's peak resident set (ru_maxrss), which includes the model weights.
Times are wall clock (`*_s`) and the process's CPU time over all threads (`*_cpu_s`): on a shared,
loaded machine the wall time grows with the load while the CPU time does not.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-L-14-336")
    ap.add_argument("--profile", default="standard", choices=("standard", "tiny"))
    ap.add_argument("--resolution", type=int, default=518)
    ap.add_argument("--batch", type=int, default=2, help="training batch (the paper: 16)")
    ap.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up step)")
    ap.add_argument("--queries", type=int, default=3, help="timed queries")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps and queries (0 on a loaded box)")
    ap.add_argument("--normal-shots", type=int, default=1)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()

    from fsad_core.adapters.checkpoint import from_heads
    from fsad_core.adapters.head import StageHeads
    from fsad_core.adapters.stages import AdapterBackbone, BackboneRef
    from fsad_core.adapters.train import batch_loss
    from fsad_core.images import sha256_of_array
    from fsad_core.scorers.adapter import AdapterScorer
    from fsad_core.scorers.base import Query, ScorerContext, ShotData
    from fsad_core.synth import add_defect, normal_image

    torch.set_num_threads(args.threads)
    out: dict = {"model": args.model, "resolution": args.resolution, "weights": "random", "batch": args.batch,
                 "threads": args.threads, "cpu": _cpu_name(), "load_average_at_start": os.getloadavg()[0]}
    rss0 = rss_mb()
    t = time.perf_counter()
    tag = "random"
    bb = AdapterBackbone(BackboneRef(args.model, tag, args.profile, args.resolution), device="cpu",
                         precision=args.precision)
    out.update(load_s=time.perf_counter() - t, precision=bb.precision_name, grid=list(bb.grid), stages=list(bb.stages),
               width=bb.width, embed_dim=bb.embed_dim, depth=bb.depth, rss_after_load_mb=rss_mb())
    t = time.perf_counter()
    log("encoding the prompt ensemble")
    bb.text_features("brick")
    out["text_ensemble_s"] = time.perf_counter() - t

    rng = np.random.default_rng(0)
    imgs, masks = [], []
    for _ in range(args.batch):
        img, m = add_defect(normal_image("brick", rng, args.resolution), "stain", rng, "brick")
        imgs.append(img)
        masks.append(m)
    torch.manual_seed(0)
    heads = StageHeads(bb.width, bb.embed_dim)
    opt = torch.optim.Adam(heads.parameters(), lr=1e-3, betas=(0.5, 0.999))
    out["head_params"] = sum(p.numel() for p in heads.parameters())

    def step():
        loss = batch_loss(bb, heads, imgs, masks, ["brick"] * args.batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    log(f"backbone loaded ({out['load_s']:.0f} s)")
    for _ in range(args.warmup):
        step()
    times, cpu = [], []
    for i in range(args.steps):
        t, c = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        log(f"step {i + 1}/{args.steps}: {times[-1]:.1f} s wall, {cpu[-1]:.1f} s CPU")
    out["train_step_s"] = float(np.median(times))
    out["train_step_cpu_s"] = float(np.median(cpu))
    out["train_s_per_image"] = out["train_step_s"] / args.batch
    out["train_cpu_s_per_image"] = out["train_step_cpu_s"] / args.batch
    out["rss_after_training_mb"] = rss_mb()

    # scoring: the scorer on a normal-shot memory, queries at 256 px (maps come back at 256 px)
    heads.eval()
    scorer = AdapterScorer(from_heads(heads, bb), bb)
    normals = [normal_image("brick", rng, 256) for _ in range(args.normal_shots)]
    shots = tuple(ShotData(sha256_of_array(n), "normal", n) for n in normals)
    t = time.perf_counter()
    scorer.prepare(ScorerContext(shots, "brick", 1))
    out["memory_build_s"] = time.perf_counter() - t
    out["memory_per_stage"] = scorer.memory_size()
    qs = [add_defect(normal_image("brick", rng, 256), "scratch", rng, "brick")[0]
          for _ in range(args.queries + args.warmup)]
    times, cpu = [], []
    for i, q in enumerate(qs):
        t, c = time.perf_counter(), time.process_time()
        res = scorer.score(Query(q, sha256_of_array(q), q.shape[:2]))
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        log(f"query {i}: {time.perf_counter() - t:.1f} s wall")
    assert set(res) == {"adapter", "adapter_memory", "adapter_text"}
    out["score_s_per_query"] = float(np.median(times))
    out["score_cpu_s_per_query"] = float(np.median(cpu))
    out["peak_rss_mb"] = rss_mb()
    out["load_average_at_end"] = os.getloadavg()[0]
    out["rss_at_start_mb"] = rss0
    for k, v in out.items():
        print(f"{k:>24}: {round(v, 3) if isinstance(v, float) else v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


if __name__ == "__main__":
    main()
