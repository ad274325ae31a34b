"""The Batch tab: score many images with the project's shots and the current weights, ranked.

Each image is encoded once and scored with every component; the table and the gallery fill in as
images complete (most anomalous first), and the run is saved to the store.
"""
from __future__ import annotations

import time
from typing import Callable

import gradio as gr

from fsad_core.images import ImageError

from . import events, render
from .context import StudioContext

COLUMNS = ["rank", "image", "aggregate score", "top component", "top component score", "predicted type"]


def _no_progress(frac: float, desc: str = "") -> None:
    pass


@events.friendly
def run(ctx: StudioContext, pid, files, use_queries: bool, weights, opacity: float,
        progress: Callable = _no_progress):
    """Score every dropped image (and the project's queries if asked), yielding the ranking so far."""
    pid = events._need_project(pid)
    items = []
    for f in events._as_list(files):
        try:
            img, name = events._read_upload(f)
            items.append((name or "upload", img, None))
        except ImageError as exc:
            gr.Warning(str(exc))
    if use_queries:
        for r in ctx.store.list_images(pid, role="query"):
            items.append((r.get("filename") or f"image {r['id']}", ctx.store.read_image(r["id"]), int(r["id"])))
    if not items:
        raise gr.Error("Drop images to inspect, or tick 'include the project's query images'.")
    pe = ctx.project_engine(pid, progress)
    if weights is None or not any(v > 0 for v in weights.values()):
        weights = events.initial_weights()
    rows, panels = [], []
    t0 = time.perf_counter()
    for i, (name, img, iid) in enumerate(items):
        progress(i / len(items), f"Scoring {i + 1}/{len(items)}: {name}")
        with pe.lock:
            result = pe.engine.score(img)
        ctx.queries.put(result.query_sha256, img)
        ctx.put_result(pid, result.query_sha256, result, image_id=iid)
        try:
            agg = result.aggregate(events._effective_weights(weights, result.components))
        except ValueError:
            agg = result.aggregate()
        top = max(result.components.items(), key=lambda kv: float(kv[1].score))
        from . import defects_panel

        rows.append({"image": name, "score": float(agg.score), "top": top[0], "top_score": float(top[1].score),
                     "panel": render.heat_panel(img, agg.map, opacity),
                     "type": defects_panel.predicted_type(ctx, pid, img)})
        rows.sort(key=lambda r: -r["score"])
        table = [[k + 1, r["image"], round(r["score"], 4), r["top"], round(r["top_score"], 4), r["type"]]
                 for k, r in enumerate(rows)]
        panels = [(r["panel"], f"{k + 1}. {r['image']} · {r['score']:.4f}") for k, r in enumerate(rows)]
        yield {"batch_table": table, "batch_gallery": panels,
               "batch_status": f"{i + 1}/{len(items)} scored ({time.perf_counter() - t0:.1f} s)"}
    try:
        ctx.store.save_run(pid, "batch", {"n": len(items), "weights": dict(weights), "profile": ctx.profile},
                           {"ranking": [{"image": r["image"], "score": r["score"], "top": r["top"], "type": r["type"]}
                                       for r in rows]})
    except Exception as exc:  # the ranking on screen matters more than its log
        events.log.warning("could not save the batch run: %s", exc)


def build(studio) -> None:
    add = studio.add
    gr.Markdown("Score a folder's worth of images with this project's shots and the current weights; "
                "the most anomalous come first.")
    with gr.Row():
        add("batch_files", gr.File(label="Drop images", file_count="multiple", file_types=["image"],
                                   elem_id="batch-upload", height=120, scale=3))
        with gr.Column(scale=1):
            add("batch_queries", gr.Checkbox(label="include the project's query images", value=True,
                                             elem_id="batch-include-queries"))
            add("batch_run", gr.Button("Run batch", variant="primary", elem_id="batch-run"))
    add("batch_status", gr.Markdown("", elem_id="batch-status"))
    add("batch_table", gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="batch-table"))
    add("batch_gallery", gr.Gallery(label="Aggregate maps, most anomalous first", columns=6, height="auto",
                                    format="png", elem_id="batch-gallery", interactive=False))

    def wiring(s) -> None:
        C = s.C
        s.wire(C["batch_run"].click, run, ["pid", "batch_files", "batch_queries", "@weights", "opacity"],
               ["batch_table", "batch_gallery", "batch_status"], progress=True, concurrency_id="models")

    studio.extra_wiring = getattr(studio, "extra_wiring", []) + [wiring]
