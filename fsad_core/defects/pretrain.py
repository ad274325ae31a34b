"""Pretraining on synthetic pseudo-classes (Liu et al. 2024, §3.5) and fine-tuning on the real shots (§4.1.3).

Pretraining: every texture is a pseudo-class; `n_per_class` synthetic anomalies are made per texture
on the base images (the project's shots), turned into residual maps against the PatchCore memory
(masked to the pasted region) once, then the classifier trains on episodes of `n_way` = 10
pseudo-classes (Adam, lr 1e-4) until its training accuracy, averaged over the last `window`
episodes, passes `target_acc` = 0.4 (or `max_iters`). The weights are cached under the weights
cache per backbone (`<cache>/defects/<backbone>/<kind>-<fingerprint>.pt`), the fingerprint covering
the memory, textures and settings, and can be shipped as a file (`load_classifier`).

Fine-tuning: `finetune_passes(k)` passes (45 / 25 / 15 for 2 / 3 / 4-5 shots per type) of
leave-one-out episodes over the real shots' residual maps (query split from the support), Adam lr 1e-4.
"""
from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..progress import Progress, scaled, steps
from .classifiers import FewShotClassifier, from_config, make_classifier
from .episodes import finetune_pass, sample_episode
from .synthetic import foreground_mask, synthetic_anomaly


class Cancelled(Exception):
    """Training was cancelled through the `cancel` callback; nothing was saved."""


@dataclass
class TrainLog:
    iterations: int = 0
    accuracy: float = 0.0
    losses: list = field(default_factory=list)
    cached: bool = False
    path: str | None = None


def _check_cancel(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("training cancelled")


def synthetic_set(scorer, base_images: Sequence[np.ndarray], textures: Mapping[str, object], n_per_class: int,
                  seed: int = 0, progress: Progress | None = None, cancel=None) -> tuple[torch.Tensor, np.ndarray]:
    """Residual maps (N, D, h, w) of synthetic anomalies and their pseudo-class labels (N,). A texture
    is an image or a list of images of one class (one drawn per synthetic anomaly)."""
    if not base_images:
        raise ValueError("pretraining needs at least one base image (a shot)")
    rng = np.random.default_rng([seed, 31])
    fgs = [foreground_mask(b) for b in base_images]
    maps, labels = [], []
    total = len(textures) * n_per_class
    for ci, (_name, tex) in enumerate(sorted(textures.items())):
        for _ in range(n_per_class):
            _check_cancel(cancel)
            b = int(rng.integers(len(base_images)))
            t = tex[int(rng.integers(len(tex)))] if isinstance(tex, (list, tuple)) else tex  # a class's images
            img, m = synthetic_anomaly(base_images[b], t, rng, foreground=fgs[b])
            maps.append(scorer.residual_map(img, m))
            labels.append(ci)
            steps(progress, len(maps), total, "synthetic anomalies")
    return torch.stack(maps), np.array(labels)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def pretrained_path(cache_dir, extractor_id: str, kind: str, fingerprint: str) -> Path:
    from ..models.registry import cache_dir as weights_cache

    return weights_cache(cache_dir) / "defects" / _slug(extractor_id.split("|")[0]) / f"{kind}-{fingerprint}.pt"


def save_classifier(clf: FewShotClassifier, path, meta: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    torch.save({"config": clf.config(), "state": clf.state_dict(), "meta": meta or {}}, tmp)
    tmp.replace(path)
    return path


def load_classifier(path) -> tuple[FewShotClassifier, dict]:
    """A classifier saved by `save_classifier` (a shipped pretrained file, or the cache)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no classifier weights at {str(p)!r}")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=False)
        clf = from_config(blob["config"])
        clf.load_state_dict(blob["state"])
    except Exception as exc:
        raise ValueError(f"{p.name} is not a defect-type classifier file ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0][:120]})") from None
    return clf.eval(), dict(blob.get("meta") or {})


def pretrain(scorer, base_images: Sequence[np.ndarray], textures: Mapping[str, np.ndarray], kind: str = "contrastive",
             seed: int = 0, n_per_class: int = 6, n_way: int = 10, k_shot: int = 2, n_query: int = 2,
             target_acc: float = 0.4, window: int = 10, max_iters: int = 300, lr: float = 1e-4,
             cache_dir=None, use_cache: bool = True, progress: Progress | None = None,
             cancel=None) -> tuple[FewShotClassifier, TrainLog]:
    """The pretrained classifier (from the cache when the same memory, textures and settings were
    pretrained before). `scorer`: a prepared PatchCoreScorer."""
    if len(textures) < 2:
        raise ValueError("pretraining needs at least 2 textures (pseudo-classes)")
    net_kind = "relation" if kind == "relation" else "contrastive"
    settings = f"{sorted(textures)}|{seed}|{n_per_class}|{n_way}|{k_shot}|{n_query}|{target_acc}|{window}|{max_iters}|{lr}"
    fp = hashlib.sha256(f"{scorer.memory_key}|{settings}".encode()).hexdigest()[:16]
    path = pretrained_path(cache_dir, scorer.extractor.id, net_kind, fp)
    if use_cache and path.is_file():
        try:
            clf, meta = load_classifier(path)
            return clf, TrainLog(meta.get("iterations", 0), meta.get("accuracy", 0.0), [], True, str(path))
        except ValueError:
            pass  # a broken cache file: train again
    maps, labels = synthetic_set(scorer, base_images, textures, max(n_per_class, k_shot + n_query), seed,
                                 scaled(progress, 0.0, 0.5), cancel)
    progress = scaled(progress, 0.5, 1.0)
    torch.manual_seed(seed)
    clf = make_classifier(net_kind, maps.shape[1])
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    rng = np.random.default_rng([seed, 37])
    accs: list[float] = []
    log = TrainLog(path=str(path))
    for it in range(max_iters):
        _check_cancel(cancel)
        ep = sample_episode(labels, n_way, k_shot, n_query, rng)
        loss, acc = _train_step(clf, opt, maps, ep)
        accs.append(acc)
        log.losses.append(loss)
        log.iterations = it + 1
        log.accuracy = float(np.mean(accs[-window:]))
        steps(progress, it + 1, max_iters, "pretraining episodes")
        if len(accs) >= window and log.accuracy > target_acc:
            break
    clf.eval()
    if use_cache:
        save_classifier(clf, path, {"iterations": log.iterations, "accuracy": log.accuracy, "extractor": scorer.extractor.id,
                                    "textures": sorted(textures)})
    return clf, log


def _train_step(clf: FewShotClassifier, opt, maps: torch.Tensor, ep) -> tuple[float, float]:
    """One optimiser step on one episode (pretraining and fine-tuning alike): (loss, query accuracy)."""
    clf.train()
    loss, acc = clf.episode_loss(maps[ep.support], torch.from_numpy(ep.support_y), maps[ep.query],
                                 torch.from_numpy(ep.query_y))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach()), acc


def finetune(clf: FewShotClassifier, maps: torch.Tensor, labels: np.ndarray, passes: int, lr: float = 1e-4,
             seed: int = 0, progress: Progress | None = None, cancel=None) -> tuple[FewShotClassifier, TrainLog]:
    """A fine-tuned copy of `clf` (the pretrained one is left as it is)."""
    clf = copy.deepcopy(clf)
    log = TrainLog()
    if passes <= 0:
        return clf.eval(), log
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    rng = np.random.default_rng([seed, 41])
    labels = np.asarray(labels)
    for p in range(passes):
        for ep in finetune_pass(labels, rng):
            _check_cancel(cancel)
            loss, acc = _train_step(clf, opt, maps, ep)
            log.losses.append(loss)
            log.accuracy = acc
            log.iterations += 1
        steps(progress, p + 1, passes, "fine-tuning passes")
    return clf.eval(), log
