"""APRIL-GAN adapters as an engine scorer: `adapter`, `adapter_memory`, `adapter_text`.

adapter         eq. 3, the zero-shot map M = sum_n softmax(F'_n F_t^T)[anomalous] of the trained
                per-stage heads; score = max of M (on the patch grid).
adapter_memory  eq. 4, M_f = sum_n min_{f in G_n} (1 - cos(F_n, f)) against per-stage memories of
                the normal shots' raw stage features; present only when normal shots exist.
adapter_text    One-to-Normal's S_text (Li et al. 2024, eq. 6) on the same heads:
                score = (1/n) sum_l max_G softmax(F'_l F_text^T)[anomalous], map = M / n.

The scorer holds its own frozen backbone (`fsad_core.adapters.stages.AdapterBackbone`, the one the
checkpoint names, at the checkpoint's resolution) and the WinCLIP prompt ensemble encoded by it.
Maps are upsampled from the backbone's patch grid to the query's resolution, like every component.

    engine.add_scorer(load_adapter_scorer("adapter.safetensors", engine.config))
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from ..adapters.checkpoint import AdapterCheckpoint, load_checkpoint
from ..adapters.head import grid_maps, memory_map, text_branch, zero_shot_map
from ..adapters.stages import AdapterBackbone
from ..images import ImageInput, sha256_of_array, to_rgb_array
from ..results import ScoreMap, scoremap_from_grid
from .base import Query, Scorer, ScorerContext

NAMES = ("adapter", "adapter_memory", "adapter_text")


class AdapterScorer(Scorer):
    """The trained heads of a checkpoint on their backbone (see the module docstring)."""

    name = "adapter"

    def __init__(self, checkpoint: AdapterCheckpoint, backbone: AdapterBackbone, path: str | None = None,
                 query_cache: int = 8):
        if (backbone.width, backbone.embed_dim, tuple(backbone.stages)) != \
                (checkpoint.width, checkpoint.embed_dim, tuple(checkpoint.stages)):
            raise ValueError(f"the adapter checkpoint{' ' + path if path else ''} was trained on {checkpoint.backbone.name} "
                             f"(width {checkpoint.width}, embedding {checkpoint.embed_dim}, stages {checkpoint.stages}) "
                             f"but the backbone given is {backbone.ref.name} (width {backbone.width}, embedding "
                             f"{backbone.embed_dim}, stages {backbone.stages})")
        self.checkpoint = checkpoint
        self.backbone = backbone
        self.path = path
        self.heads = checkpoint.heads()
        self.normalize = bool(checkpoint.head.get("normalize", True))
        self.logit_scale = float(checkpoint.head.get("logit_scale", 100.0))
        self.class_name = "object"
        self._memory: list[torch.Tensor] | None = None
        self._version: int | None = None
        self._shot_feats: dict[str, list[torch.Tensor]] = {}
        self._query_feats: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
        self._query_cache = int(query_cache)

    # -- features ----------------------------------------------------------------------------------
    def stage_features(self, rgb: np.ndarray, sha: str | None = None) -> list[torch.Tensor]:
        """4 x (1, P, W) raw stage features of an image (cached by content hash)."""
        sha = sha or sha256_of_array(rgb)
        if sha in self._shot_feats:
            return self._shot_feats[sha]
        if sha in self._query_feats:
            self._query_feats.move_to_end(sha)
            return self._query_feats[sha]
        feats = self.backbone.stage_features(self.backbone.preprocess(rgb))
        self._query_feats[sha] = feats
        while len(self._query_feats) > self._query_cache:
            self._query_feats.popitem(last=False)
        return feats

    # -- Scorer ------------------------------------------------------------------------------------
    def prepare(self, ctx: ScorerContext) -> None:
        if ctx.version == self._version:
            return
        self.class_name = ctx.class_name
        feats = {}
        for shot in ctx.normal:
            feats[shot.id] = self._shot_feats.get(shot.id) or self.backbone.stage_features(self.backbone.preprocess(shot.rgb))
        self._shot_feats = feats
        self._memory = [torch.cat([f[n].reshape(-1, f[n].shape[-1]) for f in feats.values()])
                        for n in range(len(self.backbone.stages))] if feats else None
        self._version = ctx.version

    def component_names(self) -> list[str]:
        return ["adapter"] + (["adapter_memory"] if self._memory is not None else []) + ["adapter_text"]

    def memory_size(self) -> int:
        """Features per stage memory (0 without normal shots)."""
        return 0 if self._memory is None else int(self._memory[0].shape[0])

    @torch.no_grad()
    def _projected(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.heads(feats)

    def score(self, query: Query) -> dict[str, ScoreMap]:
        feats = self.stage_features(query.rgb, query.sha256)
        proj = self._projected(feats)
        text = self.backbone.text_features(self.class_name)
        grid = self.backbone.grid
        m = grid_maps(zero_shot_map(proj, text, self.normalize, self.logit_scale), grid)[0]
        out = {"adapter": scoremap_from_grid(m, query.size_hw)}
        if self._memory is not None:
            mf = grid_maps(memory_map(feats, self._memory), grid)[0]
            out["adapter_memory"] = scoremap_from_grid(mf, query.size_hw)
        out["adapter_text"] = self._s_text(proj, text, query.size_hw)
        return out

    def _s_text(self, proj, text, size_hw) -> ScoreMap:
        score, flat = text_branch(proj, text, self.normalize, self.logit_scale)
        sm = scoremap_from_grid(grid_maps(flat, self.backbone.grid)[0], size_hw)
        return ScoreMap(map=sm.map, score=float(score[0]), grid=sm.grid)

    def s_text(self, query: Query | ImageInput) -> ScoreMap:
        """One-to-Normal's S_text (eq. 6) for a query: score (1/n) sum_l max_G p_l, map mean_l p_l."""
        if not isinstance(query, Query):
            rgb = to_rgb_array(query)
            query = Query(rgb, sha256_of_array(rgb), rgb.shape[:2])
        proj = self._projected(self.stage_features(query.rgb, query.sha256))
        return self._s_text(proj, self.backbone.text_features(self.class_name), query.size_hw)

    def describe(self) -> dict:
        """What is loaded, for UIs and metrics.json."""
        ck = self.checkpoint
        return {"path": self.path, "backbone": ck.backbone.to_dict(), "stages": list(ck.stages),
                "training": ck.training, "metrics": ck.metrics, "memory_per_stage": self.memory_size()}


def load_adapter_scorer(ckpt_path, engine_config, backbone: AdapterBackbone | None = None) -> AdapterScorer:
    """An AdapterScorer for a checkpoint file, on the backbone the checkpoint names (loaded with the
    engine config's device, precision and weights cache). A checkpoint trained with `--profile tiny`
    runs only on the tiny profile and vice versa (the heads fit one backbone's features)."""
    ckpt = load_checkpoint(ckpt_path)
    ref = ckpt.backbone
    if (ref.profile == "tiny") != (engine_config.profile == "tiny"):
        trained = "the tiny random backbone (--profile tiny)" if ref.profile == "tiny" else f"{ref.name} ({ref.tag})"
        raise ValueError(f"the adapter checkpoint {ckpt_path} was trained on {trained}; it cannot run on the "
                         f"{engine_config.profile} profile. Use --profile {ref.profile}, or train adapters for this "
                         f"profile with `python -m fsad_core adapters train`")
    if backbone is None or backbone.ref != ref:
        backbone = AdapterBackbone(ref, device=engine_config.device, precision=engine_config.precision,
                                   cache_dir=engine_config.cache_dir)
    return AdapterScorer(ckpt, backbone, str(ckpt_path))
