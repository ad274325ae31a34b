"""The Inspect tab: drop or pick a query, score it progressively, and read its maps.

Score shows the patch-level maps first, then each window scale; the weight sliders, the preset
picker, the threshold and the opacity recombine the cached maps without encoding again
(`ui/result_view.py`). Auto-tune searches the weights on augmented shots (undo restores the
previous ones). The verdict badge / Calibrate (`ui/decisions.py`) and the predicted defect type
(`ui/defects_panel.py`) are laid out under the aggregate score.
"""
from __future__ import annotations

import time
from typing import Mapping

import gradio as gr

from fsad_core.images import ImageError, sha256_of_array
from fsad_core.progress import Progress, silent

from . import decisions, defects_panel, session
from .common import DOCS, friendly, image_label, images, in_worker, log, need_project, query_choices, read_upload
from .context import StudioContext
from .result_view import aggregate_view, panels, reaggregate
from .uploads import UploadedImage
from .weights import (
    SLIDERS,
    USER_PRESET_PREFIX,
    WEIGHT_NAMES,
    WEIGHTS,
    initial_weights,
    preset_choices,
    preset_weights,
    slider_updates,
    studio_weight_set,
)

HELP = (
    "Drop a query (or pick one of the project's) and press **Score**: patch-level maps appear first, then "
    "each window scale. Weight sliders re-aggregate instantly from cached maps. The threshold is in score units: "
    "the badge says OK / NG (uncertain near it) for the aggregate score, and the contour encloses the map at or "
    "above it, the same value on every image; **Calibrate** sets it (docs/decisions.md).\n\n"
    "Components live on different scales (memory scores sit near 0 or 1, text scores in between): each panel "
    "is coloured over its own range, blue = its lowest, red = its highest value (the bar under it gives both "
    "in score units), and its caption gives its image score — see [docs/engine.md]({engine_doc}) for what "
    "each component measures."
)


def empty_view() -> dict:
    """The tab with no query scored (a project was just opened)."""
    return {
        "heatmaps": [], "aggregate_map": None, "aggregate_score": "", "query_sha": None, "query_image": None,
        "inspect_status": "", **slider_updates(visible=()),
    }


# --- the query ---------------------------------------------------------------------------------------
@friendly
def add_query(ctx: StudioContext, pid, img) -> dict:
    """A query dropped into the Inspect tab: store it (role 'query') and select it."""
    pid = need_project(pid)
    if img is None:
        return {}
    try:
        rgb, fname = read_upload(img)
    except ImageError as exc:
        # refused: clear the picture and the selection, so the next Score cannot quietly use the
        # previous query instead
        msg = f"Not added: {exc}"
        gr.Warning(msg, title="Cannot read that file")
        return {"query_image": None, "query_iid": None, "query_pick": gr.update(value=None),
                "inspect_status": msg}
    sha = sha256_of_array(rgb)
    same = next((r for r in images(ctx, pid, "query") if r.get("sha256") == sha), None)
    if same is not None:  # the same pixels again: reuse the stored query, no duplicate
        iid = int(same["id"])
        status = f"Already in the project as {image_label(same)}; using it."
    else:
        iid = int(ctx.store.add_image(pid, rgb, role="query", filename=fname))
        status = ""
    return {"query_pick": gr.update(choices=query_choices(ctx, pid), value=iid), "query_iid": iid,
            "inspect_status": status}


@friendly
def pick_query(ctx: StudioContext, pid, iid) -> dict:
    if pid is None or iid is None or iid == "":
        return {}
    return {"query_image": ctx.store.read_image(int(iid)), "query_iid": int(iid)}


# --- scoring and the maps ----------------------------------------------------------------------------
@friendly
def score(ctx: StudioContext, pid, query_image, query_iid, weights: Mapping[str, float] | None,
          opacity: float, threshold: float, preset: str | None = None, progress: Progress = silent):
    """Score the query progressively: yields updated panels as each scale completes."""
    pid = need_project(pid)
    if query_image is None and query_iid is None:
        raise gr.Error("Drop a query image (or pick one of the project's) first.")
    # what the query box shows first (an upload, read through the checked reader); else the picked query
    img = read_upload(query_image)[0] if query_image is not None else ctx.store.read_image(int(query_iid))
    pe = ctx.project_engine(pid, progress)
    if not pe.engine.shots:
        gr.Warning("This project has no shots yet: only the zero-shot (text) components can be computed. "
                   "Add normal images in the Shots tab for the reference components.")
    if weights is None:
        weights = initial_weights()
    t0 = time.perf_counter()
    sha = None
    result = None
    for result in in_worker(lambda: pe.engine.score_progressive(img), pe.lock):
        sha = result.query_sha256 or sha256_of_array(img)
        ctx.queries.put(sha, img)
        panel, text = aggregate_view(result, studio_weight_set(preset, weights, result.components), img, opacity,
                                     threshold)
        status = (f"{len(result.components)} components so far ({time.perf_counter() - t0:.1f} s)…"
                  if not result.complete else "")
        yield {"heatmaps": panels(ctx, result, img, opacity), "aggregate_map": panel,
               "aggregate_score": text, "inspect_status": status, "query_sha": sha}
    if result is None:
        return
    with_personal = session.attach_personal(ctx, pid, sha, result)  # computed earlier for this query: still there
    ctx.put_result(pid, sha, with_personal, image_id=int(query_iid) if query_iid is not None else None)
    seconds = time.perf_counter() - t0
    wset = studio_weight_set(preset, weights, with_personal.components)
    try:
        agg_score = float(with_personal.aggregate(wset).score)
    except ValueError:  # every weight on a component of this result is 0 (the panel says so)
        agg_score = None
    try:
        ctx.store.save_run(pid, "inspect", {
            "query_image_id": int(query_iid) if query_iid is not None else None, "query_sha256": sha,
            "weights": {k: v for k, v in (weights or {}).items() if k in with_personal.components},
            "weight_set": wset.to_dict(), "preset": preset or None, "profile": ctx.profile,
        }, {"scores": result.scores(), "aggregate": agg_score, "seconds": round(seconds, 3)})
    except Exception as exc:  # a run log must never lose the result on screen
        log.warning("could not save the run: %s", exc)
    names = list(with_personal.components)
    final = {"query_sha": sha, "inspect_status": f"Scored {len(names)} components in {seconds:.1f} s.",
             "preset": gr.update(choices=preset_choices(ctx, pid, names)),
             **slider_updates(weights, visible=names)}
    if with_personal is not result:
        panel, text = aggregate_view(with_personal, wset, img, opacity, threshold)
        final.update({"heatmaps": panels(ctx, with_personal, img, opacity), "aggregate_map": panel,
                      "aggregate_score": text})
    yield final


@friendly
def rerender(ctx: StudioContext, pid, sha, weights: Mapping[str, float], opacity: float, threshold: float,
             preset: str | None = None) -> dict:
    """Opacity changed: redraw every panel and the aggregate from cached maps."""
    cached = ctx.get_result(pid, sha)
    img = ctx.queries.get(sha) if sha else None
    if cached is None or img is None:
        return {}
    out = reaggregate(ctx, pid, sha, weights, opacity, threshold, preset)
    out["heatmaps"] = panels(ctx, cached.result, img, opacity)
    return out


# --- presets -----------------------------------------------------------------------------------------
@friendly
def apply_preset(ctx: StudioContext, pid, sha, preset: str, opacity: float, threshold: float) -> dict:
    """Move every slider to a preset and re-aggregate; say so when the result lacks components the
    preset needs (e.g. `one-to-normal` before Personalize computed `personal`)."""
    if not preset or preset == session.CUSTOM:
        return {}
    cached = ctx.get_result(pid, sha)
    names = list(cached.result.components) if cached is not None else list(WEIGHT_NAMES)
    w = preset_weights(ctx, pid, preset, names)
    full = {n: w.get(n, 0.0) for n in WEIGHT_NAMES}
    out = slider_updates(full)
    out.update(reaggregate(ctx, pid, sha, full, opacity, threshold, preset))
    note = session.preset_note(ctx, pid, preset, names) if cached is not None else ""
    session.remember_weights(ctx, pid, full, preset)
    if note:
        gr.Warning(note.replace("**", "").replace("`", ""), title="Preset incomplete")
    out["inspect_status"] = note
    return out


@friendly
def save_preset(ctx: StudioContext, pid, name: str, weights: Mapping[str, float], sha: str | None = None) -> dict:
    pid = need_project(pid)
    name = (name or "").strip()
    if not name:
        raise gr.Error("Type a name for the preset first.")
    ctx.store.save_weights(pid, USER_PRESET_PREFIX + name, {k: float(v) for k, v in weights.items()})
    gr.Info(f"Saved preset {name!r}.")
    cached = ctx.get_result(pid, sha)
    cached_names = list(cached.result.components) if cached is not None else []  # keep the "only X" entries
    return {"preset": gr.update(choices=preset_choices(ctx, pid, cached_names), value=f"saved: {name}"),
            "preset_name": ""}


# --- auto-tune ---------------------------------------------------------------------------------------
@friendly
def tune(ctx: StudioContext, pid, sha, weights: Mapping[str, float], opacity: float, threshold: float,
         preset: str | None = None, progress: Progress = silent) -> dict:
    """Monte-Carlo weight search on augmented shots; moves the sliders (undo restores them)."""
    pid = need_project(pid)
    from fsad_core.tuning import tune_weights

    pe = ctx.project_engine(pid, progress)
    if not any(s.kind == "normal" for s in pe.engine.shots):
        raise gr.Error("Auto-tune needs at least one normal and one anomalous shot with a mask.")
    if not any(s.kind == "normal" and s.role == "memory" for s in pe.engine.shots):
        raise gr.Error("Every normal shot is 'for tuning only': keep at least one in the memory.")

    with pe.lock:
        images_by_shot = {sid: ctx.store.read_image(iid) for iid, sid in pe.shot_of_image.items()}
        res = tune_weights(pe.engine, progress=progress, images=images_by_shot)
    record = res.protocol_record()
    tuned = {k: float(v) for k, v in res.weights.items()}
    ctx.tuned[pid] = tuned
    ctx.store.save_weights(pid, "tuned", tuned)
    try:
        ctx.store.save_run(pid, "tune", record,
                           {"weights": tuned, "auroc_default": float(res.auroc_default),
                            "auroc_tuned": float(res.auroc_tuned),
                            "component_auroc": {k: float(v) for k, v in res.component_auroc.items()}})
    except Exception as exc:
        log.warning("could not save the tuning run: %s", exc)
    import pandas as pd

    chart = pd.DataFrame({"component": list(res.component_auroc),
                          "AUROC": [float(v) for v in res.component_auroc.values()]})
    full = {n: tuned.get(n, 0.0) for n in WEIGHT_NAMES}
    session.remember_weights(ctx, pid, full, "tuned")
    out = slider_updates(full)
    out.update(reaggregate(ctx, pid, sha, full, opacity, threshold))
    out.update({
        "tune_chart": gr.update(value=chart, visible=True), "undo_weights": dict(weights),
        "undo_preset": preset or "custom",
        "tune_status": (f"Validation AUROC: default weights {res.auroc_default:.3f} → tuned {res.auroc_tuned:.3f}. "
                        "Sliders moved to the tuned weights (Undo restores yours). "
                        f"Ran: {record['protocol']} protocol, {record['m_total']} augmented images "
                        f"({record['n_validation'][0]} anomalous + {record['n_validation'][1]} normal), "
                        f"{record['n_samples']} {record['distribution']} draws, seed {record['seed']}."),
        "preset": gr.update(choices=preset_choices(ctx, pid, list(full)), value="tuned"),
    })
    return out


@friendly
def undo_tune(ctx: StudioContext, pid, sha, undo: Mapping[str, float] | None, opacity: float, threshold: float,
              undo_preset: str | None = None) -> dict:
    """Sliders (and the preset label) back to what they were before Auto-tune."""
    if not undo:
        raise gr.Error("Nothing to undo.")
    full = {n: float(undo.get(n, 0.0)) for n in WEIGHT_NAMES}
    out = slider_updates(full)
    out.update(reaggregate(ctx, pid, sha, full, opacity, threshold))
    out.update({"undo_weights": None, "tune_status": "Restored the weights from before tuning.",
                "preset": undo_preset or "custom"})
    session.remember_weights(ctx, pid, full, undo_preset or "custom")
    return out


# --- layout and wiring -------------------------------------------------------------------------------
def build(studio) -> None:
    """Lay out the tab inside the current gr.Tab and register its wiring."""
    # registered before the panels below register theirs: they chain on `studio.scored_event`
    studio.extra_wiring.append(wiring)
    add = studio.add
    gr.Markdown(HELP.format(engine_doc=f"/gradio_api/file={DOCS / 'engine.md'}"), elem_id="inspect-help")
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            add("query_image", UploadedImage(label="Query image (drop or paste)", type="filepath",
                                             image_mode=None, format="png", sources=["upload", "clipboard"],
                                             elem_id="query-upload", height=260))
            add("query_pick", gr.Dropdown(label="…or pick one of the project's queries", choices=[],
                                          elem_id="query-pick"))
            with gr.Row():
                add("score_btn", gr.Button("Score", variant="primary", elem_id="score-button", scale=3))
                add("query_remove", gr.Button("Remove query", size="sm", elem_id="query-remove", scale=1))
            add("inspect_status", gr.Markdown("", elem_id="inspect-status"))
            add("opacity", gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="opacity"))
            add("threshold", gr.Slider(0, 1, value=0.5, step=0.001, elem_id="threshold",
                                       label="Threshold, aggregate score units (verdict and contour; 0 = off)"))
        with gr.Column(scale=2, min_width=360):
            add("aggregate_map", gr.Image(label="Aggregate map", type="numpy", format="png",
                                          interactive=False, elem_id="aggregate-map", height=440))
            add("aggregate_score", gr.Textbox(label="Aggregate image score", interactive=False,
                                              elem_id="aggregate-score"))
            decisions.build_inspect(studio)  # verdict badge, Calibrate, threshold view
            defects_panel.build(studio)  # predicted defect type, type classifier training
        with gr.Column(scale=1, min_width=280):
            add("preset", gr.Dropdown(label="Weight preset", choices=preset_choices(studio.ctx, None),
                                      value="paper", elem_id="preset"))
            with gr.Group():
                initial = initial_weights()
                for name in WEIGHT_NAMES:
                    add(f"weight:{name}", gr.Slider(0, 1, value=initial[name], step=0.01, label=name,
                                                    elem_id=f"weight-{name}", visible=False,
                                                    elem_classes=["weight-slider"]))
            with gr.Row(equal_height=True):
                add("preset_name", gr.Textbox(placeholder="preset name", show_label=False,
                                              elem_id="preset-name", scale=2))
                add("preset_save", gr.Button("Save preset", size="sm", elem_id="preset-save", scale=1))
            with gr.Row():
                add("tune_btn", gr.Button("Auto-tune weights", elem_id="tune-button"))
                add("tune_undo", gr.Button("Undo tuning", elem_id="tune-undo"))
            add("tune_status", gr.Markdown("", elem_id="tune-status"))
            add("tune_chart", gr.BarPlot(x="component", y="AUROC", y_lim=[0, 1], x_label_angle=-45,
                                         label="Validation AUROC per component", elem_id="tune-chart",
                                         height=220, visible=False))
    add("heatmaps", gr.Gallery(label="Components (map · image score)", columns=5, height="auto",
                               format="png", elem_id="heatmaps", allow_preview=True, interactive=False,
                               object_fit="contain"))


def wiring(s) -> None:
    C = s.C
    sliders = list(SLIDERS)
    s.wire(C["query_image"].upload, add_query, ["pid", "query_image"],
           ["query_pick", "query_iid", "query_image", "inspect_status"])
    s.wire(C["query_image"].clear, lambda ctx: {"query_iid": None}, [], ["query_iid"])
    s.wire(C["query_remove"].click,
           lambda ctx, pid, iid: session.remove(ctx, pid, iid) | {"query_iid": None, "query_image": None},
           ["pid", "query_iid"], list(session.REMOVED_OUTPUTS) + ["query_iid", "query_image"])
    s.wire(C["query_pick"].input, pick_query, ["pid", "query_pick"], ["query_image", "query_iid"])
    score_outs = ["heatmaps", "aggregate_map", "aggregate_score", "inspect_status", "query_sha", "preset"] + sliders
    s.scored_event = s.wire(C["score_btn"].click, score,
                            ["pid", "query_image", "query_iid", WEIGHTS, "opacity", "threshold", "preset"], score_outs,
                            progress=True, concurrency_id="models")  # other tabs and panels chain on it
    agg_ins = ["pid", "query_sha", WEIGHTS, "opacity", "threshold", "preset"]
    s.wire([C[k].input for k in sliders],  # a slider moved by hand: no preset gives these weights
           session.slider_moved, agg_ins, ["aggregate_map", "aggregate_score", "preset", "inspect_status"], fast=True)
    s.wire(C["threshold"].input, reaggregate, agg_ins, ["aggregate_map", "aggregate_score"], fast=True)
    s.wire(C["opacity"].input, rerender, agg_ins, ["heatmaps", "aggregate_map", "aggregate_score"], fast=True)
    s.wire(C["preset"].input, apply_preset, ["pid", "query_sha", "preset", "opacity", "threshold"],
           sliders + ["aggregate_map", "aggregate_score", "inspect_status"], fast=True)
    s.wire(C["preset_save"].click, save_preset, ["pid", "preset_name", WEIGHTS, "query_sha"], ["preset", "preset_name"])
    s.wire(C["tune_btn"].click, tune, ["pid", "query_sha", WEIGHTS, "opacity", "threshold", "preset"],
           sliders + ["aggregate_map", "aggregate_score", "tune_chart", "undo_weights", "undo_preset",
                      "tune_status", "preset"], progress=True, concurrency_id="models")
    s.wire(C["tune_undo"].click, undo_tune, ["pid", "query_sha", "undo_weights", "opacity", "threshold", "undo_preset"],
           sliders + ["aggregate_map", "aggregate_score", "undo_weights", "tune_status", "preset"])
