"""CPU cost of the mask assistant: one image embedding (`set_image`) and one click (`predict`).

Random weights of the real architectures (timings do not depend on the weight values), so it runs
offline:

- ``vit_b``: `segment_anything.sam_model_registry["vit_b"](checkpoint=None)` through `SamPredictor`;
- ``sam2.1_hiera_t``: SAM 2.1 tiny (Hiera-T) through `SAM2ImagePredictor`, the light CPU default
  (skipped when the `sam2` package is not installed);
- ``tiny``: the test profile's depth-2 encoder, for scale.

Each in fp32 and under bf16 autocast (the encoder pass only for `set_image`; `predict` as the
assistant runs it, in fp32). Prints CPU seconds (process time, summed over threads) and wall seconds;
the median of ``--repeats`` runs after one warm-up. Two threads, as on the reference laptop:

    python benchmarks/bench_sam.py                  # all models
    python benchmarks/bench_sam.py --models vit_b --repeats 3
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time

import numpy as np
import torch


def _image(h: int = 768, w: int = 1024) -> np.ndarray:
    """A smooth synthetic RGB photo-like image (uint8, HxWx3); content does not change the cost."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 60 * np.sin(xx / 37.0)[..., None] * np.cos(yy / 53.0)[..., None]
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def _timed(fn) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def _predictor(name: str):
    if name == "vit_b":
        from segment_anything import SamPredictor, sam_model_registry

        return SamPredictor(sam_model_registry["vit_b"](checkpoint=None).eval())
    if name == "sam2.1_hiera_t":
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return SAM2ImagePredictor(build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu"))
    if name == "tiny":
        from fsad_core.models.sam import MaskAssistant

        return MaskAssistant(profile="tiny", device="cpu").load().predictor
    raise ValueError(f"unknown model {name!r}")


def bench(name: str, precision: str, repeats: int, image: np.ndarray) -> dict:
    pred = _predictor(name)
    n_params = sum(p.numel() for p in pred.model.parameters())
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    h, w = image.shape[:2]

    def encode():
        with amp():
            pred.set_image(image)

    def click():
        pred.predict(point_coords=np.array([[w * 0.4, h * 0.6]]), point_labels=np.array([1]), multimask_output=True)

    encode()  # warm-up (allocator, oneDNN primitive caches)
    enc = [_timed(encode) for _ in range(repeats)]
    if precision == "bf16":  # the assistant keeps embeddings in fp32 so the decoder runs in fp32
        with torch.no_grad():
            if hasattr(pred, "features"):
                pred.features = pred.features.float()
            else:
                pred._features = {
                    "image_embed": pred._features["image_embed"].float(),
                    "high_res_feats": [f.float() for f in pred._features["high_res_feats"]],
                }
    click()
    clk = [_timed(click) for _ in range(max(repeats, 3))]
    med = lambda xs, i: round(statistics.median(x[i] for x in xs), 3)  # noqa: E731
    return {
        "model": name, "precision": precision, "params_M": round(n_params / 1e6, 1), "image": f"{w}x{h}",
        "set_image_cpu_s": med(enc, 0), "set_image_wall_s": med(enc, 1),
        "predict_cpu_s": med(clk, 0), "predict_wall_s": med(clk, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vit_b", "sam2.1_hiera_t", "tiny"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = _image()
    print(f"# torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"bf16 CPU support: {torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    if not args.json:
        print(f"{'model':<16}{'prec':<6}{'params':>8}{'set_image cpu':>15}{'(wall)':>9}{'predict cpu':>13}{'(wall)':>9}")
    for name in args.models:
        for prec in args.precisions:
            try:
                row = bench(name, prec, args.repeats, image)
            except ImportError as exc:  # sam2 not installed
                print(f"# {name}: skipped ({exc})")
                break
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{name:<16}{prec:<6}{row['params_M']:>7}M{row['set_image_cpu_s']:>14.2f}s"
                      f"{row['set_image_wall_s']:>8.2f}s{row['predict_cpu_s']:>12.3f}s{row['predict_wall_s']:>8.3f}s",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
