"""The one place that names, locates and fetches models.

A model is a `ModelSpec`: kind + name + tag + profile + source. The UI's Models tab, the CLI's
`models list|pull` and every loader read this table; nothing else downloads.

Profiles:
- ``standard``: real pretrained weights (Hugging Face hub cache or an official checkpoint URL,
  or a local file the user points to).
- ``tiny``: a small *random* model built in-process from a config. No files, no network. Its outputs
  are meaningless; its code path is the real one. Used by tests, CI and offline demos.

Offline behaviour: `hub_offline_if_unreachable()` sets ``HF_HUB_OFFLINE=1`` when the hub cannot be
reached (it must run before anything imports huggingface_hub, or each failed lookup retries for
~45 s). A missing model raises `ModelUnavailableError` whose message says which model, from where,
how large, and how to provide it; its fields `spec`, `reason` (a `REASONS` key such as "offline")
and `detail` say the same to code.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..progress import Progress
from ..runtime import PROFILES  # noqa: F401  (re-exported)

TINY_NOTE = "random weights — for testing only"


#: What `ModelUnavailableError.reason` can be: short and stable, for code to branch on (the message
#: says the same to a person, with the fix).
REASONS = {
    "offline": "no network (or the hub switched off, HF_HUB_OFFLINE=1) and the weights are not cached",
    "missing": "not in the cache and downloading was not allowed, or a named file or folder does not exist",
    "checksum": "a downloaded file does not match its published checksum",
    "download-failed": "the download itself failed",
    "invalid": "a file is there but does not load as this model",
    "unknown": "no such model, architecture, pretrained tag or source",
    "dependency": "a Python package the model needs is not installed",
    "load-failed": "the loader failed for another reason (the message quotes it)",
}


class ModelUnavailableError(RuntimeError):
    """A model's weights are neither cached nor downloadable; the message says how to provide them.

    spec: the `ModelSpec` (or its id "kind/name@tag" where no spec exists, e.g. an architecture
    open_clip does not know; None when unknown). reason: one of `REASONS` ("offline", "missing",
    "checksum", ...). detail: the cause in a few words ("its weights are not in the cache and
    download=False"), without the how-to-fix text; the whole message when nothing shorter is known.

    >>> err = unavailable(get("clip"), "no copy here", reason="offline")
    >>> err.reason, err.spec.name, err.detail, err.model_id
    ('offline', 'ViT-B-16-plus-240', 'no copy here', 'clip/ViT-B-16-plus-240@laion400m_e31')
    """

    def __init__(self, message: str, *, spec: "ModelSpec | str | None" = None, reason: str = "missing",
                 detail: str | None = None):
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}, got {reason!r}")
        super().__init__(message)
        self.spec = spec
        self.reason = reason
        self.detail = message if detail is None else detail

    @property
    def model_id(self) -> str | None:
        """The model's id ("kind/name@tag"), or None when no model is named."""
        return self.spec.id if isinstance(self.spec, ModelSpec) else self.spec

    def __reduce__(self):  # keep the fields through pickling (Ray workers, process pools)
        return (self.__class__, (str(self),), {"spec": self.spec, "reason": self.reason, "detail": self.detail})


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "clip" | "sam" | "diffusion" | ...
    name: str  # architecture / repo name, e.g. "ViT-B-16-plus-240"
    tag: str  # pretrained tag or variant, e.g. "laion400m_e31"; "random" for tiny
    profile: str  # "standard" | "tiny"
    source: str  # "hf-hub:<repo>", an https URL, or "builtin"
    size_bytes: int = 0
    sha256: str | None = None  # full hex digest of the file (the 6 hex digits in SAM file names are an MD5 prefix)
    filename: str | None = None  # file name in the cache for URL downloads
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        """Stable id used in cache keys and the database: kind/name@tag."""
        return f"{self.kind}/{self.name}@{self.tag}"

    @property
    def size_text(self) -> str:
        return human_size(self.size_bytes) if self.size_bytes else "built in"

    @property
    def is_random(self) -> bool:
        return self.profile == "tiny"


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


_SPECS: list[ModelSpec] = []


def register(spec: ModelSpec) -> ModelSpec:
    if any(s.kind == spec.kind and s.name == spec.name and s.tag == spec.tag and s.profile == spec.profile for s in _SPECS):
        raise ValueError(f"model {spec.id} ({spec.profile}) is registered twice")
    _SPECS.append(spec)
    return spec


# --- CLIP (WinCLIP's backbone) -------------------------------------------------------------------
register(ModelSpec(
    kind="clip", name="ViT-B-16-plus-240", tag="laion400m_e31", profile="standard",
    source="hf-hub:timm/vit_base_patch16_plus_clip_240.laion400m_e31", size_bytes=830_000_000,
    description="OpenCLIP ViT-B/16+ at 240 px, LAION-400M epoch 31 — the backbone of WinCLIP and anomalib.",
))
register(ModelSpec(
    kind="clip", name="ViT-B-16-plus-240", tag="laion400m_e32", profile="standard",
    source="hf-hub:timm/vit_base_patch16_plus_clip_240.laion400m_e31", size_bytes=830_000_000,
    description="OpenCLIP ViT-B/16+ at 240 px, LAION-400M epoch 32 (open_clip 3.x resolves it to the e31 files).",
))
register(ModelSpec(
    kind="clip", name="fsad-tiny-clip", tag="random", profile="tiny", source="builtin",
    description="2-layer, width-64 ViT with the 15x15 patch grid of ViT-B-16-plus-240 (" + TINY_NOTE + ").",
    extra={"config": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 240, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }},
))

# APRIL-GAN adapters (fsad_core/adapters): the paper's backbone, ViT-L/14 at 336 px (run at 518 px with
# interpolated positional embeddings), and a 4-block tiny config (stages need a depth divisible by 4).
register(ModelSpec(
    kind="clip", name="ViT-L-14-336", tag="openai", profile="standard",
    source="hf-hub:timm/vit_large_patch14_clip_336.openai", size_bytes=1_710_000_000,
    description="OpenAI CLIP ViT-L/14 at 336 px — the APRIL-GAN adapters' backbone (24 blocks = 4 stages of 6).",
))
register(ModelSpec(
    kind="clip", name="fsad-tiny-clip-s4", tag="random", profile="tiny", source="builtin",
    description="4-block, width-64 ViT for the adapters' 4 stages, patch 16 (" + TINY_NOTE + ").",
    extra={"config": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 240, "layers": 4, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }},
))

# --- Segment-Anything (mask assistant) -----------------------------------------------------------
_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
register(ModelSpec(
    kind="sam", name="vit_b", tag="sam_vit_b_01ec64", profile="standard", source=_SAM_URL + "sam_vit_b_01ec64.pth",
    size_bytes=375_042_383, sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", filename="sam_vit_b_01ec64.pth",
    description="Segment-Anything ViT-B (default on GPU; 4.5 s (bf16) to 15 s (fp32) per image embedding on a 2-core CPU).",
))
register(ModelSpec(
    kind="sam", name="vit_l", tag="sam_vit_l_0b3195", profile="standard", source=_SAM_URL + "sam_vit_l_0b3195.pth",
    size_bytes=1_249_524_607, sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", filename="sam_vit_l_0b3195.pth",
    description="Segment-Anything ViT-L.",
))
register(ModelSpec(
    kind="sam", name="vit_h", tag="sam_vit_h_4b8939", profile="standard", source=_SAM_URL + "sam_vit_h_4b8939.pth",
    size_bytes=2_564_550_879, sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", filename="sam_vit_h_4b8939.pth",
    description="Segment-Anything ViT-H (best masks, GPU recommended).",
))
# SAM 2.1 tiny (Hiera-T, 39 M parameters): the light encoder, CPU default when the `sam2` package is
# installed (1.3-2.2 s per image embedding on 2 CPU threads against 4.5-15 s for vit_b). Its checkpoint ships
# without a published digest: size is approximate and the file is not checksummed.
_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
register(ModelSpec(
    kind="sam", name="sam2.1_hiera_t", tag="sam2.1_hiera_tiny_092824", profile="standard",
    source=_SAM2_URL + "sam2.1_hiera_tiny.pt", size_bytes=156_000_000, filename="sam2.1_hiera_tiny.pt",
    description="SAM 2.1 tiny (Hiera-T): light image encoder, CPU default (needs the `sam2` package).",
    extra={"family": "sam2", "config": "configs/sam2.1/sam2.1_hiera_t.yaml"},
))
register(ModelSpec(
    kind="sam", name="fsad-tiny-sam", tag="random", profile="tiny", source="builtin",
    description="Depth-2, width-64 SAM image encoder with the real prompt encoder and mask decoder (" + TINY_NOTE + ").",
    extra={"family": "segment_anything", "encoder": {
        "depth": 2, "embed_dim": 64, "num_heads": 2, "global_attn_indexes": [1], "window_size": 14,
    }},
))
register(ModelSpec(
    kind="sam", name="fsad-tiny-sam2", tag="random", profile="tiny", source="builtin",
    description="5-block, width-16 Hiera with SAM 2.1's real prompt encoder and mask decoder (" + TINY_NOTE + ").",
    extra={"family": "sam2", "config": "configs/sam2.1/sam2.1_hiera_t.yaml", "overrides": [
        "++model.image_encoder.trunk.embed_dim=16", "++model.image_encoder.trunk.stages=[1,1,2,1]",
        "++model.image_encoder.trunk.global_att_blocks=[3]",
        "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]", "++model.memory_attention.num_layers=1",
    ]},
))

# --- Diffusion (One-to-Normal personalization) ---------------------------------------------------
register(ModelSpec(
    kind="diffusion", name="stable-diffusion-v1-5", tag="fp16", profile="standard",
    source="hf-hub:stable-diffusion-v1-5/stable-diffusion-v1-5", size_bytes=2_130_000_000,
    description="Stable Diffusion 1.5 (fp16 variant), the One-to-Normal paper's base model.",
))
register(ModelSpec(
    kind="diffusion", name="fsad-tiny-diffusion", tag="random", profile="tiny", source="builtin",
    description="UNet (32, 64) + small VAE + 5-layer CLIP text encoder, as diffusers' own tests (" + TINY_NOTE + ").",
))
# TAESD: a 2.4 M-parameter drop-in VAE for the SD-1.x latent space (the fast preset's encode/decode;
# the full VAE's 512 px encode+decode costs ~76 s on a 2-core CPU).
register(ModelSpec(
    kind="vae", name="taesd", tag="main", profile="standard", source="hf-hub:madebyollin/taesd",
    size_bytes=10_000_000,
    description="Tiny AutoEncoder for SD-1.x (AutoencoderTiny); the fast personalization preset's VAE.",
))
register(ModelSpec(
    kind="vae", name="fsad-tiny-taesd", tag="random", profile="tiny", source="builtin",
    description="Two-block AutoencoderTiny matching the tiny diffusion model (" + TINY_NOTE + ").",
))


# --- ImageNet CNNs (PatchCore features for defect-type classification, fsad_core/patchcore) ----------
# torchvision's own files; torchvision publishes the first 8 hex digits of each file's sha256 in its
# name (what torch.hub's check_hash verifies), so those prefixes are checked after download.
_TV_URL = "https://download.pytorch.org/models/"
register(ModelSpec(
    kind="cnn", name="resnet50", tag="IMAGENET1K_V1", profile="standard", source=_TV_URL + "resnet50-0676ba61.pth",
    size_bytes=102_530_333, filename="resnet50-0676ba61.pth", extra={"sha256_prefix": "0676ba61"},
    description="torchvision ResNet-50 (ImageNet-1k v1): the defect-type paper's PatchCore backbone.",
))
register(ModelSpec(
    kind="cnn", name="wide_resnet50_2", tag="IMAGENET1K_V1", profile="standard",
    source=_TV_URL + "wide_resnet50_2-95faca4d.pth", size_bytes=132_082_029, filename="wide_resnet50_2-95faca4d.pth",
    extra={"sha256_prefix": "95faca4d"},
    description="torchvision Wide-ResNet-50-2 (ImageNet-1k v1): PatchCore's own backbone.",
))
register(ModelSpec(
    kind="cnn", name="fsad-tiny-cnn", tag="random", profile="tiny", source="builtin",
    description="3-stage CNN with ResNet's strides 8/16 at layers 2/3 (" + TINY_NOTE + ").",
))


def specs(kind: str | None = None, profile: str | None = None) -> list[ModelSpec]:
    return [s for s in _SPECS if (kind is None or s.kind == kind) and (profile is None or s.profile == profile)]


def get(kind: str, name: str | None = None, tag: str | None = None, profile: str = "standard") -> ModelSpec:
    """The spec of a model; with no name, the profile's default (the first registered) for that kind."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    cands = [s for s in specs(kind, profile) if (name is None or s.name == name) and (tag is None or s.tag == tag)]
    if not cands:
        known = ", ".join(f"{s.name}@{s.tag}" for s in specs(kind, profile)) or "none"
        raise KeyError(f"no {profile} {kind} model named {name!r} (tag {tag!r}); known: {known}")
    return cands[0]


# --- cache and downloads -------------------------------------------------------------------------
def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where weights live: `override`, else $FSAD_CACHE_DIR, else ~/.cache/fsad-studio."""
    base = override or os.environ.get("FSAD_CACHE_DIR") or Path.home() / ".cache" / "fsad-studio"
    p = Path(base).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def hub_offline_if_unreachable(host: str = "huggingface.co", timeout: float = 1.5) -> bool:
    """Set HF_HUB_OFFLINE=1 if the hub cannot be reached. Returns True when offline.

    Call before anything imports huggingface_hub (open_clip, diffusers): the variable is read at
    import time.
    """
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return False
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        return True


def _reachable(host: str, timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" and host == "huggingface.co":
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hf_repo(spec: ModelSpec) -> str | None:
    return spec.source[len("hf-hub:"):] if spec.source.startswith("hf-hub:") else None


def local_path(spec: ModelSpec, cache: str | os.PathLike | None = None) -> Path | None:
    """The cached file (URL sources) or snapshot folder (hub sources) if present, else None."""
    if spec.source == "builtin":
        return None
    if spec.filename:
        p = cache_dir(cache) / spec.kind / spec.filename
        return p if p.is_file() else None
    repo = _hf_repo(spec)
    if repo and spec.kind == "clip":  # open_clip fetches one weights file, not the whole repo
        from huggingface_hub import try_to_load_from_cache

        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, fname, cache_dir=str(cache_dir(cache) / "hub"))
            if isinstance(hit, str):
                return Path(hit)
        return None
    if repo:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo, cache_dir=str(cache_dir(cache) / "hub"), local_files_only=True))
        except Exception:
            return None
    return None


def is_present(spec: ModelSpec, cache: str | os.PathLike | None = None) -> bool:
    return spec.source == "builtin" or local_path(spec, cache) is not None


def shorten(text: str, limit: int = 200) -> str:
    """`text` on one line, at most `limit` characters, cut at a word boundary and marked with '…'.

    >>> shorten("An error happened while trying to locate the file on the Hub", 30)
    'An error happened while…'
    >>> shorten("short", 30)
    'short'
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:max(1, limit - 1)]
    if not text[len(cut)].isspace():  # the cut falls inside a word: go back to the last space
        space = cut.rfind(" ")
        if space > 0:
            cut = cut[:space]
    return cut.rstrip(" ,;:.-(") + "…"


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def unavailable(spec: ModelSpec, detail: str, local_hint: str = "",
                cache: str | os.PathLike | None = None, *, reason: str = "missing") -> ModelUnavailableError:
    """The teaching error for a model that cannot be had (`cache`: the weights cache in use).
    detail: the cause in words (in the message, and as the error's `detail`); reason: its `REASONS` key."""
    fields = {"spec": spec, "reason": reason, "detail": detail}
    repo = _hf_repo(spec)
    size = f", {spec.size_text}" if spec.size_bytes else ""
    if not repo and not _is_url(spec.source) and spec.source != "builtin" and spec not in _SPECS:
        # a local file or folder the user named: there is nothing to fetch, only a path to fix
        hint = local_hint or "or fix the path"
        return ModelUnavailableError(
            f"The {spec.kind} model {spec.name} ({spec.tag}{size}) is not available: {detail}. "
            f"It was to be read from {spec.source}: check that the path is right and the file complete, "
            f"{hint}; or use `--profile tiny` ({TINY_NOTE}).", **fields
        )
    where = repo + " on the Hugging Face hub" if repo else spec.source
    hint = local_hint or "or point the config at a local copy of the weights"
    if spec in _SPECS:
        fetch = f"with `python -m fsad_core models pull {spec.kind} --name {spec.name} --tag {spec.tag}`"
    elif repo:  # a hub repository the user named: not in our registry, so `models pull` does not know it
        fetch = f"with `huggingface-cli download {repo} --cache-dir {cache_dir(cache) / 'hub'}`"
    else:
        fetch = f"from {spec.source} and give its path"
    return ModelUnavailableError(
        f"The {spec.kind} model {spec.name} ({spec.tag}{size}) is not available: {detail}. "
        f"It comes from {where}. Fetch it on a machine with internet {fetch} "
        f"(cache: {cache_dir(cache)}), {hint}; or use `--profile tiny` ({TINY_NOTE}).", **fields
    )


def load_failed(spec: ModelSpec, exc: Exception, cache: str | os.PathLike | None = None,
                local_hint: str = "") -> ModelUnavailableError:
    """`unavailable` for a loader's exception: offline (HF_HUB_OFFLINE=1) says so plainly, anything
    else quotes the exception, shortened."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return unavailable(spec, "it is not in the cache and the hub is offline (no network)", local_hint,
                           cache=cache, reason="offline")
    return unavailable(spec, f"{exc.__class__.__name__}: {shorten(str(exc), 200)}", local_hint, cache=cache,
                       reason="load-failed")


def _verify(path: Path, sha256: str | None) -> None:
    """Check the file's sha256: the full hex digest, or a published prefix of it (>= 8 hex digits, as
    torchvision's file names carry)."""
    if not sha256:
        return
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    want = sha256.lower()
    if len(want) < 8 or not h.hexdigest().startswith(want):
        raise ModelUnavailableError(f"checksum mismatch for {path.name}: expected sha256 {sha256[:16]}…, "
                                    f"got {h.hexdigest()[:16]}… (a truncated or corrupted download; run the pull again)",
                                    reason="checksum", detail=f"checksum mismatch for {path.name}")


def download_url(url: str, dest: Path, sha256: str | None = None, progress: Progress | bool = True) -> Path:
    """Stream `url` to `dest` atomically (temp file + rename), verifying the checksum. progress: True = a
    tqdm bar on stderr, False = quiet, a callable = `fsad_core.progress` reports (fraction, "12/300 MB")."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            bar = None
            if progress is True:
                from tqdm.auto import tqdm

                bar = tqdm(total=total or None, unit="B", unit_scale=True, desc=dest.name)
            done = 0
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                elif callable(progress) and total:
                    progress(done / total, f"{done / 1e6:.1f}/{total / 1e6:.1f} MB")
            if bar is not None:
                bar.close()
            out.flush()
            os.fsync(out.fileno())
        _verify(Path(tmp), sha256)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def diffusion_allow_patterns(tag: str = "fp16") -> list[str]:
    """What `pull` fetches of a diffusers Stable Diffusion repo: only the sub-folders the img2img
    pipeline loads (unet, vae, text_encoder, tokenizer, scheduler; model_index.json; the
    feature_extractor's config), with the weights of the fp16 variant for tag "fp16", else the
    default safetensors. Never the repo-root single-file checkpoints (v1-5-pruned*.safetensors /
    .ckpt, 2-7 GB each), the safety_checker (1.2 GB), .bin duplicates or non-EMA weights."""
    weights = "diffusion_pytorch_model.fp16.safetensors" if tag == "fp16" else "diffusion_pytorch_model.safetensors"
    text = "model.fp16.safetensors" if tag == "fp16" else "model.safetensors"
    return ["model_index.json", "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json",
            "tokenizer/*.json", "tokenizer/*.txt",
            "unet/config.json", f"unet/{weights}", "vae/config.json", f"vae/{weights}",
            "text_encoder/config.json", f"text_encoder/{text}"]


def pull(spec: ModelSpec, cache: str | os.PathLike | None = None, progress: Progress | bool = True) -> Path | None:
    """Fetch a model into the cache (no-op for builtin/tiny models). Raises ModelUnavailableError."""
    if spec.source == "builtin":
        return None
    have = local_path(spec, cache)
    if have is not None:
        return have
    host = "huggingface.co" if _hf_repo(spec) else urllib.parse.urlparse(spec.source).hostname
    if host and not _reachable(host):
        raise unavailable(spec, f"no network connection to {host} (offline?)", cache=cache, reason="offline")
    try:
        if spec.filename:
            return download_url(spec.source, cache_dir(cache) / spec.kind / spec.filename,
                                spec.sha256 or spec.extra.get("sha256_prefix"), progress)
        repo = _hf_repo(spec)
        if repo and spec.kind == "clip":
            import open_clip

            cfg = open_clip.get_pretrained_cfg(spec.name, spec.tag)
            if not cfg:
                raise unavailable(spec, f"open_clip knows no pretrained tag {spec.tag!r} for {spec.name}", cache=cache,
                                  reason="unknown")
            got = open_clip.download_pretrained(cfg, cache_dir=str(cache_dir(cache) / "hub"))
            if not got:
                raise unavailable(spec, "open_clip could not download it", cache=cache, reason="download-failed")
            return Path(got)
        if repo:
            from huggingface_hub import snapshot_download

            kw = {}
            if spec.kind == "diffusion":
                kw["allow_patterns"] = diffusion_allow_patterns(spec.tag)
            return Path(snapshot_download(repo, cache_dir=str(cache_dir(cache) / "hub"), **kw))
    except ModelUnavailableError as exc:
        if exc.spec is None:  # the checksum check knows the file, not the model
            exc.spec = spec
        raise
    except Exception as exc:  # network errors, HTTP errors, offline mode
        offline = _hf_repo(spec) is not None and os.environ.get("HF_HUB_OFFLINE") == "1"
        raise unavailable(spec, f"download failed ({exc.__class__.__name__}: {shorten(str(exc), 160)})",
                          cache=cache, reason="offline" if offline else "download-failed") from None
    raise unavailable(spec, f"unknown source {spec.source!r}", cache=cache, reason="unknown")


def describe(all_specs: Iterable[ModelSpec] | None = None, cache: str | os.PathLike | None = None) -> list[dict]:
    """Rows for `models list` and the Models tab."""
    rows = []
    for s in all_specs if all_specs is not None else _SPECS:
        rows.append({
            "kind": s.kind, "name": s.name, "tag": s.tag, "profile": s.profile, "source": s.source,
            "size": s.size_text, "present": is_present(s, cache), "description": s.description,
        })
    return rows


def remove_cached(spec: ModelSpec, cache: str | os.PathLike | None = None) -> bool:
    p = local_path(spec, cache)
    if p is None:
        return False
    shutil.rmtree(p) if p.is_dir() else p.unlink()
    return True
