"""ClipBackbone: an open_clip model turned into WinCLIP encodings.

One image pass gives the pooled image embedding, the patch tokens and the token map that enters the
transformer; window embeddings are then computed per scale from that token map (the expensive step
split from the cheap one: scoring and re-weighting never re-encode).

Window embedding at scale s (WinCLIP): the visual transformer run on the CLS token plus the s x s
patch tokens of the window (positional embeddings already added, as in the full pass), pooled and
projected exactly as the image's pooled output is.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import getpass
import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import EngineConfig
from ..windows import window_indices
from . import registry
from .precision import autocast, precision_name, resolve_device, resolve_precision

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_TINY_LOCK = threading.Lock()
_TINY_REGISTERED: set[str] = set()


@dataclass(frozen=True)
class Encoding:
    """One image through the backbone (fp32, CPU tensors).

    image_emb: (D,) projected pooled embedding (not normalised).
    patch_tokens: (P, W) ln_post'ed, unprojected patch tokens (P = grid h*w).
    token_map: (1 + P, W) CLS + patch tokens with positional embeddings, before patch-dropout/ln_pre;
        the input from which window embeddings are computed.
    """

    image_emb: torch.Tensor
    patch_tokens: torch.Tensor
    token_map: torch.Tensor


class _DropOpenClipLogs(logging.Filter):
    """Drops open_clip's own records on the root logger (it logs with `logging.error(...)` before
    raising; we raise one readable error instead): all of them at or above `level`, or only those whose
    message starts with `prefix`."""

    def __init__(self, level: int = logging.ERROR, prefix: str | None = None):
        super().__init__()
        self.level, self.prefix = level, prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(_open_clip_dir()):
            return True
        if self.prefix is not None:
            return not record.getMessage().startswith(self.prefix)
        return record.levelno < self.level


@functools.lru_cache(maxsize=1)
def _open_clip_dir() -> str:
    import open_clip

    return os.path.dirname(open_clip.__file__)


@contextlib.contextmanager
def _quiet_open_clip(level: int = logging.ERROR, prefix: str | None = None):
    """While loading: hide open_clip's root-logger lines (see `_DropOpenClipLogs`)."""
    root = logging.getLogger()
    f = _DropOpenClipLogs(level, prefix)
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def _tiny_config_dir() -> Path:
    """A stable per-user folder for the tiny config: <tmp>/fsad-tiny-clip-<uid>. If it exists but is
    not ours (a shared /tmp), fall back to a private folder named after the process."""
    uid = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
    folder = Path(tempfile.gettempdir()) / f"fsad-tiny-clip-{uid}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():
            raise PermissionError(f"{folder} belongs to another user")
        return folder
    except OSError:
        return Path(tempfile.mkdtemp(prefix="fsad-tiny-clip-"))


def _register_tiny_config(spec: "registry.ModelSpec | None" = None) -> str:
    """Make a tiny CLIP config known to open_clip (once per process and name); default: the tiny
    profile's CLIP (`spec` names another builtin tiny config, e.g. the adapters' 4-block one).

    open_clip only reads configs from files, so the JSON is written once to a stable per-user folder
    (`_tiny_config_dir`), atomically (temp file + rename) and only when its content differs: every
    process shares the same file instead of leaving a new temp folder behind.
    """
    import open_clip

    spec = spec or registry.get("clip", profile="tiny")
    with _TINY_LOCK:
        if spec.name not in _TINY_REGISTERED:
            text = json.dumps(spec.extra["config"], indent=1, sort_keys=True)
            folder = _tiny_config_dir()
            path = folder / f"{spec.name}.json"
            try:
                current = path.read_text() if path.is_file() else None
            except OSError:
                current = None
            if current != text:
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{spec.name}.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "w") as f:
                        f.write(text)
                    os.replace(tmp, path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            open_clip.add_model_config(path)  # a single file, not the whole folder
            _TINY_REGISTERED.add(spec.name)
    return spec.name


def _is_local_path(pretrained: str) -> bool:
    return os.path.sep in pretrained or "/" in pretrained or pretrained.startswith("~") \
        or pretrained.endswith((".bin", ".pt", ".pth", ".safetensors", ".ckpt"))


def local_checkpoint_tag(path: Path) -> str:
    """A tag that identifies a local checkpoint file (resolved path, size, mtime; hashed), so encodings
    cached for one file are never served for another file of the same name, or for an edited file."""
    try:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        key = str(path)
    return f"file-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def build_open_clip(config: EngineConfig):
    """Create the open_clip model for a config -> (model, spec). Random weights for `tiny`.

    Raises `registry.ModelUnavailableError` with one readable message (open_clip's own log lines
    are silenced during the load): unknown model or tag (listing the valid ones), missing or
    unreadable local file, weights neither cached nor downloadable.
    """
    import open_clip

    if config.profile == "tiny":
        name = _register_tiny_config()
        torch.manual_seed(0)  # the tiny model is the same random model in every process
        with _quiet_open_clip(prefix="No pretrained weights loaded"):  # random weights are the point
            model = open_clip.create_model(name, pretrained=None)
        return model, registry.get("clip", profile="tiny")

    if config.clip_model not in open_clip.list_models():
        known = [m for m in open_clip.list_models() if not m.startswith("fsad-")]
        close = difflib.get_close_matches(config.clip_model, known, n=5, cutoff=0.5)
        raise registry.ModelUnavailableError(
            f"open_clip knows no model architecture {config.clip_model!r} (--clip-model / clip_model). "
            + (f"Did you mean: {', '.join(close)}? " if close else "")
            + "The default is ViT-B-16-plus-240; `python -c \"import open_clip; print(open_clip.list_models())\"` "
            "lists all.",
            spec=f"clip/{config.clip_model}@{config.clip_pretrained}", reason="unknown",
            detail=f"open_clip knows no model architecture {config.clip_model!r}",
        )
    pretrained = config.clip_pretrained
    if pretrained and _is_local_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise registry.ModelUnavailableError(
                f"The CLIP checkpoint {path} {what} (--clip-pretrained / clip_pretrained). Fix the path "
                f"to point at a {config.clip_model} checkpoint file (.pt, .bin or .safetensors), or give a "
                f"pretrained tag instead ({', '.join(open_clip.list_pretrained_tags_by_model(config.clip_model)) or 'none known'}); "
                f"or use `--profile tiny` ({registry.TINY_NOTE}).",
                spec=f"clip/{config.clip_model}@{path}", reason="missing", detail=f"the checkpoint {path} {what}",
            )
        spec = registry.ModelSpec(kind="clip", name=config.clip_model, tag=local_checkpoint_tag(path),
                                  profile="standard", source=str(path.resolve()),
                                  description=f"local checkpoint {path.resolve()}")
        try:
            with _quiet_open_clip():
                model = open_clip.create_model(config.clip_model, pretrained=str(path))
        except Exception as exc:
            raise registry.ModelUnavailableError(
                f"The CLIP checkpoint {path} could not be loaded as {config.clip_model} "
                f"({exc.__class__.__name__}: {registry.shorten(str(exc), 200)}). Check that the file is a "
                f"complete {config.clip_model} checkpoint (or pass the matching --clip-model); "
                f"or use `--profile tiny` ({registry.TINY_NOTE}).",
                spec=spec, reason="invalid", detail=f"the checkpoint {path} does not load as {config.clip_model}",
            ) from None
        return model, spec
    tags = open_clip.list_pretrained_tags_by_model(config.clip_model)
    if pretrained not in tags:
        raise registry.ModelUnavailableError(
            f"{pretrained!r} is not a pretrained tag of {config.clip_model} (--clip-pretrained / clip_pretrained). "
            f"Valid tags: {', '.join(tags) or 'none (this architecture has no pretrained weights in open_clip)'}; "
            "or give the path of a local checkpoint file.",
            spec=f"clip/{config.clip_model}@{pretrained}", reason="unknown",
            detail=f"{pretrained!r} is not a pretrained tag of {config.clip_model}",
        )
    try:
        spec = registry.get("clip", name=config.clip_model, tag=pretrained)
    except KeyError:
        cfg = open_clip.get_pretrained_cfg(config.clip_model, pretrained) or {}
        hub = str(cfg.get("hf_hub") or "").strip("/")
        spec = registry.ModelSpec(kind="clip", name=config.clip_model, tag=pretrained, profile="standard",
                                  source=f"hf-hub:{hub}" if hub else (cfg.get("url") or "open_clip"),
                                  description="open_clip model")
    try:
        with _quiet_open_clip():
            model = open_clip.create_model(config.clip_model, pretrained=pretrained,
                                           cache_dir=str(registry.cache_dir(config.cache_dir) / "hub"))
    except Exception as exc:  # offline, not cached
        raise registry.load_failed(spec, exc, config.cache_dir) from None
    return model, spec


class ClipBackbone:
    """open_clip model + preprocessing + WinCLIP encodings. Thread-safe for inference."""

    def __init__(self, config: EngineConfig):
        model, spec = build_open_clip(config)
        self.config = config
        self.spec = spec
        self.device = resolve_device(config.device)
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        self.model = model.eval().to(self.device)
        self.model.visual.output_tokens = True
        visual = self.model.visual
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        g = visual.grid_size
        self.grid: tuple[int, int] = (int(g[0]), int(g[1]))
        self.mean = getattr(visual, "image_mean", None) or OPENAI_MEAN
        self.std = getattr(visual, "image_std", None) or OPENAI_STD
        import open_clip

        self._tokenizer = open_clip.get_tokenizer(spec.name if config.profile == "tiny" else config.clip_model)
        self._lock = threading.RLock()

    # -- identity ---------------------------------------------------------------------------------
    @property
    def precision_name(self) -> str:
        return precision_name(self.autocast_dtype)

    @property
    def model_id(self) -> str:
        return f"{self.spec.id}|{self.config.profile}"

    def autocast(self):
        return autocast(self.device, self.autocast_dtype)

    # -- preprocessing ----------------------------------------------------------------------------
    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> float (1, 3, S, S): resized (not cropped: defects sit at edges too)
        with bicubic interpolation, scaled to [0, 1], normalised with the model's mean/std."""
        img = Image.fromarray(rgb).resize((self.image_size, self.image_size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return ((x - mean) / std).unsqueeze(0)

    # -- encoders ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_batch(self, pixels: torch.Tensor) -> list[Encoding]:
        """Preprocessed images (B, 3, S, S) -> one Encoding each."""
        captured = {}

        def hook(_module, inputs, _output):
            captured["token_map"] = inputs[0].detach()

        visual = self.model.visual
        with self._lock:
            handle = visual.patch_dropout.register_forward_hook(hook)
            try:
                with self.autocast():
                    pooled, tokens = self.model.encode_image(pixels.to(self.device))
            finally:
                handle.remove()
        token_map = captured["token_map"]
        return [Encoding(pooled[i].float().cpu(), tokens[i].float().cpu(), token_map[i].float().cpu())
                for i in range(pixels.shape[0])]

    def encode(self, rgb: np.ndarray) -> Encoding:
        return self.encode_batch(self.preprocess(rgb))[0]

    @torch.no_grad()
    def window_embeddings(self, token_map: torch.Tensor, scale: int, chunk: int = 256) -> torch.Tensor:
        """Token map(s) (1+P, W) or (B, 1+P, W) -> window embeddings (n_windows, D) or (B, n_windows, D).

        Every window is a sequence [CLS, its s*s patch tokens] run through ln_pre, the transformer,
        the pooling and the projection; windows are batched `chunk` at a time.
        """
        single = token_map.dim() == 2
        maps = token_map.unsqueeze(0) if single else token_map
        idx = window_indices(self.grid, scale) + 1  # +1: index 0 is the CLS token
        n_win = idx.shape[0]
        seq_idx = torch.cat([torch.zeros(n_win, 1, dtype=torch.long), idx], dim=1)  # (n_win, 1+s*s)
        visual = self.model.visual
        outs = []
        with self._lock:
            for b in range(maps.shape[0]):
                seqs = maps[b].to(self.device)[seq_idx]  # (n_win, 1+s*s, W)
                embs = []
                for start in range(0, n_win, chunk):
                    x = seqs[start:start + chunk]
                    with self.autocast():
                        x = visual.patch_dropout(x)
                        x = visual.ln_pre(x)
                        x = visual.transformer(x)  # batch-first (N, L, D) in open_clip >= 2.2x
                        pooled, _ = visual._pool(x)
                        if visual.proj is not None:
                            pooled = pooled @ visual.proj
                    embs.append(pooled.float())
                outs.append(torch.cat(embs).cpu())
        out = torch.stack(outs)
        return out[0] if single else out

    def _encode_text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's CLIP.encode_text, run on the first L context positions only.

        The text transformer is causal and pools at the end-of-text token (argmax pooling), so the
        positions after the longest prompt's EOT cannot change the result: truncating the 77-token
        context to L (about 20 for the WinCLIP prompts) gives the same embeddings ~4x faster.
        Falls back to the model's own encode_text for architectures without that structure.
        """
        m = self.model
        plain = (getattr(m, "text_pool_type", None) == "argmax" and getattr(m, "attn_mask", None) is not None
                 and hasattr(m, "token_embedding") and hasattr(m, "positional_embedding"))
        if not plain:
            return m.encode_text(tokens)
        length = int(tokens.argmax(dim=-1).max()) + 1
        t = tokens[:, :length]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(t).to(cast) + m.positional_embedding[:length].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), t.argmax(dim=-1)]
        if m.text_projection is not None:
            x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
        return x

    @torch.no_grad()
    def encode_text(self, prompts: list[str], batch: int = 128) -> torch.Tensor:
        """Prompts -> (N, D) L2-normalised text embeddings (fp32)."""
        outs = []
        with self._lock:
            for start in range(0, len(prompts), batch):
                tokens = self._tokenizer(prompts[start:start + batch]).to(self.device)
                with self.autocast():
                    emb = self._encode_text_tokens(tokens)
                outs.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(outs)
