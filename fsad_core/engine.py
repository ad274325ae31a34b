"""Engine: shots, class name, caches, and `score(query) -> Result`.

Recompute only what changed:
- every image is encoded once per (model, precision, sha256); window embeddings are computed per
  scale on demand and cached with the encoding;
- a new mask or a removed shot only rebuilds the memory banks from cached features;
- text embeddings are cached per (model, class name);
- re-weighting a Result never touches the engine.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import torch

from .config import EngineConfig
from .images import ImageError, ImageInput, sha256_of_array, to_mask_array, to_rgb_array
from .models.clip import ClipBackbone, Encoding
from .prompts import readable_class_name
from .results import Result, ScoreMap
from .scorers.base import ROLES, Query, Scorer, ScorerContext, ShotData
from .scorers.text import text_embeddings
from .scorers.winclip import KINDS, ZERO_SHOT_SCALES, WinClipScorer


class ComponentNames(list):
    """The engine's component names: a list that can also be called (`engine.component_names()`)."""

    def __call__(self) -> list[str]:
        return list(self)


@dataclass
class Features:
    """An encoded image: the Encoding plus its per-scale features (scale 1 = patch tokens)."""

    sha256: str
    size_hw: tuple[int, int]
    encoding: Encoding
    windows: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        ts = [self.encoding.image_emb, self.encoding.patch_tokens, self.encoding.token_map, *self.windows.values()]
        return sum(t.numel() * t.element_size() for t in ts)


@dataclass(frozen=True)
class Shot:
    id: str
    kind: str
    defect_type: str | None
    size_hw: tuple[int, int]
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    role: str = "memory"  # "memory" | "validation" (normal shots used only to validate weight tuning)


class Engine:
    """Few-shot anomaly scoring with WinCLIP+ and an anomalous memory.

    >>> engine = Engine(EngineConfig(profile="tiny"))            # doctest: +SKIP
    >>> engine.add_shot(normal, kind="normal")                   # doctest: +SKIP
    >>> engine.score(query).aggregate().score                    # doctest: +SKIP
    """

    def __init__(self, config: EngineConfig | None = None, backbone: ClipBackbone | None = None,
                 encoding_store=None, share_features_from: "Engine | None" = None):
        """`encoding_store`: optional persistent cache with `get(model_id, precision, sha256, kind)` ->
        numpy array | None and `put(model_id, precision, sha256, kind, array)` (e.g. the studio's
        `storage.Store.embeddings`), so encodings survive restarts. The engine never imports storage.

        `share_features_from`: another engine on the same backbone whose encodings (shots and cached
        queries) this one reuses instead of re-encoding the same pixels — weight tuning's scratch engine
        reads the caller's shot encodings this way. Read-only: the other engine is never modified."""
        self.config = config or EngineConfig()
        self.backbone = backbone if backbone is not None else ClipBackbone(self.config)
        self.encoding_store = encoding_store
        if share_features_from is not None and share_features_from.backbone is not self.backbone:
            raise ValueError("share_features_from must be an engine on the same backbone")
        self._share_from = share_features_from
        self.class_name = "object"
        self._shots: OrderedDict[str, Shot] = OrderedDict()
        self._shot_features: dict[str, Features] = {}
        self._pool: dict[str, Features] = {}  # generated normal images (One-to-Normal pool)
        self._shot_pixels: dict[str, np.ndarray] = {}  # kept for tuning's augmentations
        self.last_tuning = None  # the latest TuningResult (fsad_core.tuning)
        self.defect_classifier = None  # the latest DefectTypeModel (fsad_core.defects.api)
        self._cache: OrderedDict[str, Features] = OrderedDict()  # query features, LRU by bytes
        self._version = 0  # bumped on every change of shots, masks, roles, pool or class name
        self._winclip = WinClipScorer(self)
        self._extra_scorers: list[Scorer] = []
        self._lock = threading.RLock()
        #: weights `Result.aggregate()` uses when called without any (None = the paper preset);
        #: `Engine.from_bundle` sets the bundle's weight set here
        self.default_weights = None
        #: the loaded bundle (`fsad_core.bundle.LoadedBundle`) when built by `from_bundle`, else None
        self.bundle = None
        # shared per backbone: engines that share a backbone share text embeddings
        if not hasattr(self.backbone, "text_cache"):
            self.backbone.text_cache = {}

    @classmethod
    def from_bundle(cls, path, **kwargs) -> "Engine":
        """An engine that scores exactly as the one that exported the inspection bundle at `path`
        (no shot is re-encoded; `result.aggregate()` uses the bundle's weights). See
        `fsad_core.bundle.load_bundle` for the keyword arguments and the errors."""
        from .bundle import load_bundle

        return load_bundle(path, **kwargs)

    # -- configuration ---------------------------------------------------------------------------------
    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    @property
    def window_scales(self) -> tuple[int, ...]:
        """Every window scale the engine computes: the configured ones and zero-shot's 2 and 3."""
        return tuple(sorted(set(s for s in self.scales if s > 1) | set(ZERO_SHOT_SCALES)))

    def set_class_name(self, name: str) -> None:
        if not isinstance(name, str) or len(name) > 200:
            raise ValueError("the class name must be a string of at most 200 characters")
        name = readable_class_name(name)
        if name != self.class_name:
            self.class_name = name
            self._changed()

    def text_embeddings(self) -> torch.Tensor:
        key = (self.backbone.model_id, self.class_name)
        cache = self.backbone.text_cache
        if key not in cache:
            cache[key] = text_embeddings(self.backbone.encode_text, self.class_name)
        return cache[key]

    # -- encoding and caches ---------------------------------------------------------------------------
    def peek_features(self, sha: str) -> Features | None:
        """The encoded features of these pixels if this engine holds them (shot or cached query), else
        None. Never encodes and does not touch the LRU order."""
        with self._lock:
            return self._shot_features.get(sha) or self._cache.get(sha)

    def _features(self, rgb: np.ndarray, sha: str, pin: bool = False) -> Features:
        with self._lock:
            if sha in self._shot_features:
                return self._shot_features[sha]
            if sha in self._cache:
                self._cache.move_to_end(sha)
                return self._cache[sha]
        shared = self._share_from.peek_features(sha) if self._share_from is not None else None
        # the same Features object: window embeddings computed by either engine serve both
        feats = shared if shared is not None else Features(sha, rgb.shape[:2], self._load_or_encode(rgb, sha))
        with self._lock:
            if not pin:
                self._cache[sha] = feats
                self._evict()
        return feats

    def _evict(self) -> None:
        budget = self.config.encoding_cache_mb * 1_000_000
        while len(self._cache) > 1 and sum(f.nbytes for f in self._cache.values()) > budget:
            self._cache.popitem(last=False)

    # persistent layer (optional): one entry per array, keyed by model, precision, sha256 and kind
    def _stored(self, sha: str, kind: str) -> torch.Tensor | None:
        if self.encoding_store is None:
            return None
        try:
            arr = self.encoding_store.get(self.backbone.model_id, self.backbone.precision_name, sha, kind)
        except Exception:  # a cache must never break scoring
            return None
        return None if arr is None else torch.from_numpy(np.asarray(arr, dtype=np.float32).copy())

    def _store(self, sha: str, kind: str, t: torch.Tensor) -> None:
        if self.encoding_store is None:
            return
        try:
            self.encoding_store.put(self.backbone.model_id, self.backbone.precision_name, sha, kind,
                                    t.numpy().astype(np.float32))
        except Exception:
            pass

    def _load_or_encode(self, rgb: np.ndarray, sha: str) -> Encoding:
        parts = [self._stored(sha, k) for k in ("image_emb", "patch_tokens", "token_map")]
        if all(p is not None for p in parts):
            return Encoding(*parts)
        enc = self.backbone.encode(rgb)
        for k in ("image_emb", "patch_tokens", "token_map"):
            self._store(sha, k, getattr(enc, k))
        return enc

    def scale_features(self, feats: Features, scale: int) -> torch.Tensor:
        """(n_windows, D) features of one scale; scale 1 = the patch tokens."""
        if scale == 1:
            return feats.encoding.patch_tokens
        if scale not in feats.windows:
            kind = f"windows@{scale}"
            w = self._stored(feats.sha256, kind)
            if w is None:
                w = self.backbone.window_embeddings(feats.encoding.token_map, scale)
                self._store(feats.sha256, kind, w)
            feats.windows[scale] = w
        return feats.windows[scale]

    # -- shots -----------------------------------------------------------------------------------------
    @property
    def shots(self) -> list[Shot]:
        return list(self._shots.values())

    def add_shot(self, image: ImageInput, kind: str = "normal", mask=None, defect_type: str | None = None,
                 role: str = "memory", features: Features | None = None) -> str:
        """Encode a shot (once) and add it. Returns its id (the pixels' sha256).

        `features`: these pixels' encoded features computed before (e.g. read from an inspection bundle,
        `fsad_core.bundle`): used as they are, so the shot is not encoded; their sha256 must match.

        Anomalous shots need a non-empty bool mask of the image's size. `role="validation"` (normal
        shots only) keeps the shot out of every memory: weight tuning validates on it alone
        (Abdali et al. 2025, section 4.3: "the normal sample is used exclusively for validation").
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be 'normal' or 'anomalous', got {kind!r}")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if role == "validation" and kind != "normal":
            raise ValueError("only normal shots can be validation-only (role='validation')")
        rgb = to_rgb_array(image)
        size = rgb.shape[:2]
        m = None
        if kind == "anomalous":
            if mask is None:
                raise ImageError("An anomalous shot needs a defect mask (bool HxW, True on the defect).")
            m = to_mask_array(mask, size, what="defect mask")
            if not m.any():
                raise ImageError("The defect mask is empty: paint or click the defect before adding an anomalous shot.")
        elif mask is not None:
            raise ValueError("normal shots take no mask")
        sha = sha256_of_array(rgb)
        if features is not None:
            if features.sha256 != sha:
                raise ValueError(f"the features given are of image {features.sha256[:12]}, not of these pixels ({sha[:12]})")
            with self._lock:
                if sha not in self._shot_features:
                    self._cache[sha] = features
        with self._lock:
            cached = self._cache.pop(sha, None)
        feats = self._shot_features.get(sha) or cached or self._features(rgb, sha, pin=True)
        for s in self.window_scales:
            self.scale_features(feats, s)
        with self._lock:
            self._shot_features[sha] = feats
            self._shot_pixels[sha] = rgb
            self._shots[sha] = Shot(sha, kind, defect_type if kind == "anomalous" else None, size, m, role)
            self._changed()
        return sha

    def set_shot_role(self, shot_id: str, role: str) -> None:
        """Move a normal shot between the memory and the validation-only set (no re-encoding)."""
        with self._lock:
            shot = self._shots.get(shot_id)
            if shot is None:
                raise KeyError(f"no shot with id {shot_id!r}")
            if role not in ROLES:
                raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
            if role == "validation" and shot.kind != "normal":
                raise ValueError("only normal shots can be validation-only (role='validation')")
            self._shots[shot_id] = replace(shot, role=role)
            self._changed()

    def shot_image(self, shot_id: str) -> np.ndarray:
        """The decoded uint8 (H, W, 3) pixels of a shot (weight tuning augments them)."""
        try:
            return self._shot_pixels[shot_id]
        except KeyError:
            raise KeyError(f"no shot with id {shot_id!r}") from None

    def shot_features(self, shot_id: str) -> Features:
        """The encoded features of a shot (scorers read them; never re-encodes)."""
        return self._shot_features[shot_id]

    def update_mask(self, shot_id: str, mask, defect_type: str | None = None) -> None:
        """Replace an anomalous shot's mask (and optionally its defect type); no re-encoding."""
        with self._lock:
            shot = self._shots.get(shot_id)
            if shot is None:
                raise KeyError(f"no shot with id {shot_id!r}")
            if shot.kind != "anomalous":
                raise ValueError("only anomalous shots have masks")
            m = to_mask_array(mask, shot.size_hw, what="defect mask")
            if not m.any():
                raise ImageError("The defect mask is empty: paint or click the defect.")
            self._shots[shot_id] = replace(shot, defect_type=defect_type or shot.defect_type, mask=m)
            self._changed()

    def remove_shot(self, shot_id: str) -> None:
        with self._lock:
            if self._shots.pop(shot_id, None) is None:
                raise KeyError(f"no shot with id {shot_id!r}")
            feats = self._shot_features.pop(shot_id)
            self._shot_pixels.pop(shot_id, None)
            self._cache[shot_id] = feats  # keep it warm: it may come back as a query
            self._evict()
            self._changed()

    def clear_shots(self) -> None:
        with self._lock:
            for sid in list(self._shots):
                self.remove_shot(sid)

    def set_pool(self, images) -> int:
        """Replace the generated anomaly-free pool. Its images join the normal memory only when
        `config.pool_in_normal_memory` is on (off by default; measurable in eval). Returns the pool size."""
        feats = {}
        for img in images:
            rgb = to_rgb_array(img)
            sha = sha256_of_array(rgb)
            f = self._pool.get(sha) or self._features(rgb, sha, pin=True)
            for s in self.scales:
                self.scale_features(f, s)
            feats[sha] = f
        with self._lock:
            self._pool = feats
            self._changed()
        return len(feats)

    def pool_features(self) -> list[Features]:
        return list(self._pool.values())

    def set_pool_in_normal_memory(self, on: bool) -> None:
        with self._lock:
            self.config = self.config.replace(pool_in_normal_memory=bool(on))
            self._changed()

    # -- scorers ---------------------------------------------------------------------------------------
    def _changed(self) -> None:
        """Shots, masks, roles, pool or class name changed: every scorer re-prepares before scoring."""
        self._version += 1

    def context(self) -> ScorerContext:
        """What scorers build their memories from: the memory shots (validation-only ones left out)."""
        with self._lock:
            shots = tuple(
                ShotData(s.id, s.kind, self._shot_pixels[s.id], s.mask, s.defect_type, s.role)
                for s in self._shots.values() if s.role == "memory"
            )
            return ScorerContext(shots, self.class_name, self._version)

    @property
    def scorers(self) -> list[Scorer]:
        """Active scorers in order: WinCLIP first, then those added with `add_scorer`."""
        return [self._winclip, *self._extra_scorers]

    def add_scorer(self, scorer: Scorer) -> Scorer:
        """Plug in a scorer (e.g. One-to-Normal, PatchCore, adapters). Its component names must not
        clash with another scorer's; one scorer per `name` (a second one replaces the first)."""
        with self._lock:
            self._extra_scorers = [s for s in self._extra_scorers if s.name != scorer.name] + [scorer]
        return scorer

    def remove_scorer(self, name: str) -> None:
        with self._lock:
            self._extra_scorers = [s for s in self._extra_scorers if s.name != name]

    def scorer(self, name: str) -> Scorer | None:
        return next((s for s in self.scorers if s.name == name), None)

    def _prepared(self) -> list[Scorer]:
        ctx = self.context()
        scorers = self.scorers
        for s in scorers:
            s.prepare(ctx)
        return scorers

    # -- memories --------------------------------------------------------------------------------------
    def banks(self) -> dict[str, dict[int, torch.Tensor]]:
        """{'normal': {scale: (M, D)}, 'anomalous': {scale: (M, D)}}, L2-normalised; empty banks omitted."""
        with self._lock:
            self._winclip.prepare(self.context())
            return self._winclip.banks()

    @property
    def component_names(self) -> "ComponentNames":
        """Every component the active scorers produce for the current shots, in the stable order.
        Sliders, CLI weight validation, eval columns and the database all read this one list.
        (A list; calling it, `engine.component_names()`, returns the same list.)"""
        names: list[str] = []
        with self._lock:
            for s in self._prepared():
                for n in s.component_names():
                    if n in names:
                        raise ValueError(f"component {n!r} is produced by two scorers")
                    names.append(n)
        return ComponentNames(names)

    # -- scoring ---------------------------------------------------------------------------------------
    def score(self, query: ImageInput) -> Result:
        """All components for one query (encodes it once; cached by content hash)."""
        last = deque(self.score_progressive(query), maxlen=1)  # the last step holds every component
        return last[0] if last else None

    def query_features(self, query: Query) -> Features:
        """The CLIP features of a query (encoded once, cached by content hash)."""
        return self._features(query.rgb, query.sha256)

    def score_progressive(self, query: ImageInput) -> Iterator[Result]:
        """Yield Results with growing components: WinCLIP's patch level first, then each window scale,
        then the other scorers' components in one last step."""
        rgb = to_rgb_array(query)
        q = Query(rgb, sha256_of_array(rgb), rgb.shape[:2])
        with self._lock:
            scorers = self._prepared()
        comps: dict[str, ScoreMap] = {}
        steps = list(self._winclip.score_progressive(q))
        extra = scorers[1:]
        for i, step in enumerate(steps):
            comps = dict(step)  # WinCLIP's steps are cumulative and in the stable order
            last = i == len(steps) - 1 and not extra
            if i < len(steps) - 1 or last:
                yield Result(dict(comps), q.size_hw, q.sha256, complete=last, default_weights=self.default_weights)
        if not extra:
            return
        for s in extra:
            for name, sm in s.score(q).items():
                if sm.map.shape != tuple(q.size_hw):
                    raise ValueError(f"scorer {s.name!r}: component {name!r} map is {sm.map.shape}, "
                                     f"expected {tuple(q.size_hw)}")
                comps[name] = sm
        yield Result(dict(comps), q.size_hw, q.sha256, complete=True, default_weights=self.default_weights)

    # -- defect types (PatchCore residuals -> type classifier) -----------------------------------------
    def classify_defect(self, query: ImageInput, mask=None, threshold: float | None = None,
                        classifier: str | None = None, **train_kwargs):
        """The defect type of `query`'s anomalous region -> DefectPrediction(type, probabilities,
        region_mask). Uses the `patchcore` scorer (added with defaults when absent) and a classifier
        trained on the anomalous shots (>= 2 defect types); see `fsad_core.defects.api.classify`."""
        from .defects.api import classify

        return classify(self, query, mask=mask, threshold=threshold, kind=classifier, **train_kwargs)

    def train_defect_classifier(self, classifier: str = "contrastive", **kwargs):
        """Train (or reuse) the defect-type model; see `fsad_core.defects.api.train_type_classifier`."""
        from .defects.api import train_type_classifier

        return train_type_classifier(self, classifier, **kwargs)

    # -- weight tuning (Monte-Carlo) -------------------------------------------------------------------
    def tune_weights(self, **kwargs):
        """Monte-Carlo weight search on augmented shots; see `fsad_core.tuning.tune_weights`."""
        from .tuning import tune_weights

        return tune_weights(self, **kwargs)

    # -- decisions (calibrated thresholds) -------------------------------------------------------------
    def calibrate(self, ok_images=(), ng_images=(), **kwargs):
        """A decision threshold on the aggregate score; see `fsad_core.calibration.calibrate_engine`
        (held-out OK images: conformal; OK and NG: labelled; nothing: the shots-only heuristic)."""
        from .calibration import calibrate_engine

        return calibrate_engine(self, ok_images, ng_images, **kwargs)
