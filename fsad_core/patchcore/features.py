"""Locally aware patch features (PatchCore §3.1) from a torchvision ResNet.

    image (H, W, 3) uint8
      -> resize to `image_size` (square, no crop: the map must cover the whole query), ImageNet normalisation
      -> CNN layers 2 and 3 (strides 8 and 16)
      -> each layer: 3x3 local neighbourhood (unfold, stride 1, zero padding 1) -> (P, C*9)
      -> layer 3's neighbourhoods bilinearly upsampled to layer 2's grid
      -> each layer's C*9 vector adaptively average-pooled to `pretrain_dim`          (PatchCore's "Preprocessing")
      -> the layers stacked, flattened and adaptively average-pooled to `target_dim`   (PatchCore's "Aggregator")
      = (h2 * w2, target_dim) patch features on layer 2's grid (32 x 32 at 256 px).

This is the reference implementation's pipeline (patchcore-inspection `common.py`); anomalib
instead averages 3x3 neighbourhoods per channel and keeps all 1536 channels.

Backbones come from torchvision's definitions with weights through the model registry
(`fsad_core.models.registry`, kind "cnn"); the tiny profile builds `TinyCNN` (random weights, same
strides) so tests run the real code path in milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("resnet50", "wide_resnet50_2")


class TinyCNN(torch.nn.Module):
    """A 3-stage random CNN with ResNet's strides (layer2: 8, layer3: 16) and few channels (tests only)."""

    def __init__(self, c2: int = 32, c3: int = 64):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 2, 1),
                                        torch.nn.ReLU())
        self.layer2 = torch.nn.Sequential(torch.nn.Conv2d(8, c2, 3, 2, 1), torch.nn.ReLU())
        self.layer3 = torch.nn.Sequential(torch.nn.Conv2d(c2, c3, 3, 2, 1), torch.nn.ReLU())

    def forward_layers(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f2 = self.layer2(self.stem(x))
        return f2, self.layer3(f2)


class ResNetLayers(torch.nn.Module):
    """A torchvision ResNet cut after layer 3 (layer 4 and the head are never computed)."""

    def __init__(self, net):
        super().__init__()
        self.stem = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3 = net.layer2, net.layer3

    def forward_layers(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f2 = self.layer2(self.stem(x))
        return f2, self.layer3(f2)


def build_cnn(name: str = "resnet50", profile: str = "standard", cache_dir: str | None = None,
              weights: str | Path | None = None, random_weights: bool = False) -> tuple[torch.nn.Module, str]:
    """(module with `forward_layers`, model id). profile "tiny" -> TinyCNN (random). `weights`: a local
    state-dict file; otherwise the registry's checksummed torchvision file (downloaded into the cache
    when online; `ModelUnavailableError` naming `models pull` when not). `random_weights=True` builds
    the real architecture with random weights (benchmarks)."""
    from ..models import registry

    if profile == "tiny":
        spec = registry.get("cnn", profile="tiny")
        with torch.random.fork_rng():  # the same random weights every time, the caller's RNG untouched
            torch.manual_seed(0)
            return TinyCNN().eval(), spec.id
    if name not in BACKBONES:
        raise ValueError(f"unknown PatchCore backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    spec = registry.get("cnn", name=name, profile="standard")
    if random_weights:
        return ResNetLayers(net).eval(), f"{spec.kind}/{name}@random"
    path = Path(weights) if weights else registry.local_path(spec, cache_dir)
    if path is None:
        path = registry.pull(spec, cache_dir)  # ModelUnavailableError (naming the fix) when offline
    if not Path(path).is_file():
        raise registry.unavailable(spec, f"no weights file at {path}", cache=cache_dir, reason="missing")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(sd)
    except Exception as exc:
        raise registry.unavailable(spec, f"{Path(path).name} does not load as {name} ({str(exc).splitlines()[0][:160]})",
                                   local_hint=f"check that the file is torchvision's {spec.filename}", cache=cache_dir,
                                   reason="invalid") from None
    return ResNetLayers(net).eval(), spec.id if not weights else f"{spec.kind}/{name}@file-{Path(path).name}"


@dataclass(frozen=True)
class PatchFeatures:
    """Patch features of one image: feats (h * w, D) float32, grid (h, w), the image's size (H, W)."""

    feats: torch.Tensor
    grid: tuple[int, int]
    size_hw: tuple[int, int]

    def as_map(self) -> torch.Tensor:
        """(D, h, w) view for convolutional classifiers."""
        return self.feats.T.reshape(-1, *self.grid)


def _neighbourhoods(fmap: torch.Tensor, patch: int = 3) -> torch.Tensor:
    """(B, C, h, w) -> (B, C * patch^2, h, w): every position's zero-padded patch x patch neighbourhood."""
    b, c, h, w = fmap.shape
    u = F.unfold(fmap, kernel_size=patch, stride=1, padding=(patch - 1) // 2)  # (B, C*p*p, h*w)
    return u.reshape(b, c * patch * patch, h, w)


def aggregate_layers(f2: torch.Tensor, f3: torch.Tensor, pretrain_dim: int, target_dim: int, patch: int = 3) -> torch.Tensor:
    """PatchCore's locally aware features from two layer maps: (B, C2, h, w), (B, C3, h', w') ->
    (B, h * w, target_dim). Pure function (see the module docstring for the steps)."""
    n2 = _neighbourhoods(f2, patch)
    n3 = _neighbourhoods(f3, patch)
    h, w = n2.shape[-2:]
    n3 = F.interpolate(n3, size=(h, w), mode="bilinear", align_corners=False)
    b = f2.shape[0]
    per_layer = []
    for n in (n2, n3):
        v = n.permute(0, 2, 3, 1).reshape(b * h * w, 1, -1)          # (B*P, 1, C*9)
        per_layer.append(F.adaptive_avg_pool1d(v, pretrain_dim)[:, 0])  # (B*P, pretrain_dim)
    stacked = torch.stack(per_layer, dim=1).reshape(b * h * w, 1, -1)  # (B*P, 1, 2 * pretrain_dim)
    return F.adaptive_avg_pool1d(stacked, target_dim).reshape(b, h * w, target_dim)


class PatchFeatureExtractor:
    """Images -> `PatchFeatures` (no grad, fp32 on CPU). `image_size`: the square input side (256 as
    the paper; the grid is image_size / 8)."""

    def __init__(self, cnn: torch.nn.Module, model_id: str, image_size: int = 256, pretrain_dim: int = 1024,
                 target_dim: int = 1024, device: str = "cpu"):
        if image_size < 32 or image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and at least 32, got {image_size}")
        self.cnn = cnn.to(device).eval()
        self.model_id = model_id
        self.image_size = int(image_size)
        self.pretrain_dim = int(pretrain_dim)
        self.target_dim = int(target_dim)
        self.device = device
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @property
    def id(self) -> str:
        """What the features depend on (cache keys): model, input size and dimensions."""
        return f"{self.model_id}|{self.image_size}|{self.pretrain_dim}|{self.target_dim}"

    @property
    def grid(self) -> tuple[int, int]:
        return (self.image_size // 8, self.image_size // 8)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                          antialias=True)
        return (x - self._mean) / self._std

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray], batch: int = 8) -> list[PatchFeatures]:
        out = []
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            x = torch.cat([self.preprocess(r) for r in chunk]).to(self.device)
            f2, f3 = self.cnn.forward_layers(x)
            feats = aggregate_layers(f2.float(), f3.float(), self.pretrain_dim, self.target_dim).cpu()
            grid = tuple(int(s) for s in f2.shape[-2:])
            out += [PatchFeatures(feats[i].contiguous(), grid, tuple(r.shape[:2])) for i, r in enumerate(chunk)]
        return out


def build_extractor(profile: str = "standard", backbone: str = "resnet50", image_size: int | None = None,
                    cache_dir: str | None = None, weights: str | Path | None = None,
                    random_weights: bool = False) -> PatchFeatureExtractor:
    """The extractor for a profile: ResNet-50 at 256 px, 1024-d (standard); TinyCNN at 128 px, 64-d (tiny)."""
    cnn, model_id = build_cnn(backbone, profile, cache_dir, weights, random_weights)
    if profile == "tiny":
        return PatchFeatureExtractor(cnn, model_id, image_size or 128, pretrain_dim=64, target_dim=64)
    return PatchFeatureExtractor(cnn, model_id, image_size or 256)
