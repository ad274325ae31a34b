"""Training the adapters' heads with CLIP frozen (Chen et al. 2023, section 2.1 and 3).

The paper: focal + dice loss on the per-stage maps against pixel masks, Adam lr 1e-3, batch 16,
3 epochs, images at 518 px, the 4-image mosaic with probability 0.2; trained on MVTec AD's test set
to be evaluated on VisA and vice versa. Adam's betas (0.5, 0.999) are the reference code's.

Two sources of training data (both give `TrainItem`s):
- `folder_items`: a labelled dataset in MVTec-AD layout (or VisA's split CSV) — the test images of
  the chosen categories with their ground-truth masks (good images train with empty masks);
- `shot_items`: a project's own shots — each annotated anomalous shot (and each normal shot, with
  an empty mask) plus `copies` mask-preserving augmentations of it (`fsad_core.augment`).

`train_adapters` is resumable: every `save_every` steps, on cancel and on Ctrl-C it writes
`<out>.resume.pt` (heads, optimiser, position, losses); a later call with the same data and
settings continues from there (batches and augmentations are seeded per step, so a resumed run
sees exactly the batches an uninterrupted one would). The resume file is removed once the
checkpoint is written.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..augment import augment_shot
from ..images import sha256_of_array, to_mask_array, to_rgb_array
from ..progress import Progress, report
from .checkpoint import AdapterCheckpoint, from_heads, save_checkpoint
from .head import StageHeads, stage_logits
from .losses import stage_loss
from .mosaic import mosaic


class TrainingCancelled(RuntimeError):
    """Raised when `should_stop()` said so; the resume file holds the progress."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    mosaic_p: float = 0.2
    seed: int = 0
    normalize: bool = True  # eq. 3 reading, see head.py
    logit_scale: float = 100.0
    save_every: int = 25  # steps between resume snapshots

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be positive, got {self.lr}")
        if not 0.0 <= self.mosaic_p <= 1.0:
            raise ValueError(f"the mosaic probability must be in [0, 1], got {self.mosaic_p}")


@dataclass(frozen=True)
class TrainItem:
    """One labelled image. image: a path or uint8 (H, W, 3); mask: a path, bool (H, W), or None (all normal)."""

    class_name: str
    image: object = field(repr=False)
    mask: object = field(default=None, repr=False)
    key: str = ""  # identifies the item in the data fingerprint (path or pixel hash)


def folder_items(root, categories: str | Sequence[str] = "all") -> tuple[list[TrainItem], dict]:
    """Training items from an MVTec-layout (or VisA) folder: the test images of `categories` ("all",
    "a,b" or a list) with their masks. Returns (items, description for the checkpoint)."""
    from ..evaluate import list_categories, load_split

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"training data folder {str(root)!r} does not exist")
    found = list_categories(root)
    if not found:
        raise ValueError(f"{str(root)!r} holds no MVTec-layout categories (CAT/train/good and CAT/test/...) "
                         "nor a VisA split_csv/1cls.csv")
    if isinstance(categories, str):
        cats = found if categories.strip() in ("", "all") else [c.strip() for c in categories.split(",") if c.strip()]
    else:
        cats = list(categories)
    missing = [c for c in cats if c not in found]
    if missing:
        raise ValueError(f"categories not found under {str(root)!r}: {', '.join(missing)}; found: {', '.join(found)}")
    items = []
    counts = {}
    for c in cats:
        split = load_split(root, c)
        for s in split.test:
            items.append(TrainItem(c, s.path, s.mask_path, s.path))
        counts[c] = {"images": len(split.test), "anomalous": sum(s.label for s in split.test)}
    return items, {"source": "folder", "root": str(root.resolve()), "split": "test", "categories": counts,
                   "n_images": len(items)}


def shot_items(shots: Sequence[tuple[np.ndarray, np.ndarray | None]], class_name: str, copies: int = 10,
               seed: int = 0) -> tuple[list[TrainItem], dict]:
    """Training items from a project's shots: each (uint8 image, bool mask or None for a normal shot)
    and `copies` augmented versions of it (rotation, flips, elastic, skew; masks follow pixel for pixel)."""
    if not any(m is not None and np.asarray(m).any() for _, m in shots):
        raise ValueError("training the adapters needs at least one annotated anomalous shot (a shot with a "
                         "non-empty defect mask)")
    rng = np.random.default_rng(seed)
    items = []
    n_anom = 0
    for img, m in shots:
        img = to_rgb_array(img)
        mask = None if m is None else np.asarray(m, bool)
        n_anom += mask is not None
        key = sha256_of_array(img) + ("" if mask is None else hashlib.sha256(np.packbits(mask)).hexdigest()[:16])
        items.append(TrainItem(class_name, img, mask, key))
        for i, (a, am) in enumerate(augment_shot(img, mask, m=copies, rng=rng) if copies > 0 else []):
            items.append(TrainItem(class_name, a, am, f"{key}+aug{i}"))
    return items, {"source": "project-shots", "class_name": class_name, "n_anomalous": n_anom,
                   "n_normal": len(shots) - n_anom, "copies": copies, "n_images": len(items)}


def load_item(item: TrainItem, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (size, size, 3), bool (size, size)) at the training resolution (resized, not cropped)."""
    import cv2

    rgb = to_rgb_array(item.image)
    mask = np.zeros(rgb.shape[:2], bool) if item.mask is None else to_mask_array(item.mask, rgb.shape[:2], what="mask")
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC) if rgb.shape[:2] != (size, size) else rgb
    mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return rgb, mask


def _batch(items: Sequence[TrainItem], idx: np.ndarray, all_items: Sequence[TrainItem], size: int, mosaic_p: float,
           rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    by_class: dict[str, list[int]] = {}
    for i, it in enumerate(all_items):
        by_class.setdefault(it.class_name, []).append(i)
    imgs, masks, names = [], [], []
    for i in idx:
        it = items[int(i)]
        if mosaic_p > 0 and rng.random() < mosaic_p:
            others = rng.choice(by_class[it.class_name], size=3, replace=True)
            img, m = mosaic([load_item(it, size)] + [load_item(all_items[int(j)], size) for j in others], size)
        else:
            img, m = load_item(it, size)
        imgs.append(img)
        masks.append(m)
        names.append(it.class_name)
    return imgs, masks, names


def batch_loss(backbone, heads: StageHeads, imgs: Sequence[np.ndarray], masks: Sequence[np.ndarray],
               class_names: Sequence[str], normalize: bool = True, logit_scale: float = 100.0) -> torch.Tensor:
    """Sum over stages of focal + dice between the stage's map and the masks (a scalar with grad)."""
    x = torch.from_numpy(np.stack(imgs).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    feats = backbone.stage_features(backbone.normalize(x))
    text = torch.stack([backbone.text_features(c) for c in class_names])  # (B, 2, D)
    target = torch.from_numpy(np.stack(masks).astype(np.float32))
    loss = torch.zeros(())
    for proj in heads(feats):
        loss = loss + stage_loss(stage_logits(proj, text, normalize, logit_scale), target, backbone.grid)
    return loss


def _fingerprint(backbone, items: Sequence[TrainItem], cfg: TrainConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([backbone.ref.to_dict(), {k: v for k, v in asdict(cfg).items() if k != "save_every"}],
                        sort_keys=True).encode())
    for it in items:
        h.update(f"{it.class_name}|{it.key}\n".encode())
    return h.hexdigest()[:16]


def resume_path(out) -> Path:
    return Path(str(Path(out).expanduser()) + ".resume.pt")


def train_adapters(backbone, items: Sequence[TrainItem], out, config: TrainConfig = TrainConfig(),
                   data: dict | None = None, progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None, resume: bool = True) -> AdapterCheckpoint:
    """Train the 4 stage heads on `items` and write the checkpoint to `out` (see the module docstring).

    progress(fraction, "step i/n, loss L") is called after every step; should_stop() before every step
    (True: save the resume file and raise TrainingCancelled). Returns the saved checkpoint.
    """
    if not items:
        raise ValueError("no training images")
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)  # the resume file goes there from the first step
    cfg = config
    n = len(items)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    torch.manual_seed(cfg.seed)  # the heads' initialisation
    heads = StageHeads(backbone.width, backbone.embed_dim, len(backbone.stages))
    opt = torch.optim.Adam(heads.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    fp = _fingerprint(backbone, items, cfg)
    step, losses, seconds = 0, [], 0.0
    rpath = resume_path(out)
    if resume and rpath.is_file():
        state = torch.load(rpath, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != fp:
            raise ValueError(f"{rpath} is a resume file from a run on other data or settings; delete it to start "
                             "over, or rerun with the same data and settings to continue it")
        heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["optim"])
        step, losses, seconds = int(state["step"]), list(state["losses"]), float(state["seconds"])

    def snapshot():
        tmp = rpath.with_name(rpath.name + ".tmp")
        torch.save({"fingerprint": fp, "heads": heads.state_dict(), "optim": opt.state_dict(), "step": step,
                    "losses": losses, "seconds": seconds}, tmp)
        tmp.replace(rpath)

    t0 = time.perf_counter()
    heads.train()
    try:
        while step < total:
            if should_stop is not None and should_stop():
                seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                snapshot()
                raise TrainingCancelled(f"training stopped at step {step}/{total}; progress saved in {rpath}")
            epoch, b = divmod(step, steps_per_epoch)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
            rng = np.random.default_rng([cfg.seed, epoch, b])
            imgs, masks, names = _batch(items, order[b * cfg.batch_size:(b + 1) * cfg.batch_size], items,
                                        backbone.resolution, cfg.mosaic_p, rng)
            loss = batch_loss(backbone, heads, imgs, masks, names, cfg.normalize, cfg.logit_scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            report(progress, step / total, f"step {step}/{total}, loss {losses[-1]:.4f}")
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                snapshot()
    except KeyboardInterrupt:
        seconds += time.perf_counter() - t0
        snapshot()
        raise
    seconds += time.perf_counter() - t0
    per_epoch = [float(np.mean(losses[e * steps_per_epoch:(e + 1) * steps_per_epoch])) for e in range(cfg.epochs)]
    training = dict(data or {"source": "items", "n_images": n})
    training.update({"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "betas": list(cfg.betas),
                     "mosaic_p": cfg.mosaic_p, "seed": cfg.seed, "loss": "focal + dice per stage",
                     "optimizer": "Adam", "frozen": "CLIP", "precision": backbone.precision_name,
                     "fingerprint": fp})
    metrics = {"loss_per_epoch": per_epoch, "first_loss": losses[0], "final_loss": losses[-1], "steps": total,
               "train_seconds": round(seconds, 2)}
    ckpt = from_heads(heads.eval(), backbone, {"normalize": cfg.normalize, "logit_scale": cfg.logit_scale},
                      training, metrics)
    save_checkpoint(ckpt, out)
    rpath.unlink(missing_ok=True)
    return ckpt
