"""Every knob of One-to-Normal personalization: `PersonalizeConfig` and its presets.

Presets: "paper" (all 23 prompts, 15 of 50 DDIM steps, classifier-free guidance 7.5, the full VAE,
512 px) and "fast" (the 3 state-level prompts in one batch, 6 of 20 DDIM steps from the same
t = 0.3 T, no guidance, TAESD, 256 px, bf16 autocast where the CPU has native bf16).
Every field left as None in `PersonalizeConfig` takes its preset's value.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..runtime import RuntimeOptions, check_profile

PRESETS: dict[str, dict] = {
    # The method as published: every prompt, CFG at diffusers' default scale, full VAE, 512 px.
    "paper": dict(num_inference_steps=50, guidance_scale=7.5, resolution=512, train_steps=400, prompts="all",
                  tiny_vae=False, precision="auto", num_class_images=50, augmentations_per_shot=10, pool_strength=1.0,
                  batch_size=8),
    # CPU-friendly: the 3 state-level prompts in one batch, 6 DDIM steps from the same t = 0.3 T
    # (20-step schedule), no CFG (half the UNet calls), TAESD, 256 px: 18 UNet sample-steps
    # instead of the paper's 690 (23 prompts x 15 steps x 2).
    "fast": dict(num_inference_steps=20, guidance_scale=1.0, resolution=256, train_steps=200, prompts="fast",
                 tiny_vae=True, precision="auto", num_class_images=8, augmentations_per_shot=4,
                 pool_strength=0.6, batch_size=4),
}
# The tiny profile keeps each preset's logic (CFG or not, TAESD or not) but at test size.
TINY_OVERRIDES = dict(resolution=32, train_steps=2, num_class_images=2, augmentations_per_shot=2)


@dataclass(frozen=True)
class PersonalizeConfig(RuntimeOptions):
    """Every knob of One-to-Normal personalization. None = the preset's value (resolved on creation).

    profile, device, precision, cache_dir: the runtime options (`fsad_core.runtime.RuntimeOptions`,
    inherited — as `EngineConfig` does — so the keyword arguments and attributes are the same);
    precision None = the preset's ("auto").
    profile: "standard" (real Stable Diffusion weights) | "tiny" (random test model, 32 px).
    preset: "paper" | "fast" (see PRESETS).
    strength: SDEdit noise level t / T in (0, 1]; the paper uses 0.3.
    num_inference_steps: DDIM schedule length ("trailing" spacing); int(steps * strength) denoising
        steps run, starting at t = strength * T (paper: 50, fast: 20).
    guidance_scale: classifier-free guidance; <= 1 disables it (one UNet call per step, not two).
    resolution: working side in px (square, a multiple of 8 for SD); outputs return at input size.
    lora_rank: LoRA rank r (alpha = r). train_steps: optimizer steps. learning_rate: AdamW lr.
    prior_weight: weight of the class-prior loss; num_class_images: class images generated for it.
    augmentations_per_shot: augmented copies of each normal shot (encoded once, sampled per step).
    prompts: "all" | "fast" | tuple of templates with {c} / {o}.
    tiny_vae: TAESD (AutoencoderTiny) instead of the full VAE for encode/decode.
    precision: "auto" (fp16 weights on CUDA; bf16 autocast on CPUs with native bf16) | "fp32" | "bf16".
    batch_size: prompts denoised together in one batch.
    pool_size: images in the anomaly-free pool; pool_strength: 1.0 = pure text-to-image from the
        tuned model, < 1 = SDEdit of augmented normal shots at that strength (cheaper, closer).
    base_model: registered diffusion name, hub repo id or local diffusers folder (None = default).
    checkpoint_every: training steps between checkpoints (None = about 10 per run).
    """

    preset: str = "fast"
    strength: float = 0.3
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    resolution: int | None = None
    lora_rank: int = 4
    train_steps: int | None = None
    pool_size: int = 30
    seed: int = 0
    learning_rate: float = 1e-4
    prior_weight: float = 1.0
    num_class_images: int | None = None
    augmentations_per_shot: int | None = None
    prompts: str | tuple[str, ...] | None = None
    tiny_vae: bool | None = None
    precision: str | None = None  # None until the preset fills it in
    batch_size: int | None = None
    pool_strength: float | None = None
    base_model: str | None = None
    checkpoint_every: int | None = None

    def __post_init__(self):
        tiny = check_profile(self.profile) == "tiny"
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        defaults = dict(PRESETS[self.preset])
        if tiny:
            defaults.update(TINY_OVERRIDES)
        for k, v in defaults.items():
            if getattr(self, k) is None:
                object.__setattr__(self, k, v)
        super().__post_init__()  # profile, device, precision (filled in above), cache_dir
        if isinstance(self.prompts, list):
            object.__setattr__(self, "prompts", tuple(self.prompts))
        if not 0.0 < float(self.strength) <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if int(self.num_inference_steps * self.strength) < 1:
            raise ValueError(f"strength {self.strength} x num_inference_steps {self.num_inference_steps} "
                             "is below one denoising step; raise either")
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8, got {self.resolution}")
        if self.lora_rank < 1 or self.train_steps < 1 or self.pool_size < 0 or self.batch_size < 1:
            raise ValueError("lora_rank, train_steps and batch_size must be >= 1 and pool_size >= 0")
        if not 0.0 < self.pool_strength <= 1.0:
            raise ValueError(f"pool_strength must be in (0, 1], got {self.pool_strength}")

    @property
    def denoising_steps(self) -> int:
        """UNet steps one SDEdit runs: int(num_inference_steps * strength)."""
        return int(self.num_inference_steps * self.strength)

    def replace(self, **changes) -> "PersonalizeConfig":
        return replace(self, **changes)


def config_fields() -> list[str]:
    """The PersonalizeConfig field names (for UIs that build forms from the config)."""
    return [f.name for f in fields(PersonalizeConfig)]
