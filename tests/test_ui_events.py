"""The studio's glue without a browser: handlers on a real Store and the tiny engine / SAM.

Handlers are plain functions `fn(ctx, ...) -> {output name: value}`; these tests call them the way
the layout does and check what the user would see and what lands in the store.
"""
from __future__ import annotations

import time

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from fsad_core import overlay
from ui import compare_tab, inspect_tab, project_bar, render, result_view, session, shots_tab
from ui.context import StudioContext
from ui.weights import WEIGHT_NAMES, initial_weights

storage = pytest.importorskip("storage", reason="the storage package is needed for the studio's handlers")


# --- fixtures (`backbone`, `ctx`: tests/conftest.py) ---------------------------------------------
def texture(defect: bool = False, seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.arange(size)[None, :].repeat(size, 0)
    base = (128 + 40 * np.sin(x / 5.0) + rng.normal(0, 6, (size, size))).clip(0, 255)
    img = np.stack([base, base * 0.9, base * 0.8], -1)
    if defect:
        img[40:60, 30:70] = 25
    return img.astype(np.uint8)


def png(tmp_path, name, img) -> str:
    path = tmp_path / f"{name}.png"
    Image.fromarray(img).save(path)
    return str(path)


def stroke_layer(size_hw, box) -> dict:
    """An ImageEditor value with one painted layer (alpha > 0 inside box = (y0, y1, x0, x1))."""
    layer = np.zeros(size_hw + (4,), np.uint8)
    y0, y1, x0, x1 = box
    layer[y0:y1, x0:x1] = (255, 40, 40, 153)
    return {"background": None, "layers": [layer], "composite": None}


def project_with_shots(ctx, tmp_path):
    view = project_bar.open_project(ctx, "line-3", "fabric")
    pid = view["pid"]
    shots_tab.add_normals(ctx, pid, [png(tmp_path, "n1", texture(seed=1)), png(tmp_path, "n2", texture(seed=2))])
    out = shots_tab.add_anomalous(ctx, pid, [png(tmp_path, "a1", texture(True, seed=3))])
    iid = out["anom_id"]
    editor = stroke_layer((96, 96), (40, 60, 30, 70))
    shots_tab.save_shot(ctx, pid, iid, editor, "scratch")
    return pid, iid


def run_score(ctx, pid, img, weights=None):
    outs = list(inspect_tab.score(ctx, pid, img, None, weights, 0.5, 0.5))
    return outs


# --- render --------------------------------------------------------------------------------------
def test_render_maps_masks_and_clicks():
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    b = overlay.boundary(m)
    assert b.sum() == 12 and not b[2, 2]
    img = np.full((6, 6, 3), 100, np.uint8)
    assert (render.overlay(img, np.ones((6, 6), np.float32), 0.0) == img).all()
    assert (render.overlay(img, np.ones((6, 6), np.float32), 1.0) == render.colormap_lut()[255]).all()
    assert render.normalise(np.full((3, 3), 7.0)).max() == 0.0  # flat map: no division by zero
    # layer alpha is the mask, never its RGB
    layer = np.zeros((4, 4, 4), np.uint8)
    layer[0, 0] = (0, 0, 0, 10)
    layer[1, 1] = (255, 0, 0, 0)
    assert render.layer_to_mask(layer).tolist()[0][0] and not render.layer_to_mask(layer)[1, 1]
    # click coordinates map back from the enlarged view to image pixels
    assert render.click_to_image((280, 100), (100, 200), side=400) == (140, 50)
    assert render.click_to_image((9999, -5), (100, 200), side=400) == (199, 0)
    # the editor shows the mask in its background and starts with no layer (see render.editor_value)
    val = render.editor_value(texture(), m.repeat(16, 0).repeat(16, 1))
    assert val["layers"] == [] and val["background"].shape == (96, 96, 3)
    assert not (val["background"] == texture()).all()


def test_aggregate_panel_threshold_draws_a_contour():
    img = np.full((64, 64, 3), 128, np.uint8)
    values = np.zeros((64, 64), np.float32)
    values[20:40, 20:40] = 1.0
    with_contour = render.aggregate_panel(img, values, 0.0, 0.5, max_side=64)
    without = render.aggregate_panel(img, values, 0.0, None, max_side=64)
    cyan = (with_contour == np.array(overlay.CONTOUR_RGB, np.uint8)).all(axis=2)
    assert cyan.sum() > 40 and not (without == np.array(overlay.CONTOUR_RGB, np.uint8)).all(axis=2).any()
    assert cyan[20, 30] and not cyan[30, 30]  # on the region's edge, not inside


# --- project bar ---------------------------------------------------------------------------------
def test_create_open_and_restore_project(ctx):
    view = project_bar.open_project(ctx, "bottles", "bottle")
    pid = view["pid"]
    assert view["class_name"] == "bottle" and "bottles" in view["project_status"]
    again = project_bar.open_project(ctx, "bottles", "")
    assert again["pid"] == pid
    project_bar.open_project(ctx, "other", "cable")
    # a page reload restores the browser's last project, else the newest
    assert project_bar.on_load(ctx, pid)["pid"] == pid
    assert project_bar.on_load(ctx, None)["project_name"] == "other"
    project_bar.set_class_name(ctx, pid, "wine bottle")
    assert ctx.store.get_project(pid)["class_name"] == "wine bottle"
    with pytest.raises(gr.Error, match="project name"):
        project_bar.open_project(ctx, "  ", "x")


def test_shots_are_saved_and_reach_the_engine(ctx, tmp_path):
    pid, iid = project_with_shots(ctx, tmp_path)
    assert len(ctx.store.list_images(pid, role="normal")) == 2
    mask = ctx.store.get_mask(iid)
    assert mask is not None and mask[50, 50] and not mask[10, 10]
    assert "scratch" in ctx.store.defect_types(pid)
    engine = ctx.engine(pid)
    kinds = sorted(s.kind for s in engine.shots)
    assert kinds == ["anomalous", "normal", "normal"]
    # a fresh process rebuilds the same engine from the store
    ctx2 = StudioContext(ctx.store, profile="tiny", backbone=ctx._backbone)
    assert sorted(s.kind for s in ctx2.engine(pid).shots) == kinds
    # removing a normal image removes its shot
    normal_id = ctx.store.list_images(pid, role="normal")[0]["id"]
    session.remove_image(ctx, pid, normal_id)
    assert sorted(s.kind for s in engine.shots) == ["anomalous", "normal"]


def test_mask_edits_strokes_and_empty_save(ctx, tmp_path):
    pid = project_bar.open_project(ctx, "p", "fabric")["pid"]
    out = shots_tab.add_anomalous(ctx, pid, [png(tmp_path, "a", texture(True))])
    iid = out["anom_id"]
    assert out["editor"]["layers"] == []
    with pytest.raises(gr.Error, match="mask is empty"):
        shots_tab.save_shot(ctx, pid, iid, {"background": None, "layers": [], "composite": None}, "hole")
    assert ctx.store.get_mask(iid) is None or not np.asarray(ctx.store.get_mask(iid)).any()
    res = shots_tab.commit_strokes(ctx, iid, stroke_layer((96, 96), (10, 30, 10, 30)), "add")
    assert "400 px" in res["mask_status"]
    res = shots_tab.commit_strokes(ctx, iid, stroke_layer((96, 96), (10, 20, 10, 30)), "remove")
    assert "200 px" in res["mask_status"]
    # save = kept mask + strokes not yet applied
    shots_tab.save_shot(ctx, pid, iid, stroke_layer((96, 96), (50, 60, 50, 60)), "hole")
    assert int(np.asarray(ctx.store.get_mask(iid)).sum()) == 300
    assert ctx.store.list_images(pid, role="anomalous")[0]["defect_type"] == "hole"


def test_sam_click_proposes_and_applies_a_mask(ctx, tmp_path):
    pytest.importorskip("segment_anything")
    pid = project_bar.open_project(ctx, "sam", "fabric")["pid"]
    out = shots_tab.add_anomalous(ctx, pid, [png(tmp_path, "a", texture(True))])
    iid, prompts = out["anom_id"], out["sam_prompts"]
    ctx.sam_jobs[prompts["sha"]].join(60)  # the background embedding started at upload
    view_xy = (render.CLICK_SIDE * 50 / 96, render.CLICK_SIDE * 50 / 96)
    res = shots_tab.sam_click(ctx, pid, iid, prompts, shots_tab.SAM_MODES[0], view_xy)
    assert res["sam_prompts"]["points"] == [[50, 50, True]]
    assert len(res["sam_proposals"]) >= 1 and "random weights" in res["sam_status"]
    t0 = time.perf_counter()
    again = shots_tab.sam_click(ctx, pid, iid, res["sam_prompts"], shots_tab.SAM_MODES[1], (10, 10))
    assert time.perf_counter() - t0 < 5  # the embedding is reused: no encoder pass
    applied = shots_tab.sam_apply(ctx, iid, again["sam_prompts"], None, "replace")
    proposal = ctx.sam_proposals.get(iid)[0].mask
    assert (ctx.mask_drafts.get(iid) == proposal).all()
    assert applied["editor"]["layers"] == []


# --- inspect -------------------------------------------------------------------------------------
def test_score_is_progressive_and_sliders_reaggregate(ctx, tmp_path):
    pid, _ = project_with_shots(ctx, tmp_path)
    query = texture(True, seed=9)
    outs = run_score(ctx, pid, query)
    panels = [len(o["heatmaps"]) for o in outs if "heatmaps" in o]
    assert panels[0] < panels[-1] and panels[-1] >= 10  # patch level first, then the window scales
    final = outs[-1]
    sha = final["query_sha"]
    visible = [n for n in WEIGHT_NAMES if final[f"weight:{n}"].get("visible")]
    assert {"text", "zero_shot", "normal@16", "anomalous@32"} <= set(visible)
    assert not final["weight:personal"]["visible"]
    first = result_view.reaggregate(ctx, pid, sha, initial_weights(), 0.5, 0.5)
    only_normal = {n: (1.0 if n == "normal@16" else 0.0) for n in WEIGHT_NAMES}
    t0 = time.perf_counter()
    second = result_view.reaggregate(ctx, pid, sha, only_normal, 0.5, 0.5)
    assert time.perf_counter() - t0 < 0.5
    result = ctx.get_result(pid, sha).result
    assert float(second["aggregate_score"]) == pytest.approx(result.components["normal@16"].score, abs=1e-4)
    assert first["aggregate_score"] != second["aggregate_score"]
    zero = result_view.reaggregate(ctx, pid, sha, {n: 0.0 for n in WEIGHT_NAMES}, 0.5, 0.5)
    assert "every weight is 0" in zero["aggregate_score"]
    runs = ctx.store.list_runs(pid)
    assert any((r["kind"] if isinstance(r, dict) else r[1]) == "inspect" for r in runs)


def test_presets_and_saved_presets(ctx, tmp_path):
    pid, _ = project_with_shots(ctx, tmp_path)
    sha = run_score(ctx, pid, texture(True, seed=5))[-1]["query_sha"]
    out = inspect_tab.apply_preset(ctx, pid, sha, "only zero_shot", 0.5, 0.0)
    assert out["weight:zero_shot"]["value"] == 1.0 and out["weight:text"]["value"] == 0.0
    comp = ctx.get_result(pid, sha).result.components["zero_shot"]
    assert float(out["aggregate_score"]) == pytest.approx(comp.score, abs=1e-4)
    eq = inspect_tab.apply_preset(ctx, pid, sha, "equal", 0.5, 0.0)
    assert eq["weight:text"]["value"] == eq["weight:normal@16"]["value"] > 0
    mine = dict(initial_weights(), text=0.7)
    saved = inspect_tab.save_preset(ctx, pid, "mine", mine)
    assert "saved: mine" in saved["preset"]["choices"]
    back = inspect_tab.apply_preset(ctx, pid, sha, "saved: mine", 0.5, 0.0)
    assert back["weight:text"]["value"] == 0.7


def test_studio_aggregate_equals_result_aggregate_for_every_preset(ctx, tmp_path):
    """The studio's sliders, presets and aggregate come from fsad_core.aggregate: for the same
    weights the Inspect tab shows Result.aggregate's score (the CLI's), rule presets included."""
    pid, _ = project_with_shots(ctx, tmp_path)
    sha = run_score(ctx, pid, texture(True, seed=6))[-1]["query_sha"]
    result = ctx.get_result(pid, sha).result
    for name in ("paper", "winclip+", "equal"):
        out = inspect_tab.apply_preset(ctx, pid, sha, name, 0.5, 0.0)
        assert float(out["aggregate_score"]) == pytest.approx(result.aggregate(name).score, abs=1e-4), name
        sliders = {n: out[f"weight:{n}"]["value"] for n in WEIGHT_NAMES}
        # moving nothing keeps the preset's own rule (winclip+: max of the mean map)
        again = result_view.reaggregate(ctx, pid, sha, sliders, 0.5, 0.0, name)
        assert again["aggregate_score"] == out["aggregate_score"]
    # the default sliders are the paper preset: 1/3 on text, 0 on zero_shot
    w = initial_weights()
    assert w["text"] == pytest.approx(1 / 3, abs=1e-4) and w["zero_shot"] == 0.0
    custom = dict(w, zero_shot=0.5)
    out = result_view.reaggregate(ctx, pid, sha, custom, 0.5, 0.0, "paper")  # a slider moved: custom weights
    assert float(out["aggregate_score"]) == pytest.approx(
        result.aggregate({k: v for k, v in custom.items() if k in result.components}).score, abs=1e-4)
    # a preset that needs components the result lacks says so instead of scoring with the rest
    o2n = inspect_tab.apply_preset(ctx, pid, sha, "one-to-normal", 0.5, 0.0)
    assert "needs personal, pool" in o2n["aggregate_score"]
    # all-zero weights are an error shown to the user, never replaced by the defaults
    outs = run_score(ctx, pid, texture(True, seed=6), weights={n: 0.0 for n in WEIGHT_NAMES})
    assert "every weight is 0" in outs[-2]["aggregate_score"]


def test_validation_only_normal_shot(ctx, tmp_path):
    """A normal shot marked "use for tuning only" leaves the memory and is used by tuning alone."""
    pid, _ = project_with_shots(ctx, tmp_path)
    engine = ctx.engine(pid)
    n_before = engine.banks()["normal"][1].shape[0]
    sel = shots_tab.normal_selected(ctx, pid, 1)
    assert sel["normal_validation"] is False
    out = shots_tab.set_validation_only(ctx, pid, 1, True)
    assert "tuning only" in out["normal_gallery"][1][1]
    assert engine.banks()["normal"][1].shape[0] == n_before - 225
    assert shots_tab.normal_selected(ctx, pid, 1)["normal_validation"] is True
    sha = run_score(ctx, pid, texture(True, seed=4))[-1]["query_sha"]
    tuned = inspect_tab.tune(ctx, pid, sha, initial_weights(), 0.5, 0.5)
    assert "validation-normal protocol" in tuned["tune_status"]
    run = [r for r in ctx.store.list_runs(pid) if r["kind"] == "tune"][-1]
    assert run["params"]["protocol"] == "validation-normal" and run["params"]["m_total"] == 10
    # survives a restart: a fresh context rebuilds the engine from the store
    fresh = StudioContext(ctx.store, profile="tiny", banner="tiny", backbone=engine.backbone,
                          data_dir=tmp_path / "data")
    assert fresh.engine(pid).banks()["normal"][1].shape[0] == n_before - 225
    shots_tab.set_validation_only(ctx, pid, 1, False)
    assert engine.banks()["normal"][1].shape[0] == n_before


def test_tune_moves_sliders_and_undo_restores(ctx, tmp_path):
    pytest.importorskip("fsad_core.tuning")
    pid, _ = project_with_shots(ctx, tmp_path)
    sha = run_score(ctx, pid, texture(True, seed=4))[-1]["query_sha"]
    before = initial_weights()
    out = inspect_tab.tune(ctx, pid, sha, before, 0.5, 0.5)
    tuned = {n: out[f"weight:{n}"]["value"] for n in WEIGHT_NAMES}
    assert abs(sum(tuned.values()) - 1.0) < 0.01 and len(out["tune_chart"]["value"]) >= 3
    assert "AUROC" in out["tune_status"] and out["undo_weights"] == before
    undone = inspect_tab.undo_tune(ctx, pid, sha, out["undo_weights"], 0.5, 0.5)
    assert undone["weight:zero_shot"]["value"] == pytest.approx(before["zero_shot"], abs=1e-4)


def test_errors_are_readable(ctx):
    with pytest.raises(gr.Error, match="Open or create a project"):
        list(inspect_tab.score(ctx, None, texture(), None, None, 0.5, 0.5))
    pid = project_bar.open_project(ctx, "e", "x")["pid"]
    with pytest.raises(gr.Error, match="query"):
        list(inspect_tab.score(ctx, pid, None, None, None, 0.5, 0.5))
    # a refused query file: a readable message, and nothing selected (the next Score cannot
    # quietly score the previous query instead)
    bad = inspect_tab.add_query(ctx, pid, b"not an image")
    assert "not a readable image" in bad["inspect_status"]
    assert bad["query_iid"] is None and bad["query_image"] is None


def test_sample_project_and_compare(ctx):
    pytest.importorskip("fsad_core.synth")
    view = project_bar.load_sample(ctx)
    pid = view["pid"]
    assert len(ctx.store.list_images(pid, role="query")) >= 2 and view["normal_gallery"]
    q = ctx.store.list_images(pid, role="query")
    a = run_score(ctx, pid, None if False else ctx.store.read_image(q[0]["id"]))[-1]["query_sha"]
    run_score(ctx, pid, ctx.store.read_image(q[1]["id"]))
    choices = compare_tab.compare_choices(ctx, pid)
    assert len(choices["cmp_query_a"]["choices"]) == 2
    out = compare_tab.compare(ctx, pid, a, "aggregate", a, "text", initial_weights(), 0.5)
    assert out["cmp_a"].shape == out["cmp_b"].shape and "text" in out["cmp_caption"]


def test_layout_has_the_stable_element_ids(ctx):
    from ui.studio import build_studio

    demo = build_studio(ctx)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    needed = {"project-name", "class-name", "normal-upload", "anomalous-upload", "mask-editor", "sam-click",
              "defect-type", "save-shot", "query-upload", "score-button", "heatmaps", "aggregate-map",
              "aggregate-score", "preset", "threshold", "models-tab", "tune-button", "batch-run",
              "personalize-train", "personalize-run", "personalized-compare", "personalize-strength",
              "pool-gallery", "weight-anomalous@32", "weight-text"}
    assert needed <= ids, needed - ids
    assert {f"weight-{n}" for n in WEIGHT_NAMES} <= ids
    # every component that shows a mask or a heatmap is sent as PNG, never lossy WebP
    for b in demo.blocks.values():
        if getattr(b, "elem_id", None) in ("heatmaps", "aggregate-map", "sam-click", "mask-editor",
                                           "query-upload", "personalized-compare", "compare-a"):
            assert b.format == "png", b.elem_id


# --- personalize tab -------------------------------------------------------------------------------
def test_switching_project_never_keeps_another_projects_lora(ctx, tmp_path):
    from fsad_core.personalize import PersonalizeConfig, Personalizer, training_state
    from ui import personalize_tab as pt

    a = project_bar.open_project(ctx, "a", "fabric")["pid"]
    shots_tab.add_normals(ctx, a, [png(tmp_path, "na", texture(seed=1))])
    b = project_bar.open_project(ctx, "b", "fabric")["pid"]
    shots_tab.add_normals(ctx, b, [png(tmp_path, "nb", texture(seed=2))])
    pt.train(ctx, a)
    lora_a, _ = pt._dirs(ctx, a)
    assert training_state(lora_a)["complete"] and lora_a.parent == ctx.store.project_dir(a)
    p = pt.personalizer(ctx, a)
    assert p.lora_dir == lora_a and p.has_adapter()
    q = texture(True, seed=7)[:32, :32]
    tuned = p.personalize(q, "fabric")
    # project b has no model: the base model, whatever was active before
    p = pt.personalizer(ctx, b)
    assert p.lora_dir is None and not p.has_adapter() and p.model_id is None
    base = Personalizer(PersonalizeConfig(profile="tiny")).personalize(q, "fabric")
    got = p.personalize(q, "fabric")
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(base.reconstructions, got.reconstructions))
    assert "not trained yet" in pt.status(ctx, b)["pers_status"]
    # a cancelled run in b leaves b on the base model too (and says so)
    cancel_at_first_step = lambda frac, desc="": pt.cancel(ctx, b) if "step 1/" in desc else None
    with pytest.warns(UserWarning, match="cancelled"):
        pt.train(ctx, b, "fast", 0, 3, False, progress=cancel_at_first_step)
    assert "stopped at step 1 of 3" in pt.status(ctx, b)["pers_status"]
    assert not pt.personalizer(ctx, b).has_adapter()
    # back to a: its own model again
    p = pt.personalizer(ctx, a)
    assert p.lora_dir == lora_a
    again = p.personalize(q, "fabric")
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(tuned.reconstructions, again.reconstructions))


def test_pool_warns_without_a_model_keeps_the_old_pool_on_cancel_and_goes_stale(ctx, tmp_path):
    from ui import personalize_tab as pt
    pid = project_bar.open_project(ctx, "pool", "fabric")["pid"]
    shots_tab.add_normals(ctx, pid, [png(tmp_path, "n", texture(seed=1))])
    with pytest.warns(UserWarning, match="base model"):
        out = pt.make_pool(ctx, pid, 2)
    assert len(out["pool_gallery"]) == 2 and "from the base model" in out["pers_status"]
    _, pool_dir = pt._dirs(ctx, pid)
    before = sorted(p.read_bytes() for p in pool_dir.glob("pool_*.png"))
    # cancelled after the first image: the saved pool stays as it was
    stop = lambda frac, desc="": pt.cancel(ctx, pid)
    with pytest.warns(UserWarning, match="previous pool is kept"):
        out = pt.make_pool(ctx, pid, 3, "fast", 5, 0, progress=stop)
    assert len(out["pool_gallery"]) == 2
    assert sorted(p.read_bytes() for p in pool_dir.glob("pool_*.png")) == before
    # training a model makes the base-model pool stale; a new pool from the model is current;
    # retraining (other steps) makes that one stale in turn
    pt.train(ctx, pid)
    assert "stale" in pt.status(ctx, pid)["pers_status"]
    out = pt.make_pool(ctx, pid, 1)
    assert "stale" not in out["pers_status"] and "1 images" in out["pers_status"]
    pt.train(ctx, pid, "fast", 0, 3, True)
    assert "stale" in pt.status(ctx, pid)["pers_status"] and "retrained" in pt.status(ctx, pid)["pers_status"]


def test_personalize_settings_reach_the_personalizer(ctx, tmp_path):
    from ui import personalize_tab as pt
    pid = project_bar.open_project(ctx, "s", "fabric")["pid"]
    shots_tab.add_normals(ctx, pid, [png(tmp_path, "n", texture(seed=1))])
    p = pt.personalizer(ctx, pid, "paper", 7, 3)
    assert (p.config.preset, p.config.seed, p.config.train_steps, p.config.prompts) == ("paper", 7, 3, "all")
    assert pt.personalizer(ctx, pid, "fast", 0, 0).config.train_steps == 2  # 0 = the preset's (tiny: 2)
    eta = pt.pool_eta(ctx, pid, 30, "fast", 0, 0)["pool_eta"]
    assert "Pool of 30" in eta and "about" in eta
    from ui.studio import build_studio

    demo = build_studio(ctx)
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert by_id["pool-size"].value == 30
    assert {"personalize-preset", "personalize-seed", "personalize-train-steps", "personalize-restart",
            "pool-eta", "personalize-settings"} <= set(by_id)


# --- a workflow that never traps the user (issue 13) -------------------------------------------------
def test_query_names_and_duplicates(ctx, tmp_path):
    pid = project_bar.open_project(ctx, "names", "fabric")["pid"]
    path = png(tmp_path, "bolt_017", texture(True, seed=11))
    first = inspect_tab.add_query(ctx, pid, path)
    again = inspect_tab.add_query(ctx, pid, path)  # the same pixels again: reused, not duplicated
    assert first["query_iid"] == again["query_iid"] and "Already in the project" in again["inspect_status"]
    rows = ctx.store.list_images(pid, role="query")
    assert len(rows) == 1 and rows[0]["filename"] == "bolt_017.png"
    assert "bolt_017.png" in first["query_pick"]["choices"][0][0]
    run_score_iid(ctx, pid, first["query_iid"])
    labels = [c[0] for c in compare_tab.compare_choices(ctx, pid)["cmp_query_a"]["choices"]]
    assert labels == ["#%d bolt_017.png" % first["query_iid"]]


def run_score_iid(ctx, pid, iid, preset=None):
    return list(inspect_tab.score(ctx, pid, None, iid, initial_weights(), 0.5, 0.5, preset))


def test_preset_label_is_honest(ctx, tmp_path):
    pid, _ = project_with_shots(ctx, tmp_path)
    sha = run_score(ctx, pid, texture(True, seed=5))[-1]["query_sha"]
    names = list(ctx.get_result(pid, sha).result.components)
    # one-to-normal needs personal and pool, which a plain result lacks: it says so
    out = inspect_tab.apply_preset(ctx, pid, sha, "one-to-normal", 0.5, 0.0)
    assert "`personal`" in out["inspect_status"] and "`pool`" in out["inspect_status"]
    assert session.missing_components({"personal": 1.0, "pool": 0.0, "text": 1.0}, ["text"]) == ["personal"]
    assert inspect_tab.apply_preset(ctx, pid, sha, "paper", 0.5, 0.0)["inspect_status"] == ""
    assert inspect_tab.apply_preset(ctx, pid, sha, session.CUSTOM, 0.5, 0.0) == {}
    # saving a preset keeps the "only X" entries (they vanished before)
    saved = inspect_tab.save_preset(ctx, pid, "mine", initial_weights(), sha)
    assert "only zero_shot" in saved["preset"]["choices"] and "saved: mine" in saved["preset"]["choices"]
    assert set(f"only {n}" for n in names) <= set(saved["preset"]["choices"])
    # undoing a tuning puts back the label that was there before
    undone = inspect_tab.undo_tune(ctx, pid, sha, initial_weights(), 0.5, 0.5, "equal")
    assert undone["preset"] == "equal"


def test_remove_and_undo(ctx, tmp_path):
    pid, iid = project_with_shots(ctx, tmp_path)
    engine = ctx.engine(pid)
    assert sorted(s.kind for s in engine.shots) == ["anomalous", "normal", "normal"]
    out = session.remove(ctx, pid, iid)
    assert out["removed_pick"]["value"] == iid and "0/0 anomalous" in out["project_status"]
    assert sorted(s.kind for s in engine.shots) == ["normal", "normal"]
    back = session.restore(ctx, pid, out["removed_pick"]["value"])
    assert "Restored" in back["removed_status"] and "1/1 anomalous" in back["project_status"]
    assert sorted(s.kind for s in engine.shots) == ["anomalous", "normal", "normal"]
    assert np.asarray(ctx.store.get_mask(iid)).any()  # mask and defect type came back with it
    assert back["removed_pick"]["choices"] == []


def test_reload_restores_the_inspect_session_from_cached_encodings(tmp_path, tiny_backbone, encoder_calls):
    store = storage.Store(tmp_path / "data")
    ctx = StudioContext(store, profile="tiny", backbone=tiny_backbone, data_dir=tmp_path / "data")
    pid, _ = project_with_shots(ctx, tmp_path)
    q = inspect_tab.add_query(ctx, pid, png(tmp_path, "q7", texture(True, seed=7)))["query_iid"]
    weights = dict(initial_weights(), text=0.9)
    outs = list(inspect_tab.score(ctx, pid, None, q, weights, 0.5, 0.5, "paper"))
    ctx.store.embeddings.flush()
    # a fresh process on the same store (a studio restart), then a page reload
    fresh = StudioContext(store, profile="tiny", backbone=tiny_backbone, data_dir=tmp_path / "data")
    before = dict(encoder_calls)
    out = session.restore_inspect(fresh, pid)
    assert encoder_calls == before  # shots and query came from the stored encodings
    assert out["query_iid"] == q and out["query_sha"] == outs[-1]["query_sha"]
    assert len(out["heatmaps"]) >= 10 and "q7.png" in out["inspect_status"]
    assert out["weight:text"]["value"] == 0.9 and out["preset"]["value"] == "paper"
    # sliders moved after that Score: the reload shows them, labelled "custom"
    moved = dict(weights, **{"normal@16": 0.55})
    assert session.slider_moved(fresh, pid, out["query_sha"], moved, 0.5, 0.5)["preset"] == "custom"
    later = session.restore_inspect(StudioContext(store, profile="tiny", backbone=tiny_backbone), pid)
    assert later["weight:normal@16"]["value"] == 0.55 and later["preset"]["value"] == "custom"
    assert "session:last" not in " ".join(later["preset"]["choices"])
    # personal / pool computed for that query are kept with the project and come back
    from fsad_core.results import ScoreMap

    result = fresh.get_result(pid, out["query_sha"]).result
    h, w = result.size_hw
    session.save_personal(fresh, pid, out["query_sha"], {"personal": ScoreMap(np.ones((h, w), np.float32), 0.25)})
    again = StudioContext(store, profile="tiny", backbone=tiny_backbone, data_dir=tmp_path / "data")
    out = session.restore_inspect(again, pid)
    assert out["weight:personal"]["visible"] and any("personal" in c for _, c in out["heatmaps"])


def test_batch_runs_are_listed_and_downloadable(ctx, tmp_path):
    from ui import batch_tab as bt
    pid, _ = project_with_shots(ctx, tmp_path)
    files = [png(tmp_path, "part_a", texture(True, seed=21)), png(tmp_path, "part_b", texture(seed=22))]
    outs = list(bt.run(ctx, pid, files, False, initial_weights(), 0.5))
    run_id = outs[-1]["batch_history"]["value"]
    # a reload: the saved run is listed, its ranking and files come back from the store
    listed = bt.history(ctx, pid)["batch_history"]["choices"]
    assert listed[0][1] == run_id and "2 images" in listed[0][0]
    shown = bt.show_run(ctx, pid, run_id)
    assert {r[1] for r in shown["batch_table"]} == {"part_a.png", "part_b.png"}
    csv_path, html_path = shown["batch_download"]
    assert "part_a.png" in open(csv_path).read() and "<table>" in open(html_path).read()


def test_training_and_pool_progress_only_move_forward(ctx, tmp_path):
    """Honest state: the Personalizer's own progress lines reach the studio's bar — one bar over
    prior images and steps (no jump back), the phase in words with a time left, and a pool ETA shown
    only once it is measured on two images. (The clamping of noisy estimates is tested on the
    trainer's progress line in tests/test_personalize.py.)"""
    from ui import personalize_tab as pt
    pid = project_bar.open_project(ctx, "progress", "fabric")["pid"]
    shots_tab.add_normals(ctx, pid, [png(tmp_path, "n", texture(seed=1))])
    seen = []
    pt.train(ctx, pid, progress=lambda f, t="": seen.append((f, t)))
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    texts = [t for _, t in seen]
    assert any(t.startswith("Generating prior images 1/2 (class-prior images from the base model), about ")
               for t in texts)
    assert texts[-1].startswith("Training: step 2/2")
    pool = []
    pt.make_pool(ctx, pid, 3, progress=lambda f, t="": pool.append((f, t)))
    assert [f for f, _ in pool] == sorted(f for f, _ in pool)
    assert "measuring" in pool[0][1] and "about" in pool[1][1] and pool[1][1].startswith("Pool: 2/3")
