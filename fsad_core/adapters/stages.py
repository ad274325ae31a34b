"""The adapters' frozen backbone: a CLIP ViT whose blocks are split into 4 equal stages.

APRIL-GAN (Chen et al. 2023, section 2.1) takes the patch tokens at the end of each of 4 stages of
the image encoder (ViT-L/14: blocks 6, 12, 18, 24; ViT-B: 3, 6, 9, 12), drops the CLS token, and
maps each stage's tokens into the joint embedding space with its own linear layer (`head.py`).

`AdapterBackbone` owns the open_clip model at the adapters' resolution (518 px in the paper, with
the positional embeddings interpolated by open_clip's `force_image_size`), its preprocessing and
its text tower (the WinCLIP prompt ensemble must be encoded by the *same* CLIP). Everything here is
inference only: CLIP stays frozen, only the heads train.
"""
from __future__ import annotations

import difflib
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..models import registry
from ..models.clip import (
    OPENAI_MEAN,
    OPENAI_STD,
    _is_local_path,
    _quiet_open_clip,
    _register_tiny_config,
    local_checkpoint_tag,
)
from ..models.precision import autocast, precision_name, resolve_device, resolve_precision

N_STAGES = 4
DEFAULT_MODEL = ("ViT-L-14-336", "openai")  # the paper's "ViT-L/14 at 336"
DEFAULT_RESOLUTION = 518  # the paper trains and tests at 518 px
TINY_MODEL = ("fsad-tiny-clip-s4", "random")
TINY_RESOLUTION = 240


def stage_indices(depth: int, n_stages: int = N_STAGES) -> tuple[int, ...]:
    """0-based indices of the blocks that end each of `n_stages` equal stages of a `depth`-block ViT.

    >>> stage_indices(24)
    (5, 11, 17, 23)
    >>> stage_indices(12), stage_indices(4)
    ((2, 5, 8, 11), (0, 1, 2, 3))
    """
    depth = int(depth)
    if depth < n_stages or depth % n_stages:
        raise ValueError(f"the adapters split the ViT's blocks into {n_stages} equal stages, but this model has "
                         f"{depth} block(s), which is not a positive multiple of {n_stages}: use a backbone such as "
                         f"ViT-L-14-336 (24 blocks) or ViT-B-16-plus-240 (12 blocks)")
    k = depth // n_stages
    return tuple(k * (i + 1) - 1 for i in range(n_stages))


@dataclass(frozen=True)
class BackboneRef:
    """Which CLIP an adapter checkpoint needs. tag: a pretrained tag, a local file, or "random"
    (random weights: tiny profile, benchmarks). stage_norm: apply the final LayerNorm (ln_post) to
    each stage's tokens (off: the raw residual stream, as the reference code reads its stages)."""

    name: str
    tag: str
    profile: str
    resolution: int
    stage_norm: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneRef":
        return cls(str(d["name"]), str(d["tag"]), str(d["profile"]), int(d["resolution"]), bool(d.get("stage_norm", False)))

    @classmethod
    def default(cls, profile: str = "standard", resolution: int | None = None) -> "BackboneRef":
        name, tag = TINY_MODEL if profile == "tiny" else DEFAULT_MODEL
        res = resolution or (TINY_RESOLUTION if profile == "tiny" else DEFAULT_RESOLUTION)
        return cls(name, tag, profile, int(res))


def _build_model(ref: BackboneRef, cache_dir=None):
    """(open_clip model at ref.resolution, ModelSpec). Raises ModelUnavailableError with one line."""
    import open_clip

    if ref.profile == "tiny":
        try:
            spec = registry.get("clip", name=ref.name, profile="tiny")
        except KeyError as exc:
            raise registry.ModelUnavailableError(str(exc.args[0]), spec=f"clip/{ref.name}@{ref.tag}",
                                                 reason="unknown") from None
        name = _register_tiny_config(spec)
        torch.manual_seed(0)  # the same random model in every process (checkpoints are reproducible)
        with _quiet_open_clip(prefix="No pretrained weights loaded"):
            model = open_clip.create_model(name, pretrained=None, force_image_size=ref.resolution)
        return model, spec
    if ref.name not in open_clip.list_models():
        close = difflib.get_close_matches(ref.name, open_clip.list_models(), n=5, cutoff=0.5)
        raise registry.ModelUnavailableError(
            f"open_clip knows no model architecture {ref.name!r} for the adapters' backbone"
            + (f"; did you mean: {', '.join(close)}?" if close else "") + " The default is ViT-L-14-336.",
            spec=f"clip/{ref.name}@{ref.tag}", reason="unknown")
    quick = bool((open_clip.get_pretrained_cfg(ref.name, "openai") or {}).get("quick_gelu")) and ref.tag in ("openai", "random")
    if ref.tag == "random":
        spec = registry.ModelSpec(kind="clip", name=ref.name, tag="random", profile="standard", source="builtin",
                                  description="random weights (benchmarks only)")
        with _quiet_open_clip(prefix="No pretrained weights loaded"):
            model = open_clip.create_model(ref.name, pretrained=None, force_image_size=ref.resolution,
                                           force_quick_gelu=quick)
        return model, spec
    if _is_local_path(ref.tag):
        path = Path(ref.tag).expanduser()
        if not path.is_file():
            raise registry.ModelUnavailableError(f"the adapters' CLIP checkpoint {path} does not exist; give the "
                                                 f"path of a {ref.name} checkpoint file or a pretrained tag",
                                                 spec=f"clip/{ref.name}@{path}", reason="missing")
        spec = registry.ModelSpec(kind="clip", name=ref.name, tag=local_checkpoint_tag(path), profile="standard",
                                  source=str(path.resolve()))
        pretrained = str(path)
    else:
        tags = open_clip.list_pretrained_tags_by_model(ref.name)
        if ref.tag not in tags:
            raise registry.ModelUnavailableError(f"{ref.tag!r} is not a pretrained tag of {ref.name}; valid: "
                                                 f"{', '.join(tags) or 'none'}", spec=f"clip/{ref.name}@{ref.tag}",
                                                 reason="unknown")
        try:
            spec = registry.get("clip", name=ref.name, tag=ref.tag)
        except KeyError:
            spec = registry.ModelSpec(kind="clip", name=ref.name, tag=ref.tag, profile="standard", source="open_clip")
        pretrained = ref.tag
    try:
        with _quiet_open_clip():
            model = open_clip.create_model(ref.name, pretrained=pretrained, force_image_size=ref.resolution,
                                           force_quick_gelu=quick,
                                           cache_dir=str(registry.cache_dir(cache_dir) / "hub"))
    except Exception as exc:  # offline and not cached, corrupt file
        raise registry.load_failed(spec, exc, cache_dir) from None
    return model, spec


class AdapterBackbone:
    """A frozen CLIP at the adapters' resolution: per-stage patch tokens and text embeddings.

    >>> bb = AdapterBackbone(BackboneRef.default("tiny"))            # doctest: +SKIP
    >>> [f.shape for f in bb.stage_features(bb.preprocess(rgb))]       # doctest: +SKIP
    [torch.Size([1, 225, 64])] * 4                                      # (B, P, W) per stage
    """

    def __init__(self, ref: BackboneRef, device: str = "auto", precision: str = "auto", cache_dir=None):
        model, spec = _build_model(ref, cache_dir)
        self.ref = ref
        self.spec = spec
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.model = model.eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        visual = self.model.visual
        self.depth = len(visual.transformer.resblocks)
        self.stages = stage_indices(self.depth)
        g = visual.grid_size
        self.grid: tuple[int, int] = (int(g[0]), int(g[1]))
        self.width = int(visual.transformer.width)
        self.embed_dim = int(visual.output_dim)
        self.mean = getattr(visual, "image_mean", None) or OPENAI_MEAN
        self.std = getattr(visual, "image_std", None) or OPENAI_STD
        import open_clip

        self._tokenizer = open_clip.get_tokenizer(spec.name if ref.profile == "tiny" else ref.name)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._lock = threading.RLock()

    @property
    def resolution(self) -> int:
        return self.ref.resolution

    @property
    def model_id(self) -> str:
        return f"{self.spec.id}|{self.ref.profile}|{self.ref.resolution}px|{'ln' if self.ref.stage_norm else 'raw'}"

    @property
    def precision_name(self) -> str:
        return precision_name(self.autocast_dtype)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> (1, 3, S, S): resized (not cropped) to the resolution, bicubic, normalised."""
        img = Image.fromarray(rgb)
        if img.size != (self.resolution, self.resolution):
            img = img.resize((self.resolution, self.resolution), Image.BICUBIC)
        return self.normalize(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> normalised with the model's mean and std."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def stage_features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Preprocessed (B, 3, S, S) -> 4 float32 CPU tensors (B, P, W): each stage's patch tokens
        (CLS dropped), P = grid h*w, W = the transformer width."""
        if pixels.shape[-1] != self.resolution or pixels.shape[-2] != self.resolution:
            raise ValueError(f"pixels must be {self.resolution}x{self.resolution}, got {tuple(pixels.shape[-2:])}")
        with self._lock, autocast(self.device, self.autocast_dtype):
            out = self.model.visual.forward_intermediates(
                pixels.to(self.device), indices=list(self.stages), intermediates_only=True,
                normalize_intermediates=self.ref.stage_norm, output_fmt="NLC")["image_intermediates"]
        return [t.float().cpu() for t in out]

    @torch.no_grad()
    def encode_text(self, prompts: list[str], batch: int = 128) -> torch.Tensor:
        """Prompts -> (N, D) L2-normalised text embeddings (fp32)."""
        outs = []
        with self._lock:
            for start in range(0, len(prompts), batch):
                tokens = self._tokenizer(prompts[start:start + batch]).to(self.device)
                with autocast(self.device, self.autocast_dtype):
                    emb = self.model.encode_text(tokens)
                outs.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(outs)

    def text_features(self, class_name: str) -> torch.Tensor:
        """(2, D) [t_normal, t_anomalous]: the WinCLIP state x template ensemble for the class, encoded
        by this CLIP (cached per class name)."""
        from ..prompts import readable_class_name
        from ..scorers.text import text_embeddings

        key = readable_class_name(class_name)
        if key not in self._text_cache:
            self._text_cache[key] = text_embeddings(self.encode_text, key)
        return self._text_cache[key]
