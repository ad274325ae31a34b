"""Diffusion pipelines for One-to-Normal personalization (img2img / SDEdit, LoRA per project).

Two profiles, one code path:

- ``standard``: a Stable Diffusion checkpoint from the hub cache (default
  ``stable-diffusion-v1-5``, fp16 variant) through `StableDiffusionImg2ImgPipeline.from_pretrained`,
  optionally with TAESD (`AutoencoderTiny`, "madebyollin/taesd") as a fast VAE. A model that is not
  cached and cannot be downloaded raises `registry.ModelUnavailableError` that says how to get it.
- ``tiny``: the `get_dummy_components()` recipe of diffusers' own img2img tests (UNet
  ``block_out_channels=(32, 64)``, ``cross_attention_dim=32``, a small AutoencoderKL, a 5-layer
  CLIPTextModel) plus a CLIPTokenizer built in memory — random weights, nothing from the hub. Its
  images are noise; its code path (LoRA training, SDEdit, pool) is the real one.

`SD15_UNET_CONFIG` is the real SD-1.5 UNet architecture, used by the benchmark to time steps with
random weights (no download).

Nothing here loads weights at import time.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from . import registry
from .precision import autocast, cpu_supports_bf16  # noqa: F401  (re-exported: benchmarks, personalize)

# SD-1.5's UNet2DConditionModel config (unet/config.json of stable-diffusion-v1-5), 860 M parameters.
SD15_UNET_CONFIG: dict = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
}

# TAESD's AutoencoderTiny config (madebyollin/taesd, the SD-1.x latent space), 2.4 M parameters.
TAESD_CONFIG: dict = {
    "encoder_block_out_channels": (64, 64, 64, 64),
    "decoder_block_out_channels": (64, 64, 64, 64),
    "num_encoder_blocks": (1, 3, 3, 3),
    "num_decoder_blocks": (3, 3, 3, 1),
    "latent_channels": 4,
    "scaling_factor": 1.0,
}

# SD-1.x noise schedule (scheduler/scheduler_config.json of stable-diffusion-v1-5) for DDIM.
SD_SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    # "trailing": the truncated schedule of an SDEdit at strength s starts at t = s*T - 1 exactly
    # (0.3 -> t = 299 with 20 or 50 steps; "leading" would start at 251 or 281), and few-step
    # sampling is better behaved (Lin et al. 2024).
    "timestep_spacing": "trailing",
}

LORA_TARGET_MODULES = ("to_k", "to_q", "to_v", "to_out.0")
TINY_RESOLUTION = 32  # px; the tiny VAE downsamples by 2 and the tiny UNet by 2 more
_TINY_LOCK = threading.Lock()

# Words of the One-to-Normal prompts; the tiny tokenizer merges them into single tokens so that
# prompts stay short (any other text still tokenizes, character by character).
_TINY_WORDS = (
    "a the photo of normal without flaw defect damage small large bright dark blurry bad good cropped "
    "close-up low resolution object bottle cable capsule carpet grid hazelnut leather metal nut pill screw "
    "tile toothbrush transistor wood zipper"
).split()


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable-unicode map (the base alphabet of its BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges (lowest rank first) to a symbol list."""
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
    return symbols


def build_tiny_tokenizer(max_length: int = 77):
    """A real CLIPTokenizer (byte-level BPE) with a small in-memory vocabulary (< 1000 ids).

    Ids: 0 = <|startoftext|>, 1 = <|endoftext|> (also pad/unk), then the 256 byte symbols, the 256
    word-final byte symbols and merged tokens for the One-to-Normal prompt words.

    >>> tok = build_tiny_tokenizer()
    >>> tok.convert_ids_to_tokens(tok("a photo of normal bottle").input_ids)
    ['<|startoftext|>', 'a</w>', 'photo</w>', 'of</w>', 'normal</w>', 'bottle</w>', '<|endoftext|>']
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in _TINY_WORDS:
        # Segment the word with the merges so far (BPE: lowest rank first), then join its pieces left
        # to right with new, lower-priority merges: every earlier word keeps its single token.
        seg = _bpe(list(word[:-1]) + [word[-1] + "</w>"], {m: i for i, m in enumerate(merges)})
        while len(seg) > 1:
            merges.append((seg[0], seg[1]))
            seg = [seg[0] + seg[1]] + seg[2:]
            vocab.setdefault(seg[0], len(vocab))
    assert len(vocab) <= 1000, len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def tiny_components(seed: int = 0, tiny_vae: bool = False) -> dict:
    """The diffusers-test `get_dummy_components()` of StableDiffusionImg2ImgPipeline, built offline.

    Deterministic: the same `seed` gives the same random weights in every process. With
    `tiny_vae=True` the VAE is a small AutoencoderTiny (TAESD's architecture, 2x downsampling) so
    the fast preset's VAE path is exercised too.
    """
    from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with _TINY_LOCK:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=TINY_RESOLUTION // 2, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        )
        torch.manual_seed(seed)
        if tiny_vae:
            vae = AutoencoderTiny(
                encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16),
                num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4,
            )
        else:
            vae = AutoencoderKL(
                block_out_channels=(32, 64), in_channels=3, out_channels=3,
                down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4,
            )
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
            layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, vocab_size=1000,
            max_position_embeddings=77,
        ))
    return {
        "unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
        "tokenizer": build_tiny_tokenizer(), "scheduler": DDIMScheduler(**SD_SCHEDULER_CONFIG),
        "safety_checker": None, "feature_extractor": None, "image_encoder": None,
    }


def _spec_for(base: str | None, profile: str) -> registry.ModelSpec:
    """Registered spec by name, or an ad-hoc spec for a hub repo id / local folder."""
    if base is None:
        return registry.get("diffusion", profile=profile)
    try:
        return registry.get("diffusion", name=base, profile=profile)
    except KeyError:
        pass
    if profile == "tiny":
        raise ValueError(f"the tiny profile has one diffusion model (fsad-tiny-diffusion), not {base!r}")
    path = Path(base).expanduser()
    if path.exists() or base.startswith((".", "/", "~")):
        return registry.ModelSpec(kind="diffusion", name=path.name, tag="local", profile="standard",
                                  source=str(path), description="local diffusers folder")
    # Not registered: `models pull` does not know it, its size is unknown (registry.unavailable then
    # suggests huggingface-cli and leaves the size out). The name is the full repo id, the tag the
    # revision diffusers loads.
    return registry.ModelSpec(kind="diffusion", name=base, tag="main", profile="standard",
                              source=f"hf-hub:{base}", description="diffusers repository on the hub")


# What an unregistered hub repo given as base_model needs (huggingface-cli would otherwise fetch
# the whole repo: SD-style repos also hold multi-GB single-file checkpoints and a safety checker).
HUB_INCLUDE = ("model_index.json", "unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*")


def _load_error(spec: registry.ModelSpec, exc: Exception, cache_dir=None) -> registry.ModelUnavailableError:
    hint = ""
    if spec.source.startswith("hf-hub:") and spec not in registry.specs(spec.kind):
        include = " ".join(f"'{p}'" for p in HUB_INCLUDE)
        hint = (f"adding `--include {include}` to that command to fetch only what the pipeline loads; "
                "or give base_model a local diffusers folder")
    return registry.load_failed(spec, exc, cache_dir, hint)


def load_tiny_vae(profile: str, dtype: torch.dtype, cache_dir: str | os.PathLike | None = None):
    """TAESD (`AutoencoderTiny`) for the standard profile; raises ModelUnavailableError if missing."""
    from diffusers import AutoencoderTiny

    spec = registry.get("vae", profile="standard")
    try:
        return AutoencoderTiny.from_pretrained(spec.source[len("hf-hub:"):], torch_dtype=dtype,
                                               cache_dir=str(registry.cache_dir(cache_dir) / "hub"))
    except Exception as exc:  # offline / not cached / corrupt
        raise _load_error(spec, exc, cache_dir) from None


def load_pipeline(profile: str = "standard", *, base: str | None = None, tiny_vae: bool = False,
                  device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                  cache_dir: str | os.PathLike | None = None, seed: int = 0):
    """An img2img pipeline on `device` with a DDIM scheduler -> (pipeline, spec).

    profile "tiny": random tiny components (fp32). profile "standard": `base` is a registered name
    (default: the registry's first standard diffusion model), a hub repo id or a local folder; weights
    load as fp16 on CUDA and fp32 on CPU unless `dtype` says otherwise. `tiny_vae` swaps the VAE for
    TAESD. Raises `registry.ModelUnavailableError` (with how-to-fix text) when weights are missing.
    """
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    device = torch.device(device)
    spec = _spec_for(base, profile)
    if profile == "tiny":
        pipe = StableDiffusionImg2ImgPipeline(**tiny_components(seed, tiny_vae=tiny_vae),
                                              requires_safety_checker=False)
        return pipe.to(device), spec

    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    source = spec.source[len("hf-hub:"):] if spec.source.startswith("hf-hub:") else spec.source
    kw = dict(torch_dtype=dtype, safety_checker=None, requires_safety_checker=False, feature_extractor=None,
              cache_dir=str(registry.cache_dir(cache_dir) / "hub"))
    if spec.tag == "fp16":
        kw["variant"] = "fp16"
    if spec.tag == "local" and not Path(source).is_dir():
        raise registry.unavailable(spec, f"no diffusers folder at {source}", "or fix the path given as base_model",
                                   cache=cache_dir, reason="missing")
    try:
        pipe = StableDiffusionImg2ImgPipeline.from_pretrained(source, **kw)
    except Exception as exc:  # offline, not cached, wrong repo, missing variant
        raise _load_error(spec, exc, cache_dir) from None
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    if tiny_vae:
        pipe.vae = load_tiny_vae(profile, dtype, cache_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), spec


def vae_scale_factor(pipe) -> int:
    return 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def resolution_multiple(pipe) -> int:
    """Image sides must be multiples of this (VAE downsampling x UNet downsampling)."""
    return vae_scale_factor(pipe) * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
