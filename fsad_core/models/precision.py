"""Device and precision choices shared by every model (CLIP, SAM, diffusion).

`precision="auto"` means bf16 autocast where the hardware computes bf16 natively, else fp32:
on a CPU that is AVX512-BF16 or AMX (without them bf16 is emulated and 2-5x *slower* than fp32;
with them CLIP runs ~3x faster, SAM's encoder 2-3x), on a GPU bf16 where supported (Ampere and
later). fp16 is never chosen automatically for CLIP and SAM (its range overflows in attention
logits); the diffusion pipeline asks for fp16 on GPUs itself (`cuda_auto`), as its checkpoints
ship an fp16 variant.
"""
from __future__ import annotations

import contextlib
import os
from functools import lru_cache
from pathlib import Path

import torch

from ..runtime import PRECISIONS, check_precision  # noqa: F401  (re-exported: the one validation lives there)


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX).

    FSAD_CPU_BF16=0 or 1 overrides the detection (read once per process): 0 makes "auto" mean fp32
    on any CPU (reference numbers, or checking the suite as a CPU without bf16 runs it)."""
    forced = os.environ.get("FSAD_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; a CUDA device asked for on a machine without one
    is a clear ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA GPU is available; use device='auto' or 'cpu'")
    return dev


def resolve_precision(precision: str, device: torch.device, cuda_auto: torch.dtype | None = None) -> torch.dtype | None:
    """Autocast dtype for `precision` on `device`, or None for plain fp32.

    `cuda_auto` overrides what "auto" means on a GPU (the diffusion pipeline uses fp16 weights
    there, as its checkpoints ship an fp16 variant).

    >>> resolve_precision("fp32", torch.device("cpu")) is None
    True
    >>> resolve_precision("bf16", torch.device("cpu"))
    torch.bfloat16
    """
    precision = check_precision(precision)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise ValueError("fp16 autocast is for GPUs; on a CPU use precision='bf16' or 'auto'")
        return torch.float16
    if device.type == "cuda":
        if cuda_auto is not None:
            return cuda_auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_supports_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """Autocast context for `dtype` on `device` (a no-op context for None / fp32)."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
