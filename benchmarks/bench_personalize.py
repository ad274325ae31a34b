"""Seconds per One-to-Normal personalization with the real SD-1.5 architecture (random weights).

No download: the UNet (SD15_UNET_CONFIG, 860 M parameters), the VAE (SD-1.5's AutoencoderKL
config), TAESD (AutoencoderTiny) and the CLIP ViT-L/14 text encoder are built from their configs
with random weights. Speed does not depend on the weights' values, so the timings are those of the
real model.

What it measures (each timed, nothing assumed):
- one UNet forward at 256 px (batch 1 and batch 3, fp32; bf16 autocast) and at 512 px (batch 1);
- VAE encode + decode with TAESD (256, 512 px) and the full VAE (256 px; 512 px with --full-vae);
- end-to-end fast-preset personalizations through `Personalizer.personalize` (256 px): in fp32
  and with the default precision ("auto": bf16 autocast where the CPU computes bf16 natively), the
  first and the second query of each, with the time inside UNet calls (and their batch sizes), VAE
  encode/decode and the rest.
From these it derives the paper preset's cost (23 prompts x 15 steps x 2 for CFG + full VAE),
which would take far longer than this script's budget to run on a CPU.

    .venv/bin/python benchmarks/bench_personalize.py            # CPU, 2 threads, ~6 min
    .venv/bin/python benchmarks/bench_personalize.py --quick --json /tmp/pers.json   # ~2-3 min
    .venv/bin/python benchmarks/bench_personalize.py --device cuda --full-vae --paper-e2e
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fsad_core.models.diffusion import (  # noqa: E402
    SD15_UNET_CONFIG,
    SD_SCHEDULER_CONFIG,
    TAESD_CONFIG,
    autocast,
    build_tiny_tokenizer,
    cpu_supports_bf16,
)

SD15_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512, scaling_factor=0.18215,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
SD15_TEXT_CONFIG = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                        max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu",
                        bos_token_id=0, eos_token_id=1, pad_token_id=1)


def timed(fn, repeat: int = 1, warmup: int = 0) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log(msg: str):
    print(msg, flush=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full-vae", action="store_true", help="also time the full VAE at 512 px (~76 s on 2 cores)")
    ap.add_argument("--paper-e2e", action="store_true", help="also run the paper preset end to end (GPU only)")
    ap.add_argument("--quick", action="store_true", help="only what the fast preset at 256 px needs (~1-2 min)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    # Load average at the start and the end: on a shared 2-core box other jobs inflate every figure.
    res: dict = {"device": str(dev), "threads": args.threads, "cpu": cpu_model(),
                 "cpu_native_bf16": cpu_supports_bf16(), "torch": torch.__version__, "load": os.getloadavg()[0]}
    if dev.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(dev)

    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        DDIMScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from diffusers.utils import logging as dlogging
    from transformers import CLIPTextConfig, CLIPTextModel

    dlogging.set_verbosity_error()  # "modules that should be kept in float32: []" is noise here

    t0 = time.perf_counter()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG).eval().to(dev, dtype)
    vae = AutoencoderKL(**SD15_VAE_CONFIG).eval().to(dev, dtype)
    taesd = AutoencoderTiny(**TAESD_CONFIG).eval().to(dev, dtype)
    text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG)).eval().to(dev, dtype)
    res["build_s"] = round(time.perf_counter() - t0, 1)
    res["unet_params_M"] = round(sum(p.numel() for p in unet.parameters()) / 1e6, 1)
    log(f"built random SD-1.5 UNet ({res['unet_params_M']} M params), VAE, TAESD, text encoder in {res['build_s']} s")

    emb = torch.randn(3, 77, 768, device=dev, dtype=dtype)

    @torch.no_grad()
    def unet_step(side, batch, ac=None):
        x = torch.randn(batch, 4, side // 8, side // 8, device=dev, dtype=dtype)
        with autocast(dev, ac):
            unet(x, torch.tensor([299], device=dev), emb[:batch])

    @torch.no_grad()
    def vae_roundtrip(model, side):
        x = torch.rand(1, 3, side, side, device=dev, dtype=dtype) * 2 - 1
        enc = model.encode(x)
        lat = enc.latents if hasattr(enc, "latents") else enc.latent_dist.sample()
        model.decode(lat)

    warm = 1 if dev.type == "cuda" else 0
    rep = 3 if dev.type == "cuda" else 1
    unet_step(256, 1)  # first call allocates; not timed
    res["unet_step_256_b1_s"] = round(timed(lambda: unet_step(256, 1), repeat=2 if dev.type == "cpu" else 5), 3)
    log(f"UNet step 256 px batch 1: {res['unet_step_256_b1_s']} s")
    res["unet_step_256_b3_s"] = round(timed(lambda: unet_step(256, 3), repeat=rep, warmup=warm), 3)
    log(f"UNet step 256 px batch 3: {res['unet_step_256_b3_s']} s")
    if dev.type == "cpu" and not args.quick:
        res["unet_step_256_b1_bf16_autocast_s"] = round(timed(lambda: unet_step(256, 1, torch.bfloat16)), 3)
        log(f"UNet step 256 px batch 1, bf16 autocast: {res['unet_step_256_b1_bf16_autocast_s']} s")
    if not args.quick:
        res["unet_step_512_b1_s"] = round(timed(lambda: unet_step(512, 1), repeat=rep, warmup=warm), 3)
        log(f"UNet step 512 px batch 1: {res['unet_step_512_b1_s']} s")
    for side in (256,) if args.quick else (256, 512):
        res[f"taesd_roundtrip_{side}_s"] = round(timed(lambda side=side: vae_roundtrip(taesd, side), repeat=rep, warmup=1), 3)
        log(f"TAESD encode+decode {side} px: {res[f'taesd_roundtrip_{side}_s']} s")
    if not args.quick:
        res["vae_roundtrip_256_s"] = round(timed(lambda: vae_roundtrip(vae, 256), repeat=rep, warmup=warm), 3)
        log(f"full VAE encode+decode 256 px: {res['vae_roundtrip_256_s']} s")
    if (args.full_vae or dev.type == "cuda") and not args.quick:
        res["vae_roundtrip_512_s"] = round(timed(lambda: vae_roundtrip(vae, 512), repeat=rep, warmup=warm), 3)
        log(f"full VAE encode+decode 512 px: {res['vae_roundtrip_512_s']} s")

    # Paper preset, derived from the measured parts (23 prompts x 15 steps, CFG doubles the batch).
    if not args.quick:
        per_sample_256 = res["unet_step_256_b3_s"] / 3
        per_sample_512 = res["unet_step_512_b1_s"]
        paper_steps = 23 * 15 * 2
        res["paper_unet_sample_steps"] = paper_steps
        res["paper_256_derived_s"] = round(paper_steps * per_sample_256 + res["vae_roundtrip_256_s"] * (1 + 23) / 2, 1)
        vae512 = res.get("vae_roundtrip_512_s", res["vae_roundtrip_256_s"] * 4)
        res["paper_512_derived_s"] = round(paper_steps * per_sample_512 + vae512 * (1 + 23) / 2, 1)
        res["fast_512_derived_s"] = round(3 * 6 * per_sample_512 + res["taesd_roundtrip_512_s"] * 2, 1)
        log(f"paper preset derived (fp32): 256 px {res['paper_256_derived_s']} s, 512 px {res['paper_512_derived_s']} s "
            f"({paper_steps} UNet sample-steps); fast preset at 512 px derived: {res['fast_512_derived_s']} s")

    # End to end through the real code path: Personalizer with the injected real-size pipeline.
    from fsad_core.personalize import PersonalizeConfig, Personalizer, normal_prompts

    sched = DDIMScheduler(**SD_SCHEDULER_CONFIG)
    tok = build_tiny_tokenizer()
    if args.paper_e2e:
        pipe_paper = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                                    safety_checker=None, feature_extractor=None,
                                                    requires_safety_checker=False)
        pp = Personalizer(PersonalizeConfig(profile="standard", preset="paper", device=str(dev), precision="fp32"
                                            if dev.type == "cpu" else "auto"), pipeline=pipe_paper)
        q512 = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
        res["paper_e2e_512_s"] = round(pp.personalize(q512, "bottle").seconds, 2)
        log(f"paper preset, end to end, 512 px: {res['paper_e2e_512_s']} s")

    pipe_fast = StableDiffusionImg2ImgPipeline(vae=taesd, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    query = (np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)
    # fp32 first: "auto" (bf16 on a CPU with native bf16) converts the shared UNet to bf16 in place.
    precisions = ["fp32", "auto"] if dev.type == "cpu" else ["auto"]
    for prec in precisions:
        cfg = PersonalizeConfig(profile="standard", preset="fast", device=str(dev), precision=prec)
        p = Personalizer(cfg, pipeline=pipe_fast)
        name = "auto" if prec == "auto" else prec
        res[f"fast_estimate_{name}_s"] = round(p.estimate_seconds("personalize"), 1)  # before any measurement
        p._embed(normal_prompts("bottle", cfg.prompts))  # text embeddings are cached per class: not per query
        for run in ("first", "second"):
            prof = profile_personalize(p, query, taesd, unet)
            key = f"fast_e2e_256_{name}_{run}"
            res[key + "_s"] = prof["total_s"]
            res[key + "_breakdown"] = prof
            log(f"fast preset, end to end, 256 px, precision {prec} ({p.precision_name}), {run} query: "
                f"{prof['total_s']} s = UNet {prof['unet_s']} s in {len(prof['unet_calls'])} calls of batch "
                f"{sorted(set(b for b, _ in prof['unet_calls']))} + VAE {prof['vae_s']} s + rest {prof['rest_s']} s")
    res["fast_unet_sample_steps"] = len(normal_prompts("x", "fast")) * PersonalizeConfig(preset="fast").denoising_steps
    res["fast_e2e_256_s"] = res["fast_e2e_256_auto_first_s"]
    res["load_after"] = os.getloadavg()[0]
    log(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


def profile_personalize(p, query, vae, unet) -> dict:
    """One `p.personalize(query)` with timers on every UNet call and on VAE encode/decode."""
    calls: list[tuple[int, float]] = []
    vae_s = [0.0]

    def pre(module, args, kwargs):
        module._bench_t0 = time.perf_counter()

    def post(module, args, kwargs, out):
        sync()
        calls.append((int(args[0].shape[0]), time.perf_counter() - module._bench_t0))

    hooks = [unet.register_forward_pre_hook(pre, with_kwargs=True), unet.register_forward_hook(post, with_kwargs=True)]
    originals = {name: getattr(vae, name) for name in ("encode", "decode")}

    def timed_method(fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            sync()
            vae_s[0] += time.perf_counter() - t0
            return out
        return wrapper

    for name, fn in originals.items():
        setattr(vae, name, timed_method(fn))
    try:
        r = p.personalize(query, "bottle")
    finally:
        for h in hooks:
            h.remove()
        for name in originals:
            delattr(vae, name)  # back to the class's methods
    unet_s = sum(t for _, t in calls)
    return {"total_s": round(r.seconds, 2), "unet_s": round(unet_s, 2), "vae_s": round(vae_s[0], 2),
            "rest_s": round(r.seconds - unet_s - vae_s[0], 2), "unet_calls": [(b, round(t, 2)) for b, t in calls],
            "precision": p.precision_name, "load": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    main()
