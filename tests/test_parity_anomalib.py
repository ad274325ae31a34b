"""Numerical parity with anomalib 2.x's WinCLIP (the reference implementation), in fp32.

Same random tiny CLIP weights, same image, same text embeddings (we overwrite anomalib's
`_text_embeddings` with ours: our ensemble has the paper's 22 templates, anomalib's 21).

Known upstream divergence, pinned by `test_anomalib_window_path_mixes_windows_with_open_clip_3`:
anomalib 2.7's `_get_window_embeddings` permutes the windows NLD -> LND before calling
`clip.visual.transformer`, which was right for open_clip < 2.2x (sequence-first transformer) but
open_clip 3.x's transformer is batch-first, so each window there attends to the *other windows*
instead of to its own tokens. For the window-embedding comparison we undo that permutation around
the transformer call; every scoring function is compared on identical embeddings.
"""
from __future__ import annotations

import copy

import pytest
import torch

anomalib_winclip = pytest.importorskip("anomalib.models.image.winclip.torch_model")
from anomalib.models.image.winclip.torch_model import WinClipModel  # noqa: E402

from fsad_core.engine import Engine  # noqa: E402


class _SequenceFirstAdapter(torch.nn.Module):
    """Lets anomalib's window path (which passes L, N, D) run a batch-first open_clip transformer."""

    def __init__(self, transformer: torch.nn.Module, n_full_tokens: int):
        super().__init__()
        self.inner = transformer
        self.n_full_tokens = n_full_tokens

    def forward(self, x, attn_mask=None):
        if x.shape[1] == self.n_full_tokens:  # the full-image pass: already (N, L, D)
            return self.inner(x, attn_mask=attn_mask)
        return self.inner(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)


def _anomalib_model(clip_model, monkeypatch, fix_layout: bool) -> WinClipModel:
    clip = copy.deepcopy(clip_model)
    if fix_layout:
        n_tokens = 1 + clip.visual.grid_size[0] * clip.visual.grid_size[1]
        clip.visual.transformer = _SequenceFirstAdapter(clip.visual.transformer, n_tokens)
    monkeypatch.setattr(anomalib_winclip.open_clip, "create_model_and_transforms",
                        lambda *a, **k: (clip, None, None))
    return WinClipModel(class_name=None, reference_images=None, scales=(2, 3)).eval()


@pytest.fixture
def setup(tiny_config, tiny_backbone, images, monkeypatch):
    engine = Engine(tiny_config.replace(scales=(1, 2, 3)), backbone=tiny_backbone)
    engine.set_class_name("bottle")
    engine.add_shot(images["normal"], kind="normal")
    ours_text = engine.text_embeddings()
    ref = _anomalib_model(tiny_backbone.model, monkeypatch, fix_layout=True)
    ref._text_embeddings = ours_text.clone()
    shot_px = tiny_backbone.preprocess(images["normal"])
    query_px = tiny_backbone.preprocess(images["query"])
    return engine, ref, shot_px, query_px


def test_window_embeddings_match(setup):
    engine, ref, _, query_px = setup
    with torch.no_grad():
        img_emb, win_embs, patch_emb = ref.encode_image(query_px)
    enc = engine.backbone.encode_batch(query_px)[0]
    torch.testing.assert_close(enc.image_emb, img_emb[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(enc.patch_tokens, patch_emb[0], atol=1e-4, rtol=1e-4)
    for scale, theirs in zip((2, 3), win_embs):
        ours = engine.backbone.window_embeddings(enc.token_map, scale)
        torch.testing.assert_close(ours, theirs[0], atol=1e-4, rtol=1e-4)


def test_text_zero_shot_and_few_shot_scores_match(setup, images):
    engine, ref, shot_px, query_px = setup
    with torch.no_grad():
        ref.setup(reference_images=shot_px)  # anomalib's own memory from the same shot
        img_emb, win_embs, patch_emb = ref.encode_image(query_px)
        from anomalib.models.image.winclip.utils import class_scores

        their_text = class_scores(img_emb, ref.text_embeddings, ref.temperature, target_class=1)
        their_zs = ref._compute_zero_shot_scores(their_text, win_embs)[0]
        their_fs = ref._compute_few_shot_scores(patch_emb, win_embs)[0]
    r = engine.score(images["query"])
    assert r.components["text"].score == pytest.approx(float(their_text[0]), abs=1e-4)
    torch.testing.assert_close(torch.from_numpy(r.components["zero_shot"].grid), their_zs, atol=1e-4, rtol=0)
    ours_fs = torch.stack([torch.from_numpy(r.components[f"normal@{p}"].grid) for p in (16, 32, 48)]).mean(0)
    torch.testing.assert_close(ours_fs, their_fs, atol=1e-4, rtol=0)


def test_scoring_functions_match_on_identical_embeddings(setup, images):
    """Independent of the window path: feed our own embeddings into anomalib's scoring code."""
    engine, _, _, _ = setup
    ref_plain = _anomalib_model(engine.backbone.model, pytest.MonkeyPatch(), fix_layout=False)
    ref_plain._text_embeddings = engine.text_embeddings().clone()
    shot = engine._shot_features[engine.shots[0].id]
    ref_plain._patch_embeddings = shot.encoding.patch_tokens[None]
    ref_plain._visual_embeddings = [shot.windows[2][None], shot.windows[3][None]]
    r = engine.score(images["query"])
    q = engine._cache[r.query_sha256]
    wins = [q.windows[2][None], q.windows[3][None]]
    with torch.no_grad():
        fs = ref_plain._compute_few_shot_scores(q.encoding.patch_tokens[None], wins)[0]
        zs = ref_plain._compute_zero_shot_scores(torch.tensor([r.components["text"].score]), wins)[0]
    ours_fs = torch.stack([torch.from_numpy(r.components[f"normal@{p}"].grid) for p in (16, 32, 48)]).mean(0)
    torch.testing.assert_close(ours_fs, fs, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.from_numpy(r.components["zero_shot"].grid), zs, atol=1e-5, rtol=0)


def test_anomalib_window_path_mixes_windows_with_open_clip_3(tiny_backbone, images, monkeypatch):
    """Pins the upstream layout bug described above: if anomalib fixes it, this test tells us."""
    ref = _anomalib_model(tiny_backbone.model, monkeypatch, fix_layout=False)
    px = tiny_backbone.preprocess(images["query"])
    with torch.no_grad():
        _, win_embs, _ = ref.encode_image(px)
    enc = tiny_backbone.encode_batch(px)[0]
    ours = tiny_backbone.window_embeddings(enc.token_map, 2)
    assert not torch.allclose(ours, win_embs[0][0], atol=1e-3)


def test_winclip_plus_preset_equals_anomalib_forward(tiny_config, tiny_backbone, monkeypatch):
    """`--weights winclip+` reproduces WinCLIP+ as anomalib 2.7 computes it (one normal shot, scales
    2, 3, window layout corrected): image score 1/2 (text + max mean normal map), map 1/2 (zero-shot
    map + mean normal map), at the query's resolution (240 px here, anomalib's input size)."""
    from conftest import textured

    shot, query = textured(11, 240, 240), textured(12, 240, 240)
    engine = Engine(tiny_config.replace(scales=(1, 2, 3)), backbone=tiny_backbone)
    engine.set_class_name("bottle")
    engine.add_shot(shot, kind="normal")
    ref = _anomalib_model(tiny_backbone.model, monkeypatch, fix_layout=True)
    ref._text_embeddings = engine.text_embeddings().clone()
    with torch.no_grad():
        ref.setup(reference_images=tiny_backbone.preprocess(shot))
        out = ref(tiny_backbone.preprocess(query))
    agg = engine.score(query).aggregate("winclip+")
    assert agg.score == pytest.approx(float(out.pred_score[0]), abs=1e-4)
    assert agg.map.shape == tuple(out.anomaly_map.shape[-2:])
    torch.testing.assert_close(torch.from_numpy(agg.map), out.anomaly_map[0].float(), atol=1e-4, rtol=0)
