"""One-to-Normal personalization on the tiny random diffusion model: the real LoRA training loop,
SDEdit at t = 0.3 T, the SSIM choice, the pool, checkpoints/resume and offline errors."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from fsad_core.personalize import (
    PersonalizationResult,
    PersonalizeConfig,
    Personalizer,
    choose_by_ssim,
    difference_map,
    load_pool,
    normal_prompts,
    save_pool,
    ssim,
    training_state,
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


class _Log(list):
    """A progress callback (fsad_core.progress: fraction, message) that keeps what it hears."""

    def __call__(self, fraction: float, message: str = "") -> None:
        self.append((fraction, message))

    @property
    def steps(self) -> list[int]:
        """The optimizer steps reported ("Training: step 3/4, about 2 s left" -> 3)."""
        return [int(m.split("step ")[1].split("/")[0]) for _, m in self if m.startswith("Training: step ")]

    @property
    def fractions(self) -> list[float]:
        return [f for f, _ in self]


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
    seen = _Log()
    out = p.train(shots, "bottle", tmp_path / "lora", progress=seen)
    assert out == tmp_path / "lora"
    w = out / "pytorch_lora_weights.safetensors"
    assert w.is_file() and w.stat().st_size < 1_000_000
    st = training_state(out)
    assert st["complete"] and st["step"] == 3 and st["class_name"] == "bottle"
    assert len(list((out / "class_images").glob("*.png"))) == cfg.num_class_images
    assert seen.steps == [1, 2, 3] and all("/3, about" in m for _, m in seen if m.startswith("Training"))
    assert seen.fractions == sorted(seen.fractions) and seen.fractions[-1] == 1.0
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

    def stop_at_two(fraction, message):
        if message.startswith("Training: step 2/"):
            cancel.set()

    out = p.train(shots, "cable", tmp_path / "b", progress=stop_at_two, cancel=cancel)
    st = training_state(out)
    assert st["step"] == 2 and not st["complete"] and not (out / "pytorch_lora_weights.safetensors").exists()
    assert [c.name for c in out.glob("checkpoint-*")] == ["checkpoint-2"]
    with pytest.raises(FileNotFoundError, match="step 2 of 4"):
        Personalizer(cfg).load_lora(out)

    resumed = Personalizer(cfg)
    log = _Log()
    resumed.train(shots, "cable", out, progress=log)
    assert log.steps == [3, 4] and training_state(out)["complete"]
    # the resumed run's bar covers its own steps and only moves forward
    assert log.fractions == sorted(log.fractions) and log.fractions[-1] == 1.0
    got = _lora_tensors(resumed)
    assert got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k])

    # other shots: the folder starts over instead of resuming someone else's run
    log = _Log()
    resumed.train([_img(21)], "cable", out, progress=log)
    assert log.steps == [1, 2, 3, 4]


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
    seen = _Log()
    pool = fast.generate_pool("bottle", n=3, normals=shots, seed=1, progress=seen)
    assert len(pool) == 3 and [m.split(",")[0] for _, m in seen] == ["Pool: 1/3", "Pool: 2/3", "Pool: 3/3"]
    assert seen.fractions == pytest.approx([1 / 3, 2 / 3, 1.0])
    # the time left is shown once two images are timed (measured, not guessed from one)
    assert "measuring the time per image" in seen[0][1] and "about" in seen[1][1]
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
    with pytest.raises(ModelUnavailableError, match="stable-diffusion-v1-5.*models pull") as err:
        _ = p.pipeline
    assert err.value.reason == "offline" and err.value.model_id == "diffusion/stable-diffusion-v1-5@fp16"
    from fsad_core.models.diffusion import load_tiny_vae

    with pytest.raises(ModelUnavailableError, match="taesd"):
        load_tiny_vae("standard", torch.float32, tmp_path)


def test_docstring_examples():
    import doctest

    import fsad_core.models.diffusion as diffusion
    from fsad_core.personalize import pixels, prompts, training

    for mod in (prompts, pixels, training, diffusion):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
        assert res.failed == 0 and res.attempted > 0


# --- audit fixes: cancel, changed totals, pools, reconfigure, pulls ------------------------------------------
def test_cancel_removes_the_partial_adapter(tmp_path):
    cfg = PersonalizeConfig(profile="tiny", preset="fast", train_steps=4, checkpoint_every=1, learning_rate=5e-2)
    q = _img(50, 32, 32)
    base = Personalizer(cfg).personalize(q, "bottle")
    p = Personalizer(cfg)
    cancel = threading.Event()
    out = p.train([_img(51)], "bottle", tmp_path / "lora", cancel=cancel,
                  progress=lambda f, m: cancel.set() if "step 2/" in m else None)
    assert training_state(out)["step"] == 2 and not training_state(out)["complete"]
    assert not p.has_adapter() and p.lora_dir is None and p.model_id is None
    after = p.personalize(q, "bottle")
    for x, y in zip(base.reconstructions, after.reconstructions):
        assert np.array_equal(x[1], y[1])  # the base model's output, not the half-trained adapter's
    # the checkpoint kept the progress: the same personalizer resumes and finishes
    log = _Log()
    p.train([_img(51)], "bottle", out, progress=log)
    assert log.steps == [3, 4] and training_state(out)["complete"] and p.has_adapter() and p.model_id


def test_changed_train_steps_extend_or_start_over_never_mislabel(tmp_path):
    cfg = PersonalizeConfig(profile="tiny", preset="fast", train_steps=2, learning_rate=1e-2, num_inference_steps=10)
    shots = [_img(60)]
    ref2 = Personalizer(cfg)
    ref2.train(shots, "cable", tmp_path / "ref2")
    ref4 = Personalizer(cfg.replace(train_steps=4))
    ref4.train(shots, "cable", tmp_path / "ref4")

    p = Personalizer(cfg)
    out = p.train(shots, "cable", tmp_path / "lora")
    # more steps on a finished folder: resumed from its last checkpoint, equal to a 4-step run
    log = _Log()
    p.reconfigure(train_steps=4).train(shots, "cable", out, progress=log)
    st = training_state(out)
    assert log.steps == [3, 4] and st["step"] == st["total"] == 4 and st["complete"]
    for k, v in _lora_tensors(ref4).items():
        torch.testing.assert_close(_lora_tensors(p)[k], v)
    # fewer steps than the folder holds: starts over instead of labelling 4 steps' weights "2 of 2"
    log = _Log()
    p.reconfigure(train_steps=2).train(shots, "cable", out, progress=log)
    st = training_state(out)
    assert log.steps == [1, 2] and st["step"] == st["total"] == 2 and st["complete"]
    for k, v in _lora_tensors(ref2).items():
        torch.testing.assert_close(_lora_tensors(p)[k], v)
    assert st["model_id"] == p.model_id
    # another compute precision is another run (fingerprinted as resolved: "auto" differs by machine)
    log = _Log()
    other = "bf16" if p.precision_name == "fp32" else "fp32"  # whichever "auto" did not resolve to here
    p.reconfigure(precision=other).train(shots, "cable", out, progress=log)
    st = training_state(out)
    assert st["fingerprint"]["precision"] == other and log.steps == [1, 2] and st["complete"]
    # an unfinished folder is not loaded even if stale final weights lie around
    (out / "state.json").write_text((out / "state.json").read_text().replace('"complete": true', '"complete": false'))
    with pytest.raises(FileNotFoundError, match="step 2 of 2"):
        Personalizer(cfg).load_lora(out)


def test_training_reports_the_prior_image_phase(tmp_path):
    p = Personalizer(PersonalizeConfig(profile="tiny", preset="fast", num_class_images=3, train_steps=2))
    seen = []
    p.train([_img(70)], "pill", tmp_path / "lora", progress=lambda f, m: seen.append((p.phase, f, m)))
    prior = [(ph, m) for ph, _, m in seen if ph[0] == "prior images"]
    assert [ph[1] for ph, _ in prior] == [0, 1, 2, 3] and all(ph[2] == 3 for ph, _ in prior)
    # the phase in words, with a time left from the first line on
    assert [m.split(" (")[0] for _, m in prior[:3]] == [f"Generating prior images {i}/3" for i in (1, 2, 3)]
    assert prior[-1][1].startswith("Generated 3 prior images; encoding the shots")
    assert all("about" in m for _, m in prior)
    assert [(ph[0], m.split(",")[0]) for ph, _, m in seen if ph[0] != "prior images"] == \
        [("training", "Training: step 1/2"), ("training", "Training: step 2/2")]
    # one bar over both phases (3 prior images + 2 steps), never jumping back
    assert [round(f, 2) for _, f, _ in seen] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert p.phase == ("idle", 0, 0)


def test_training_progress_moves_forward_and_its_time_left_never_grows():
    """The trainer's progress line on noisy estimates: one bar over prior images and steps (no jump
    back), a time left that never grows."""
    from fsad_core.personalize import TrainingProgress

    seen = _Log()
    r = TrainingProgress(seen, train_steps=10)
    for i in range(4):
        r.prior_images(i, 4, 80 - i)
    r.prior_images(4, 4, 79)  # grew: still shown as 77
    for step, eta in zip(range(1, 11), (75, 60, 65, 50, 40, 30, 20, 10, 5, 0)):
        r.step(step, eta)
    assert seen.fractions == sorted(seen.fractions) and seen.fractions[-1] == 1.0
    assert "step 10/10" in seen[-1][1] and "Generating prior images 1/4" in seen[0][1]
    etas = [float(m.split("about ")[1].split(" ")[0]) for _, m in seen]
    assert etas == sorted(etas, reverse=True) and etas[4] == 77 and etas[7] == 60
    assert TrainingProgress(None, 3).step(1, 5.0) is None  # no callback: nothing to report


def test_pool_says_where_it_came_from_and_saving_is_all_or_nothing(fast, tmp_path):
    from fsad_core.personalize import Pool, pool_info

    with pytest.warns(UserWarning, match="base model"):
        pool = fast.generate_pool("bottle", n=2, normals=[_img(80)])
    assert isinstance(pool, Pool) and pool.from_base_model and pool.model_id is None and not pool.cancelled
    assert "base model" in pool.note
    folder = tmp_path / "pool"
    save_pool(pool, folder)
    assert pool_info(folder)["from_base_model"] and pool_info(folder)["n"] == 2
    again = load_pool(folder)
    assert again.from_base_model and len(again) == 2
    # a failing save leaves the previous pool untouched and no temporary folder behind
    with pytest.raises(TypeError):  # not an image
        save_pool([pool[0], np.zeros((2, 2, 2, 2))], folder)
    assert len(load_pool(folder)) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["pool"]
    # cancelled generation says so
    ev = threading.Event()
    with pytest.warns(UserWarning):
        part = fast.generate_pool("bottle", n=3, progress=lambda f, m: ev.set(), cancel=ev)
    assert part.cancelled and len(part) == 1 and part.requested == 3 and "cancelled" in part.note


def test_pool_from_a_trained_model_records_it(tmp_path):
    from fsad_core.personalize import model_id

    p = Personalizer(PersonalizeConfig(profile="tiny", preset="fast", train_steps=1))
    out = p.train([_img(90)], "wood", tmp_path / "lora")
    pool = p.generate_pool("wood", n=1)
    assert not pool.from_base_model and pool.model_id == model_id(out) == p.model_id
    assert pool.lora_dir == str(out)
    p.unload_lora()
    assert not p.has_adapter() and p.model_id is None


def test_reconfigure_keeps_the_pipeline_when_it_can(tmp_path):
    p = Personalizer(PersonalizeConfig(profile="tiny", preset="fast"))
    pipe = p.pipeline
    p.reconfigure(seed=3, train_steps=5)
    assert p.pipeline is pipe and p.config.seed == 3 and p.config.train_steps == 5
    p.reconfigure(train_steps=None)
    assert p.config.train_steps == 2  # back to the (tiny) preset's value
    p.reconfigure(preset="paper")
    assert p.config.prompts == "all" and p.config.guidance_scale > 1 and not p.config.tiny_vae
    assert p.config.resolution == 32  # the tiny profile's size, not the paper's 512
    assert p.pipeline is not pipe  # other VAE: another pipeline
    injected = Personalizer(PersonalizeConfig(profile="tiny"), pipeline=pipe)
    injected.reconfigure(seed=1)
    with pytest.raises(ValueError, match="new Personalizer"):
        injected.reconfigure(preset="paper")
    assert injected.config.preset == "fast"


def test_bf16_compute_stores_the_frozen_unet_in_bf16():
    p = Personalizer(PersonalizeConfig(profile="tiny", precision="bf16", device="cpu"))
    assert p.pipeline.unet.dtype == torch.bfloat16 and p.precision_name == "bf16"
    assert next(p.pipeline.text_encoder.parameters()).dtype == torch.float32  # text and VAE stay fp32
    q = Personalizer(PersonalizeConfig(profile="tiny", precision="fp32", device="cpu"))
    assert q.pipeline.unet.dtype == torch.float32 and q.precision_name == "fp32"


def test_pool_estimate_counts_images_and_shots():
    p = Personalizer(PersonalizeConfig(profile="standard", preset="fast", device="cpu"))
    assert p.estimate_seconds("pool", n=30) == pytest.approx(p.estimate_seconds("pool"))
    assert p.estimate_seconds("pool", n=60) == pytest.approx(2 * p.estimate_seconds("pool", n=30))
    assert p.estimate_seconds("pool", n=0) == 0
    assert p.estimate_seconds("pool", n=4, n_shots=2) > p.estimate_seconds("pool", n=4)


def test_hub_repo_as_base_model_offline_error_teaches_huggingface_cli(tmp_path):
    import huggingface_hub.constants as hc

    from fsad_core.models.registry import ModelUnavailableError

    if not hc.HF_HUB_OFFLINE:
        pytest.skip("needs HF_HUB_OFFLINE=1 (set by tests/conftest.py) so that no download is attempted")
    p = Personalizer(PersonalizeConfig(profile="standard", base_model="nota-ai/bk-sdm-small",
                                       cache_dir=str(tmp_path), device="cpu"))
    with pytest.raises(ModelUnavailableError) as err:
        _ = p.pipeline
    msg = str(err.value)
    assert "nota-ai/bk-sdm-small" in msg and "huggingface-cli download nota-ai/bk-sdm-small" in msg
    assert "--include" in msg and "'unet/*'" in msg and str(tmp_path) in msg
    assert "models pull" not in msg and "built in" not in msg


# A stable-diffusion-v1-5/stable-diffusion-v1-5 listing (the runwayml repo's layout plus the fp16
# single-file checkpoint the mirror added).
SD15_REPO_FILES = """.gitattributes README.md model_index.json v1-inference.yaml
v1-5-pruned.ckpt v1-5-pruned.safetensors v1-5-pruned-emaonly.ckpt v1-5-pruned-emaonly.safetensors
v1-5-pruned-emaonly-fp16.safetensors
feature_extractor/preprocessor_config.json
safety_checker/config.json safety_checker/model.safetensors safety_checker/model.fp16.safetensors
safety_checker/pytorch_model.bin safety_checker/pytorch_model.fp16.bin
scheduler/scheduler_config.json
text_encoder/config.json text_encoder/model.safetensors text_encoder/model.fp16.safetensors
text_encoder/pytorch_model.bin text_encoder/pytorch_model.fp16.bin
tokenizer/merges.txt tokenizer/special_tokens_map.json tokenizer/tokenizer_config.json tokenizer/vocab.json
unet/config.json unet/diffusion_pytorch_model.safetensors unet/diffusion_pytorch_model.fp16.safetensors
unet/diffusion_pytorch_model.non_ema.safetensors unet/diffusion_pytorch_model.non_ema.bin
unet/diffusion_pytorch_model.bin unet/diffusion_pytorch_model.fp16.bin
vae/config.json vae/diffusion_pytorch_model.safetensors vae/diffusion_pytorch_model.fp16.safetensors
vae/diffusion_pytorch_model.bin vae/diffusion_pytorch_model.fp16.bin""".split()


def test_models_pull_diffusion_fetches_only_what_img2img_loads():
    from huggingface_hub.utils import filter_repo_objects

    from fsad_core.models import registry

    spec = registry.get("diffusion", profile="standard")
    got = set(filter_repo_objects(SD15_REPO_FILES, allow_patterns=registry.diffusion_allow_patterns(spec.tag)))
    assert got == {
        "model_index.json", "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
        "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
    }
    # the old pattern list also fetched the root fp16 checkpoint and the safety checker
    old = set(filter_repo_objects(SD15_REPO_FILES, allow_patterns=["*.json", "*.txt", "*fp16*.safetensors", "tokenizer/*"]))
    assert {"v1-5-pruned-emaonly-fp16.safetensors", "safety_checker/model.fp16.safetensors"} <= old - got
    full = set(filter_repo_objects(SD15_REPO_FILES, allow_patterns=registry.diffusion_allow_patterns("main")))
    assert "unet/diffusion_pytorch_model.safetensors" in full and not any(f.endswith(".bin") for f in full)
    assert not any(f.startswith(("v1-5", "safety_checker")) for f in full | got)
