"""Engine-level defect-type classification: train on the engine's painted shots, classify a query's region.

    model = train_type_classifier(engine, kind="contrastive")        # pretrain (cached) + fine-tune
    pred = classify(engine, query)                                    # DefectPrediction(type, probabilities, region_mask)

The PatchCore memory comes from the engine's `patchcore` scorer (added with defaults when the engine
has none). Support = the residual maps of the anomalous shots inside their masks, one class per
defect type (at least two types). The query's region is its painted mask when given, else the
aggregate anomaly map at or above `threshold` (default: half way between the map's minimum and
maximum, so the region holds the map's peak and its surroundings).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch

from ..images import ImageInput, sha256_of_array, to_mask_array, to_rgb_array
from ..progress import Progress, scaled, steps
from .classifiers import KINDS, ContrastiveClassifier, FewShotClassifier
from .episodes import finetune_passes
from .pretrain import TrainLog, _check_cancel, finetune, load_classifier, pretrain
from .synthetic import builtin_textures, load_textures


@dataclass(frozen=True)
class DefectPrediction:
    """type: the most probable defect type; probabilities: {type: p} summing to 1;
    region_mask: bool (H, W) at the query's size, the region that was classified."""

    type: str
    probabilities: Mapping[str, float]
    region_mask: np.ndarray = field(repr=False, compare=False)


@dataclass
class DefectTypeModel:
    """A trained classifier with its support set (residual maps of the shots) and what it was built from."""

    kind: str
    types: list[str]
    classifier: FewShotClassifier
    support: torch.Tensor = field(repr=False)
    support_y: torch.Tensor = field(repr=False)
    key: str = ""
    pretrain_log: TrainLog | None = None
    finetune_log: TrainLog | None = None
    train_args: dict = field(default_factory=dict)

    @property
    def shots_per_type(self) -> int:
        return int(torch.bincount(self.support_y).min())

    def predict(self, residual: torch.Tensor) -> dict[str, float]:
        """(D, h, w) residual map -> {type: probability}."""
        q = residual[None].float()
        clf = self.classifier
        if isinstance(clf, ContrastiveClassifier) and (self.kind == "prototype" or self.shots_per_type == 1):
            p = clf.prototype_proba(self.support, self.support_y, q)[0]
        else:
            p = clf.predict_proba(self.support, self.support_y, q)[0]
        return {t: float(v) for t, v in zip(self.types, p)}


def _patchcore(engine):
    scorer = engine.scorer("patchcore")
    if scorer is None:
        from ..scorers.patchcore import PatchCoreScorer

        scorer = engine.add_scorer(PatchCoreScorer.for_engine(engine))
    scorer.prepare(engine.context())
    return scorer


def support_shots(ctx) -> dict[str, list]:
    """{defect type: [anomalous ShotData]}; raises ValueError unless >= 2 types have shots."""
    by_type: dict[str, list] = {}
    untyped = 0
    for s in ctx.anomalous:
        if s.defect_type:
            by_type.setdefault(s.defect_type, []).append(s)
        else:
            untyped += 1
    if len(by_type) < 2:
        extra = f" ({untyped} anomalous shot(s) have no defect type)" if untyped else ""
        raise ValueError(f"defect-type classification needs painted anomalous shots of at least 2 defect types; "
                         f"found {len(by_type)}{': ' + ', '.join(sorted(by_type)) if by_type else ''}{extra}. "
                         "Add anomalous shots with a mask and a defect type for each type")
    return dict(sorted(by_type.items()))


def _model_key(scorer, by_type, kind: str, pretrained: str) -> str:
    h = hashlib.sha256(f"{scorer.memory_key}|{kind}|{pretrained}".encode())
    for t, shots in by_type.items():
        for s in shots:
            h.update(f"{t}|{s.id}".encode())
            h.update(np.packbits(s.mask).tobytes())
    return h.hexdigest()[:16]


def train_type_classifier(engine, kind: str = "contrastive", pretrained: str = "auto", textures_dir=None,
                          seed: int = 0, progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
                          pretrain_kwargs: dict | None = None) -> DefectTypeModel:
    """Train (or reuse) the engine's defect-type model and set it as `engine.defect_classifier`.

    kind: contrastive | relation | prototype. pretrained: "auto" (pretrain on synthetic pseudo-classes,
    cached), "none" (random initialisation, fine-tuning only), or the path of a saved classifier file.
    Raises `fsad_core.defects.pretrain.Cancelled` when `cancel()` turns true (nothing is changed then).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown classifier {kind!r}; choose one of {', '.join(KINDS)}")
    scorer = _patchcore(engine)
    ctx = engine.context()
    by_type = support_shots(ctx)
    key = _model_key(scorer, by_type, kind, f"{pretrained}|{textures_dir}|{seed}")
    current = getattr(engine, "defect_classifier", None)
    if isinstance(current, DefectTypeModel) and current.key == key:
        return current
    types = list(by_type)
    maps, ys = [], []
    n_support = sum(len(v) for v in by_type.values())
    for y, t in enumerate(types):
        for s in by_type[t]:
            _check_cancel(cancel)
            maps.append(scorer.residual_map(s.rgb, s.mask, s.id))
            ys.append(y)
            steps(scaled(progress, 0.0, 0.1), len(maps), n_support, "support residuals")
    _check_cancel(cancel)
    support, support_y = torch.stack(maps), torch.tensor(ys)
    net_kind = "relation" if kind == "relation" else "contrastive"
    plog = None
    if pretrained == "auto":
        textures = load_textures(textures_dir) if textures_dir else builtin_textures()
        base = [s.rgb for s in ctx.normal] or [s.rgb for s in ctx.shots]
        clf, plog = pretrain(scorer, base, textures, net_kind, seed=seed, cache_dir=engine.config.cache_dir,
                             progress=scaled(progress, 0.1, 0.9), cancel=cancel, **(pretrain_kwargs or {}))
    elif pretrained == "none":
        torch.manual_seed(seed)
        from .classifiers import make_classifier

        clf = make_classifier(net_kind, support.shape[1])
    else:
        clf, _ = load_classifier(pretrained)
        if clf.kind != net_kind or clf.in_dim != support.shape[1]:
            raise ValueError(f"{pretrained} holds a {clf.kind} classifier over {clf.in_dim}-d residuals; this engine "
                             f"needs a {net_kind} one over {support.shape[1]}-d residuals (same backbone)")
    k = int(torch.bincount(support_y).min())
    passes = 0 if kind == "prototype" else finetune_passes(k)
    clf, flog = finetune(clf, support, support_y.numpy(), passes, seed=seed, progress=scaled(progress, 0.9, 1.0),
                          cancel=cancel)
    args = dict(pretrained=pretrained, textures_dir=textures_dir, seed=seed, pretrain_kwargs=pretrain_kwargs)
    model = DefectTypeModel(kind, types, clf, support, support_y, key, plog, flog, args)
    engine.defect_classifier = model
    return model


def query_region(engine, rgb: np.ndarray, mask=None, threshold: float | None = None,
                 weights: Mapping[str, float] | None = None) -> np.ndarray:
    """The region to classify: the painted mask, else the aggregate map >= threshold (see module doc)."""
    if mask is not None:
        m = to_mask_array(mask, rgb.shape[:2], what="defect mask")
        if not m.any():
            raise ValueError("the query's defect mask is empty: paint the defect or pass no mask")
        return m
    amap = engine.score(rgb).aggregate(weights).map
    if threshold is None:
        lo, hi = float(amap.min()), float(amap.max())
        threshold = lo + 0.5 * (hi - lo)
    region = amap >= threshold
    if not region.any():
        region = amap >= amap.max()
    return region


def classify(engine, query: ImageInput, mask=None, threshold: float | None = None, kind: str | None = None,
             weights: Mapping[str, float] | None = None, **train_kwargs) -> DefectPrediction:
    """Classify the defect in `query` (see the module docstring). Trains the model first when the
    shots, masks or classifier kind changed since the last training."""
    rgb = to_rgb_array(query)
    current = getattr(engine, "defect_classifier", None)
    if not isinstance(current, DefectTypeModel):
        current = None
    if current is not None and not train_kwargs:
        train_kwargs = dict(current.train_args)  # same settings as the last training: reused unless shots changed
    model = train_type_classifier(engine, kind or (current.kind if current else "contrastive"), **train_kwargs)
    scorer = engine.scorer("patchcore")
    region = query_region(engine, rgb, mask, threshold, weights)
    probs = model.predict(scorer.residual_map(rgb, region, sha256_of_array(rgb)))
    best = max(probs, key=probs.get)
    return DefectPrediction(best, probs, region)


def current_model(engine) -> DefectTypeModel | None:
    """The engine's trained model if it still matches the shots, masks and memory, else None (never trains)."""
    model = getattr(engine, "defect_classifier", None)
    if not isinstance(model, DefectTypeModel):
        return None
    scorer = engine.scorer("patchcore")
    if scorer is None:
        return None
    scorer.prepare(engine.context())
    try:
        by_type = support_shots(engine.context())
    except ValueError:
        return None
    a = model.train_args
    key = _model_key(scorer, by_type, model.kind, f"{a.get('pretrained')}|{a.get('textures_dir')}|{a.get('seed')}")
    return model if key == model.key else None


def save_type_model(model: DefectTypeModel, path) -> None:
    """The fine-tuned classifier and what it was trained on (types, settings, fingerprint)."""
    from .pretrain import save_classifier

    args = {k: v for k, v in model.train_args.items() if k != "pretrain_kwargs"}
    args["textures_dir"] = None if args.get("textures_dir") is None else str(args["textures_dir"])
    save_classifier(model.classifier, path, {"types": model.types, "key": model.key, "kind": model.kind,
                                             "train_args": args,
                                             "pretrain_kwargs": model.train_args.get("pretrain_kwargs")})


def load_type_model(engine, path) -> DefectTypeModel | None:
    """A saved model for this engine when it was trained on the same shots, masks and settings (the
    support residuals are recomputed; no training), else None."""
    from pathlib import Path

    if not Path(path).is_file():
        return None
    clf, meta = load_classifier(path)
    scorer = _patchcore(engine)
    try:
        by_type = support_shots(engine.context())
    except ValueError:
        return None
    a = dict(meta.get("train_args") or {})
    kind = meta.get("kind", "contrastive")
    key = _model_key(scorer, by_type, kind, f"{a.get('pretrained')}|{a.get('textures_dir')}|{a.get('seed')}")
    if key != meta.get("key") or list(by_type) != meta.get("types"):
        return None
    maps, ys = [], []
    for y, t in enumerate(by_type):
        for s in by_type[t]:
            maps.append(scorer.residual_map(s.rgb, s.mask, s.id))
            ys.append(y)
    a["pretrain_kwargs"] = meta.get("pretrain_kwargs")
    model = DefectTypeModel(kind, list(by_type), clf, torch.stack(maps), torch.tensor(ys), key, None, None, a)
    engine.defect_classifier = model
    return model
