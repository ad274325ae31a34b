"""The Personalize tab (One-to-Normal): tune a customized diffusion model on the normal shots,
turn the current query into its anomaly-free version, score `personal` and `pool`.

Handlers are plain functions `fn(ctx, ...) -> dict` as in every tab (`ui/common.py`); the long
ones (training, pool) run with a progress bar and a Cancel button: the Personalizer's own progress
lines (phase, time left) go straight to Gradio's bar.

One Personalizer (one diffusion pipeline) serves the process. Whatever a handler does, it first
makes that Personalizer match the open project: the project's finished customized model is active,
or — when the project has none (never trained, or a run stopped part-way) — the base model, never
another project's adapter. The Settings (preset, seed, train steps) reconfigure it in place.
"""
from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from fsad_core.personalize import (
    PRESETS,
    PersonalizeConfig,
    Personalizer,
    load_pool,
    model_id,
    pool_info,
    save_pool,
    training_state,
)
from fsad_core.progress import Progress, format_seconds, silent

from . import render
from .common import friendly, log, need_project
from .context import StudioContext
from .result_view import panels, reaggregate
from .weights import WEIGHT_NAMES, slider_updates

HELP = (
    "**One-to-Normal personalization.** 1) *Train* tunes a LoRA of the diffusion model on this project's "
    "normal shots (once per project; resumable, cancellable). 2) *Personalize* turns the query scored in "
    "Inspect into its anomaly-free version under every normal-state prompt and keeps the one with the "
    "highest SSIM; the `personal` component compares the two, position by position. 3) The *pool* of "
    "generated normal images (from the trained model, as in the paper) gives the `pool` component. Both then "
    "appear in Inspect with their sliders."
)
DEFAULT_POOL_SIZE = PersonalizeConfig().pool_size  # the paper's pool size: 30
PRESET_CHOICES = list(PRESETS)  # "paper", "fast"


def _dirs(ctx: StudioContext, pid: int) -> tuple[Path, Path]:
    """The project's LoRA and pool folders (`store.project_dir`: the store backs them up)."""
    root = ctx.store.project_dir(pid)
    return root / "lora", root / "pool"


def _settings(preset=None, seed=None, train_steps=None) -> dict:
    """The Settings accordion's values as PersonalizeConfig changes (train steps 0 = the preset's)."""
    preset = preset if preset in PRESETS else "fast"
    steps = int(train_steps) if train_steps not in (None, "") and int(train_steps) > 0 else None
    return {"preset": preset, "seed": int(seed or 0), "train_steps": steps}


def _process_personalizer(ctx: StudioContext, **settings) -> Personalizer:
    """The process's Personalizer (nothing loads until first use), reconfigured to `settings`."""
    with ctx._engines_lock:
        p = ctx.personalizers.get("process")
        if p is None:
            p = Personalizer(PersonalizeConfig(profile=ctx.profile, **settings))
            ctx.personalizers["process"] = p
    if settings:
        p.reconfigure(**settings)
    return p


def personalizer(ctx: StudioContext, pid: int, preset=None, seed=None, train_steps=None) -> Personalizer:
    """One Personalizer (one diffusion pipeline) per process, with exactly this project's finished
    LoRA active — or no LoRA at all when the project has no finished model (a previous project's
    adapter, or a cancelled run's partial one, is unloaded)."""
    settings = _settings(preset, seed, train_steps) if preset is not None else {}
    p = _process_personalizer(ctx, **settings)
    lora, _ = _dirs(ctx, pid)
    want = model_id(lora)  # None: no finished model in this project
    if want is not None:
        if p.lora_dir is None or Path(p.lora_dir) != lora or p.model_id != want:
            p.load_lora(lora)
    elif p.lora_dir is not None or p.has_adapter():
        p.unload_lora()
    return p


def _cancel_event(ctx: StudioContext, pid: int) -> threading.Event:
    ev = threading.Event()
    ctx.personalizers[f"cancel-{pid}"] = ev
    return ev


def _model_text(state: dict | None) -> str:
    if state is None:
        return "not trained yet (personalization uses the base model)"
    cfg = state.get("config") or {}
    how = f"{cfg.get('preset', '?')} preset, {state.get('total')} steps"
    if state.get("complete"):
        return f"trained ({how})"
    return (f"training stopped at step {state.get('step')} of {state.get('total')} ({cfg.get('preset', '?')} preset; "
            "Train resumes it) — the base model is used meanwhile")


def _pool_text(n_pool: int, info: dict | None, current: str | None) -> str:
    if not n_pool:
        return "no pool yet"
    text = f"{n_pool} images"
    if info is None:
        return text
    made_by = info.get("model_id")
    if made_by is None and info.get("from_base_model"):
        if current is not None:
            return text + " — **stale**: made with the base model before the customized model was trained; regenerate"
        return text + " (from the base model, not a customized one)"
    if made_by is not None and made_by != current:
        return text + " — **stale**: made with an earlier customized model (it was retrained since); regenerate"
    return text


def status(ctx: StudioContext, pid) -> dict:
    if pid is None:
        return {"pers_status": "Open a project first."}
    pid = int(pid)
    lora, pool_dir = _dirs(ctx, pid)
    state = training_state(lora)
    current = model_id(lora)
    pool = ctx.personalizers.get(f"pool-{pid}")
    n_pool = len(pool) if pool is not None else (len(list(pool_dir.glob("pool_*.png"))) if pool_dir.is_dir() else 0)
    note = " · profile tiny: random weights — for testing only" if ctx.profile == "tiny" else ""
    return {"pers_status": f"Customized model: **{_model_text(state)}** · pool: {_pool_text(n_pool, pool_info(pool_dir), current)}"
                           f"{note}"}


def pool_eta(ctx: StudioContext, pid, n, preset=None, seed=None, train_steps=None) -> dict:
    """'about N min on this machine' for a pool of n images (shown beside the slider)."""
    # A throwaway Personalizer (nothing loads): the process's one may be busy training, and its lock
    # would hold this quick answer until the job ends. It borrows the measured speed when it applies.
    est_p = Personalizer(PersonalizeConfig(profile=ctx.profile, **_settings(preset, seed, train_steps)))
    busy = ctx.personalizers.get("process")
    if busy is not None and busy._unet_step_s is not None and \
            (busy.config.resolution, busy.config.precision, busy.config.device) == \
            (est_p.config.resolution, est_p.config.precision, est_p.config.device):
        est_p._unet_step_s = busy._unet_step_s
    n_shots = len(ctx.store.list_images(int(pid), role="normal")) if pid is not None else 0
    est = est_p.estimate_seconds("pool", n=int(n or 0), n_shots=n_shots)
    return {"pool_eta": f"Pool of {int(n or 0)}: about **{format_seconds(est)}** on this machine"}


@friendly
def train(ctx: StudioContext, pid, preset="fast", seed=0, train_steps=0, restart=False,
          progress: Progress = silent) -> dict:
    pid = need_project(pid)
    normals = [ctx.store.read_image(r["id"]) for r in ctx.store.list_images(pid, role="normal")]
    if not normals:
        raise gr.Error("Add normal shots first: the customized model is tuned on them.")
    p = personalizer(ctx, pid, preset, seed, train_steps)
    lora, _ = _dirs(ctx, pid)
    cancel = _cancel_event(ctx, pid)
    progress(0.0, f"Training the customized model (about {format_seconds(p.estimate_seconds('train'))})")
    class_name = ctx.store.get_project(pid).get("class_name") or "object"
    p.train(normals, class_name, lora, progress=progress, cancel=cancel, restart=bool(restart))
    state = training_state(lora) or {}
    if state.get("complete"):
        gr.Info("The customized model is trained.")
    else:
        gr.Warning("Training cancelled; a checkpoint was saved and Train resumes from it. Until then "
                   "personalization uses the base model.")
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
        if pool_dir.is_dir() and any(pool_dir.glob("pool_*.png")):
            pool = load_pool(pool_dir)
            ctx.personalizers[f"pool-{pid}"] = pool
    return pool


def _gallery(pool) -> list:
    return [(render.thumbnail(im), f"pool {i + 1}") for i, im in enumerate(pool or [])]


@friendly
def make_pool(ctx: StudioContext, pid, n: int, preset="fast", seed=0, train_steps=0,
              progress: Progress = silent) -> dict:
    """Generate the pool; it replaces the saved one only when complete (a cancel keeps the old)."""
    pid = need_project(pid)
    p = personalizer(ctx, pid, preset, seed, train_steps)
    if p.model_id is None:
        gr.Warning("No trained customized model in this project: the pool comes from the base model, not from "
                   "the model tuned on your normal shots as in the paper. Train first for the paper's pool.")
    normals = [ctx.store.read_image(r["id"]) for r in ctx.store.list_images(pid, role="normal")]
    class_name = ctx.store.get_project(pid).get("class_name") or "object"
    cancel = _cancel_event(ctx, pid)
    pool = p.generate_pool(class_name, int(n), normals=normals, progress=progress, cancel=cancel)
    if pool.cancelled:
        gr.Warning(f"Pool generation cancelled after {len(pool)} of {pool.requested} images; the previous pool is kept.")
        return {"pool_gallery": _gallery(_pool(ctx, pid)), **status(ctx, pid)}
    _, pool_dir = _dirs(ctx, pid)
    save_pool(pool, pool_dir)
    ctx.personalizers[f"pool-{pid}"] = pool
    for k in [k for k in list(ctx.personalizers) if str(k).startswith(f"pool-feats-{pid}-")]:
        ctx.personalizers.pop(k, None)  # the pool changed: its encodings are stale
    return {"pool_gallery": _gallery(pool), **status(ctx, pid)}


def show_pool(ctx: StudioContext, pid) -> dict:
    if pid is None:
        return {}
    return {"pool_gallery": _gallery(_pool(ctx, int(pid))), **status(ctx, pid)}


@friendly
def run(ctx: StudioContext, pid, sha, strength: float, weights, opacity: float, threshold: float,
        preset="fast", seed=0, train_steps=0, progress: Progress = silent) -> dict:
    """Personalize the query scored in Inspect, add `personal` (and `pool`) to its result."""
    pid = need_project(pid)
    cached = ctx.get_result(pid, sha)
    img = ctx.queries.get(sha) if sha else None
    if cached is None or img is None:
        raise gr.Error("Score a query in the Inspect tab first; Personalize works on that query.")
    p = personalizer(ctx, pid, preset, seed, train_steps)
    class_name = ctx.store.get_project(pid).get("class_name") or "object"
    progress(0.1, f"Personalizing the query (about {format_seconds(p.estimate_seconds('personalize'))})")
    res = p.personalize(img, class_name, strength=float(strength))
    progress(0.7, "Scoring personal / pool")
    from fsad_core.scorers.personal import encode_levels, personal_components

    engine = ctx.engine(pid)
    pool = list(_pool(ctx, pid) or [])
    pool_arg = None
    # §3.4: the pool is "a set of normal reference images and generated normal images"
    normals = [engine.shot_image(sh.id) for sh in engine.shots if sh.kind == "normal"]
    if pool or normals:
        key = f"pool-feats-{pid}-{len(pool)}-" + ",".join(sorted(sh.id[:12] for sh in engine.shots if sh.kind == "normal"))
        pool_arg = ctx.personalizers.get(key)
        if pool_arg is None:
            pool_arg = encode_levels(engine.backbone, [*normals, *pool])
            ctx.personalizers[key] = pool_arg
    extra = personal_components(engine.backbone, img, res.chosen, pool_arg)
    result = cached.result.with_components(extra)
    try:  # kept with the project: a later Score or a reload of this query still has them
        from .session import save_personal

        save_personal(ctx, pid, sha, extra)
    except OSError as exc:
        log.warning("could not keep the personal maps: %s", exc)
    ctx.put_result(pid, sha, result, image_id=cached.image_id)
    personal = extra["personal"]
    diff = render.colorize(render.normalise(res.difference), "inferno")
    strip = render.side_by_side([img, res.chosen, diff, render.heat_panel(img, personal.map, 0.6)])
    recon = [(render.thumbnail(im), f"{prompt} · SSIM {s:.3f}" + (" ✔" if i == res.chosen_index else ""))
             for i, (prompt, im, s) in enumerate(res.reconstructions)]
    model = "customized model" if p.model_id is not None else "base model (no trained customized model)"
    out = {
        "pers_compare": strip,
        "pers_recon": recon,
        "pers_caption": (f"query | chosen personalized normal (“{res.chosen_prompt}”, SSIM {res.ssim:.3f}) | "
                         f"|difference| | `personal` map (score {personal.score:.4f})"
                         + (f" · `pool` {extra['pool'].score:.4f} (pool: {len(normals)} normal shots + "
                            f"{len(pool)} generated)" if "pool" in extra else
                            " · no pool yet (add normal shots or generate a pool for the `pool` component)")
                         + f" · {model}, {p.config.preset} preset, seed {res.seed}"
                         + f" · {res.seconds:.1f} s at strength {res.strength:.2f}"),
        "heatmaps": panels(ctx, result, img, opacity),
        **slider_updates(visible=list(result.components)),
    }
    out.update(reaggregate(ctx, pid, sha, weights, opacity, threshold))
    return out


def build(studio) -> None:
    """Lay out the tab inside the current gr.Tab and register its wiring."""
    add = studio.add
    gr.Markdown(HELP)
    add("pers_status", gr.Markdown("", elem_id="personalize-status"))
    with gr.Row():
        add("pers_train", gr.Button("Train customized model", variant="primary", elem_id="personalize-train"))
        add("pers_cancel", gr.Button("Cancel", elem_id="personalize-cancel"))
        add("pool_size", gr.Slider(1, 60, value=DEFAULT_POOL_SIZE, step=1, label="Pool size (paper: 30)",
                                   elem_id="pool-size"))
        add("pool_make", gr.Button("Generate pool", elem_id="pool-generate"))
    add("pool_eta", gr.Markdown("", elem_id="pool-eta"))
    with gr.Accordion("Settings", open=False, elem_id="personalize-settings"):
        with gr.Row():
            add("pers_preset", gr.Radio(PRESET_CHOICES, value="fast", label="Preset",
                                        info="fast: 3 prompts, 6 steps, TAESD, 256 px (CPU) · paper: 23 prompts, "
                                             "CFG, full VAE, 512 px (GPU)", elem_id="personalize-preset"))
            add("pers_seed", gr.Number(value=0, precision=0, label="Seed", elem_id="personalize-seed"))
            add("pers_steps", gr.Number(value=0, precision=0, minimum=0, label="Train steps (0 = preset: fast "
                                        f"{PRESETS['fast']['train_steps']}, paper {PRESETS['paper']['train_steps']})",
                                        elem_id="personalize-train-steps"))
            add("pers_restart", gr.Checkbox(False, label="Start training over (discard checkpoints)",
                                            elem_id="personalize-restart"))
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
        sliders = [f"weight:{n}" for n in WEIGHT_NAMES]
        settings = ["pers_preset", "pers_seed", "pers_steps"]
        s.wire(C["pers_train"].click, train, ["pid"] + settings + ["pers_restart"], ["pers_status"], progress=True,
               concurrency_id="models")
        s.wire(C["pers_cancel"].click, cancel, ["pid"], ["pers_status"], queue=False)
        s.wire(C["pool_make"].click, make_pool, ["pid", "pool_size"] + settings, ["pool_gallery", "pers_status"],
               progress=True, concurrency_id="models")
        s.wire([C["pool_size"].change, C["pers_preset"].change, C["pid"].change], pool_eta,
               ["pid", "pool_size"] + settings, ["pool_eta"], queue=False)
        run_outs = ["pers_compare", "pers_recon", "pers_caption", "heatmaps", "aggregate_map", "aggregate_score"] + sliders
        run_ins = ["pid", "query_sha", "pers_strength", "@weights", "opacity", "threshold"] + settings
        s.wire([C["pers_run"].click, C["pers_strength"].release], run, run_ins, run_outs, progress=True,
               concurrency_id="models")
        s.wire(C["pid"].change, show_pool, ["pid"], ["pool_gallery", "pers_status"])

    studio.extra_wiring = getattr(studio, "extra_wiring", []) + [wiring]
