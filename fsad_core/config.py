"""EngineConfig: every knob of the engine in one frozen dataclass."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from .runtime import RuntimeOptions


@dataclass(frozen=True)
class EngineConfig(RuntimeOptions):
    """What the engine loads and how it computes.

    The runtime options (profile, device, precision, cache_dir) are inherited from
    `fsad_core.runtime.RuntimeOptions`, which validates them; an EngineConfig is those plus the
    engine's own knobs (inheritance rather than a nested field, so `EngineConfig(profile="tiny")`
    and `config.precision` stay as they were).

    clip_model / clip_pretrained: an open_clip architecture and a pretrained tag, or a local file path
        (a saved state dict). Ignored by the ``tiny`` profile, which builds a small random CLIP.
    profile: "standard" (real weights) | "tiny" (random weights, for tests and offline demos).
    scales: window sizes in patch units; 1 = the patch itself (16 px), 2/3/7 = 32/48/112 px windows.
    precision: "auto" (bf16 autocast where the CPU/GPU supports it, else fp32) | "fp32" | "bf16" | "fp16".
    device: "auto" (cuda if available) | "cpu" | "cuda".
    temperature: softmax temperature of the zero-shot text scores (WinCLIP / anomalib: 0.07).
    mask_coverage: fraction of a window the defect mask must cover for the window to join the
        anomalous memory (each connected defect region also contributes its best-covered window).
    pool_in_normal_memory: add the generated anomaly-free pool (One-to-Normal, `Engine.set_pool`) to the
        normal memory of the WinCLIP components (the paper's "generated samples improve other methods").
    cache_dir: weights cache (default $FSAD_CACHE_DIR or ~/.cache/fsad-studio).
    encoding_cache_mb: bound on cached image encodings held in memory.
    """

    clip_model: str = "ViT-B-16-plus-240"
    clip_pretrained: str = "laion400m_e31"
    profile: str = field(default_factory=lambda: os.environ.get("FSAD_PROFILE", "standard"))
    scales: tuple[int, ...] = (1, 2, 3, 7)
    temperature: float = 0.07
    mask_coverage: float = 0.5
    pool_in_normal_memory: bool = False
    encoding_cache_mb: int = 512

    def __post_init__(self):
        super().__post_init__()  # profile, device, precision, cache_dir
        scales = tuple(int(s) for s in self.scales)
        if not scales or any(s < 1 for s in scales) or len(set(scales)) != len(scales):
            raise ValueError(f"scales must be distinct positive patch counts, got {self.scales!r}")
        object.__setattr__(self, "scales", tuple(sorted(scales)))
        if not 0.0 < self.mask_coverage <= 1.0:
            raise ValueError(f"mask_coverage must be in (0, 1], got {self.mask_coverage}")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")

    def replace(self, **changes) -> "EngineConfig":
        return replace(self, **changes)
