"""The mask assistant: Segment-Anything turns clicks and boxes into defect masks.

    assistant = MaskAssistant()                      # CPU: SAM 2.1 tiny if `sam2` is installed, else vit_b
    sha = assistant.set_image("shot.png")            # expensive: one encoder pass, cached by (model, sha256)
    best = assistant.predict(points=[(412, 230, True)])[0]     # cheap: prompt encoder + mask decoder
    best = assistant.refine(best, points=[(412, 230, True), (440, 236, False)])[0]  # iterative clicks
    mask = masks.merge(brush_strokes, best.mask, "union")

The split is segment-anything's own (`SamPredictor.set_image` / `predict`), and the real predictors
run underneath (`segment_anything.SamPredictor`, `sam2.sam2_image_predictor.SAM2ImagePredictor`):
they map prompts from image pixels into the model's 1024-px frame and masks back to the image's size.
What this module adds:

- an LRU of image embeddings keyed by (model id, pixel sha256): switching back to an earlier image,
  or a second click on the same one, runs no encoder pass;
- thread safety: the UI starts `set_image` in a background thread when an image is uploaded; a click
  handler calling `predict` waits for that encoding instead of failing or encoding twice;
- prompt validation with errors that say what to fix;
- a zoom mode for small defects: SAM runs on a crop around the prompts and the mask is pasted back
  (see docs/sam.md for when it helps);
- model resolution through `fsad_core.models.registry` (cache, on-demand download, offline errors),
  and the ``tiny`` profile: small random models of the real architectures, for tests and CI.

Coordinates: points are ``(x, y, is_positive)`` in image pixels (x to the right, y down, (0, 0) the
top-left pixel, as Gradio's ``SelectData.index``); boxes are ``(x0, y0, x1, y1)`` in the same frame.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import masks as mask_ops
from ..images import ImageInput, sha256_of_array, to_rgb_array
from ..runtime import RuntimeOptions, check_profile
from . import registry
from .precision import autocast, resolve_device, resolve_precision
from .registry import ModelSpec

Point = Sequence[float]  # (x, y, is_positive)
Box = Sequence[float]  # (x0, y0, x1, y1)

LOW_RES = 256  # side of SAM's low-resolution mask logits (the decoder's output, `mask_input` for refine)
DEFAULT_ZOOM_SIZE = 256  # smallest zoom crop side in image pixels: SAM upsamples it 4x to its 1024 frame


@dataclass(frozen=True, eq=False)
class MaskProposal:
    """One mask SAM proposes for a prompt.

    mask: bool (H, W) at the image's own size; True = defect.
    iou: SAM's own estimate of the mask's IoU with the object meant (higher = more confident).
    logits: float32 (256, 256) low-resolution logits in SAM's frame of the image (or of the zoom crop):
        pass the proposal to `MaskAssistant.refine` to feed them back with more clicks.
    image_sha: the image (pixel sha256, as `set_image` returns it) the mask belongs to.
    crop: zoom mode only, the crop (x0, y0, x1, y1) the logits refer to; None = the whole image.
    """

    mask: np.ndarray
    iou: float
    logits: np.ndarray
    image_sha: str = ""
    crop: tuple[int, int, int, int] | None = None

    @property
    def area(self) -> int:
        """Number of defect pixels."""
        return int(self.mask.sum())

    # A proposal reads as the (mask, iou) pair of the documented API: `for mask, iou in predict(...)`,
    # `proposals[0][0]`; the logits and crop stay available as attributes.
    def __iter__(self):
        return iter((self.mask, self.iou))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i):
        return (self.mask, self.iou)[i]


@dataclass(frozen=True, eq=False)
class _Embedding:
    """A predictor's state after `set_image`: restoring it on a predictor replaces an encoder pass."""

    state: dict[str, Any]
    hw: tuple[int, int]  # (H, W) of the image (or crop) that was encoded
    rgb: np.ndarray | None = field(default=None, repr=False)  # whole images only, for zoom crops
    nbytes: int = 0


class _Pending:
    """An encoder pass in progress: waiters block on `done` and re-raise `error` if it failed."""

    def __init__(self):
        self.done = threading.Event()
        self.error: BaseException | None = None


# --- model resolution and building ---------------------------------------------------------------
def family_of(spec: ModelSpec) -> str:
    """'segment_anything' (SAM 1: vit_b/l/h) or 'sam2' (SAM 2.x, Hiera encoders)."""
    return spec.extra.get("family", "segment_anything")


def sam2_available() -> bool:
    """True if the `sam2` package (SAM 2.1's predictor, for the light encoder) is installed."""
    return importlib.util.find_spec("sam2") is not None


def default_model(device: torch.device | str = "auto") -> str:
    """The standard model for a device: the light SAM 2.1 tiny on CPU (clicks stay pleasant on a
    laptop: 1.3-2.2 s per new image against 4.5-15 s for vit_b), vit_b on a GPU (where it takes ~0.1 s).
    Without the `sam2` package, vit_b everywhere."""
    dev = resolve_device(device) if isinstance(device, str) else device
    if dev.type == "cpu" and sam2_available():
        return "sam2.1_hiera_t"
    return "vit_b"


def resolve_spec(profile: str = "standard", model: str | None = None, device: str | torch.device = "auto") -> ModelSpec:
    """The registry entry the assistant uses.

    standard: `model` by name (vit_b, vit_l, vit_h, sam2.1_hiera_t), else `default_model(device)`.
    tiny: the tiny random model of the same family (segment_anything or sam2) as `model`.
    """
    profile = check_profile(profile)
    if profile == "tiny":
        tiny = registry.specs("sam", "tiny")
        if model is None:
            return tiny[0]
        exact = [s for s in tiny if s.name == model]
        if exact:
            return exact[0]
        std = [s for s in registry.specs("sam", "standard") if s.name == model]
        fam = family_of(std[0]) if std else ("sam2" if model.startswith("sam2") else "segment_anything")
        same = [s for s in tiny if family_of(s) == fam]
        return (same or tiny)[0]
    name = model or default_model(device)
    cands = [s for s in registry.specs("sam", "standard") if s.name == name]
    if not cands:
        known = ", ".join(s.name for s in registry.specs("sam", "standard"))
        raise ValueError(f"unknown SAM model {name!r}; choose one of {known} (or profile='tiny' for tests).")
    return cands[0]


def _seeded(seed: int = 0):
    """Build tiny random models from a fixed seed without disturbing the caller's RNG."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=[]))
    torch.manual_seed(seed)
    return stack


def build_tiny_sam(encoder: dict | None = None):
    """A small random `segment_anything.modeling.Sam`: reduced ViT image encoder, and vit_b's real
    prompt encoder and mask decoder (1024 frame, 64x64 embedding, 256 channels), so `SamPredictor`
    runs its real code path in well under a second. Random weights — meaningless masks."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    enc = {"depth": 2, "embed_dim": 64, "num_heads": 2, "global_attn_indexes": [1], "window_size": 14}
    enc.update(encoder or {})
    image_size, patch, dim = 1024, 16, 256
    with _seeded(0):
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=enc["depth"], embed_dim=enc["embed_dim"], img_size=image_size, mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=enc["num_heads"], patch_size=patch,
                qkv_bias=True, use_rel_pos=True, global_attn_indexes=tuple(enc["global_attn_indexes"]),
                window_size=enc["window_size"], out_chans=dim,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=dim, image_embedding_size=(image_size // patch, image_size // patch),
                input_image_size=(image_size, image_size), mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=2048, num_heads=8),
                transformer_dim=dim, iou_head_depth=3, iou_head_hidden_dim=256,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    return sam.eval()


def _build_sam2(config: str, ckpt_path: str | None, device: torch.device, overrides: Sequence[str] = ()):
    with warnings.catch_warnings():
        # sam2 scripts a helper with torch.jit at import (deprecated in recent torch); harmless here
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        from sam2.build_sam import build_sam2

        return build_sam2(config, ckpt_path=ckpt_path, device=str(device), hydra_overrides_extra=list(overrides))


def _load_state_dict(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated download, HTML error page saved as .pth, pickle with code
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({exc.__class__.__name__}: {str(exc)[:120]}); "
                         "download it again or check the path.") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # SAM 2 checkpoints nest the state dict
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict of a SAM model.")
    return obj


def _predictor_for(model, family: str):
    if family == "sam2":
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # its transforms use torch.jit.script
            return SAM2ImagePredictor(model)
    from segment_anything import SamPredictor

    return SamPredictor(model)


def _export_state(pred, family: str) -> tuple[dict[str, Any], int]:
    """Copy what `set_image` computed off a predictor (fp32: the decoder runs in fp32 even when the
    encoder ran under bf16 autocast). Returns (state, bytes)."""
    if family == "sam2":
        feats = {
            "image_embed": pred._features["image_embed"].float(),
            "high_res_feats": [f.float() for f in pred._features["high_res_feats"]],
        }
        nbytes = sum(t.numel() * 4 for t in [feats["image_embed"], *feats["high_res_feats"]])
        return {"_features": feats, "_orig_hw": list(pred._orig_hw), "_is_image_set": True}, nbytes
    feats = pred.features.float()
    return {"features": feats, "original_size": tuple(pred.original_size), "input_size": tuple(pred.input_size),
            "is_image_set": True}, feats.numel() * 4


def _restore_state(pred, state: dict[str, Any]) -> None:
    for k, v in state.items():
        setattr(pred, k, v)


# --- prompt validation ---------------------------------------------------------------------------
def validate_prompts(
    points: Sequence[Point] | None, box: Box | None, image_hw: tuple[int, int]
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Check prompts against an image of `image_hw` = (H, W) and convert them for the predictor.

    Returns (coords float32 (N, 2) xy or None, labels int (N,) 1/0 or None, box float32 (4,) or None).
    Raises ValueError naming the bad prompt: a point outside the image, a malformed point, a box
    without area or outside the image, no prompt at all, or only negative points.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    pts = [] if points is None else list(points)
    coords, labels = [], []
    for p in pts:
        if isinstance(p, (str, bytes)) or not hasattr(p, "__len__") or len(p) != 3:
            raise ValueError(f"each point must be (x, y, is_positive), e.g. (120, 45, True); got {p!r}")
        x, y, pos = p
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError):
            raise ValueError(f"point coordinates must be numbers, got {p!r}") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ValueError(f"point {p!r} has a NaN or infinite coordinate")
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"point ({x:g}, {y:g}) is outside the {w}x{h} image (x must be in [0, {w}), "
                             f"y in [0, {h})); clicks are in the image's own pixels")
        if pos not in (True, False, 0, 1):
            raise ValueError(f"the third value of a point says whether it is on the defect (True) or not (False); "
                             f"got {pos!r} in {p!r}")
        coords.append((x, y))
        labels.append(1 if pos else 0)
    box_arr = None
    if box is not None:
        if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 4:
            raise ValueError(f"box must be (x0, y0, x1, y1) in image pixels, got {box!r}")
        b = np.asarray(box, dtype=np.float64)
        if not np.isfinite(b).all():
            raise ValueError(f"box {tuple(box)!r} has a NaN or infinite coordinate")
        x0, x1 = sorted((b[0], b[2]))  # a drag from bottom-right to top-left is the same box
        y0, y1 = sorted((b[1], b[3]))
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ValueError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area; drag a rectangle around the defect")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ValueError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) extends outside the {w}x{h} image")
        box_arr = np.array([x0, y0, x1, y1], dtype=np.float32)
    if not coords and box_arr is None:
        raise ValueError("give at least one point or a box: click on the defect (positive point) or drag a box around it")
    if coords and box_arr is None and not any(labels):
        raise ValueError("only negative points were given: add a positive click on the defect (or a box); "
                         "negative clicks only say where the defect is not")
    if not coords:
        return None, None, box_arr
    return np.asarray(coords, np.float32), np.asarray(labels, np.int64), box_arr


# --- the assistant -------------------------------------------------------------------------------
class MaskAssistant:
    """Segment-Anything behind a click-and-box interface, with an embedding cache.

    profile: "standard" (real weights from the registry's cache, downloaded on demand, or
        `checkpoint`) | "tiny" (small random model of the same family: tests, CI, offline demos).
    model: vit_b | vit_l | vit_h | sam2.1_hiera_t; None = `default_model(device)`.
    checkpoint: a local weights file to use instead of the registry's cache (standard profile).
    device: "auto" (cuda if available) | "cpu" | "cuda[:n]".
    precision: autocast dtype of the encoder pass: "auto" (bf16 where the GPU or CPU computes it
        natively, else fp32; see docs/sam.md) | "fp32" | "bf16" | "fp16" (GPU only).
    cache_dir: weights cache (default: the registry's).
    cache_size: image embeddings kept (LRU); one vit_b embedding is 4 MB, a SAM 2.1 one ~9 MB.
    profile, device, precision and cache_dir are validated as `fsad_core.runtime.RuntimeOptions` and
    kept as `options` (composition: the assistant is a model holder, not a config; `device` is the
    resolved torch.device, `profile` / `precision` / `cache_dir` the normalised values).
    download: fetch missing standard weights into the cache (with a progress bar) on first use.

    Thread-safe: encoder passes are serialised, concurrent `set_image` calls for the same image share
    one pass, and `predict` waits for a pending encoding of its image.
    """

    def __init__(
        self,
        profile: str = "standard",
        model: str | None = None,
        checkpoint: str | Path | None = None,
        device: str = "auto",
        cache_dir: str | Path | None = None,
        precision: str = "auto",
        cache_size: int = 4,
        download: bool = True,
    ):
        self.options = RuntimeOptions(profile=profile, device=str(device), precision=precision, cache_dir=cache_dir)
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.device = resolve_device(self.options.device)
        self.profile = self.options.profile
        self.spec = resolve_spec(self.profile, model, self.device)
        self.family = family_of(self.spec)
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint else None
        if self.checkpoint is not None and self.profile == "tiny":
            raise ValueError("checkpoint= is for the standard profile; the tiny profile builds random weights")
        self.cache_dir = self.options.cache_dir
        self.precision = self.options.precision
        self.autocast_dtype = resolve_precision(self.precision, self.device)  # encoder pass only
        self.cache_size = int(cache_size)
        self.download = download
        self.model_id = self._model_id()
        self.encoder_passes = 0  # encoder runs so far (whole images and zoom crops)
        self._model = None
        self._enc_pred = None  # predictor that runs set_image (under _encode_lock)
        self._dec_pred = None  # predictor that runs predict (under _predict_lock)
        self._lock = threading.RLock()  # guards the caches, the pending table and the current image
        self._load_lock = threading.Lock()  # held while building/downloading (is_ready must not wait on it)
        self._encode_lock = threading.Lock()
        self._predict_lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], _Embedding] = OrderedDict()  # whole images
        self._crop_cache: OrderedDict[tuple[str, str], _Embedding] = OrderedDict()  # zoom crops ("sha@x0,y0,x1,y1")
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._current: str | None = None

    @classmethod
    def for_config(cls, config, **overrides) -> "MaskAssistant":
        """The assistant matching an `EngineConfig`: same profile, device, precision and weights cache.
        Optional config fields `sam_model` / `sam_checkpoint` pick the model; keyword overrides win."""
        kw = {**config.runtime.as_kwargs(), "model": getattr(config, "sam_model", None),
              "checkpoint": getattr(config, "sam_checkpoint", None)}
        kw.update(overrides)
        return cls(**kw)

    # -- model ----------------------------------------------------------------------------------
    def _model_id(self) -> str:
        if self.checkpoint is None:
            return self.spec.id
        try:
            st = self.checkpoint.stat()
            tag = f"{self.checkpoint.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            tag = str(self.checkpoint)
        return f"{self.spec.kind}/{self.spec.name}@file-{hashlib.sha256(tag.encode()).hexdigest()[:12]}"

    def weights_path(self) -> Path | None:
        """The weights file to load (standard profile), fetching it into the cache if allowed.
        Raises `ModelUnavailableError` with instructions when it cannot be had."""
        spec = self.spec
        if spec.source == "builtin":
            return None
        if self.checkpoint is not None:
            if not self.checkpoint.is_file():
                raise registry.unavailable(spec, f"no checkpoint file at {self.checkpoint}", reason="missing",
                                           local_hint=f"or pass checkpoint= the path of {spec.filename}",
                                           cache=self.cache_dir)
            return self.checkpoint
        path = registry.local_path(spec, self.cache_dir)
        if path is not None:
            return path
        hint = f"or pass checkpoint='/path/to/{spec.filename}'"
        if not self.download:
            raise registry.unavailable(spec, "its weights are not in the cache and download=False", local_hint=hint,
                                       cache=self.cache_dir, reason="missing")
        if family_of(spec) == "sam2" and not sam2_available():
            raise self._no_sam2()
        return registry.pull(spec, self.cache_dir)  # progress bar; ModelUnavailableError when offline

    def _no_sam2(self) -> registry.ModelUnavailableError:
        return registry.ModelUnavailableError(
            f"The SAM model {self.spec.name} needs the `sam2` package (SAM 2.1's predictor): "
            "`pip install sam2` (set SAM2_BUILD_CUDA=0 on machines without a CUDA toolkit), "
            "or choose model='vit_b'.",
            spec=self.spec, reason="dependency", detail="the `sam2` package is not installed",
        )

    def load(self) -> "MaskAssistant":
        """Build the model and its predictors now (otherwise the first `set_image` does). Idempotent.
        May download the weights first (see `weights_path`)."""
        if self._model is not None:
            return self
        with self._load_lock:
            if self._model is not None:
                return self
            spec, fam = self.spec, self.family
            if fam == "sam2" and not sam2_available():
                raise self._no_sam2()
            if spec.source == "builtin":
                if fam == "sam2":
                    with _seeded(0):
                        model = _build_sam2(spec.extra["config"], None, torch.device("cpu"), spec.extra.get("overrides", ()))
                else:
                    model = build_tiny_sam(spec.extra.get("encoder"))
            else:
                path = self.weights_path()
                model = self._load_weights(path)
            model = model.to(self.device).eval()
            self._enc_pred = _predictor_for(model, fam)
            self._dec_pred = _predictor_for(model, fam)
            self._model = model  # last: other threads test it without the lock
            return self

    def _load_weights(self, path: Path):
        spec = self.spec
        if self.family == "sam2":
            try:
                return _build_sam2(spec.extra["config"], str(path), torch.device("cpu"))
            except RuntimeError as exc:
                raise registry.unavailable(spec, f"{path.name} does not fit {spec.name} ({str(exc).splitlines()[0][:160]})",
                                           local_hint="check that the file is the SAM 2.1 tiny checkpoint",
                                           reason="invalid") from None
        from segment_anything import sam_model_registry

        sd = _load_state_dict(path)
        model = sam_model_registry[spec.name](checkpoint=None)
        try:
            model.load_state_dict(sd)
        except RuntimeError as exc:
            raise registry.unavailable(spec, f"{path.name} does not fit {spec.name} ({str(exc).splitlines()[0][:160]})",
                                       local_hint=f"check that the file is the {spec.name} checkpoint ({spec.filename})",
                                       reason="invalid") from None
        return model

    @property
    def model(self):
        return self.load()._model

    @property
    def predictor(self):
        """The predictor `predict` runs on (SamPredictor or SAM2ImagePredictor)."""
        return self.load()._dec_pred

    def _autocast(self):
        return autocast(self.device, self.autocast_dtype)

    # -- embeddings -----------------------------------------------------------------------------
    def set_image(self, image: ImageInput) -> str:
        """Encode an image once (the expensive step) and make it the current image for `predict`.

        image: anything `fsad_core.images.to_rgb_array` takes (path, bytes, PIL, uint8 array...).
        Returns the image's pixel sha256: pass it as `predict(..., image_sha=)` when several images
        are in use at once (one per browser session). Free if the embedding is cached; blocks while
        another thread encodes the same image, then shares its result.
        """
        rgb = to_rgb_array(image)
        sha = sha256_of_array(rgb)
        self._embedding((self.model_id, sha), rgb, keep_rgb=True, make_current=True)
        return sha

    def is_ready(self, image_sha: str) -> bool:
        """True if the image's embedding is cached (a click on it answers at once)."""
        with self._lock:
            return (self.model_id, image_sha) in self._cache

    @property
    def current_image(self) -> str | None:
        """sha256 of the image `predict` uses by default (the last `set_image`)."""
        return self._current

    def cached_images(self) -> list[str]:
        """Image sha256s with a cached whole-image embedding, least recently used first."""
        with self._lock:
            return [k[1] for k in self._cache]

    def forget(self, image_sha: str | None = None) -> None:
        """Drop one image's embeddings (its zoom crops too), or all with None."""
        with self._lock:
            for cache in (self._cache, self._crop_cache):
                for key in list(cache):
                    if image_sha is None or key[1] == image_sha or key[1].startswith(image_sha + "@"):
                        del cache[key]
            if image_sha is None or self._current == image_sha:
                self._current = None

    def _embedding(self, key: tuple[str, str], rgb: np.ndarray | None, keep_rgb: bool = False,
                   make_current: bool = False) -> _Embedding:
        """The cached embedding for `key`, computing it from `rgb` (or waiting for the thread that is).

        Whole images and zoom crops ("sha@x0,y0,x1,y1") have separate LRUs, so a zoomed click never
        evicts the image it zooms into. `make_current` sets the current image in the same locked step
        that registers the pending pass, so a `predict` from another thread finds it and waits.
        """
        is_crop = "@" in key[1]
        cache, limit = (self._crop_cache, 2 * self.cache_size) if is_crop else (self._cache, self.cache_size)
        while True:
            with self._lock:
                if make_current:
                    self._current = key[1]
                emb = cache.get(key)
                if emb is not None:
                    cache.move_to_end(key)
                    return emb
                pending = self._pending.get(key)
                owner = pending is None
                if owner:
                    pending = self._pending[key] = _Pending()
            if owner:
                break
            pending.done.wait()
            if pending.error is not None:
                raise RuntimeError(f"encoding this image failed in another thread: {pending.error}") from pending.error
            # the other thread cached it: loop to pick it up (or to encode again if it was evicted)
        try:
            if rgb is None:
                raise ValueError("call set_image first: this image's embedding is not cached any more "
                                 f"(the assistant keeps the last {self.cache_size}); set it again")
            self.load()
            with self._encode_lock, self._autocast():
                pred = self._enc_pred
                pred.set_image(rgb)
                state, nbytes = _export_state(pred, self.family)
                pred.reset_predictor() if self.family == "sam2" else pred.reset_image()
                self.encoder_passes += 1
            emb = _Embedding(state=state, hw=(int(rgb.shape[0]), int(rgb.shape[1])), rgb=rgb if keep_rgb else None,
                             nbytes=nbytes)
            with self._lock:
                cache[key] = emb
                cache.move_to_end(key)
                while len(cache) > limit:
                    cache.popitem(last=False)
            return emb
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._lock:
                self._pending.pop(key, None)
            pending.done.set()

    def _image_embedding(self, image_sha: str | None) -> tuple[str, _Embedding]:
        sha = image_sha or self._current
        if sha is None:
            raise ValueError("call set_image first: no image is set for the mask assistant")
        key = (self.model_id, sha)
        with self._lock:
            known = key in self._cache or key in self._pending
        if not known:
            raise ValueError(f"call set_image first: image {sha[:12]}… is not set (or was evicted from the "
                             f"cache of {self.cache_size} embeddings)")
        return sha, self._embedding(key, None)

    # -- prompts -> masks -----------------------------------------------------------------------
    def predict(
        self,
        points: Sequence[Point] | None = None,
        box: Box | None = None,
        multimask: bool = True,
        *,
        image_sha: str | None = None,
        zoom: bool | int = False,
    ) -> list[MaskProposal]:
        """Masks for prompts on the current image (or `image_sha`), best (highest predicted IoU) first.

        points: [(x, y, is_positive), ...] in image pixels; box: (x0, y0, x1, y1) in image pixels.
        multimask: three proposals (SAM's answer to an ambiguous single click: part / object / whole);
            False = one mask, better once there are several clicks or a box.
        zoom: False = the whole image; True (or a crop side in px) = run SAM on a square crop around
            the prompts (at least 256 px, 3x the prompts' extent) and paste the mask back; for defects
            that are small against the image. A new crop costs one encoder pass; clicks that fall well
            inside an earlier crop of the same image reuse its embedding.
        Returns 3 proposals (multimask) or 1, each with a bool (H, W) mask at the image's size.
        """
        sha, emb = self._image_embedding(image_sha)
        coords, labels, box_arr = validate_prompts(points, box, emb.hw)
        crop = None
        if zoom:
            crop = self._zoom_crop(sha, emb, [] if points is None else points, box_arr, DEFAULT_ZOOM_SIZE if zoom is True else int(zoom))
        return self._run(sha, emb, coords, labels, box_arr, None, multimask, crop)

    def refine(
        self,
        previous: MaskProposal | np.ndarray,
        points: Sequence[Point] | None = None,
        box: Box | None = None,
        multimask: bool = False,
        *,
        image_sha: str | None = None,
    ) -> list[MaskProposal]:
        """Iterative clicks: feed the previous proposal's low-res logits back with the prompts.

        previous: a `MaskProposal` from `predict`/`refine` (its image and zoom crop are reused), or
            its (256, 256) logits on the current image (or `image_sha`).
        points: pass ALL clicks so far, the new one last (SAM's interactive protocol), e.g. the first
            positive click and a negative click on what leaked.
        """
        crop = None
        if isinstance(previous, MaskProposal):
            logits, crop = previous.logits, previous.crop
            image_sha = image_sha or previous.image_sha or None
        else:
            logits = np.asarray(previous, dtype=np.float32)
        if logits.ndim == 3 and logits.shape[0] == 1:
            logits = logits[0]
        if logits.shape != (LOW_RES, LOW_RES):
            raise ValueError(f"previous mask logits must be SAM's low-res ({LOW_RES}, {LOW_RES}) logits "
                             f"(MaskProposal.logits), got shape {logits.shape}")
        sha, emb = self._image_embedding(image_sha)
        coords, labels, box_arr = validate_prompts(points, box, emb.hw)
        if crop is not None:
            ext = mask_ops.prompt_extent([] if points is None else points, box_arr)
            if not mask_ops.box_contains(crop, ext):
                raise ValueError(f"the prompts reach outside the zoom crop {crop} of the previous mask; "
                                 "start again with predict(..., zoom=True) around all of them")
        return self._run(sha, emb, coords, labels, box_arr, logits[None].astype(np.float32), multimask, crop)

    def _zoom_crop(self, sha: str, emb: _Embedding, points, box_arr, size: int) -> tuple[int, int, int, int] | None:
        """The crop to encode for a zoomed prompt, reusing a cached crop of this image that holds
        the prompts with a margin of 1/8 of its side. None when the crop would be ~the whole image."""
        h, w = emb.hw
        ext = mask_ops.prompt_extent(points, box_arr)
        with self._lock:
            cached = [tuple(int(v) for v in k[1].split("@", 1)[1].split(",")) for k in self._crop_cache
                      if k[0] == self.model_id and k[1].startswith(sha + "@")]

        def holds(c) -> bool:
            if c[2] - c[0] < min(size, w) or c[3] - c[1] < min(size, h):
                return False
            m = min(c[2] - c[0], c[3] - c[1]) / 8
            # no margin is needed on a side that is the image border: there is nothing more to see
            outer = (c[0] - m * (c[0] == 0), c[1] - m * (c[1] == 0), c[2] + m * (c[2] == w), c[3] + m * (c[3] == h))
            return mask_ops.box_contains(outer, ext, margin=m)

        fits = [c for c in cached if holds(c)]
        if fits:
            return min(fits, key=lambda c: (c[2] - c[0]) * (c[3] - c[1]))
        crop = mask_ops.crop_box_for_prompts(points, box_arr, emb.hw, min_size=size)
        if (crop[2] - crop[0]) * (crop[3] - crop[1]) >= 0.8 * emb.hw[0] * emb.hw[1]:
            return None  # the crop is the image: zooming would only add an encoder pass
        return crop

    def _run(self, sha, emb, coords, labels, box_arr, mask_input, multimask, crop) -> list[MaskProposal]:
        h, w = emb.hw
        frame = emb
        if crop is not None:
            x0, y0, x1, y1 = crop
            if emb.rgb is None:
                raise ValueError("zoom needs the image's pixels: call set_image again")
            frame = self._embedding((self.model_id, f"{sha}@{x0},{y0},{x1},{y1}"),
                                    np.ascontiguousarray(emb.rgb[y0:y1, x0:x1]))
            offset = np.array([x0, y0], np.float32)
            coords = None if coords is None else coords - offset
            box_arr = None if box_arr is None else box_arr - np.tile(offset, 2)
        with self._predict_lock:
            pred = self._dec_pred
            _restore_state(pred, frame.state)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # sam2: "cannot import name '_C'" (CUDA hole filling)
                    masks, ious, low = pred.predict(point_coords=coords, point_labels=labels, box=box_arr,
                                                    mask_input=mask_input, multimask_output=bool(multimask))
            finally:
                pred.reset_predictor() if self.family == "sam2" else pred.reset_image()
        masks = np.asarray(masks) > 0  # SamPredictor gives bool, SAM2ImagePredictor 0./1. floats
        out = []
        for m, iou, lg in zip(masks, np.asarray(ious, np.float32), np.asarray(low, np.float32)):
            full = mask_ops.paste(m, crop, (h, w)) if crop is not None else np.ascontiguousarray(m)
            out.append(MaskProposal(mask=full, iou=float(iou), logits=np.ascontiguousarray(lg), image_sha=sha, crop=crop))
        out.sort(key=lambda p: -p.iou)
        return out

    def __repr__(self) -> str:
        return (f"MaskAssistant({self.spec.name}@{self.spec.tag}, profile={self.profile!r}, device={self.device}, "
                f"cached={len(self._cache)}/{self.cache_size} images, {len(self._crop_cache)} crops)")
