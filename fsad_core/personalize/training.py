"""`Personalizer.train`: DreamBooth-style LoRA tuning of the UNet with class-prior preservation.

loss = mse(instance) + prior_weight * mse(class): the instance batch is an augmented normal shot
under "a photo of normal <class>", the class batch a prior image the base model generated for
"a photo of <class>". The steps: the resume plan (`folder.plan_resume`), the prior images (cached
in the folder), the latents (augmented shots and prior images encoded once), the loop (seeded per
step, so a resumed run equals an uninterrupted one; checkpoints; cancel).

These functions are the Personalizer's training half: they take the Personalizer `p` (its pipeline,
encoders and lock) and are called by `Personalizer.train` with its lock held.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..images import sha256_of_array, to_rgb_array
from ..progress import Progress, TimeLeft, monotonic
from .folder import (
    LORA_WEIGHTS_NAME,
    ResumePlan,
    file_id,
    load_checkpoint,
    plan_resume,
    prepare_folder,
    save_checkpoint,
    write_state,
)
from .pixels import augment, resize_rgb
from .prompts import class_prompt, instance_prompt


class TrainingProgress:
    """Training's progress line: one bar over both phases — the prior images (when this run
    generates any) and the optimizer steps — that never jumps back, the phase in words, and a time
    left that never grows.

    >>> seen = []
    >>> r = TrainingProgress(lambda f, m: seen.append((round(f, 2), m)), train_steps=2)
    >>> r.prior_images(0, 2, 80.0); r.prior_images(2, 2, 40.0); r.step(1, 50.0)
    >>> seen[0]
    (0.0, 'Generating prior images 1/2 (class-prior images from the base model), about 80 s left')
    >>> seen[1:]
    [(0.5, 'Generated 2 prior images; encoding the shots, about 40 s left'), (0.75, 'Training: step 1/2, about 40 s left')]
    """

    def __init__(self, progress: Progress | None, train_steps: int):
        self._bar = monotonic(progress) if progress is not None else None
        self._left = TimeLeft()
        self.total = int(train_steps)
        self.prior = 0  # prior images this run generates (0 when they were all cached)

    def prior_images(self, done: int, n: int, eta: float | None) -> None:
        """Before each prior image (`done` of `n` made) and after the last."""
        self.prior = n
        if self._bar is None:
            return
        left = self._left(eta)
        if done < n:
            text = f"Generating prior images {done + 1}/{n} (class-prior images from the base model){left}"
        else:
            text = f"Generated {n} prior images; encoding the shots{left}"
        self._bar(done / max(1, n + self.total), text)

    def step(self, step: int, eta: float | None) -> None:
        """After optimizer step `step` (1-based) of `total`."""
        if self._bar is not None:
            units = max(1, self.prior + self.total)
            self._bar((self.prior + step) / units, f"Training: step {step}/{self.total}{self._left(eta)}")


def fingerprint(p, class_name: str, shots: Sequence[np.ndarray]) -> dict:
    """What a training folder must match to be resumed (or reused when finished); see `plan_resume`."""
    c = p.config
    return {
        "base_model": p.spec.id, "class_name": class_name, "shots": sorted(sha256_of_array(s) for s in shots),
        "lora_rank": c.lora_rank, "resolution": c.resolution, "seed": c.seed, "learning_rate": c.learning_rate,
        "prior_weight": c.prior_weight, "num_class_images": c.num_class_images,
        "augmentations_per_shot": c.augmentations_per_shot, "tiny_vae": c.tiny_vae, "profile": c.profile,
        "precision": p.precision_name,  # resolved: "auto" is bf16 on one machine, fp32 on another
    }


def class_images(p, class_name: str, out_dir: Path, report: TrainingProgress,
                 cancel: threading.Event | None) -> list[np.ndarray] | None:
    """Prior images from the base model for 'a photo of <class>', cached in out_dir/class_images.
    Returns None when cancelled. `p.phase` reads ("prior images", done, n) meanwhile, and `report`
    hears of each image before it is made and after the last."""
    c = p.config
    folder = out_dir / "class_images"
    folder.mkdir(parents=True, exist_ok=True)
    have = sorted(folder.glob("class_*.png"))[: c.num_class_images]
    images = [to_rgb_array(f) for f in have]
    n = c.num_class_images
    times: list[float] = []

    def tell():
        p.phase = ("prior images", len(images), n)
        per_image = (float(np.mean(times)) if times else
                     c.num_inference_steps * (2 if c.guidance_scale > 1 else 1) * p.unet_step_seconds())
        rest = (n - len(images)) * per_image + c.train_steps * 2 * 3 * p.unet_step_seconds()
        report.prior_images(len(images), n, float(rest))

    for i in range(len(images), n):
        if cancel is not None and cancel.is_set():
            return None
        tell()
        t0 = time.perf_counter()
        img = p._text_to_image(class_prompt(class_name), seed=c.seed * 100_003 + i)
        times.append(time.perf_counter() - t0)
        Image.fromarray(img).save(folder / f"class_{i:03d}.png")
        images.append(img)
    if times:
        tell()
    return images


@dataclass
class TrainingData:
    """Everything the loop samples from, encoded once: instance latents (augmented shots, (N, 4, h, w)),
    class latents (prior images, or None without prior preservation) and the two prompt embeddings."""

    inst_lat: object
    cls_lat: object | None
    emb_inst: object
    emb_cls: object


def prepare_latents(p, shots: Sequence[np.ndarray], prior: list[np.ndarray], class_name: str) -> TrainingData:
    """Augment each shot `augmentations_per_shot` times (seeded) and encode those and the prior images."""
    import torch

    c = p.config
    p.phase = ("encoding", 0, 0)
    rng = np.random.default_rng(c.seed)
    inst = np.stack([augment(s, rng, c.resolution) for s in shots for _ in range(c.augmentations_per_shot)])
    gen = torch.Generator("cpu").manual_seed(c.seed)
    inst_lat = torch.cat([p._encode(inst[i:i + 8], gen) for i in range(0, len(inst), 8)]).float()
    cls_lat = (torch.cat([p._encode(np.stack([resize_rgb(im, (c.resolution,) * 2)]), gen) for im in prior])
               .float() if prior else None)
    return TrainingData(inst_lat, cls_lat, p._embed([instance_prompt(class_name)]).float(),
                        p._embed([class_prompt(class_name)]).float())


def train(p, shots: Sequence[np.ndarray], class_name: str, out_dir: Path, progress: Progress | None,
          cancel: threading.Event | None, restart: bool) -> Path:
    """The body of `Personalizer.train` (its lock held, `shots` already uint8 arrays)."""
    c = p.config
    p.pipeline  # noqa: B018 — load now: the fingerprint needs the spec, the size check the pipeline
    p._check_size()
    fp = fingerprint(p, class_name, shots)
    plan = plan_resume(out_dir, fp, c.train_steps, restart)
    if plan.action == "load":
        p.load_lora(out_dir)
        return out_dir
    prepare_folder(out_dir, plan)

    p._remove_lora()
    t_start = time.perf_counter()
    report = TrainingProgress(progress, c.train_steps)
    # 1. prior images from the base model (before any LoRA), cached on disk
    prior = class_images(p, class_name, out_dir, report, cancel) if c.prior_weight > 0 else []
    if prior is None:
        write_state(out_dir, c, fp, plan.done, False)
        return out_dir
    # 2. augmented shots and class images, encoded once
    data = prepare_latents(p, shots, prior, class_name)
    # 3. the LoRA and the loop
    if not _run_loop(p, data, out_dir, fp, plan, report, cancel):
        return out_dir  # cancelled: the checkpoint keeps the progress
    p._model_id = file_id(out_dir / LORA_WEIGHTS_NAME)
    write_state(out_dir, c, fp, c.train_steps, True, seconds=time.perf_counter() - t_start, model_id=p._model_id)
    p._lora_dir = out_dir
    return out_dir


def _run_loop(p, data: TrainingData, out_dir: Path, fp: dict, plan: ResumePlan, report: TrainingProgress,
              cancel: threading.Event | None) -> bool:
    """Add the LoRA adapter, run the optimizer steps (from the plan's checkpoint), save the final
    weights. Returns False when cancelled; the partial adapter is then removed (the model is the
    base model again) and a checkpoint keeps the progress."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    c, pipe = p.config, p.pipeline
    unet = pipe.unet
    unet.requires_grad_(False)
    # LoRA's gaussian init draws from the global RNG: seed it, so that a fresh run is reproducible
    cuda = [p.device] if p.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(c.seed)
        unet.add_adapter(p._lora_config())
    finished = False
    try:
        # trainable parameters in fp32 even when the base weights are fp16 / bf16
        params = [q for q in unet.parameters() if q.requires_grad]
        for q in params:
            q.data = q.data.float()
        opt = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=1e-2)
        start = load_checkpoint(plan.checkpoint, unet, opt) if plan.checkpoint is not None else 0

        noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
        T = noise_sched.config.num_train_timesteps
        every = c.checkpoint_every or max(1, math.ceil(c.train_steps / 10))
        dev, dtype = p.device, unet.dtype
        inst_lat, cls_lat = data.inst_lat, data.cls_lat
        unet.train()
        step_times: list[float] = []
        step = start
        cancelled = False
        p.phase = ("training", start, c.train_steps)
        try:
            for step in range(start + 1, c.train_steps + 1):
                if cancel is not None and cancel.is_set():
                    step -= 1
                    cancelled = True
                    break
                t0 = time.perf_counter()
                g = torch.Generator("cpu").manual_seed(c.seed * 1_000_003 + step)  # resume-exact
                i = int(torch.randint(len(inst_lat), (1,), generator=g))
                lat = inst_lat[i:i + 1]
                emb = data.emb_inst
                if cls_lat is not None:
                    j = int(torch.randint(len(cls_lat), (1,), generator=g))
                    lat = torch.cat([lat, cls_lat[j:j + 1]])
                    emb = torch.cat([data.emb_inst, data.emb_cls])
                noise = torch.randn(lat.shape, generator=g)
                t = torch.randint(0, T, (lat.shape[0],), generator=g)
                noisy = noise_sched.add_noise(lat, noise, t)
                if noise_sched.config.prediction_type == "v_prediction":
                    target = noise_sched.get_velocity(lat, noise, t)
                else:
                    target = noise
                with p._autocast():
                    pred = unet(noisy.to(dev, dtype), t.to(dev), emb.to(dev, dtype)).sample.float()
                target = target.to(dev)
                loss = F.mse_loss(pred[:1], target[:1])
                if cls_lat is not None:
                    loss = loss + c.prior_weight * F.mse_loss(pred[1:], target[1:])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss is {loss.item()} at step {step}; "
                                             "lower learning_rate or use precision='fp32'")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step_times.append(time.perf_counter() - t0)
                p.last_loss = float(loss.item())
                if step % every == 0 or step == c.train_steps:
                    save_checkpoint(out_dir, unet, opt, step)
                    write_state(out_dir, c, fp, step, False)
                p.phase = ("training", step, c.train_steps)
                recent = step_times[-10:]
                report.step(step, sum(recent) / len(recent) * (c.train_steps - step))
        finally:
            unet.eval()
            unet.requires_grad_(False)
            if step_times:
                p._note_speed(sum(step_times), 2 * 3 * len(step_times))
        if cancelled:
            if step > start:
                save_checkpoint(out_dir, unet, opt, step)
            write_state(out_dir, c, fp, step, False)
            return False  # the partial adapter goes in `finally`: the checkpoint keeps the progress
        p._save_final(out_dir)
        finished = True
    finally:
        if not finished:  # cancelled or failed: never leave a half-trained adapter active
            p._remove_lora()
    return True
