"""One-to-Normal personalization on the tiny random diffusion model: the real LoRA training loop,
SDEdit at t = 0.3 T, the SSIM choice, the pool, checkpoints/resume and offline errors."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from fsad_core.personalize import (
    PersonalizationResult, PersonalizeConfig, Personalizer, choose_by_ssim, difference_map, load_pool,
    normal_prompts, save_pool, ssim, training_state,
)


def _img(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    """A smooth random picture (noise images make SSIM meaningless)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


@pytest.fixture(scope="module")
def fast():
    return Personalizer(PersonalizeConfig(profile="tiny", preset="fast"))


def _count_unet(p: Personalizer):
    calls = []
    handle = p.pipeline.unet.register_forward_hook(
        lambda m, args, kwargs_or_out, *rest: calls.append((args[0].shape[0], float(torch.as_tensor(args[1]).flatten()[0]))))
    return calls, handle


# --- prompts, config, SSIM ---------------------------------------------------------------------------
def test_normal_prompts_follow_appendix_a1():
    ps = normal_prompts("metal_nut")
    assert len(ps) == 23 and len(set(ps)) == 23
    assert ps[:3] == [f"a photo of normal metal nut without {w}" for w in ("flaw", "defect", "damage")]
    assert "a photo of the small normal metal nut" in ps and "a low resolution photo of a normal metal nut" in ps
    assert normal_prompts("metal_nut", "fast") == ps[:3]
    assert normal_prompts("x", ("{o}", "a dark photo of {c}")) == ["a photo of normal x", "a dark photo of normal x"]
    with pytest.raises(ValueError, match="prompts must be"):
        normal_prompts("x", "some")


def test_config_presets_and_validation():
    fast, paper = PersonalizeConfig(preset="fast"), PersonalizeConfig(preset="paper")
    assert fast.guidance_scale <= 1 and fast.tiny_vae and fast.resolution == 256 and fast.prompts == "fast"
    assert paper.guidance_scale > 1 and not paper.tiny_vae and paper.resolution == 512 and paper.prompts == "all"
    assert paper.denoising_steps == 15 and fast.denoising_steps == 6  # int(50 * 0.3), int(20 * 0.3)
    assert PersonalizeConfig(preset="fast", resolution=512).resolution == 512  # explicit beats preset
    assert PersonalizeConfig(profile="tiny").resolution == 32
    for bad in (dict(strength=0.0), dict(strength=1.5), dict(resolution=100), dict(preset="x"),
                dict(strength=0.01, num_inference_steps=10), dict(profile="big")):
        with pytest.raises(ValueError):
            PersonalizeConfig(**bad)


def test_ssim_choice_on_known_images():
    q = _img(1, 64, 64)
    near = np.clip(q.astype(int) + np.random.default_rng(0).integers(-6, 7, q.shape), 0, 255).astype(np.uint8)
    shifted = np.roll(q, 9, axis=1)
    inverted = 255 - q
    flat = np.full_like(q, 128)
    idx, scores = choose_by_ssim(q, [inverted, flat, shifted, near])
    assert idx == 3
    assert scores[3] > 0.9 > scores[2] and scores[0] < 0.0 < scores[3]
    assert ssim(q, q) == pytest.approx(1.0)
    assert choose_by_ssim(q, [q.copy(), q.copy()])[0] == 0  # ties go to the first prompt
    d = difference_map(q, inverted)
    assert d.dtype == np.float32 and d.shape == (64, 64) and 0.0 <= d.min() and d.max() <= 1.0
    with pytest.raises(ValueError):
        choose_by_ssim(q, [])


def test_tiny_tokenizer_is_local_and_clip_like():
    from fsad_core.models.diffusion import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    ids = tok("a photo of normal bottle without flaw").input_ids
    assert tok.convert_ids_to_tokens(ids)[1:-1] == ["a</w>", "photo</w>", "of</w>", "normal</w>", "bottle</w>",
                                                      "without</w>", "flaw</w>"]
    assert max(tok("ünïcode & 12 zebras").input_ids) < 1000 and tok.model_max_length == 77


# --- SDEdit -------------------------------------------------------------------------------------------
def test_sdedit_runs_int_strength_times_steps_from_0_3_T(fast):
    q = _img(2)
    calls, handle = _count_unet(fast)
    try:
        r = fast.personalize(q, "bottle")
    finally:
        handle.remove()
    assert isinstance(r, PersonalizationResult)
    # fast preset: 3 prompts in one batch, no CFG -> int(20 * 0.3) = 6 UNet calls of batch 3
    assert [b for b, _ in calls] == [3] * 6
    assert [t for _, t in calls] == [299, 249, 199, 149, 99, 49]  # from t = 0.3 T, trailing spacing
    assert r.chosen.shape == q.shape and r.chosen.dtype == np.uint8
    assert [p for p, _, _ in r.reconstructions] == normal_prompts("bottle", "fast")
    assert all(im.shape == q.shape and im.dtype == np.uint8 for _, im, _ in r.reconstructions)
    sims = [s for _, _, s in r.reconstructions]
    assert r.chosen_index == int(np.argmax(sims)) and r.chosen_prompt == r.reconstructions[r.chosen_index][0]
    assert np.array_equal(r.chosen, r.reconstructions[r.chosen_index][1]) and r.ssim == max(sims)
    assert r.seconds > 0 and r.strength == 0.3 and r.difference.shape == q.shape[:2]


def test_sdedit_is_seeded_and_strength_matters(fast):
    q = _img(3, 32, 32)
    a, b = fast.personalize(q, "bottle", seed=5), fast.personalize(q, "bottle", seed=5)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a.reconstructions, b.reconstructions))
    c = fast.personalize(q, "bottle", seed=6)
    assert not np.array_equal(a.reconstructions[0][1], c.reconstructions[0][1])
    d = fast.personalize(q, "bottle", seed=5, strength=0.8)
    assert not np.array_equal(a.reconstructions[0][1], d.reconstructions[0][1])
    # prompts start from the same noise: reconstructions differ only through the prompt embedding
    assert not np.array_equal(a.reconstructions[0][1], a.reconstructions[1][1])
    with pytest.raises(ValueError, match="strength"):
        fast.personalize(q, "bottle", strength=0.0)


def test_paper_preset_uses_cfg_and_every_prompt():
    p = Personalizer(PersonalizeConfig(profile="tiny", preset="paper", num_inference_steps=10))
    calls, handle = _count_unet(p)
    try:
        r = p.personalize(_img(4), "screw")
    finally:
        handle.remove()
    assert len(r.reconstructions) == 23
    # 23 prompts in batches of 8 (8, 8, 7), each doubled by CFG, 3 steps (int(10 * 0.3)) from 0.3 T
    assert [b for b, _ in calls] == [16] * 3 + [16] * 3 + [14] * 3
    assert [t for _, t in calls[:3]] == [299, 199, 99]


# --- training, checkpoints, resume ---------------------------------------------------------------------
def _lora_tensors(p: Personalizer) -> dict:
    return {k: v.detach().clone() for k, v in p.pipeline.unet.state_dict().items() if "lora_B" in k}


def test_lora_training_loop_saves_small_weights_that_change_outputs(tmp_path):
    cfg = PersonalizeConfig(profile="tiny", preset="fast", train_steps=3, learning_rate=5e-2)
    p = Personalizer(cfg)
    shots = [_img(10), _img(11)]
    q = _img(12, 32, 32)
    before = p.personalize(q, "bottle")
    seen = []
    out = p.train(shots, "bottle", tmp_path / "lora", progress=lambda s, t, eta: seen.append((s, t, eta)))
    assert out == tmp_path / "lora"
    w = out / "pytorch_lora_weights.safetensors"
    assert w.is_file() and w.stat().st_size < 1_000_000
    st = training_state(out)
    assert st["complete"] and st["step"] == 3 and st["class_name"] == "bottle"
    assert len(list((out / "class_images").glob("*.png"))) == cfg.num_class_images
    assert [s for s, t, _ in seen if s > 0] == [1, 2, 3] and all(t == 3 and eta >= 0 for _, t, eta in seen)
    assert np.isfinite(p.last_loss)
    lora = _lora_tensors(p)
    assert lora and all(v.abs().sum() > 0 for v in lora.values())  # B starts at zero: it was trained
    after = p.personalize(q, "bottle")
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(before.reconstructions, after.reconstructions))
    assert p.lora_dir == out

    # a fresh personalizer loading the saved weights reproduces the tuned model's output
    p2 = Personalizer(cfg)
    p2.load_lora(out)
    again = p2.personalize(q, "bottle")
    for x, y in zip(after.reconstructions, again.reconstructions):
        assert np.abs(x[1].astype(int) - y[1].astype(int)).max() <= 1
    # training an already finished folder only loads it
    seen.clear()
    p2.train(shots, "bottle", out, progress=lambda *a: seen.append(a))
    assert seen == [] and p2.lora_dir == out


def test_cancel_then_resume_equals_uninterrupted_run(tmp_path):
    cfg = PersonalizeConfig(profile="tiny", preset="fast", train_steps=4, checkpoint_every=1, learning_rate=1e-2,
                           num_inference_steps=10)
    shots = [_img(20)]
    full = Personalizer(cfg)
    full.train(shots, "cable", tmp_path / "a")
    ref = _lora_tensors(full)

    p = Personalizer(cfg)
    cancel = threading.Event()

    def stop_at_two(step, total, eta):
        if step == 2:
            cancel.set()

    out = p.train(shots, "cable", tmp_path / "b", progress=stop_at_two, cancel=cancel)
    st = training_state(out)
    assert st["step"] == 2 and not st["complete"] and not (out / "pytorch_lora_weights.safetensors").exists()
    assert [c.name for c in out.glob("checkpoint-*")] == ["checkpoint-2"]
    with pytest.raises(FileNotFoundError, match="step 2 of 4"):
        Personalizer(cfg).load_lora(out)

    resumed = Personalizer(cfg)
    steps = []
    resumed.train(shots, "cable", out, progress=lambda s, t, e: steps.append(s))
    assert steps == [3, 4] and training_state(out)["complete"]
    got = _lora_tensors(resumed)
    assert got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k])

    # other shots: the folder starts over instead of resuming someone else's run
    steps.clear()
    resumed.train([_img(21)], "cable", out, progress=lambda s, t, e: steps.append(s))
    assert [s for s in steps if s > 0] == [1, 2, 3, 4]


def test_cancel_before_start_returns_quickly(tmp_path):
    p = Personalizer(PersonalizeConfig(profile="tiny", preset="fast"))
    ev = threading.Event()
    ev.set()
    out = p.train([_img(30)], "pill", tmp_path / "c", cancel=ev)
    st = training_state(out)
    assert st["step"] == 0 and not st["complete"]
    with pytest.raises(ValueError, match="at least one normal shot"):
        p.train([], "pill", tmp_path / "d")


# --- pool ------------------------------------------------------------------------------------------------
def test_pool_personalizes_shots_then_generates(fast, tmp_path):
    shots = [_img(40, 36, 44)]
    seen = []
    pool = fast.generate_pool("bottle", n=3, normals=shots, seed=1, progress=lambda k, n, eta: seen.append((k, n)))
    assert len(pool) == 3 and seen == [(1, 3), (2, 3), (3, 3)]
    assert pool[0].shape == (36, 44, 3)  # the shot personalized, at its own size
    assert np.array_equal(pool[0], fast.personalize(shots[0], "bottle", seed=1).chosen)
    assert all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im in pool[1:])
    assert not np.array_equal(pool[1], pool[2])
    again = fast.generate_pool("bottle", n=3, normals=shots, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(pool, again))
    paths = save_pool(pool, tmp_path / "pool")
    assert len(paths) == 3 and all(np.array_equal(a, b) for a, b in zip(pool, load_pool(tmp_path / "pool")))


def test_pool_text_to_image_when_no_shots():
    p = Personalizer(PersonalizeConfig(profile="tiny", preset="paper", num_inference_steps=4))
    calls, handle = _count_unet(p)
    try:
        pool = p.generate_pool("wood", n=2)
    finally:
        handle.remove()
    assert len(pool) == 2 and all(im.shape == (32, 32, 3) for im in pool)
    assert len(calls) == 2 * 4 and all(b == 2 for b, _ in calls)  # full schedule, CFG doubles the batch
    assert p.generate_pool("wood", n=0) == []


# --- estimates and offline errors -------------------------------------------------------------------------
def test_estimates_are_positive_and_ordered():
    p = Personalizer(PersonalizeConfig(profile="standard", preset="fast", device="cpu"))
    paper = Personalizer(PersonalizeConfig(profile="standard", preset="paper", device="cpu"))
    fast_s, paper_s = p.estimate_seconds("personalize"), paper.estimate_seconds("personalize")
    assert 0 < fast_s < paper_s
    assert p.estimate_seconds("train") > fast_s and p.estimate_seconds("pool") > 0
    with pytest.raises(ValueError):
        p.estimate_seconds("other")


def test_standard_model_missing_raises_a_teaching_error(tmp_path):
    import huggingface_hub.constants as hc

    from fsad_core.models.registry import ModelUnavailableError

    if not hc.HF_HUB_OFFLINE:
        pytest.skip("needs HF_HUB_OFFLINE=1 (set by tests/conftest.py) so that no download is attempted")
    p = Personalizer(PersonalizeConfig(profile="standard", cache_dir=str(tmp_path), device="cpu"))
    with pytest.raises(ModelUnavailableError, match="stable-diffusion-v1-5.*models pull"):
        p.pipeline
    from fsad_core.models.diffusion import load_tiny_vae

    with pytest.raises(ModelUnavailableError, match="taesd"):
        load_tiny_vae("standard", torch.float32, tmp_path)


def test_docstring_examples():
    import doctest

    import fsad_core.models.diffusion as diffusion
    import fsad_core.personalize as personalize

    for mod in (personalize, diffusion):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
        assert res.failed == 0 and res.attempted > 0
