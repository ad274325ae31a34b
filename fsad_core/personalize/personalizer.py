"""`Personalizer`: the facade of One-to-Normal personalization (Li et al., NeurIPS 2024).

It loads the diffusion pipeline lazily (`fsad_core.models.diffusion`), tunes it (`train`, in
`training.py`), personalizes queries (`personalize`: SDEdit under every normal-state prompt, SSIM
choice) and generates the anomaly-free pool (`generate_pool`).
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..images import ImageInput, to_rgb_array
from ..progress import Progress, TimeLeft, report
from . import training
from .config import PRESETS, TINY_OVERRIDES, PersonalizeConfig
from .folder import LORA_WEIGHTS_NAME, model_id, training_state
from .pixels import augment, choose_by_ssim, difference_map, resize_rgb
from .pool import Pool
from .prompts import instance_prompt, normal_prompts


@dataclass(frozen=True)
class PersonalizationResult:
    """One query turned into its anomaly-free version.

    query: uint8 (H, W, 3), the input. chosen: uint8 (H, W, 3), the reconstruction with the highest
    SSIM, at the query's size. reconstructions: [(prompt, uint8 (H, W, 3), ssim)] in prompt order.
    """

    query: np.ndarray
    chosen: np.ndarray
    chosen_prompt: str
    chosen_index: int
    reconstructions: list
    strength: float
    seed: int
    seconds: float

    @property
    def ssim(self) -> float:
        return float(self.reconstructions[self.chosen_index][2])

    @property
    def difference(self) -> np.ndarray:
        """|query - chosen| averaged over RGB, float32 (H, W) in [0, 1] (the UI's difference heatmap)."""
        return difference_map(self.query, self.chosen)


# Seconds per UNet sample-step of SD-1.5 at 256 px before anything was measured in this process
# (benchmarks/bench_personalize.py, 2-core AMD EPYC, idle: batch 3 takes 3.2 s in fp32 and 1.2 s in
# bf16 on a CPU with native bf16); scaled by pixel count for other sizes.
CPU_UNET_STEP_S_256 = 1.1
CPU_UNET_STEP_S_256_BF16 = 0.45
GPU_UNET_STEP_S_256 = 0.01
TINY_UNET_STEP_S = 0.004


class Personalizer:
    """Tuned Stable Diffusion + SDEdit + pool, loaded lazily through `fsad_core.models.diffusion`.

    Thread-safe: one lock serialises every use of the pipeline (training, personalization, pool).
    """

    def __init__(self, config: PersonalizeConfig | None = None, pipeline=None, spec=None):
        """pipeline: an already built StableDiffusionImg2ImgPipeline to use instead of loading one
        (benchmarks with random real-size weights; sharing one pipeline between personalizers)."""
        self.config = config or PersonalizeConfig()
        self._pipe = pipeline
        self._injected = pipeline is not None
        self.spec = spec
        if pipeline is not None:
            pipeline.set_progress_bar_config(disable=True)
        if pipeline is not None and spec is None:
            from ..models import registry

            self.spec = registry.ModelSpec(kind="diffusion", name=type(pipeline).__name__, tag="injected",
                                           profile=self.config.profile, source="in-memory")
        self._lock = threading.RLock()
        self._embeds: dict[str, object] = {}
        self._lora_dir: Path | None = None
        self._model_id: str | None = None
        self._unet_step_s: float | None = None  # measured, at self.config.resolution
        self._weights_ready = False
        # What a running job is doing, for UIs: (what, i, n) — ("idle", 0, 0), ("prior images", i, n)
        # while class-prior images are generated (i done of n), ("encoding", 0, 0), ("training", step,
        # total), ("pool", k, n).
        self.phase: tuple[str, int, int] = ("idle", 0, 0)

    # -- loading ------------------------------------------------------------------------------------
    @property
    def device(self):
        from ..models.precision import resolve_device

        return resolve_device(self.config.device)

    @property
    def autocast_dtype(self):
        """bf16/fp16 autocast dtype or None (fp32 compute). "auto": fp16 on a GPU (the checkpoints'
        fp16 variant), bf16 on a CPU with native bf16, else fp32."""
        import torch

        from ..models.precision import resolve_precision

        return resolve_precision(self.config.precision, self.device, cuda_auto=torch.float16)

    @property
    def precision_name(self) -> str:
        """The resolved compute precision: "fp32", "bf16" or "fp16" (what "auto" means here)."""
        from ..models.precision import precision_name

        return precision_name(self.autocast_dtype)

    @property
    def pipeline(self):
        """The img2img pipeline (loaded on first use). Raises ModelUnavailableError when missing.

        With bf16 compute on a CPU the frozen UNet weights are stored in bf16 once (autocast would
        otherwise cast all 860 M of them again in every UNet call); this applies to an injected
        pipeline too, whose UNet is converted in place."""
        if self._pipe is None or not self._weights_ready:
            with self._lock:
                if self._pipe is None:
                    from ..models.diffusion import load_pipeline

                    pipe, spec = load_pipeline(self.config.profile, base=self.config.base_model,
                                               tiny_vae=self.config.tiny_vae, device=self.device,
                                               cache_dir=self.config.cache_dir, seed=0)
                    pipe.set_progress_bar_config(disable=True)
                    self._pipe, self.spec = pipe, spec
                if not self._weights_ready:
                    self._prepare_weights(self._pipe)
        return self._pipe

    def _prepare_weights(self, pipe) -> None:
        import torch

        dt = self.autocast_dtype
        if self.device.type == "cpu" and dt == torch.bfloat16 and pipe.unet.dtype == torch.float32:
            from diffusers.utils import logging as dlogging

            level = dlogging.get_verbosity()
            dlogging.set_verbosity_error()  # "modules that should be kept in float32: []": none here
            try:
                pipe.unet.to(torch.bfloat16)  # autocast still runs normalisations and softmax in fp32
            finally:
                dlogging.set_verbosity(level)
        self._weights_ready = True

    # Fields whose change needs another pipeline (other weights, VAE, device or weight dtype).
    _PIPELINE_FIELDS = ("profile", "base_model", "device", "cache_dir", "tiny_vae", "precision")

    def reconfigure(self, **changes) -> "Personalizer":
        """Change settings in place (e.g. preset, seed, train_steps): `config` becomes
        `PersonalizeConfig(**{...config, **changes})` with None fields taking the (new) preset's
        values. The loaded pipeline, LoRA and caches stay unless a field in `_PIPELINE_FIELDS`
        resolves differently; then the pipeline is dropped (reloaded on next use, without a LoRA).
        Waits for a running job (training, pool) to finish. Returns self."""
        with self._lock:
            explicit = {k: v for k, v in asdict(self.config).items()}
            if "preset" in changes and changes["preset"] != self.config.preset:
                # fields the old preset filled in go back to None so the new preset fills them
                for k in PRESETS[self.config.preset]:
                    if k not in changes:
                        explicit[k] = None
                if self.config.profile == "tiny" or changes.get("profile") == "tiny":
                    for k in TINY_OVERRIDES:
                        if k not in changes:
                            explicit[k] = None
            new = PersonalizeConfig(**{**explicit, **changes})
            if new == self.config:
                return self
            old, self.config = self.config, new
            if any(getattr(old, k) != getattr(new, k) for k in self._PIPELINE_FIELDS):
                if self._injected:
                    self.config = old
                    changed = [k for k in self._PIPELINE_FIELDS if getattr(old, k) != getattr(new, k)]
                    raise ValueError(f"this Personalizer was given its pipeline; changing {changed} needs "
                                     "another pipeline: create a new Personalizer")
                self._pipe, self._weights_ready, self._embeds = None, False, {}
                self._lora_dir = self._model_id = None
                self._unet_step_s = None
            elif (old.resolution, old.guidance_scale) != (new.resolution, new.guidance_scale):
                self._unet_step_s = None
        return self

    @property
    def lora_dir(self) -> Path | None:
        """The folder whose LoRA weights are active (None = the base model)."""
        return self._lora_dir

    def _autocast(self):
        from ..models.precision import autocast

        return autocast(self.device, self.autocast_dtype)

    def _embed(self, prompts: Sequence[str]):
        """Text embeddings (len(prompts), 77, D), cached per prompt (the text encoder is never tuned).

        Each prompt is encoded alone and with autocast off, so a cached embedding does not depend on
        the context that first asked for it (inside a bf16-autocast generation or not) or on which
        prompts shared its batch: a resumed training run sees exactly the embeddings of an
        uninterrupted one."""
        import torch

        pipe = self.pipeline
        for p in dict.fromkeys(prompts):
            if p not in self._embeds:
                with torch.no_grad(), torch.autocast(device_type=self.device.type, enabled=False):
                    self._embeds[p] = pipe.encode_prompt([p], self.device, 1, False)[0][0]
        return torch.stack([self._embeds[p] for p in prompts])

    def _to_tensor(self, rgb: np.ndarray):
        """uint8 (H, W, 3) at the working size -> float (1, 3, H, W) in [-1, 1] on the device."""
        import torch

        x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float() / 127.5 - 1.0
        return x[None].to(self.device, dtype=self.pipeline.vae.dtype)

    def _encode(self, rgb_batch: np.ndarray, generator=None):
        """uint8 (B, S, S, 3) -> scaled latents (B, 4, S/f, S/f) (the diffusion model's input space)."""
        import torch
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

        pipe = self.pipeline
        x = torch.cat([self._to_tensor(r) for r in rgb_batch]).to(pipe.vae.dtype)
        with torch.no_grad(), self._autocast():
            lat = retrieve_latents(pipe.vae.encode(x), generator=generator, sample_mode="sample")
        # bf16-stored UNet weights (CPU) still take fp32 latents: autocast casts them where it computes
        # in bf16, and the scheduler's arithmetic stays fp32
        to = torch.float32 if pipe.unet.dtype == torch.bfloat16 else pipe.unet.dtype
        return (lat * pipe.vae.config.scaling_factor).to(to)

    def _check_size(self):
        from ..models.diffusion import resolution_multiple

        m = resolution_multiple(self.pipeline)
        if self.config.resolution % m:
            raise ValueError(f"resolution {self.config.resolution} is not a multiple of {m}, which this model "
                             "needs (VAE x UNet downsampling); choose e.g. "
                             f"{max(m, self.config.resolution // m * m)}")

    def _note_speed(self, seconds: float, sample_steps: int):
        if sample_steps > 0:
            s = seconds / sample_steps
            self._unet_step_s = s if self._unet_step_s is None else 0.5 * (self._unet_step_s + s)

    # -- estimates ----------------------------------------------------------------------------------
    def unet_step_seconds(self) -> float:
        """Seconds per UNet forward of one sample at the working resolution (measured once run,
        else the benchmark's figure for this profile and device, scaled by pixel count)."""
        if self._unet_step_s is not None:
            return self._unet_step_s
        if self.config.profile == "tiny":
            return TINY_UNET_STEP_S
        import torch

        if self.device.type == "cuda":
            base = GPU_UNET_STEP_S_256
        else:
            base = CPU_UNET_STEP_S_256_BF16 if self.autocast_dtype is not None else CPU_UNET_STEP_S_256
        threads = torch.get_num_threads() if self.device.type == "cpu" else 2
        return base * (self.config.resolution / 256) ** 2 * 2 / max(1, min(threads, 2))

    def estimate_seconds(self, kind: str = "personalize", n: int | None = None, n_shots: int = 0) -> float:
        """Rough wall time of one job on this device: "personalize" (one query), "train" (the whole
        LoRA run incl. class images), or "pool" (the whole pool: `n` images, None = pool_size, the
        first `n_shots` of them personalized shots). For the UI's "how long" message."""
        c = self.config
        s = self.unet_step_seconds()
        cfg_factor = 2 if c.guidance_scale > 1 else 1
        n_prompts = len(normal_prompts("x", c.prompts))
        vae = s * (0.2 if c.tiny_vae else 3.0)  # encode+decode of one image, relative to a UNet step
        one_query = n_prompts * c.denoising_steps * cfg_factor * s + (1 + n_prompts) * vae
        if kind == "personalize":
            return float(one_query)
        generate = c.num_inference_steps * cfg_factor * s + vae  # one text-to-image sample
        if kind == "train":
            # forward + backward of instance and class sample ~ 3 forwards each
            return float(c.train_steps * 2 * 3 * s + c.num_class_images * generate)
        if kind == "pool":
            n = c.pool_size if n is None else int(n)
            gen = generate if c.pool_strength >= 1 else int(c.num_inference_steps * c.pool_strength) * cfg_factor * s + vae
            personalized = min(n, max(0, int(n_shots)))
            return float(personalized * one_query + (n - personalized) * gen)
        raise ValueError(f"kind must be 'train', 'personalize' or 'pool', got {kind!r}")

    # -- LoRA -----------------------------------------------------------------------------------------
    def _lora_config(self):
        from peft import LoraConfig

        from ..models.diffusion import LORA_TARGET_MODULES

        r = self.config.lora_rank
        return LoraConfig(r=r, lora_alpha=r, init_lora_weights="gaussian", target_modules=list(LORA_TARGET_MODULES))

    def has_adapter(self) -> bool:
        """True when any LoRA layer is in the UNet (loaded, or added by a training run)."""
        if self._pipe is None:
            return False
        from peft.tuners.tuners_utils import BaseTunerLayer

        return any(isinstance(m, BaseTunerLayer) for m in self._pipe.unet.modules())

    def _remove_lora(self):
        if self._pipe is not None and (self.has_adapter() or getattr(self._pipe.unet, "peft_config", None)):
            self._pipe.unload_lora_weights()  # also removes an adapter added by add_adapter (training)
        self._lora_dir = self._model_id = None

    def unload_lora(self) -> None:
        """Back to the base model: remove any LoRA (a loaded one, or a cancelled run's partial one)."""
        with self._lock:
            self._remove_lora()

    @property
    def model_id(self) -> str | None:
        """`model_id(lora_dir)` of the active customized model; None = the base model."""
        return self._model_id

    def load_lora(self, out_dir: str | Path) -> None:
        """Activate the LoRA weights trained into `out_dir` (replacing any active LoRA).

        Raises FileNotFoundError when the folder holds no finished model (never trained, or a run
        stopped part-way: its state.json says so)."""
        path = Path(out_dir) / LORA_WEIGHTS_NAME
        state = training_state(out_dir)
        if not path.is_file() or (state is not None and not state.get("complete")):
            hint = (f"training stopped at step {state['step']} of {state['total']}; run train() again to resume"
                    if state else "train a customized model first with Personalizer.train")
            raise FileNotFoundError(f"No trained LoRA weights at {path}: {hint}.")
        with self._lock:
            self._remove_lora()
            from diffusers.utils import logging as dlogging

            level = dlogging.get_verbosity()
            dlogging.set_verbosity_error()  # "no LoRA keys for the text encoder": by design, only the UNet is tuned
            try:
                self.pipeline.load_lora_weights(str(Path(out_dir)), weight_name=LORA_WEIGHTS_NAME, adapter_name="normal")
            finally:
                dlogging.set_verbosity(level)
            self._lora_dir = Path(out_dir)
            self._model_id = model_id(out_dir)

    def _save_final(self, out_dir: Path):
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(self.pipeline.unet))
        type(self.pipeline).save_lora_weights(str(out_dir), unet_lora_layers=layers, weight_name=LORA_WEIGHTS_NAME,
                                              safe_serialization=True)

    def train(self, normal_images: Sequence[ImageInput], class_name: str, out_dir: str | Path,
              progress: Progress | None = None, cancel: threading.Event | None = None, *,
              restart: bool = False) -> Path:
        """Tune the customized model (LoRA on the UNet) on the normal shots; returns `out_dir`.

        Resume: a folder whose state.json matches these shots, class and settings (resolved
        precision included) continues from its last checkpoint (bit-for-bit the same weights as an
        uninterrupted run); a finished one with the same train_steps only loads its weights, one
        with fewer steps is extended from its last checkpoint, one with more starts over.
        `restart=True` (or other shots) starts over. Cancel: set `cancel`; the run saves a
        checkpoint, removes the partial adapter (the model is the base model again) and returns
        `out_dir` with state.json "complete": false — check `training_state(out_dir)`.
        progress(fraction, message) (`fsad_core.progress`): one bar over the prior images (when this
        run generates any) and the steps, never jumping back, with the phase and the time left in
        words ("Generating prior images 2/5 (class-prior images from the base model), about 3 min
        left", "Training: step 12/200, about 4 min left"; the time left never grows). `phase` says
        the same as a tuple.
        """
        shots = [to_rgb_array(im) for im in normal_images]
        if not shots:
            raise ValueError("train() needs at least one normal shot; add normal images to the project first")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            try:
                return training.train(self, shots, class_name, out_dir, progress, cancel, restart)
            finally:
                self.phase = ("idle", 0, 0)


    # -- generation -----------------------------------------------------------------------------------
    def _generators(self, seed: int, n: int):
        import torch

        # One generator per sample, all with the same seed: every prompt starts from the same noise.
        return [torch.Generator("cpu").manual_seed(int(seed)) for _ in range(n)]

    def _sdedit(self, latents, prompts: Sequence[str], strength: float, seed: int) -> np.ndarray:
        """Scaled latents (1, 4, h, w) -> uint8 (len(prompts), S, S, 3), one SDEdit per prompt, batched."""
        import torch

        c, pipe = self.config, self.pipeline
        outs = []
        t0 = time.perf_counter()
        for start in range(0, len(prompts), c.batch_size):
            chunk = list(prompts[start:start + c.batch_size])
            kw = {}
            if c.guidance_scale > 1:
                kw["negative_prompt_embeds"] = self._embed([""] * len(chunk))
            with torch.no_grad(), self._autocast():
                out = pipe(prompt_embeds=self._embed(chunk), image=latents.repeat(len(chunk), 1, 1, 1),
                           strength=strength, num_inference_steps=c.num_inference_steps,
                           guidance_scale=c.guidance_scale, generator=self._generators(seed, len(chunk)),
                           output_type="np", **kw).images
            outs.append(np.clip(np.asarray(out, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8))
        steps = len(prompts) * int(c.num_inference_steps * strength) * (2 if c.guidance_scale > 1 else 1)
        self._note_speed(time.perf_counter() - t0, steps)
        return np.concatenate(outs)

    def _text_to_image(self, prompt: str, seed: int) -> np.ndarray:
        """One image from text at the working resolution (uint8 (S, S, 3)), with the active weights."""
        import torch
        from diffusers import StableDiffusionPipeline

        c, pipe = self.config, self.pipeline
        t2i = StableDiffusionPipeline(**{k: v for k, v in pipe.components.items()}, requires_safety_checker=False)
        t2i.set_progress_bar_config(disable=True)
        kw = {"negative_prompt_embeds": self._embed([""])} if c.guidance_scale > 1 else {}
        with torch.no_grad(), self._autocast():
            out = t2i(prompt_embeds=self._embed([prompt]), height=c.resolution, width=c.resolution,
                      num_inference_steps=c.num_inference_steps, guidance_scale=c.guidance_scale,
                      generator=self._generators(seed, 1), output_type="np", **kw).images
        return np.clip(np.asarray(out[0], dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def personalize(self, query_img: ImageInput, class_name: str, strength: float | None = None,
                    seed: int | None = None) -> PersonalizationResult:
        """One-to-normal personalization of a query (SDEdit under every normal-state prompt, SSIM choice).

        strength: t / T (None = config.strength, the paper's 0.3). seed: None = config.seed; the
        same seed, query and weights give the same result. Works with the base model too (no LoRA
        loaded), which is the paper's "w/o customization" ablation.
        """
        c = self.config
        strength = c.strength if strength is None else float(strength)
        seed = c.seed if seed is None else int(seed)
        if not 0.0 < strength <= 1.0 or int(c.num_inference_steps * strength) < 1:
            raise ValueError(f"strength must be in (0, 1] and give at least one of {c.num_inference_steps} steps, "
                             f"got {strength}")
        t0 = time.perf_counter()
        rgb = to_rgb_array(query_img)
        prompts = normal_prompts(class_name, c.prompts)
        with self._lock:
            self._check_size()
            work = resize_rgb(rgb, (c.resolution, c.resolution))
            import torch

            latents = self._encode(work[None], torch.Generator("cpu").manual_seed(seed))
            recon = self._sdedit(latents, prompts, strength, seed)
        best, scores = choose_by_ssim(work, list(recon))  # compared at the working resolution
        back = [resize_rgb(r, rgb.shape[:2]) for r in recon]
        return PersonalizationResult(
            query=rgb, chosen=back[best], chosen_prompt=prompts[best], chosen_index=best,
            reconstructions=[(p, im, float(s)) for p, im, s in zip(prompts, back, scores)],
            strength=strength, seed=seed, seconds=time.perf_counter() - t0,
        )

    def generate_pool(self, class_name: str, n: int | None = None, normals: Sequence[ImageInput] | None = None,
                      seed: int | None = None, progress: Progress | None = None,
                      cancel: threading.Event | None = None) -> Pool:
        """The anomaly-free pool: n images (None = config.pool_size), uint8 (H, W, 3) each.

        First the normal shots personalized (their chosen reconstruction, at their own size), then
        images from the tuned model at the working resolution: pure text-to-image for "a photo of
        normal <class>" when pool_strength is 1 (the paper) or there are no shots, else SDEdit of
        augmented shots at pool_strength (cheaper, closer to the shots). Stops early on `cancel`
        (the result then says `cancelled`). Returns a `Pool` (a list) that records which model made
        it: with no customized model loaded it comes from the base model (`from_base_model`), which
        is not the paper's pool — a UserWarning says so. progress(fraction, message) after each image:
        "Pool: 1/3, measuring the time per image…", then "Pool: 2/3, about 40 s left" (the time left
        once two images are timed, never growing).
        """
        import torch

        c = self.config
        n = c.pool_size if n is None else int(n)
        seed = c.seed if seed is None else int(seed)
        shots = [to_rgb_array(im) for im in (normals or [])]
        rng = np.random.default_rng(seed + 7)
        pool = Pool(model_id=self._model_id, lora_dir=self._lora_dir, requested=n)
        if pool.from_base_model and n > 0:
            import warnings

            warnings.warn("generate_pool: no customized model is loaded, so the pool comes from the base model "
                          "(the paper's pool comes from the tuned model: train() or load_lora() first)", stacklevel=2)
        times: list[float] = []
        left_text = TimeLeft()
        try:
            for k in range(n):
                if cancel is not None and cancel.is_set():
                    pool.cancelled = True
                    break
                self.phase = ("pool", k, n)
                t0 = time.perf_counter()
                if k < len(shots):
                    pool.append(self.personalize(shots[k], class_name, seed=seed + k).chosen)
                elif shots and c.pool_strength < 1:
                    src = augment(shots[k % len(shots)], rng, c.resolution)
                    with self._lock:
                        lat = self._encode(src[None], torch.Generator("cpu").manual_seed(seed + k))
                        pool.append(self._sdedit(lat, [instance_prompt(class_name)], c.pool_strength, seed + k)[0])
                else:
                    with self._lock:
                        pool.append(self._text_to_image(instance_prompt(class_name), seed + k))
                times.append(time.perf_counter() - t0)
                # the time left once two images are timed (measured, not guessed from one sample)
                eta = float(np.mean(times[-5:])) * (n - k - 1) if k + 1 >= 2 else None
                left = left_text(eta) or (", measuring the time per image…" if k + 1 < n else "")
                report(progress, (k + 1) / n, f"Pool: {k + 1}/{n}{left}")
        finally:
            self.phase = ("idle", 0, 0)
        return pool
