"""Where and how models run: the one runtime-options type shared by every model user.

`RuntimeOptions` holds profile, device, precision and weights cache, validated and normalised once.
`EngineConfig` and `PersonalizeConfig` inherit it: each config *is* a set of runtime options plus its
own knobs, so callers keep writing `EngineConfig(profile="tiny", device="cpu")` and reading
`config.precision`, and `dataclasses.replace` / `asdict` see the fields as before. The mask
assistant (`fsad_core.models.sam.MaskAssistant`, not a dataclass) holds one as `options`.

Torch-free on purpose: configs are built (and validated) before any model library is imported.

>>> RuntimeOptions(profile=" Tiny ", device="CUDA:1", precision="BF16")
RuntimeOptions(profile='tiny', device='cuda:1', precision='bf16', cache_dir=None)
>>> RuntimeOptions(device="gpu")
Traceback (most recent call last):
...
ValueError: device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>' (e.g. 'cuda:0'), got 'gpu'
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields

PROFILES = ("standard", "tiny")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")  # and "cuda:<index>"


def _word(value) -> str:
    return str(value).strip().lower()


def check_profile(profile: str) -> str:
    """The normalised profile ("standard" | "tiny") or a ValueError naming both."""
    p = _word(profile)
    if p not in PROFILES:
        raise ValueError(f"profile must be 'standard' (real weights) or 'tiny' (small random models for tests), "
                         f"got {profile!r}")
    return p


def check_device(device: str) -> str:
    """The normalised device ("auto" | "cpu" | "cuda" | "cuda:<index>") or a ValueError. Whether a
    GPU is there is checked where the device is resolved (`models.precision.resolve_device`)."""
    d = _word(device)
    if d not in DEVICES and not re.fullmatch(r"cuda:\d+", d):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>' (e.g. 'cuda:0'), got {device!r}")
    return d


def check_precision(precision: str) -> str:
    """The normalised precision ("auto" | "fp32" | "bf16" | "fp16") or a ValueError naming them."""
    p = _word(precision)
    if p not in PRECISIONS:
        raise ValueError(f"precision must be one of auto, fp32, bf16, fp16 (auto: bf16 where the hardware computes "
                         f"it natively, else fp32), got {precision!r}")
    return p


def check_cache_dir(cache_dir) -> str | None:
    """None (the default cache: $FSAD_CACHE_DIR or ~/.cache/fsad-studio) or the folder as a string
    (a `Path` is accepted; '~' is expanded). Created on first use, not here."""
    if cache_dir is None:
        return None
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise ValueError(f"cache_dir must be a folder path or None, got {type(cache_dir).__name__} {cache_dir!r}")
    path = os.path.expanduser(os.fspath(cache_dir))
    if not path.strip():
        raise ValueError("cache_dir is empty; give a folder path, or None for the default cache")
    return path


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how models run.

    profile: "standard" (real weights) | "tiny" (small random models: tests, CI, offline demos).
    device: "auto" (cuda if available) | "cpu" | "cuda" | "cuda:<index>".
    precision: "auto" (bf16 autocast where the hardware computes bf16 natively, else fp32; see
        `fsad_core.models.precision`) | "fp32" | "bf16" | "fp16" (GPU only).
    cache_dir: weights cache (None = $FSAD_CACHE_DIR or ~/.cache/fsad-studio).

    Values are normalised on creation (case and spaces; a Path cache_dir becomes a string).
    Subclasses that fill a field later (PersonalizeConfig's preset precision) validate in their own
    `__post_init__` and then call `RuntimeOptions.__post_init__(self)`.
    """

    profile: str = "standard"
    device: str = "auto"
    precision: str = "auto"
    cache_dir: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "profile", check_profile(self.profile))
        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "precision", check_precision(self.precision))
        object.__setattr__(self, "cache_dir", check_cache_dir(self.cache_dir))

    @property
    def runtime(self) -> "RuntimeOptions":
        """Just the runtime options (of a config that extends them), e.g. to build another model
        that runs the same way: `MaskAssistant(**config.runtime.as_kwargs())`."""
        return RuntimeOptions(**self.as_kwargs())

    def as_kwargs(self) -> dict:
        """{"profile", "device", "precision", "cache_dir"} as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(RuntimeOptions)}
