"""The mask assistant on the tiny profile: the real SamPredictor / SAM2ImagePredictor code paths on
small random models, plus one model whose mask decoder output we control (its mask is a disc around
the first click, computed from the real prompt encoder's positional encoding) to check that clicks
map between image pixels and SAM's 1024 frame for non-square images."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from fsad_core import masks as mask_ops
from fsad_core.images import sha256_of_array
from fsad_core.models import registry
from fsad_core.models.sam import (
    MaskAssistant,
    MaskProposal,
    default_model,
    resolve_spec,
    sam2_available,
    validate_prompts,
)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


class _EncoderCounter:
    """Counts real forward passes of a model's image encoder (a forward hook, nothing replaced)."""

    def __init__(self, module: torch.nn.Module):
        self.n = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.n += 1


class PointPeakDecoder(torch.nn.Module):
    """A mask decoder whose output we control: logits > 0 on a disc around the first prompt point.

    SAM's prompt encoder embeds a positive point as PE(p) + a label embedding, with PE random Fourier
    features [sin 2πGc, cos 2πGc] of the point's normalised position c in the 1024 frame. Removing
    the label embedding and correlating with the PE of every low-res cell gives
    mean_i cos(2π g_i·(c - q)), a kernel equal to 1 at q = c and falling off smoothly, so the mask is a
    disc centred exactly where the predictor put the click in SAM's frame. Whatever the predictor
    then does to bring masks back to the image (unpad, resize) decides where the disc lands.
    """

    def __init__(self, prompt_encoder, threshold: float = 0.9):
        super().__init__()
        self.pe = prompt_encoder
        self.threshold = threshold
        n = 256  # low-res logits side; cell j covers [4j, 4j + 4) of the 1024 frame
        centres = (torch.arange(n, dtype=torch.float32) * 4 + 2) / 1024
        yy, xx = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("grid_pe", prompt_encoder.pe_layer._pe_encoding(torch.stack([xx, yy], -1)), persistent=False)

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        token = sparse_prompt_embeddings[:, 0] - self.pe.point_embeddings[1].weight  # (B, 256): PE(first point)
        sim = torch.einsum("hwc,bc->bhw", self.grid_pe, token) / (token.shape[-1] // 2)
        logits = (sim - self.threshold) * 50.0
        n = 3 if multimask_output else 1
        iou = torch.tensor([[0.5, 0.9, 0.7]])[:, :n].expand(logits.shape[0], n)
        return logits[:, None].expand(-1, n, -1, -1).contiguous(), iou


def _expected_disc(pe_layer, hw, click, threshold=0.9):
    """Where `PointPeakDecoder`'s mask should be, computed straight in image pixels: pixel centres and
    the click scaled by 1024 / long side (SAM's ResizeLongestSide; padding goes right and bottom)."""
    h, w = hw
    s = 1024 / max(h, w)
    cx, cy = click
    r = int(60 * max(h, w) / 1024)
    y0, y1, x0, x1 = max(cy - r, 0), min(cy + r, h), max(cx - r, 0), min(cx + r, w)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    q = torch.tensor(np.stack([(xs + 0.5) * s, (ys + 0.5) * s], -1) / 1024, dtype=torch.float32)
    c = torch.tensor([[(cx + 0.5) * s / 1024, (cy + 0.5) * s / 1024]], dtype=torch.float32)
    with torch.no_grad():
        pq, pc = pe_layer._pe_encoding(q), pe_layer._pe_encoding(c)[0]
        sim = (pq @ pc / (pc.shape[0] // 2)).numpy()
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = sim > threshold
    return out


@pytest.fixture(scope="module")
def assistant():
    a = MaskAssistant(profile="tiny", device="cpu")
    return a.load()


@pytest.fixture(scope="module")
def peak_assistant():
    a = MaskAssistant(profile="tiny", device="cpu").load()
    a.model.mask_decoder = PointPeakDecoder(a.model.prompt_encoder)
    return a


# --- the predictor path ----------------------------------------------------------------------------
def test_predict_returns_masks_at_image_size_best_first(assistant):
    img = _image(480, 640)
    sha = assistant.set_image(img)
    assert sha == sha256_of_array(img) and assistant.is_ready(sha) and assistant.current_image == sha
    props = assistant.predict(points=[(100, 200, True)])
    assert len(props) == 3
    for p in props:
        assert isinstance(p, MaskProposal)
        assert p.mask.dtype == bool and p.mask.shape == (480, 640)
        assert p.logits.dtype == np.float32 and p.logits.shape == (256, 256)
        assert p.image_sha == sha and p.crop is None
        # the mask is SAM's thresholded logits, resized: same sign pattern up to interpolation
        assert p.area == int(p.mask.sum())
    ious = [p.iou for p in props]
    assert ious == sorted(ious, reverse=True)
    one = assistant.predict(points=[(100, 200, True)], box=(50, 150, 300, 260), multimask=False)
    assert len(one) == 1 and one[0].mask.shape == (480, 640)
    # the documented (mask, iou) pairs
    for (mask, iou), p in zip(props, props):
        assert mask is p.mask and iou == p.iou
    assert props[0][0] is props[0].mask and props[0][1] == props[0].iou


def test_numpy_prompts_work_in_every_mode(assistant):
    assistant.set_image(_image(480, 640))
    pts = np.array([[100, 200, 1], [120, 210, 0]])
    for zoom in (False, True):
        props = assistant.predict(points=pts, zoom=zoom)
        assert props[0].mask.shape == (480, 640)
        assert assistant.refine(props[0], points=pts)[0].mask.shape == (480, 640)


def test_refine_feeds_logits_back(assistant):
    assistant.set_image(_image(480, 640))
    first = assistant.predict(points=[(100, 200, True)])[0]
    again = assistant.refine(first, points=[(100, 200, True), (400, 300, False)])
    assert len(again) == 1 and again[0].mask.shape == (480, 640)
    # the previous logits are a real input: different logits give a different answer
    other = assistant.refine(-first.logits, points=[(100, 200, True), (400, 300, False)])
    assert not np.allclose(again[0].logits, other[0].logits)
    with pytest.raises(ValueError, match="low-res"):
        assistant.refine(np.zeros((64, 64), np.float32), points=[(1, 1, True)])


@pytest.mark.parametrize("hw, clicks", [
    ((480, 640), [(320, 240), (100, 380), (600, 50), (5, 470)]),
    ((900, 300), [(150, 450), (40, 820), (270, 60)]),
])
def test_click_mask_stays_where_the_click_is(peak_assistant, hw, clicks):
    h, w = hw
    peak_assistant.set_image(_image(h, w, seed=h))
    for x, y in clicks:
        best = peak_assistant.predict(points=[(x, y, True)], multimask=False)[0]
        m = best.mask
        assert m[y, x], f"click ({x}, {y}) not inside its own mask on a {w}x{h} image"
        ys, xs = np.nonzero(m)
        # the disc has ~37 px radius in the 1024 frame: ~23 px (640 wide) / ~33 px (900 tall) here
        radius = 37 * max(h, w) / 1024
        assert len(xs) > 0.5 * np.pi * radius**2 / 4  # at least a quarter disc (corners clip it)
        assert xs.min() > x - 1.3 * radius and xs.max() < x + 1.3 * radius
        assert ys.min() > y - 1.3 * radius and ys.max() < y + 1.3 * radius
        interior = radius + 2 < x < w - radius - 2 and radius + 2 < y < h - radius - 2
        if interior:  # the kernel is symmetric: the disc's centroid is the click
            assert abs(xs.mean() - x) < 1.5 and abs(ys.mean() - y) < 1.5
        # and its shape is the kernel mapped into the image with one scale for both axes: no axis
        # swapped, stretched (a 1024x1024 resize) or shifted by the padding
        expected = _expected_disc(peak_assistant.model.prompt_encoder.pe_layer, (h, w), (x, y))
        assert (m & expected).sum() / (m | expected).sum() > 0.9


def test_zoom_crop_mask_lands_on_the_click(peak_assistant):
    h, w = 1200, 1600
    peak_assistant.set_image(_image(h, w, seed=7))
    passes = peak_assistant.encoder_passes
    x, y = 1500, 300
    full = peak_assistant.predict(points=[(x, y, True)], multimask=False)[0]
    zoomed = peak_assistant.predict(points=[(x, y, True)], multimask=False, zoom=True)[0]
    assert zoomed.crop == mask_ops.crop_box_around((x, y), (h, w), 256) == (1344, 172, 1600, 428)
    assert peak_assistant.encoder_passes == passes + 1  # one pass for the crop
    ys, xs = np.nonzero(zoomed.mask)
    assert zoomed.mask[y, x] and abs(xs.mean() - x) < 1.5 and abs(ys.mean() - y) < 1.5
    x0, y0, x1, y1 = zoomed.crop
    assert not zoomed.mask[:y0].any() and not zoomed.mask[:, :x0].any()
    # SAM's frame holds 1600 px of the image, or 256 px zoomed: the same disc in SAM's frame
    # covers (256 / 1600)^2 = 1/39 of the area in the image's pixels when zoomed
    assert 0.018 < zoomed.area / full.area < 0.035
    # a second click well inside that crop reuses its embedding; refine stays in the crop
    again = peak_assistant.predict(points=[(x - 20, y + 10, True)], zoom=True)[0]
    assert again.crop == zoomed.crop and peak_assistant.encoder_passes == passes + 1
    refined = peak_assistant.refine(again, points=[(x - 20, y + 10, True)])[0]
    assert refined.crop == zoomed.crop and refined.mask[y + 10, x - 20]
    with pytest.raises(ValueError, match="outside the zoom crop"):
        peak_assistant.refine(again, points=[(100, 100, True)])


def test_zoom_on_a_small_image_uses_the_whole_image(assistant):
    assistant.set_image(_image(240, 260))
    p = assistant.predict(points=[(120, 100, True)], zoom=True)[0]
    assert p.crop is None and p.mask.shape == (240, 260)


# --- the embedding cache ---------------------------------------------------------------------------
def test_second_click_and_switching_back_run_no_encoder_pass():
    a = MaskAssistant(profile="tiny", device="cpu", cache_size=2).load()
    enc = _EncoderCounter(a.model.image_encoder)
    img1, img2, img3 = _image(300, 400, 1), _image(300, 400, 2), _image(300, 400, 3)
    s1 = a.set_image(img1)
    a.predict(points=[(10, 10, True)])
    a.predict(points=[(200, 100, True), (50, 60, False)])
    assert enc.n == 1 and a.encoder_passes == 1
    assert a.set_image(img1.copy()) == s1 and enc.n == 1  # same pixels, same sha, no pass
    s2 = a.set_image(img2)
    assert enc.n == 2
    a.set_image(img1)  # switching back is free
    a.predict(points=[(10, 10, True)], image_sha=s2)  # and so is a click on the other cached one
    assert enc.n == 2 and a.is_ready(s1) and a.is_ready(s2)
    s3 = a.set_image(img3)  # LRU of 2: s2 was clicked after s1 was set again -> s1 goes
    assert enc.n == 3 and a.cached_images() == [s2, s3] and not a.is_ready(s1)
    with pytest.raises(ValueError, match="call set_image first"):
        a.predict(points=[(10, 10, True)], image_sha=s1)
    enc.handle.remove()


def test_cache_key_includes_the_model():
    img = _image(200, 200)
    a = MaskAssistant(profile="tiny", device="cpu")
    sha = a.set_image(img)
    assert a.model_id == registry.get("sam", profile="tiny").id
    assert (a.model_id, sha) in a._cache


def test_click_waits_for_background_set_image():
    """The UI encodes in a background thread on upload; a click meanwhile must wait, not fail or
    encode again."""
    a = MaskAssistant(profile="tiny", device="cpu").load()
    started, release = threading.Event(), threading.Event()

    def hold(*_):
        started.set()
        release.wait(10)

    h = a.model.image_encoder.register_forward_pre_hook(hold)
    img = _image(240, 320)
    results = {}
    bg = threading.Thread(target=lambda: results.setdefault("sha", a.set_image(img)))
    bg.start()
    assert started.wait(10)
    click = threading.Thread(target=lambda: results.setdefault("props", a.predict(points=[(30, 40, True)])))
    twin = threading.Thread(target=lambda: results.setdefault("sha2", a.set_image(img)))
    click.start()
    twin.start()
    time.sleep(0.2)
    assert click.is_alive() and twin.is_alive()  # both wait for the encoder pass in flight
    release.set()
    for t in (bg, click, twin):
        t.join(20)
    h.remove()
    assert results["sha"] == results["sha2"] == sha256_of_array(img)
    assert len(results["props"]) == 3 and results["props"][0].mask.shape == (240, 320)
    assert a.encoder_passes == 1


def test_bf16_autocast_encoder_keeps_fp32_embeddings():
    a = MaskAssistant(profile="tiny", device="cpu", precision="bf16")
    sha = a.set_image(_image(200, 300))
    assert a._cache[(a.model_id, sha)].state["features"].dtype == torch.float32
    p = a.predict(points=[(100, 100, True)])[0]
    assert p.mask.shape == (200, 300) and np.isfinite(p.logits).all()


# --- prompts that make no sense -------------------------------------------------------------------
def test_bad_prompts_raise_teaching_errors(assistant):
    fresh = MaskAssistant(profile="tiny", device="cpu")
    with pytest.raises(ValueError, match="call set_image first"):
        fresh.predict(points=[(1, 1, True)])
    assistant.set_image(_image(480, 640))
    with pytest.raises(ValueError, match=r"point \(700, 10\) is outside the 640x480 image"):
        assistant.predict(points=[(700, 10, True)])
    with pytest.raises(ValueError, match=r"point \(10, 480\) is outside the 640x480 image"):
        assistant.predict(points=[(10, 480, True)])
    with pytest.raises(ValueError, match=r"point \(-1, 5\) is outside"):
        assistant.predict(points=[(-1, 5, True)])
    with pytest.raises(ValueError, match="give at least one point or a box"):
        assistant.predict(points=[])
    with pytest.raises(ValueError, match="give at least one point or a box"):
        assistant.predict()
    with pytest.raises(ValueError, match="only negative points"):
        assistant.predict(points=[(5, 5, False)])
    with pytest.raises(ValueError, match=r"\(x, y, is_positive\)"):
        assistant.predict(points=[(5, 5)])
    with pytest.raises(ValueError, match="NaN"):
        assistant.predict(points=[(float("nan"), 5, True)])
    with pytest.raises(ValueError, match="has no area"):
        assistant.predict(box=(10, 10, 10, 50))
    with pytest.raises(ValueError, match="extends outside the 640x480 image"):
        assistant.predict(box=(600, 400, 700, 479))
    with pytest.raises(ValueError, match=r"box must be \(x0, y0, x1, y1\)"):
        assistant.predict(box=(1, 2, 3))


def test_validate_prompts_converts_for_the_predictor():
    coords, labels, box = validate_prompts([(1, 2, True), (3.5, 4, False)], (30, 40, 10, 20), (50, 60))
    assert coords.tolist() == [[1, 2], [3.5, 4]] and labels.tolist() == [1, 0]
    assert box.tolist() == [10, 20, 30, 40]  # corners in any order
    assert validate_prompts(None, (0, 0, 60, 50), (50, 60))[0] is None
    # a box alone, or a box with negative clicks, is a valid prompt
    assert validate_prompts([(5, 5, False)], (0, 0, 10, 10), (50, 60))[1].tolist() == [0]


# --- models and weights ---------------------------------------------------------------------------
def test_model_resolution():
    assert resolve_spec("tiny").name == "fsad-tiny-sam"
    assert resolve_spec("tiny", "vit_h").name == "fsad-tiny-sam"
    assert resolve_spec("standard", "vit_l").filename == "sam_vit_l_0b3195.pth"
    assert default_model("cpu") == ("sam2.1_hiera_t" if sam2_available() else "vit_b")
    assert resolve_spec("standard", None, "cpu").name == default_model("cpu")
    with pytest.raises(ValueError, match="unknown SAM model 'vit_x'.*vit_b"):
        resolve_spec("standard", "vit_x")
    for name in ("vit_b", "vit_l", "vit_h"):
        spec = registry.get("sam", name)
        assert spec.source.startswith("https://dl.fbaipublicfiles.com/segment_anything/")
        # full sha256 digests (the 6 hex digits in the file names are an MD5 prefix, not a sha256 one)
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) and spec.size_bytes > 300_000_000


def test_for_config_follows_the_engine_profile():
    from fsad_core.config import EngineConfig

    a = MaskAssistant.for_config(EngineConfig(profile="tiny", device="cpu"))
    assert a.spec.profile == "tiny" and a.device.type == "cpu"
    b = MaskAssistant.for_config(EngineConfig(profile="standard", device="cpu"), model="vit_h")
    assert b.spec.name == "vit_h"


def test_missing_weights_say_how_to_get_them(tmp_path):
    a = MaskAssistant(model="vit_b", device="cpu", cache_dir=tmp_path, download=False)
    with pytest.raises(registry.ModelUnavailableError, match="models pull sam.*checkpoint=") as err:
        a.set_image(_image(100, 100))
    assert f"cache: {tmp_path}" in str(err.value)  # the cache in use, not the default one
    assert (err.value.reason, err.value.spec) == ("missing", registry.get("sam", "vit_b"))
    assert err.value.detail == "its weights are not in the cache and download=False"
    b = MaskAssistant(model="vit_b", device="cpu", checkpoint=tmp_path / "nope.pth")
    with pytest.raises(registry.ModelUnavailableError, match="no checkpoint file at") as err:
        b.load()
    assert err.value.reason == "missing" and err.value.model_id == "sam/vit_b@sam_vit_b_01ec64"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"<html>404</html>")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        MaskAssistant(model="vit_b", device="cpu", checkpoint=junk).load()


def test_cached_checkpoint_is_found_and_checked(tmp_path):
    """A file in the registry's cache is what the loader reads; a wrong one fails with a clear error."""
    spec = registry.get("sam", "vit_b")
    dest = tmp_path / "sam" / spec.filename
    dest.parent.mkdir(parents=True)
    torch.save(MaskAssistant(profile="tiny", device="cpu").model.state_dict(), dest)  # the wrong model
    a = MaskAssistant(model="vit_b", device="cpu", cache_dir=tmp_path, download=False)
    assert a.weights_path() == dest
    with pytest.raises(registry.ModelUnavailableError, match="does not fit vit_b") as err:
        a.load()
    assert err.value.reason == "invalid" and err.value.spec.name == "vit_b"


@pytest.mark.skipif(not sam2_available(), reason="the sam2 package is not installed")
def test_sam2_family_runs_the_same_interface():
    a = MaskAssistant(profile="tiny", model="sam2.1_hiera_t", device="cpu")
    assert a.spec.name == "fsad-tiny-sam2" and a.family == "sam2"
    sha = a.set_image(_image(300, 500))
    props = a.predict(points=[(100, 200, True)], box=(50, 150, 200, 260))
    assert len(props) == 3 and all(p.mask.dtype == bool and p.mask.shape == (300, 500) for p in props)
    assert [p.iou for p in props] == sorted((p.iou for p in props), reverse=True)
    r = a.refine(props[0], points=[(100, 200, True), (20, 20, False)])
    assert len(r) == 1 and r[0].logits.shape == (256, 256)
    assert a.set_image(_image(300, 500)) == sha and a.encoder_passes == 1


# --- mask helpers ----------------------------------------------------------------------------------
def test_merge_with_brush_strokes():
    brush = np.zeros((4, 6), bool)
    brush[1:3, 0:3] = True
    sam = np.zeros((4, 6), bool)
    sam[0:2, 2:5] = True
    assert mask_ops.merge(brush, sam, "union").sum() == 6 + 6 - 1  # they overlap at (1, 2)
    sub = mask_ops.merge(brush, sam, "subtract")
    assert sub.sum() == 5 and not (sub & sam).any()
    assert mask_ops.merge(brush, sam, "intersect").sum() == 1
    assert (mask_ops.merge(None, sam) == sam).all()
    assert mask_ops.merge(brush.astype(np.uint8) * 255, sam).dtype == bool  # editor layers are 0/255
    assert brush.sum() == 6  # inputs untouched
    with pytest.raises(ValueError, match="at the image's size"):
        mask_ops.merge(brush, np.zeros((5, 6), bool))
    with pytest.raises(ValueError, match="unknown merge mode"):
        mask_ops.merge(brush, sam, "xor")


def test_crop_geometry():
    assert mask_ops.crop_box_around((320, 240), (480, 640), 256) == (192, 112, 448, 368)
    assert mask_ops.crop_box_around((639, 479), (480, 640), 256) == (384, 224, 640, 480)
    assert mask_ops.crop_box_around((5, 5), (100, 80), 256) == (0, 0, 80, 100)
    box = mask_ops.crop_box_for_prompts([(100, 100, True), (180, 120, False)], None, (480, 640))
    assert box == (12, 0, 268, 256)  # centred on the extent (140, 110), shifted down into the image
    assert mask_ops.crop_box_for_prompts([], (0, 0, 200, 100), (480, 640)) == (0, 0, 600, 480)
    full = mask_ops.paste(np.ones((3, 2), bool), (4, 1, 6, 4), (8, 8))
    assert full.sum() == 6 and full[1:4, 4:6].all()
    with pytest.raises(ValueError, match="does not fit"):
        mask_ops.paste(np.ones((3, 2), bool), (7, 1, 9, 4), (8, 8))


def test_masks_docstring_examples():
    import doctest

    assert doctest.testmod(mask_ops).failed == 0


def test_download_verifies_the_full_sha256(tmp_path):
    """download_url streams to a temp file and keeps it only when its sha256 matches exactly."""
    import hashlib

    src = tmp_path / "weights.bin"
    src.write_bytes(b"fsad" * 1000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    seen = []
    got = registry.download_url(src.as_uri(), tmp_path / "cache" / "ok.bin", digest, progress=lambda f, m: seen.append((f, m)))
    assert got.read_bytes() == src.read_bytes() and seen[-1] == (1.0, "0.0/0.0 MB")
    with pytest.raises(registry.ModelUnavailableError, match="checksum mismatch") as err:
        registry.download_url(src.as_uri(), tmp_path / "cache" / "bad.bin", digest[:6] + "0" * 58, progress=False)
    assert err.value.reason == "checksum" and err.value.detail.startswith("checksum mismatch for ")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["ok.bin"]  # no partial file left
