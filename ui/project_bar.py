"""The project bar above the tabs: open, create or rename the class of a project, load the sample
project, and the status line. Opening a project (or reloading the page) fills every tab from the
store (`project_view`), then shows its removed images and restores its last inspection
(`ui/session.py`).
"""
from __future__ import annotations

from typing import Mapping

import gradio as gr
import numpy as np

from fsad_core.progress import Progress, silent

from . import session
from .common import defect_types, friendly, project_choices, project_lists, project_row, project_status
from .context import StudioContext
from .inspect_tab import empty_view
from .shots_tab import new_prompts
from .weights import SLIDERS, preset_choices

#: The queue of project openings and the steps that follow them (one at a time).
OPENING = "project-opening"

#: What opening a project updates (plus every weight slider).
PROJECT_OUTS = ("pid", "last_pid", "project_list", "project_name", "class_name", "project_status",
                "normal_gallery", "anomalous_gallery", "anom_pick", "defect_type", "query_pick", "preset",
                "anom_id", "editor", "sam_view", "sam_proposals", "sam_prompts", "sam_status",
                "heatmaps", "aggregate_map", "aggregate_score", "query_sha", "query_image", "inspect_status")


def project_view(ctx: StudioContext, pid: int) -> dict:
    """Everything the UI shows for a project, read from the store."""
    p = project_row(ctx, pid)
    return {
        "pid": pid,
        "last_pid": pid,
        "project_list": gr.update(choices=project_choices(ctx), value=pid),
        "project_name": p["name"],
        "class_name": p.get("class_name") or "",
        **project_lists(ctx, pid),
        "defect_type": gr.update(choices=defect_types(ctx, pid), value=None),
        "preset": gr.update(choices=preset_choices(ctx, pid), value="paper"),
        "anom_id": None, "editor": None, "sam_view": None, "sam_proposals": [], "sam_prompts": new_prompts(),
        "sam_status": "",
        **empty_view(),
    }


@friendly
def on_load(ctx: StudioContext, last_pid) -> dict:
    """Page load: reopen the browser's last project (else the newest), so a reload restores it."""
    choices = project_choices(ctx)
    ids = [c[1] for c in choices]
    banner = {"banner": gr.update(value=ctx.banner or "", visible=bool(ctx.banner))}
    if not ids:
        return {"project_list": gr.update(choices=[], value=None), "project_status":
                "No project yet: type a name and an object class and press **Create / open**, "
                "or press **Load sample project**.", **banner}
    pid = int(last_pid) if last_pid is not None and int(last_pid) in ids else ids[-1]
    return {**project_view(ctx, pid), **banner}


@friendly
def open_project(ctx: StudioContext, name: str, class_name: str) -> dict:
    """Create the project `name` (with its object class) or open it if it exists."""
    name = (name or "").strip()
    class_name = (class_name or "").strip()
    if not name:
        raise gr.Error("Type a project name first.")
    existing = ctx.store.find_project(name)
    if existing is not None:
        pid = int(existing["id"] if isinstance(existing, Mapping) else existing)
        if class_name and class_name != (project_row(ctx, pid).get("class_name") or ""):
            ctx.store.set_class_name(pid, class_name)
            ctx.set_class_name(pid, class_name)
    else:
        pid = int(ctx.store.create_project(name, class_name=class_name or "object"))
        gr.Info(f"Created project {name!r}.")
    return project_view(ctx, pid)


@friendly
def select_project(ctx: StudioContext, pid) -> dict:
    if pid is None or pid == "":
        return {}
    return project_view(ctx, int(pid))


@friendly
def set_class_name(ctx: StudioContext, pid, class_name: str) -> dict:
    if pid is None:
        return {}
    pid = int(pid)
    class_name = (class_name or "").strip()
    if not class_name:
        raise gr.Error("The object class name cannot be empty (it goes into the text prompts, e.g. 'bottle').")
    if class_name == (project_row(ctx, pid).get("class_name") or ""):
        return {}
    ctx.store.set_class_name(pid, class_name)
    ctx.set_class_name(pid, class_name)
    gr.Info(f"Class name set to {class_name!r}; score again to update the text components.")
    return {"project_status": project_status(ctx, pid)}


@friendly
def load_sample(ctx: StudioContext, progress: Progress = silent) -> dict:
    """One-click demo: a project of synthetic defects on textures that ship with scikit-image."""
    from fsad_core.synth import sample_project

    progress(0.05, "Generating the sample project")
    sp = sample_project(seed=0)
    name = f"sample-{sp.class_name}"
    existing = ctx.store.find_project(name)
    if existing is not None:
        pid = int(existing["id"] if isinstance(existing, Mapping) else existing)
        return project_view(ctx, pid)
    pid = int(ctx.store.create_project(name, class_name=sp.class_name))
    total = len(sp.normals) + len(sp.anomalous) + len(sp.queries)
    done = 0
    for i, img in enumerate(sp.normals):
        ctx.store.add_image(pid, img, role="normal", filename=f"normal_{i}.png")
        done += 1
        progress(0.1 + 0.8 * done / total, "Saving sample images")
    for i, (img, mask, dt) in enumerate(sp.anomalous):
        iid = ctx.store.add_image(pid, img, role="anomalous", filename=f"{dt}_{i}.png")
        ctx.store.save_mask(iid, np.asarray(mask, bool), defect_type=dt)
        done += 1
        progress(0.1 + 0.8 * done / total, "Saving sample images")
    labels = list(getattr(sp, "query_labels", []) or [])
    for i, img in enumerate(sp.queries):
        label = labels[i] if i < len(labels) else "query"
        ctx.store.add_image(pid, img, role="query", filename=f"query_{i}_{label}.png")
        done += 1
        progress(0.1 + 0.8 * done / total, "Saving sample images")
    gr.Info(f"Sample project {name!r} is ready: open Inspect, pick a query and press Score.")
    return project_view(ctx, pid)


def build(studio) -> None:
    """The bar and its status line (above the tabs); registers its wiring."""
    studio.extra_wiring.append(wiring)
    add = studio.add
    with gr.Row(equal_height=True):
        add("project_list", gr.Dropdown(label="Open project", choices=project_choices(studio.ctx),
                                        value=None, elem_id="project-list", scale=2))
        add("project_name", gr.Textbox(label="Project name", placeholder="e.g. bottle-line-3",
                                       elem_id="project-name", scale=2))
        add("class_name", gr.Textbox(label="Object class (used by the text prompts)",
                                     placeholder="e.g. bottle", elem_id="class-name", scale=2))
        add("project_open", gr.Button("Create / open", variant="primary", elem_id="project-open", scale=1))
        add("sample", gr.Button("Load sample project", elem_id="sample-project", scale=1))
    add("project_status", gr.Markdown("", elem_id="project-status"))


def wiring(s) -> None:
    """Opening a project (page load, Create / open, the picker, the sample): every tab's view, then
    its removed images, then its last inspection. `s.opened_events` lets other tabs chain on these."""
    C = s.C
    sliders = list(SLIDERS)
    project_outs = list(PROJECT_OUTS) + sliders
    restore_outs = ["query_pick", "query_image", "query_iid", "query_sha", "heatmaps", "aggregate_map",
                    "aggregate_score", "inspect_status", "preset"] + sliders
    # Openings and the steps that follow them run one at a time (one queue, OPENING), each finished and
    # delivered before the next starts; a step queued behind a newer opening shows nothing
    # (`context.SessionProjects`). So a slow page-load restore never paints its project over the one the
    # user opened meantime (its preset choices lack the other's "tuned": Score would then be refused).
    one = {"concurrency_id": OPENING, "concurrency_limit": 1}
    s.opened_events = [
        s.wire(s.demo.load, on_load, ["last_pid"], project_outs + ["banner"], opening=True, **one),
        s.wire([C["project_open"].click, C["project_name"].submit], open_project, ["project_name", "class_name"],
               project_outs, opening=True, **one),
        s.wire(C["project_list"].input, select_project, ["project_list"], project_outs, opening=True, **one),
        s.wire(C["sample"].click, load_sample, [], project_outs, progress=True, opening=True, **one),
    ]
    for dep in s.opened_events:
        dep.then(*s.chained(session.removed_view, ["pid"], ["removed_pick", "removed_status"], follows_opening=True),
                 **one).then(
            *s.chained(session.restore_inspect, ["pid", "opacity", "threshold"], restore_outs, follows_opening=True),
            **one)
    s.wire(C["class_name"].submit, set_class_name, ["pid", "class_name"], ["project_status"])
