"""Adapter checkpoints: one safetensors file with the heads' weights and a JSON header.

Header (safetensors metadata key "fsad_adapter", JSON):
    format      "fsad-adapter/1"
    backbone    {name, tag, profile, resolution, stage_norm}   which CLIP and how it was read
    stages      block indices ending the 4 stages, depth, width (W), embed_dim (D)
    head        {normalize, logit_scale}                         how eq. 3 turns logits into maps
    training    what it was trained on (source, categories, image counts, epochs, batch, lr, seed, ...)
    metrics     loss per epoch, steps, seconds, ...
Tensors: "linears.<n>.weight" (D, W) and "linears.<n>.bias" (D,) per stage, float32.

safetensors stores raw tensor bytes, so save -> load is bit-exact, and loading never unpickles.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .head import StageHeads
from .stages import BackboneRef

FORMAT = "fsad-adapter/1"
SUFFIX = ".safetensors"


class AdapterCheckpointError(ValueError):
    """A file that is not a readable adapter checkpoint; the message names the file and the fix."""


@dataclass
class AdapterCheckpoint:
    backbone: BackboneRef
    stages: tuple[int, ...]
    depth: int
    width: int
    embed_dim: int
    state: dict[str, torch.Tensor] = field(repr=False)
    head: dict = field(default_factory=lambda: {"normalize": True, "logit_scale": 100.0})
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def heads(self) -> StageHeads:
        """The heads with these weights (eval mode)."""
        h = StageHeads(self.width, self.embed_dim, len(self.stages))
        h.load_state_dict(self.state)
        return h.eval()

    def header(self) -> dict:
        return {"format": FORMAT, "backbone": self.backbone.to_dict(), "stages": list(self.stages), "depth": self.depth,
                "width": self.width, "embed_dim": self.embed_dim, "head": self.head, "training": self.training,
                "metrics": self.metrics}


def from_heads(heads: StageHeads, backbone, head: dict | None = None, training: dict | None = None,
               metrics: dict | None = None) -> AdapterCheckpoint:
    """A checkpoint of trained heads on an `AdapterBackbone`."""
    state = {k: v.detach().float().cpu().contiguous().clone() for k, v in heads.state_dict().items()}
    return AdapterCheckpoint(backbone.ref, tuple(backbone.stages), backbone.depth, backbone.width, backbone.embed_dim,
                             state, dict(head or {"normalize": True, "logit_scale": 100.0}), dict(training or {}),
                             dict(metrics or {}))


def save_checkpoint(ckpt: AdapterCheckpoint, path) -> Path:
    """Write atomically (temp file + rename): an interrupted save never leaves a broken checkpoint."""
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; give a checkpoint file name, e.g. {str(path / ('adapter' + SUFFIX))!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(ckpt.state, tmp, metadata={"fsad_adapter": json.dumps(ckpt.header(), sort_keys=True)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_header(path) -> dict:
    """The JSON header of a checkpoint without loading its tensors (for listings)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise AdapterCheckpointError(f"{path} is not an adapter checkpoint (not a readable safetensors file: "
                                     f"{exc.__class__.__name__}); train one with `python -m fsad_core adapters train`") from None
    if "fsad_adapter" not in meta:
        raise AdapterCheckpointError(f"{path} is a safetensors file but not an fsad adapter checkpoint (no "
                                     "'fsad_adapter' header); train one with `python -m fsad_core adapters train`")
    header = json.loads(meta["fsad_adapter"])
    if header.get("format") != FORMAT:
        raise AdapterCheckpointError(f"{path} has adapter format {header.get('format')!r}; this version reads {FORMAT!r}")
    return header


def load_checkpoint(path) -> AdapterCheckpoint:
    """Read a checkpoint written by `save_checkpoint` (bit-exact tensors). Raises AdapterCheckpointError."""
    from safetensors.torch import load_file

    header = read_header(path)
    state = load_file(str(_existing(path)))
    ckpt = AdapterCheckpoint(BackboneRef.from_dict(header["backbone"]), tuple(int(s) for s in header["stages"]),
                             int(header["depth"]), int(header["width"]), int(header["embed_dim"]), state,
                             dict(header.get("head") or {}), dict(header.get("training") or {}),
                             dict(header.get("metrics") or {}))
    try:
        ckpt.heads()
    except RuntimeError as exc:
        raise AdapterCheckpointError(f"{path}: the weights do not match the header ({str(exc).splitlines()[0]})") from None
    return ckpt


def _existing(path) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "does not exist"
        raise AdapterCheckpointError(f"the adapter checkpoint {str(p)!r} {what}; give the path of a {SUFFIX} file "
                                     "written by `python -m fsad_core adapters train`")
    return p
