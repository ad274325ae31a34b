"""APRIL-GAN adapters in the studio (Models tab): train on the project's annotated shots as a
background job (progress, cancel, resume), show what is loaded, list adapter checkpoints, use a
checkpoint file.

The project's adapter lives at `<project dir>/adapters/adapter.safetensors` (next to the store, as
One-to-Normal's LoRA weights do) and is attached to the project's engine when the engine is built
(`attach_saved_adapter`, called by `StudioContext`), after training and after "Use checkpoint".
Its components (`adapter`, `adapter_memory`, `adapter_text`) then show up as heatmap panels and
sliders by themselves, since the Inspect tab reads the engine's components.

Element ids: adapters-train, adapters-cancel, adapters-epochs, adapters-copies, adapters-status,
adapters-timer (polls while a job runs), adapters-table, adapters-path, adapters-use.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from .common import friendly, need_project, user_message
from .context import StudioContext

log = logging.getLogger("fsad.ui")
TABLE_COLUMNS = ["where", "file", "backbone", "resolution", "trained on", "final loss"]


@dataclass
class AdapterJob:
    pid: int
    stop: threading.Event = field(default_factory=threading.Event)
    state: str = "starting"  # starting | running | done | cancelled | failed
    progress_text: str = ""  # the trainer's progress message ("step 12/40, loss 0.4810")
    message: str = ""
    started: float = field(default_factory=time.perf_counter)
    thread: threading.Thread | None = None


def _jobs(ctx: StudioContext) -> dict[int, AdapterJob]:
    return ctx.__dict__.setdefault("adapter_jobs", {})


def _backbones(ctx: StudioContext) -> dict:
    """One AdapterBackbone per (model, resolution) for the process, shared by every project."""
    return ctx.__dict__.setdefault("adapter_backbones", {})


def adapter_path(ctx: StudioContext, pid: int) -> Path:
    return ctx.store.project_dir(int(pid)) / "adapters" / "adapter.safetensors"


def _backbone(ctx: StudioContext, ref):
    from fsad_core.adapters.stages import AdapterBackbone

    cache = _backbones(ctx)
    if ref not in cache:
        cache[ref] = AdapterBackbone(ref)
    return cache[ref]


def _attach(ctx: StudioContext, pid: int, path: Path) -> str:
    """Load the checkpoint onto the project's engine (replacing an earlier adapter). Returns a note."""
    from fsad_core.adapters.checkpoint import load_checkpoint
    from fsad_core.scorers.adapter import load_adapter_scorer

    pe = ctx.project_engine(pid)
    ref = load_checkpoint(path).backbone
    scorer = load_adapter_scorer(path, pe.engine.config, backbone=_backbone(ctx, ref))
    with pe.lock:
        pe.engine.add_scorer(scorer)
        pe.version += 1  # cached results lack the new components: rescore
    return f"{ref.name} at {ref.resolution} px"


def attach_saved_adapter(ctx: StudioContext, pid: int, engine) -> None:
    """Called when a project's engine is built from the store: reload the project's adapter, if any.
    A checkpoint that cannot be loaded (e.g. its backbone's weights are missing) is logged and shown
    by `status`, never an error that stops the project from opening."""
    try:
        path = adapter_path(ctx, pid)
        if not path.is_file():
            return
        from fsad_core.adapters.checkpoint import load_checkpoint
        from fsad_core.scorers.adapter import load_adapter_scorer

        ref = load_checkpoint(path).backbone
        engine.add_scorer(load_adapter_scorer(path, engine.config, backbone=_backbone(ctx, ref)))
    except Exception as exc:
        ctx.__dict__.setdefault("adapter_errors", {})[int(pid)] = user_message(exc)
        log.warning("project %s: adapter not loaded: %s", pid, exc)


def _shots(ctx: StudioContext, pid: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    shots = []
    for row in ctx.store.list_images(pid):
        if row["role"] == "normal":
            shots.append((ctx.store.read_image(row["id"]), None))
        elif row["role"] == "anomalous":
            mask = ctx.store.get_mask(row["id"])
            if mask is not None and np.asarray(mask).any():
                shots.append((ctx.store.read_image(row["id"]), np.asarray(mask, bool)))
    return shots


def _run(ctx: StudioContext, job: AdapterJob, epochs: int, copies: int) -> None:
    from fsad_core.adapters.stages import BackboneRef
    from fsad_core.adapters.train import TrainConfig, TrainingCancelled, shot_items, train_adapters

    try:
        proj = ctx.store.get_project(job.pid)
        items, data = shot_items(_shots(ctx, job.pid), proj.get("class_name") or "object", copies=copies)
        ref = BackboneRef.default(ctx.profile)
        job.message = f"loading {ref.name}"
        bb = _backbone(ctx, ref)
        job.state = "running"

        def progress(fraction: float, message: str) -> None:  # the status line shows the trainer's text
            job.progress_text = message

        path = adapter_path(ctx, job.pid)
        ckpt = train_adapters(bb, items, path, TrainConfig(epochs=epochs, batch_size=16), data, progress=progress,
                              should_stop=job.stop.is_set)
        where = _attach(ctx, job.pid, path)
        job.state = "done"
        job.message = (f"trained on {data['n_anomalous']} annotated + {data['n_normal']} normal shots "
                       f"({data['n_images']} images with augmentations), loss {ckpt.metrics['first_loss']:.3f} → "
                       f"{ckpt.metrics['final_loss']:.3f}; loaded ({where})")
    except TrainingCancelled:
        job.state = "cancelled"
        job.message = "cancelled; press Train adapters again to resume where it stopped"
    except Exception as exc:  # shown in the status line, never a crashed thread
        job.state = "failed"
        job.message = user_message(exc)
        log.warning("adapter training failed: %s", exc)


@friendly
def train(ctx: StudioContext, pid, epochs, copies) -> dict:
    """Start training in the background (or say that a job is already running)."""
    pid = need_project(pid)
    job = _jobs(ctx).get(pid)
    if job is not None and job.thread is not None and job.thread.is_alive():
        return status(ctx, pid)
    if not any(m is not None for _, m in _shots(ctx, pid)):
        raise gr.Error("Training the adapters needs at least one anomalous shot with a saved defect mask "
                       "(Shots tab).")
    job = AdapterJob(pid)
    job.thread = threading.Thread(target=_run, args=(ctx, job, max(1, int(epochs or 3)), max(0, int(copies or 0))),
                                  name=f"fsad-adapters-{pid}", daemon=True)
    _jobs(ctx)[pid] = job
    job.thread.start()
    return {**status(ctx, pid), "adapters_timer": gr.Timer(active=True)}


def cancel(ctx: StudioContext, pid) -> dict:
    if pid is None or pid == "":
        return {"adapters_status": "No project is open."}
    job = _jobs(ctx).get(int(pid))
    if job is not None and job.thread is not None and job.thread.is_alive():
        job.stop.set()
        return {"adapters_status": "Cancelling after the current step…"}
    return status(ctx, pid)


def status(ctx: StudioContext, pid) -> dict:
    """The status line (job progress, or what is loaded) and the checkpoint table."""
    out = {"adapters_table": table(ctx, pid)}
    if pid is None or pid == "":
        out["adapters_status"] = "Open a project to train or load adapters."
        out["adapters_timer"] = gr.Timer(active=False)
        return out
    pid = int(pid)
    job = _jobs(ctx).get(pid)
    running = job is not None and job.thread is not None and job.thread.is_alive()
    if running:
        frac = job.progress_text or job.message or "starting"
        out["adapters_status"] = f"Training adapters: {frac} ({time.perf_counter() - job.started:.0f} s)"
    elif job is not None and job.state in ("done", "cancelled", "failed"):
        out["adapters_status"] = f"Adapter training {job.state}: {job.message}"
    else:
        out["adapters_status"] = _loaded_note(ctx, pid)
    out["adapters_timer"] = gr.Timer(active=running)
    return out


def _loaded_note(ctx: StudioContext, pid: int) -> str:
    err = ctx.__dict__.get("adapter_errors", {}).get(pid)
    if err:
        return f"The project's adapter could not be loaded: {err}"
    pe = ctx._engines.get(pid)
    scorer = pe.engine.scorer("adapter") if pe is not None else None
    if scorer is not None:
        ref = scorer.checkpoint.backbone
        return (f"Adapter loaded ({ref.name}, {ref.resolution} px): components adapter, adapter_text and, "
                "with normal shots, adapter_memory.")
    if adapter_path(ctx, pid).is_file():
        return "This project has a trained adapter; it loads with the project's engine (score a query)."
    return "No adapter yet: annotate anomalous shots, then press Train adapters."


def table(ctx: StudioContext, pid=None) -> list[list]:
    """Adapter checkpoints: the open project's and those in the weights cache's adapters/ folder."""
    from fsad_core.adapters.checkpoint import read_header
    from fsad_core.models import registry

    files = []
    if pid not in (None, ""):
        p = adapter_path(ctx, int(pid))
        if p.is_file():
            files.append(("project", p))
    cache = registry.cache_dir() / "adapters"
    if cache.is_dir():
        files += [("cache", p) for p in sorted(cache.glob("*.safetensors"))]
    rows = []
    for where, p in files:
        try:
            h = read_header(p)
        except Exception as exc:
            rows.append([where, str(p), "unreadable", "", user_message(exc)[:80], ""])
            continue
        tr = h.get("training", {})
        src = (f"{tr.get('n_anomalous', '?')} anomalous shots" if tr.get("source") == "project-shots"
               else ", ".join(tr.get("categories", {})) or tr.get("source", "?"))
        rows.append([where, str(p), f"{h['backbone']['name']}@{h['backbone']['tag']}", h["backbone"]["resolution"],
                     src, round(float(h.get("metrics", {}).get("final_loss", float("nan"))), 4)])
    return rows


@friendly
def use_checkpoint(ctx: StudioContext, pid, path) -> dict:
    """Copy a checkpoint file into the project (so it reloads with it) and attach it."""
    from fsad_core.adapters.checkpoint import load_checkpoint

    pid = need_project(pid)
    if not path or not str(path).strip():
        raise gr.Error("Give the path of an adapter checkpoint (.safetensors), e.g. one written by "
                       "`python -m fsad_core adapters train`.")
    src = Path(str(path).strip()).expanduser()
    load_checkpoint(src)  # a clear error before anything of the project is touched
    dest = adapter_path(ctx, pid)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".incoming")
    shutil.copyfile(src, tmp)
    previous = dest.with_name(dest.name + ".previous")
    if dest.is_file():
        shutil.copyfile(dest, previous)
    tmp.replace(dest)
    try:
        where = _attach(ctx, pid, dest)
    except Exception:
        if previous.is_file():  # keep what worked before
            previous.replace(dest)
        raise
    previous.unlink(missing_ok=True)
    ctx.__dict__.get("adapter_errors", {}).pop(pid, None)
    return {"adapters_status": f"Adapter loaded from {src} ({where}). Score a query to see its maps.",
            "adapters_table": table(ctx, pid)}


def build(studio) -> None:
    add = studio.add
    gr.Markdown("### Adapters (APRIL-GAN)\nLinear maps from CLIP's stage features into the text space, trained "
                "on this project's annotated anomalous shots (with augmentations). Adds the components "
                "`adapter`, `adapter_memory` and `adapter_text`.")
    with gr.Row(equal_height=True):
        add("adapters_epochs", gr.Number(label="Epochs", value=3, precision=0, minimum=1, elem_id="adapters-epochs",
                                         scale=1))
        add("adapters_copies", gr.Number(label="Augmented copies per shot", value=10, precision=0, minimum=0,
                                         elem_id="adapters-copies", scale=1))
        add("adapters_train", gr.Button("Train adapters", variant="primary", elem_id="adapters-train", scale=1))
        add("adapters_cancel", gr.Button("Cancel", elem_id="adapters-cancel", scale=1))
    add("adapters_status", gr.Markdown("", elem_id="adapters-status"))
    add("adapters_timer", gr.Timer(1.0, active=False))
    add("adapters_table", gr.Dataframe(headers=TABLE_COLUMNS, value=table(studio.ctx), interactive=False,
                                       elem_id="adapters-table", wrap=True))
    with gr.Row(equal_height=True):
        add("adapters_path", gr.Textbox(label="Adapter checkpoint file", placeholder="/path/to/adapter.safetensors",
                                        elem_id="adapters-path", scale=3))
        add("adapters_use", gr.Button("Use checkpoint", elem_id="adapters-use", scale=1))

    def wiring(s) -> None:
        C = s.C
        outs = ["adapters_status", "adapters_table", "adapters_timer"]
        s.wire(C["adapters_train"].click, train, ["pid", "adapters_epochs", "adapters_copies"], outs)
        s.wire(C["adapters_cancel"].click, cancel, ["pid"], ["adapters_status", "adapters_table"], queue=False)
        s.wire(C["adapters_timer"].tick, status, ["pid"], outs, queue=False, show_progress="hidden")
        s.wire(C["pid"].change, status, ["pid"], outs, queue=False)
        s.wire(C["adapters_use"].click, use_checkpoint, ["pid", "adapters_path"], ["adapters_status", "adapters_table"],
               concurrency_id="models")

    studio.extra_wiring.append(wiring)
