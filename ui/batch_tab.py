"""The Batch tab: score many images with the project's shots and the current weights, ranked.

Each image is encoded once and scored with every component; the table and the gallery fill in as
images complete (most anomalous first), and the run is saved to the store.
"""
from __future__ import annotations

import csv
import html
import tempfile
import time
from pathlib import Path

import gradio as gr

from fsad_core.images import ImageError
from fsad_core.progress import Progress, silent

from . import defects_panel, project_bar, render
from .common import as_list, friendly, log, need_project, read_upload
from .context import StudioContext
from .weights import WEIGHTS, effective_weights, initial_weights

COLUMNS = ["rank", "image", "aggregate score", "top component", "top component score", "predicted type"]



@friendly
def run(ctx: StudioContext, pid, files, use_queries: bool, weights, opacity: float,
        progress: Progress = silent):
    """Score every dropped image (and the project's queries if asked), yielding the ranking so far."""
    pid = need_project(pid)
    items = []
    for f in as_list(files):
        try:
            img, name = read_upload(f)
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
        weights = initial_weights()
    rows, panels = [], []
    t0 = time.perf_counter()
    for i, (name, img, iid) in enumerate(items):
        progress(i / len(items), f"Scoring {i + 1}/{len(items)}: {name}")
        with pe.lock:
            result = pe.engine.score(img)
        ctx.queries.put(result.query_sha256, img)
        ctx.put_result(pid, result.query_sha256, result, image_id=iid)
        try:
            agg = result.aggregate(effective_weights(weights, result.components))
        except ValueError:
            agg = result.aggregate()
        top = max(result.components.items(), key=lambda kv: float(kv[1].score))
        rows.append({"image": name, "image_id": iid, "score": float(agg.score), "top": top[0],
                     "top_score": float(top[1].score),
                     "panel": render.heat_panel(img, agg.map, opacity),
                     "type": defects_panel.predicted_type(ctx, pid, img)})
        rows.sort(key=lambda r: -r["score"])
        table = [[k + 1, r["image"], round(r["score"], 4), r["top"], round(r["top_score"], 4), r["type"]]
                 for k, r in enumerate(rows)]
        panels = [(r["panel"], f"{k + 1}. {r['image']} · {r['score']:.4f}") for k, r in enumerate(rows)]
        yield {"batch_table": table, "batch_gallery": panels,
               "batch_status": f"{i + 1}/{len(items)} scored ({time.perf_counter() - t0:.1f} s)"}
    try:
        run_id = ctx.store.save_run(
            pid, "batch", {"n": len(items), "weights": dict(weights), "profile": ctx.profile},
            {"ranking": [{k: r[k] for k in ("image", "image_id", "score", "top", "top_score", "type")} for r in rows]})
    except Exception as exc:  # the ranking on screen matters more than its log
        log.warning("could not save the batch run: %s", exc)
        return
    yield {"batch_history": gr.update(choices=history_choices(ctx, pid), value=run_id),
           "batch_download": run_files(ctx, pid, run_id)}


# --- saved runs: listed after a reload, downloadable ---------------------------------------------------
def history_choices(ctx: StudioContext, pid: int) -> list[tuple[str, int]]:
    """The project's saved batch runs, newest first."""
    out = []
    for r in reversed(ctx.store.list_runs(pid, "batch")):
        when = str(r.get("created_at") or "")[:19].replace("T", " ")
        n = len((r.get("results") or {}).get("ranking") or [])
        out.append((f"run #{r['id']} · {when} UTC · {n} images", int(r["id"])))
    return out


def _table(ranking: list[dict]) -> list[list]:
    return [[k + 1, r.get("image"), round(float(r.get("score", 0.0)), 4), r.get("top"),
             round(float(r["top_score"]), 4) if r.get("top_score") is not None else None, r.get("type")]
            for k, r in enumerate(ranking)]


def run_files(ctx: StudioContext, pid: int, run_id: int) -> list[str]:
    """scores.csv and report.html of a saved run, written from the stored ranking into the system's
    temp folder (Gradio serves downloads only from there, the working dir or allowed paths)."""
    run = ctx.store.get_run(int(run_id))
    ranking = (run.get("results") or {}).get("ranking") or []
    folder = Path(tempfile.gettempdir()) / "fsad-studio-downloads" / f"project-{int(pid)}"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = folder / f"run-{run_id}-scores.csv", folder / f"run-{run_id}-report.html"
    table = _table(ranking)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(table)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
                   for row in table)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    html_path.write_text(
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fsad-studio batch run {run_id}</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:3px 8px}</style></head><body>"
        f"<h1>Batch run {run_id}</h1><p>{html.escape(str(run.get('created_at')))} · profile "
        f"{html.escape(str((run.get('params') or {}).get('profile')))} · most anomalous first</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></body></html>", encoding="utf-8")
    return [str(csv_path), str(html_path)]


def history(ctx: StudioContext, pid) -> dict:
    if pid is None or pid == "":
        return {}
    return {"batch_history": gr.update(choices=history_choices(ctx, int(pid)), value=None)}


@friendly
def show_run(ctx: StudioContext, pid, run_id) -> dict:
    """A saved run: its ranking in the table and its CSV / HTML report to download."""
    pid = need_project(pid)
    if run_id is None or run_id == "":
        return {}
    run = ctx.store.get_run(int(run_id))
    if int(run.get("project_id", pid)) != pid:
        raise gr.Error(f"Run {run_id} belongs to another project.")
    ranking = (run.get("results") or {}).get("ranking") or []
    return {"batch_table": _table(ranking), "batch_download": run_files(ctx, pid, int(run_id)),
            "batch_status": f"Saved run #{run_id} ({len(ranking)} images); maps are not kept — run again to "
                            "see them."}


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
    with gr.Row(equal_height=True):
        add("batch_history", gr.Dropdown(label="Saved batch runs", choices=[], elem_id="batch-history", scale=2))
        add("batch_download", gr.File(label="Download (CSV, HTML report)", file_count="multiple", interactive=False,
                                      elem_id="batch-download", height=90, scale=3))
    add("batch_table", gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="batch-table"))
    add("batch_gallery", gr.Gallery(label="Aggregate maps, most anomalous first", columns=6, height="auto",
                                    format="png", elem_id="batch-gallery", interactive=False))

    def wiring(s) -> None:
        C = s.C
        s.wire(C["batch_run"].click, run, ["pid", "batch_files", "batch_queries", WEIGHTS, "opacity"],
               ["batch_table", "batch_gallery", "batch_status", "batch_history", "batch_download"], progress=True,
               concurrency_id="models")
        s.wire(C["batch_history"].input, show_run, ["pid", "batch_history"],
               ["batch_table", "batch_status", "batch_download"])
        for dep in s.opened_events:  # a reload lists the project's saved runs (of the project still shown)
            dep.then(*s.chained(history, ["pid"], ["batch_history"], follows_opening=True),
                     concurrency_id=project_bar.OPENING, concurrency_limit=1)

    studio.extra_wiring.append(wiring)
