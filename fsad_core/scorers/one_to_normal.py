"""One-to-Normal (Li et al., NeurIPS 2024) as an engine scorer: `personal` and `pool`.

On `prepare` (the shots changed) the scorer makes sure a customized diffusion model exists for the
context's normal shots — a LoRA folder given by the user (`lora_dir`), else one trained on those
shots and cached under `cache_root/<fingerprint>` so a rerun with the same shots and settings does
not train again — and builds the anomaly-free pool: "a set of normal reference images and generated
normal images" (§3.4), i.e. the raw normal shots plus the generated images (also cached). The pool
is encoded once into multi-level features.

`score(query)` personalizes the query (SDEdit under every normal-state prompt, SSIM choice) and
compares it with its personalized image (`personal`, S_P) and with the pool (`pool`, S_N); see
`fsad_core.scorers.personal` for the formulas. Results are cached per query and context.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path

from ..progress import Progress, report, scaled
from ..results import ScoreMap
from .base import Query, Scorer, ScorerContext


def _fingerprint(personalizer, ctx: ScorerContext) -> str:
    c = personalizer.config
    spec = getattr(personalizer, "spec", None)
    key = {
        "base_model": getattr(spec, "id", c.base_model), "profile": c.profile, "preset": c.preset,
        "class_name": ctx.class_name, "shots": sorted(s.id for s in ctx.normal), "seed": c.seed,
        "train_steps": c.train_steps, "lora_rank": c.lora_rank, "resolution": c.resolution,
        "pool_size": c.pool_size, "pool_strength": c.pool_strength, "precision": personalizer.precision_name,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class OneToNormalScorer(Scorer):
    """`personal` + `pool` from a Personalizer (fsad_core.personalize).

    personalizer: a `Personalizer` (its config picks preset, profile, seed, steps, pool size).
    lora_dir: a trained customized model to use as is (None = train on the normal shots, cached).
    cache_root: where trained models and pools are cached (default: the weights cache's personalize/).
    progress: optional `fsad_core.progress` callback (fraction, message) for the long steps: training,
        then pool generation, on one bar split by the Personalizer's estimates of the two.
    """

    name = "one-to-normal"

    def __init__(self, engine, personalizer, lora_dir=None, cache_root=None, progress: Progress | None = None,
                 max_cached: int = 64):
        self.engine = engine
        self.personalizer = personalizer
        self.lora_dir = Path(lora_dir) if lora_dir is not None else None
        if cache_root is None:
            from ..models.registry import cache_dir

            cache_root = cache_dir(getattr(engine.config, "cache_dir", None)) / "personalize"
        self.cache_root = Path(cache_root)
        self.progress = progress
        self._version: int | None = None
        self._pool_feats = None
        self._pool_note = ""
        self._names: list[str] = []
        self._results: OrderedDict[tuple, dict[str, ScoreMap]] = OrderedDict()
        self._max_cached = max_cached
        self._lock = threading.RLock()
        self.model_dir: Path | None = None

    def prepare(self, ctx: ScorerContext) -> None:
        with self._lock:
            if self._version == ctx.version:
                return
            self._results.clear()
            normals = [s.rgb for s in ctx.normal]
            if not normals:  # nothing to customize on nor to pool: no components
                self._names, self._pool_feats, self._version = [], None, ctx.version
                return
            from ..personalize import load_pool, save_pool
            from .personal import encode_levels

            p = self.personalizer
            # one bar: training, then the pool, each its share of the estimated time
            train_s = p.estimate_seconds("train") if self.lora_dir is None else 0.0
            pool_s = p.estimate_seconds("pool", n_shots=len(normals))
            split = train_s / max(1e-9, train_s + pool_s)
            if self.lora_dir is not None:
                p.load_lora(self.lora_dir)
                work = self.cache_root / f"lora-{_fingerprint(p, ctx)}"
                self.model_dir = self.lora_dir
            else:
                work = self.cache_root / _fingerprint(p, ctx)
                report(self.progress, 0.0,
                       f"training the customized model on {len(normals)} normal shot(s) (cached in {work})")
                p.train(normals, ctx.class_name, work / "lora", progress=scaled(self.progress, 0.0, split))
                self.model_dir = work / "lora"
            pool_dir = work / "pool"
            pool = load_pool(pool_dir) if pool_dir.is_dir() else []
            if len(pool) < p.config.pool_size:
                report(self.progress, split, f"generating the anomaly-free pool ({p.config.pool_size} images)")
                pool = p.generate_pool(ctx.class_name, normals=normals, progress=scaled(self.progress, split, 1.0))
                save_pool(pool, pool_dir)
            # §3.4: the pool is the normal reference images *and* the generated normal images
            self._pool_feats = encode_levels(self.engine.backbone, [*normals, *pool])
            self._pool_note = f"{len(normals)} normal shots + {len(pool)} generated images"
            self._names = ["personal", "pool"]
            self._version = ctx.version

    def component_names(self) -> list[str]:
        return list(self._names)

    @property
    def pool_note(self) -> str:
        return self._pool_note

    def score(self, query: Query) -> dict[str, ScoreMap]:
        if not self._names:
            return {}
        key = (query.sha256, self._version)
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return dict(self._results[key])
        from .personal import personal_components

        res = self.personalizer.personalize(query.rgb, self.engine.class_name)
        out = personal_components(self.engine.backbone, query.rgb, res.chosen, self._pool_feats)
        with self._lock:
            self._results[key] = out
            while len(self._results) > self._max_cached:
                self._results.popitem(last=False)
        return dict(out)
