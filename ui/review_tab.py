"""The Review tab: the project's query images as a review queue, most doubtful first
(nearest the threshold), each with its verdict, score and overlay. The engineer confirms or corrects
(OK / NG, keys **o** / **n**, **j** skips), with a free-text reviewer name; every decision is a
review label in the store (who, when, what the tool said), so it survives restarts and feeds
calibration. A corrected miss opens in Shots as an anomalous image to paint (it becomes a shot once
its mask is saved); a confirmed OK can become a normal shot or be kept for calibration. The
memories rebuild from cached encodings (`StudioContext.sync_image`).
"""
from __future__ import annotations

import gradio as gr
import numpy as np

from fsad_core.progress import Progress, silent

from . import render
from .common import anomalous_gallery, friendly, need_project, normal_gallery
from .context import LRU, StudioContext
from .decisions import slider_weight_set
from .shots_tab import pick_anomalous
from .weights import WEIGHTS

SHORTCUTS_JS = """<script>
document.addEventListener('keydown', (e) => {
  const t = e.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const id = {o: 'review-ok', n: 'review-ng', j: 'review-next'}[(e.key || '').toLowerCase()];
  if (!id) return;
  const el = document.getElementById(id);
  if (!el || el.offsetParent === null) return;  // only while the Review tab is shown
  el.click();
  e.preventDefault();
});
</script>"""

TO_SHOTS_JS = """() => { const b = [...document.querySelectorAll('button[role="tab"]')]
  .find(x => x.textContent.trim() === 'Shots'); if (b) b.click(); }"""



def _doubt(item: dict, threshold: float) -> float:
    return abs(float(item["score"]) - float(threshold))


_THUMBS = LRU(256)  # (store path, image id, score) -> overlay thumbnail: decisions redraw captions only


def _caption(k: int, it: dict) -> str:
    lab = f" ✓{it['label']}" if it.get("label") else ""
    return f"{it['verdict']} {it['score']:.3f}{lab} · {k + 1}. {it['name']}"


def _thumb(ctx: StudioContext, it: dict, amap: np.ndarray | None = None) -> np.ndarray:
    key = (str(getattr(ctx.store, "path", "")), it["iid"], round(float(it["score"]), 6))
    hit = _THUMBS.get(key)
    if hit is None:
        img = ctx.store.read_image(it["iid"])
        hit = render.heat_panel(img, amap, 0.5, max_side=160) if amap is not None else render.thumbnail(img, 160)
        _THUMBS.put(key, hit)
    return hit


def _gallery(ctx: StudioContext, pid: int, items: list[dict]) -> list:
    return [(_thumb(ctx, it), _caption(k, it)) for k, it in enumerate(items)]


def _view(ctx: StudioContext, pid: int, items: list[dict], sel) -> dict:
    if not items or sel is None or not 0 <= int(sel) < len(items):
        return {"review_image": None, "review_info": "Nothing selected.", "review_sel": None}
    it = items[int(sel)]
    pe = ctx.project_engine(pid)
    img = ctx.store.read_image(it["iid"])
    with pe.lock:
        result = pe.engine.score(img)  # encodings cached: cheap
    try:
        from fsad_core.aggregate import WeightSet

        agg = result.aggregate(WeightSet.from_dict(it["weights"]) if it.get("weights") else None)
        panel = render.aggregate_panel(img, agg.map, 0.5, it.get("threshold"), score_units=True)
    except ValueError:
        panel = img
    lab = ctx.store.get_label(it["iid"])
    said = (f" · reviewed **{lab['label']}** by {lab['reviewer'] or 'someone'} ({lab['created_at'][:16]})"
            + (f", defect *{lab['defect_type']}*" if lab.get("defect_type") else "")) if lab else " · not reviewed"
    return {"review_image": panel, "review_sel": int(sel),
            "review_info": f"**{it['name']}** — tool says **{it['verdict']}** (score {it['score']:.4f}, threshold "
                           f"{it['threshold']:.4f}){said}. Keys: **o** = OK, **n** = NG, **j** = skip.",
            "review_defect_type": gr.update(choices=ctx.store.defect_types(pid),
                                            value=(lab or {}).get("defect_type"))}


@friendly
def load_queue(ctx: StudioContext, pid, weights, threshold, decision, preset=None,
               progress: Progress = silent) -> dict:
    """Score the project's queries (cached encodings), give verdicts at the threshold, save them, and
    sort the queue by nearness to the threshold (most doubtful first)."""
    from fsad_core.calibration import verdict

    pid = need_project(pid)
    thr = float(threshold or 0)
    if thr <= 0:
        raise gr.Error("Set a threshold first (Inspect: Calibrate, or type one).")
    margin = float((decision or {}).get("margin") or 0.0)
    w = slider_weight_set(weights, preset)
    pe = ctx.project_engine(pid, progress)
    rows = ctx.store.list_images(pid, role="query")
    if not rows:
        raise gr.Error("No query images in this project: add some in Inspect, Batch (include queries) or import a "
                       "folder.")
    items = []
    for i, r in enumerate(rows):
        progress(i / len(rows), f"Scoring {i + 1}/{len(rows)}")
        img = ctx.store.read_image(r["id"])
        with pe.lock:
            result = pe.engine.score(img)
        agg = result.aggregate(w)
        s = float(agg.score)
        v = verdict(s, thr, margin)
        ctx.store.save_verdict(r["id"], s, v, threshold=thr, weights=w)
        lab = ctx.store.get_label(r["id"])
        items.append({"iid": int(r["id"]), "name": r.get("filename") or f"image {r['id']}", "score": s, "verdict": v,
                      "threshold": thr, "margin": margin, "weights": w.to_dict(), "label": (lab or {}).get("label")})
        _thumb(ctx, items[-1], agg.map)  # the overlay, cached for the gallery
    items.sort(key=lambda it: (it["label"] is not None, _doubt(it, thr)))
    out = {"review_items": items, "review_queue": _gallery(ctx, pid, items),
           "review_status": f"{len(items)} images; {sum(it['label'] is None for it in items)} not reviewed; most "
                            "doubtful first."}
    out.update(_view(ctx, pid, items, 0))
    return out


def select(ctx: StudioContext, pid, items, index) -> dict:
    if pid is None or not items:
        return {}
    return _view(ctx, int(pid), items, index)


def _next_open(items: list[dict], sel: int) -> int:
    n = len(items)
    for k in range(1, n + 1):
        j = (sel + k) % n
        if items[j].get("label") is None:
            return j
    return min(sel + 1, n - 1)


@friendly
def decide(ctx: StudioContext, pid, items, sel, label: str, reviewer, defect_type) -> dict:
    """Save the reviewer's OK / NG for the selected image and move to the next unreviewed one."""
    pid = need_project(pid)
    if not items or sel is None:
        raise gr.Error("Load the queue and select an image first.")
    it = dict(items[int(sel)])
    ctx.store.save_label(it["iid"], label, reviewer=(reviewer or None), defect_type=defect_type if label == "NG" else None,
                         score=it["score"], verdict=it["verdict"], threshold=it["threshold"])
    items = list(items)
    it["label"] = label
    items[int(sel)] = it
    corrected = (label == "NG") != (it["verdict"] == "NG")
    msg = (f"Saved **{label}** for {it['name']}" + (" (a correction of the tool's verdict)" if corrected else "")
           + (". A missed defect: *Open in Shots* to paint it and make it an anomalous shot." if label == "NG"
              and it["verdict"] != "NG" else "."))
    out = {"review_items": items, "review_queue": _gallery(ctx, pid, items), "review_status": msg}
    out.update(_view(ctx, pid, items, _next_open(items, int(sel))))
    return out


def skip(ctx: StudioContext, pid, items, sel) -> dict:
    if pid is None or not items:
        return {}
    return _view(ctx, int(pid), items, (int(sel or 0) + 1) % len(items))


def _selected(items, sel) -> dict:
    if not items or sel is None:
        raise gr.Error("Select an image in the queue first.")
    return items[int(sel)]


@friendly
def to_shot(ctx: StudioContext, pid, items, sel, reviewer, defect_type) -> dict:
    """A missed defect becomes an anomalous image in Shots (a shot once its mask is painted and saved)."""
    pid = need_project(pid)
    it = _selected(items, sel)
    lab = ctx.store.get_label(it["iid"])
    if lab is None or lab["label"] != "NG":
        ctx.store.save_label(it["iid"], "NG", reviewer=reviewer or None, defect_type=defect_type or None,
                             score=it["score"], verdict=it["verdict"], threshold=it["threshold"])
    ctx.store.set_role(it["iid"], "anomalous")
    if defect_type:
        ctx.store.set_defect_type(it["iid"], defect_type)
    ctx.sync_image(pid, it["iid"])
    out = pick_anomalous(ctx, pid, it["iid"])
    out.update({"anomalous_gallery": anomalous_gallery(ctx, pid),
                "review_status": f"{it['name']} is now an anomalous image in Shots: paint the defect and *Save shot*."})
    return out


@friendly
def to_normal(ctx: StudioContext, pid, items, sel, reviewer) -> dict:
    """A confirmed OK becomes a normal shot (the normal memory rebuilds from cached encodings)."""
    pid = need_project(pid)
    it = _selected(items, sel)
    ctx.store.save_label(it["iid"], "OK", reviewer=reviewer or None, score=it["score"], verdict=it["verdict"],
                         threshold=it["threshold"])
    ctx.store.set_role(it["iid"], "normal")
    ctx.sync_image(pid, it["iid"])
    return {"normal_gallery": normal_gallery(ctx, pid),
            "review_status": f"{it['name']} is now a normal shot (shots changed: re-calibrate the threshold)."}


@friendly
def to_calibration(ctx: StudioContext, pid, items, sel, reviewer) -> dict:
    """A confirmed OK kept as a held-out calibration image (never a shot)."""
    pid = need_project(pid)
    it = _selected(items, sel)
    ctx.store.save_label(it["iid"], "OK", reviewer=reviewer or None, score=it["score"], verdict=it["verdict"],
                         threshold=it["threshold"], use="calibration")
    n = len(ctx.store.labelled_images(pid, "OK"))
    return {"review_status": f"{it['name']} kept for calibration ({n} OK images now; Calibrate in Inspect uses them)."}


def build(studio) -> None:
    add = studio.add
    gr.Markdown("The project's query images, **most doubtful first** (nearest the threshold). Confirm or correct the "
                "tool: **o** = OK, **n** = NG, **j** = skip (keys work when no text box has the focus). Decisions are "
                "saved with your name and the time, survive restarts, and feed *Calibrate*.")
    add("review_items", gr.State([]))
    add("review_sel", gr.State(None))
    with gr.Row(equal_height=True):
        add("reviewer", gr.Textbox(label="Reviewer", placeholder="your name", elem_id="reviewer", scale=2))
        add("review_load", gr.Button("Load review queue", variant="primary", elem_id="review-load", scale=1))
    add("review_status", gr.Markdown("", elem_id="review-status"))
    with gr.Row():
        with gr.Column(scale=2):
            add("review_queue", gr.Gallery(label="Queue: verdict, score, overlay (most doubtful first)", columns=4,
                                           height=560, format="png",
                                           elem_id="review-queue", allow_preview=False, interactive=False))
        with gr.Column(scale=2):
            add("review_image", gr.Image(label="Aggregate map, contour at the threshold", type="numpy", format="png",
                                         interactive=False, elem_id="review-image", height=360))
            add("review_info", gr.Markdown("", elem_id="review-info"))
            with gr.Row():
                add("review_ok", gr.Button("OK  [o]", elem_id="review-ok", variant="primary"))
                add("review_ng", gr.Button("NG  [n]", elem_id="review-ng", variant="stop"))
                add("review_next", gr.Button("Skip  [j]", elem_id="review-next", size="sm"))
            add("review_defect_type", gr.Dropdown(label="Defect type (for NG)", choices=[], allow_custom_value=True,
                                                  elem_id="review-defect-type"))
            with gr.Row():
                add("review_to_shot", gr.Button("Open in Shots (anomalous)", size="sm", elem_id="review-to-shot"))
                add("review_to_normal", gr.Button("Make normal shot", size="sm", elem_id="review-to-normal"))
                add("review_to_calibration", gr.Button("Keep for calibration", size="sm",
                                                       elem_id="review-to-calibration"))

    def wiring(s) -> None:
        C = s.C
        view = ["review_image", "review_info", "review_sel", "review_defect_type"]
        queue = ["review_items", "review_queue", "review_status"] + view
        s.wire(C["review_load"].click, load_queue, ["pid", WEIGHTS, "threshold", "decision", "preset"], queue,
               progress=True, concurrency_id="models")
        s.wire(C["review_queue"].select, select, ["pid", "review_items"], view, select=True)
        for key, label in (("review_ok", "OK"), ("review_ng", "NG")):
            s.wire(C[key].click, lambda ctx, pid, items, sel, who, dt, _l=label: decide(ctx, pid, items, sel, _l, who, dt),
                   ["pid", "review_items", "review_sel", "reviewer", "review_defect_type"], queue)
        s.wire(C["review_next"].click, skip, ["pid", "review_items", "review_sel"], view)
        anom_view = ["anom_id", "anom_pick", "editor", "sam_view", "sam_proposals", "sam_prompts", "sam_status",
                     "defect_type"]
        s.wire(C["review_to_shot"].click, to_shot,
               ["pid", "review_items", "review_sel", "reviewer", "review_defect_type"],
               anom_view + ["anomalous_gallery", "review_status"]).then(None, js=TO_SHOTS_JS)
        s.wire(C["review_to_normal"].click, to_normal, ["pid", "review_items", "review_sel", "reviewer"],
               ["normal_gallery", "review_status"])
        s.wire(C["review_to_calibration"].click, to_calibration, ["pid", "review_items", "review_sel", "reviewer"],
               ["review_status"])

    studio.extra_wiring.append(wiring)
