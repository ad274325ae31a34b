"""The studio's adapters panel without a browser: background training on the project's shots,
cancel and resume, reload with the project, a user checkpoint, and the components in Inspect."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pytest

from ui import adapters_panel as ap
from ui import inspect_tab, project_bar, shots_tab
from ui.context import StudioContext

storage = pytest.importorskip("storage", reason="the storage package is needed for the studio's handlers")

from test_ui_events import png, stroke_layer, texture  # noqa: E402


def _project(ctx, tmp_path, annotate=True):
    pid = project_bar.open_project(ctx, "line-3", "fabric")["pid"]
    shots_tab.add_normals(ctx, pid, [png(tmp_path, "n1", texture(seed=1))])
    out = shots_tab.add_anomalous(ctx, pid, [png(tmp_path, "a1", texture(True, seed=3))])
    if annotate:
        shots_tab.save_shot(ctx, pid, out["anom_id"], stroke_layer((96, 96), (40, 60, 30, 70)), "scratch")
    return pid


def _wait(ctx, pid):
    job = ap._jobs(ctx)[pid]
    job.thread.join(timeout=120)
    assert not job.thread.is_alive()
    return job


def test_train_needs_an_annotated_shot(ctx, tmp_path):
    pid = _project(ctx, tmp_path, annotate=False)
    with pytest.raises(gr.Error, match="anomalous shot with a saved defect mask"):
        ap.train(ctx, pid, 1, 1)
    assert "No adapter yet" in ap.status(ctx, pid)["adapters_status"]


def test_train_in_background_then_components_and_reload(ctx, tmp_path, backbone):
    pid = _project(ctx, tmp_path)
    ap.train(ctx, pid, 2, 1)
    job = _wait(ctx, pid)
    assert job.state == "done", job.message
    st = ap.status(ctx, pid)
    assert st["adapters_status"].startswith("Adapter training done") and "loss" in st["adapters_status"]
    assert ap.adapter_path(ctx, pid).is_file()
    assert st["adapters_table"][0][0] == "project" and st["adapters_table"][0][2] == "fsad-tiny-clip-s4@random"
    names = ctx.engine(pid).component_names()
    assert {"adapter", "adapter_memory", "adapter_text"} <= set(names)
    # Inspect: the adapter components get heatmap panels and visible sliders
    outs = list(inspect_tab.score(ctx, pid, texture(True, seed=9), None, None, 0.5, 0.5))
    last = outs[-1]
    captions = [c for _, c in [o for o in outs if "heatmaps" in o][-1]["heatmaps"]]
    assert any(c.startswith("adapter · ") for c in captions) and any(c.startswith("adapter_memory") for c in captions)
    assert last["weight:adapter"]["visible"] is True and last["weight:adapter_text"]["visible"] is True
    # a new studio process on the same store reloads the project's adapter with its engine
    ctx2 = StudioContext(ctx.store, profile="tiny", backbone=backbone, data_dir=ctx.data_dir)
    assert ctx2.engine(pid).scorer("adapter") is not None
    assert "Adapter loaded" in ap.status(ctx2, pid)["adapters_status"]


def test_cancel_keeps_progress_and_train_resumes(ctx, tmp_path):
    pid = _project(ctx, tmp_path)
    job = ap.AdapterJob(pid)
    job.stop.set()  # cancelled before its first step
    ap._run(ctx, job, 1, 1)
    assert job.state == "cancelled" and "resume" in job.message
    from fsad_core.adapters.train import resume_path

    assert resume_path(ap.adapter_path(ctx, pid)).is_file() and not ap.adapter_path(ctx, pid).exists()
    ap.train(ctx, pid, 1, 1)
    assert _wait(ctx, pid).state == "done"
    assert not resume_path(ap.adapter_path(ctx, pid)).exists()


def test_use_checkpoint(ctx, tmp_path):
    pid = _project(ctx, tmp_path)
    with pytest.raises(gr.Error, match="does not exist"):
        ap.use_checkpoint(ctx, pid, str(tmp_path / "nope.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_text("x")
    with pytest.raises(gr.Error, match="not an adapter checkpoint"):
        ap.use_checkpoint(ctx, pid, str(bad))
    assert not ap.adapter_path(ctx, pid).exists()  # nothing of the project touched
    from fsad_core.adapters.stages import AdapterBackbone, BackboneRef
    from fsad_core.adapters.train import TrainConfig, shot_items, train_adapters

    bb = AdapterBackbone(BackboneRef.default("tiny"), device="cpu", precision="fp32")
    img = texture(True, seed=5)
    mask = np.zeros(img.shape[:2], bool)
    mask[40:60, 30:70] = True
    items, data = shot_items([(img, mask)], "fabric", copies=1)
    ck = tmp_path / "mine.safetensors"
    train_adapters(bb, items, ck, TrainConfig(epochs=1, batch_size=2), data)
    out = ap.use_checkpoint(ctx, pid, str(ck))
    assert out["adapters_status"].startswith("Adapter loaded from") and ap.adapter_path(ctx, pid).is_file()
    assert ctx.engine(pid).scorer("adapter") is not None
