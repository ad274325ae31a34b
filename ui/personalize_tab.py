"""The Personalize tab (One-to-Normal): tune a customized diffusion model on the normal shots,
turn the current query into its anomaly-free version, score `personal` and `pool`.

Imported by `ui/studio.py` inside a try: when `fsad_core.personalize` is missing the tab says so
and the rest of the studio runs. Handlers are plain functions `fn(ctx, ...) -> dict` as in
`ui/events.py`; the long ones (training, pool) run with a progress bar, an ETA and a Cancel button.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import gradio as gr
import numpy as np

from fsad_core.personalize import PersonalizeConfig, Personalizer, load_pool, save_pool, training_state

from . import events, render
from .context import StudioContext

HELP = (
    "**One-to-Normal personalization.** 1) *Train* tunes a LoRA of the diffusion model on this project's "
    "normal shots (once per project; resumable, cancellable). 2) *Personalize* turns the query scored in "
    "Inspect into its anomaly-free version under every normal-state prompt and keeps the one with the "
    "highest SSIM; the `personal` component compares the two, position by position. 3) The *pool* of "
    "generated normal images gives the `pool` component. Both then appear in Inspect with their sliders."
)


def _no_progress(frac: float, desc: str = "") -> None:
    pass


def _dirs(ctx: StudioContext, pid: int) -> tuple[Path, Path]:
    root = Path(ctx.data_dir or ".") / "personalize" / f"project-{pid}"
    return root / "lora", root / "pool"


def personalizer(ctx: StudioContext, pid: int) -> Personalizer:
    """One Personalizer (one diffusion pipeline) per process, with the project's LoRA loaded if trained."""
    with ctx._engines_lock:
        p = ctx.personalizers.get("process")
        if p is None:
            p = Personalizer(PersonalizeConfig(profile=ctx.profile))
            ctx.personalizers["process"] = p
    lora, _ = _dirs(ctx, pid)
    if ctx.personalizers.get("lora_of") != pid:
        state = training_state(lora)
        if state and state.get("complete"):
            p.load_lora(lora)
            ctx.personalizers["lora_of"] = pid
    return p


def _cancel_event(ctx: StudioContext, pid: int) -> threading.Event:
    ev = threading.Event()
    ctx.personalizers[f"cancel-{pid}"] = ev
    return ev


def _eta_progress(progress: Callable, what: str) -> Callable:
    def cb(step, total, eta=None):
        text = f"{what}: {step}/{total}" + (f", about {eta:.0f} s left" if eta is not None else "")
        progress(step / max(1, total), text)
    return cb


def status(ctx: StudioContext, pid) -> dict:
    if pid is None:
        return {"pers_status": "Open a project first."}
    pid = int(pid)
    lora, pool_dir = _dirs(ctx, pid)
    state = training_state(lora)
    if state is None:
        trained = "not trained yet"
    elif state.get("complete"):
        trained = "trained"
    else:
        trained = f"training stopped at step {state.get('step')} of {state.get('total')} (Train resumes it)"
    pool = ctx.personalizers.get(f"pool-{pid}")
    n_pool = len(pool) if pool is not None else (len(list(pool_dir.glob("*.png"))) if pool_dir.is_dir() else 0)
    note = " · profile tiny: random weights — for testing only" if ctx.profile == "tiny" else ""
    return {"pers_status": f"Customized model: **{trained}** · pool: **{n_pool}** images{note}"}


@events.friendly
def train(ctx: StudioContext, pid, progress: Callable = _no_progress) -> dict:
    pid = events._need_project(pid)
    normals = [ctx.store.read_image(r["id"]) for r in ctx.store.list_images(pid, role="normal")]
    if not normals:
        raise gr.Error("Add normal shots first: the customized model is tuned on them.")
    p = personalizer(ctx, pid)
    lora, _ = _dirs(ctx, pid)
    cancel = _cancel_event(ctx, pid)
    est = p.estimate_seconds("train")
    progress(0.0, f"Training the customized model (about {est:.0f} s)")
    class_name = ctx.store.get_project(pid).get("class_name") or "object"
    p.train(normals, class_name, lora, progress=_eta_progress(progress, "Training"), cancel=cancel)
    state = training_state(lora) or {}
    if state.get("complete"):
        p.load_lora(lora)
        ctx.personalizers["lora_of"] = pid
        gr.Info("The customized model is trained.")
    else:
        gr.Warning("Training cancelled; a checkpoint was saved and Train resumes from it.")
    return status(ctx, pid)


def cancel(ctx: StudioContext, pid) -> dict:
    if pid is None:
        return {}
    ev = ctx.personalizers.get(f"cancel-{int(pid)}")
    if ev is not None:
        ev.set()
    return {"pers_status": "Cancelling after the current step…"}


def _pool(ctx: StudioContext, pid: int):
    pool = ctx.personalizers.get(f"pool-{pid}")
    if pool is None:
        _, pool_dir = _dirs(ctx, pid)
        if pool_dir.is_dir() and any(pool_dir.glob("*.png")):
            pool = load_pool(pool_dir)
            ctx.personalizers[f"pool-{pid}"] = pool
    return pool


@events.friendly
def make_pool(ctx: StudioContext, pid, n: int, progress: Callable = _no_progress) -> dict:
    pid = events._need_project(pid)
    p = personalizer(ctx, pid)
    normals = [ctx.store.read_image(r["id"]) for r in ctx.store.list_images(pid, role="normal")]
    class_name = ctx.store.get_project(pid).get("class_name") or "object"
    cancel = _cancel_event(ctx, pid)
    pool = p.generate_pool(class_name, int(n), normals=normals, progress=_eta_progress(progress, "Pool"), cancel=cancel)
    _, pool_dir = _dirs(ctx, pid)
    save_pool(pool, pool_dir)
    ctx.personalizers[f"pool-{pid}"] = pool
    ctx.personalizers.pop(f"pool-feats-{pid}", None)
    return {"pool_gallery": [(render.thumbnail(im), f"pool {i + 1}") for i, im in enumerate(pool)], **status(ctx, pid)}


def show_pool(ctx: StudioContext, pid) -> dict:
    if pid is None:
        return {}
    pool = _pool(ctx, int(pid)) or []
    return {"pool_gallery": [(render.thumbnail(im), f"pool {i + 1}") for i, im in enumerate(pool)], **status(ctx, pid)}


@events.friendly
def run(ctx: StudioContext, pid, sha, strength: float, weights, opacity: float, threshold: float,
        progress: Callable = _no_progress) -> dict:
    """Personalize the query scored in Inspect, add `personal` (and `pool`) to its result."""
    pid = events._need_project(pid)
    cached = ctx.get_result(pid, sha)
    img = ctx.queries.get(sha) if sha else None
    if cached is None or img is None:
        raise gr.Error("Score a query in the Inspect tab first; Personalize works on that query.")
    p = personalizer(ctx, pid)
    class_name = ctx.store.get_project(pid).get("class_name") or "object"
    progress(0.1, f"Personalizing the query (about {p.estimate_seconds('personalize'):.0f} s)")
    res = p.personalize(img, class_name, strength=float(strength))
    progress(0.7, "Scoring personal / pool")
    from fsad_core.scorers.personal import encode_levels, personal_components

    engine = ctx.engine(pid)
    pool = _pool(ctx, pid)
    pool_arg = None
    if pool:
        pool_arg = ctx.personalizers.get(f"pool-feats-{pid}")
        if pool_arg is None:
            pool_arg = encode_levels(engine.backbone, pool)
            ctx.personalizers[f"pool-feats-{pid}"] = pool_arg
    extra = personal_components(engine.backbone, img, res.chosen, pool_arg)
    result = cached.result.with_components(extra)
    ctx.put_result(pid, sha, result, image_id=cached.image_id)
    personal = extra["personal"]
    diff = render.colorize(render.normalise(res.difference), "inferno")
    strip = render.side_by_side([img, res.chosen, diff, render.heat_panel(img, personal.map, 0.6)])
    recon = [(render.thumbnail(im), f"{prompt} · SSIM {s:.3f}" + (" ✔" if i == res.chosen_index else ""))
             for i, (prompt, im, s) in enumerate(res.reconstructions)]
    out = {
        "pers_compare": strip,
        "pers_recon": recon,
        "pers_caption": (f"query | chosen personalized normal (“{res.chosen_prompt}”, SSIM {res.ssim:.3f}) | "
                         f"|difference| | `personal` map (score {personal.score:.4f})"
                         + (f" · `pool` {extra['pool'].score:.4f}" if "pool" in extra else
                            " · no pool yet (generate one for the `pool` component)")
                         + f" · {res.seconds:.1f} s at strength {res.strength:.2f}"),
        "heatmaps": events._panels(ctx, result, img, opacity),
        **events.slider_updates(visible=list(result.components)),
    }
    out.update(events.reaggregate(ctx, pid, sha, weights, opacity, threshold))
    return out


def build(studio) -> None:
    """Lay out the tab inside the current gr.Tab and register its wiring."""
    add = studio.add
    gr.Markdown(HELP)
    add("pers_status", gr.Markdown("", elem_id="personalize-status"))
    with gr.Row():
        add("pers_train", gr.Button("Train customized model", variant="primary", elem_id="personalize-train"))
        add("pers_cancel", gr.Button("Cancel", elem_id="personalize-cancel"))
        add("pool_size", gr.Slider(1, 60, value=8, step=1, label="Pool size", elem_id="pool-size"))
        add("pool_make", gr.Button("Generate pool", elem_id="pool-generate"))
    with gr.Row(equal_height=True):
        add("pers_strength", gr.Slider(0.05, 1.0, value=0.3, step=0.05, label="Strength (SDEdit t/T; paper 0.3)",
                                       elem_id="personalize-strength", scale=3))
        add("pers_run", gr.Button("Personalize the current query", variant="primary", elem_id="personalize-run",
                                  scale=1))
    add("pers_compare", gr.Image(label="query | personalized normal | |difference| | personal map", type="numpy",
                                 format="png", interactive=False, elem_id="personalized-compare", height=340))
    add("pers_caption", gr.Markdown("", elem_id="personalize-caption"))
    add("pers_recon", gr.Gallery(label="Reconstructions per prompt (SSIM; ✔ = chosen)", columns=6, height=220,
                                 format="png", elem_id="personalize-reconstructions", interactive=False))
    add("pool_gallery", gr.Gallery(label="Anomaly-free pool", columns=8, height=220, format="png",
                                   elem_id="pool-gallery", interactive=False))

    def wiring(s) -> None:
        C = s.C
        sliders = [f"weight:{n}" for n in events.WEIGHT_NAMES]
        s.wire(C["pers_train"].click, train, ["pid"], ["pers_status"], progress=True, concurrency_id="models")
        s.wire(C["pers_cancel"].click, cancel, ["pid"], ["pers_status"], queue=False)
        s.wire(C["pool_make"].click, make_pool, ["pid", "pool_size"], ["pool_gallery", "pers_status"], progress=True,
               concurrency_id="models")
        run_outs = ["pers_compare", "pers_recon", "pers_caption", "heatmaps", "aggregate_map", "aggregate_score"] + sliders
        run_ins = ["pid", "query_sha", "pers_strength", "@weights", "opacity", "threshold"]
        s.wire([C["pers_run"].click, C["pers_strength"].release], run, run_ins, run_outs, progress=True,
               concurrency_id="models")
        s.wire(C["pid"].change, show_pool, ["pid"], ["pool_gallery", "pers_status"])

    studio.extra_wiring = getattr(studio, "extra_wiring", []) + [wiring]
