"""The Models tab: every model the studio knows (kind, profile, size, whether it is in the cache),
downloading the standard ones, and the APRIL-GAN adapters panel (`ui/adapters_panel.py`).
"""
from __future__ import annotations

import gradio as gr

from fsad_core.progress import Progress, silent

from . import adapters_panel
from .common import friendly
from .context import StudioContext

MODEL_COLUMNS = ["kind", "name", "tag", "profile", "active", "size", "present", "source", "what it is"]


def models_table(ctx: StudioContext) -> list[list]:
    from fsad_core.models import registry

    rows = []
    for r in registry.describe():
        note = r["description"]
        if r["profile"] == "tiny":
            note = f"[{registry.TINY_NOTE}] " + note
        active = "✔" if r["profile"] == ctx.profile else ""
        rows.append([r["kind"], r["name"], r["tag"], r["profile"], active, r["size"],
                     "yes" if r["present"] else "no", r["source"], note])
    return rows


def downloadable_models() -> list[tuple[str, str]]:
    from fsad_core.models import registry

    return [(f"{s.kind}: {s.name} ({s.tag}, {s.size_text})", s.id) for s in registry.specs(profile="standard")]


@friendly
def download_model(ctx: StudioContext, spec_id: str, progress: Progress = silent) -> dict:
    from fsad_core.models import registry

    if not spec_id:
        raise gr.Error("Pick a model to download first.")
    spec = next((s for s in registry.specs() if s.id == spec_id), None)
    if spec is None:
        raise gr.Error(f"Unknown model {spec_id!r}.")
    progress(0.0, f"Downloading {spec.name}")
    path = registry.pull(spec, progress=True)  # tqdm bar, mirrored by gr.Progress(track_tqdm=True)
    msg = f"{spec.name} ({spec.tag}) is in the cache: {path}. Restart the studio with `--profile standard` to use it."
    gr.Info(msg)
    return {"models_table": models_table(ctx), "models_status": msg}


def build(studio) -> None:
    """Lay out the tab inside the current gr.Tab and register its wiring."""
    from fsad_core.models import registry

    studio.extra_wiring.append(wiring)
    ctx, add = studio.ctx, studio.add
    active = (f"Active profile: **{ctx.profile}**" +
              (f" — **{registry.TINY_NOTE}**" if ctx.profile == "tiny" else ""))
    gr.Markdown(active + ". Get the real models with `make models` (or the button below), then restart "
                "with `--profile standard`.", elem_id="models-profile")
    add("models_table", gr.Dataframe(value=models_table(ctx), headers=MODEL_COLUMNS,
                                     interactive=False, wrap=True, elem_id="models-table",
                                     column_widths=["7%", "14%", "14%", "8%", "6%", "8%", "7%", "18%", "18%"],
                                     max_height=900))
    with gr.Row(equal_height=True):
        add("model_pick", gr.Dropdown(label="Model", choices=downloadable_models(), elem_id="model-pick", scale=3))
        add("model_download", gr.Button("Download", elem_id="model-download", scale=1))
    add("models_status", gr.Markdown("", elem_id="models-status"))
    adapters_panel.build(studio)  # APRIL-GAN adapters: train / status / checkpoints


def wiring(s) -> None:
    s.wire(s.C["model_download"].click, download_model, ["model_pick"], ["models_table", "models_status"],
           progress=True, concurrency_id="models")
