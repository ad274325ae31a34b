"""The Compare tab: any two components of any two queries scored in this process, side by side,
with one opacity for both.
"""
from __future__ import annotations

import gradio as gr
import numpy as np

from . import render
from .common import friendly, image_label
from .context import StudioContext
from .weights import WEIGHTS, effective_weights, ordered_names

SIDES = ("a", "b")


def compare_choices(ctx: StudioContext, pid) -> dict:
    """Queries scored in this project (this process) and the components of the newest one."""
    if pid is None:
        return {}
    items = ctx.project_results(int(pid))
    queries = []
    for sha, cached in items:
        label = f"{sha[:8]}"
        if cached.image_id is not None:
            try:
                label = image_label(dict(ctx.store.get_image(cached.image_id)))
            except (KeyError, ValueError):  # removed since: the hash still names it
                label = f"#{cached.image_id} ({sha[:8]})"
        queries.append((label, sha))
    comps = ["aggregate"]
    if items:
        comps += ordered_names(items[-1][1].result.components)
    default_q = queries[-1][1] if queries else None
    return {
        "cmp_query_a": gr.update(choices=queries, value=default_q),
        "cmp_query_b": gr.update(choices=queries, value=default_q),
        "cmp_comp_a": gr.update(choices=comps, value="aggregate"),
        "cmp_comp_b": gr.update(choices=comps, value=comps[1] if len(comps) > 1 else "aggregate"),
    }


def _compare_panel(ctx: StudioContext, pid, sha, comp, weights, opacity) -> tuple[np.ndarray | None, str]:
    cached = ctx.get_result(pid, sha)
    img = ctx.queries.get(sha) if sha else None
    if cached is None or img is None or not comp:
        return None, ""
    if comp == "aggregate":
        try:
            sm = cached.result.aggregate(effective_weights(weights, cached.result.components))
        except ValueError as exc:  # all-zero weights: say so instead of silently using other weights
            return render.thumbnail(img, render.AGGREGATE_SIDE), f"aggregate: {exc}"
    elif comp in cached.result.components:
        sm = cached.result.components[comp]
    else:
        return render.thumbnail(img, render.AGGREGATE_SIDE), f"{comp}: not in this result"
    return render.heat_panel(img, sm.map, opacity, max_side=render.AGGREGATE_SIDE), f"{comp} · {sm.score:.4f}"


@friendly
def compare(ctx: StudioContext, pid, sha_a, comp_a, sha_b, comp_b, weights, opacity) -> dict:
    a, la = _compare_panel(ctx, pid, sha_a, comp_a, weights, opacity)
    b, lb = _compare_panel(ctx, pid, sha_b, comp_b, weights, opacity)
    return {"cmp_a": a, "cmp_b": b, "cmp_caption": f"**A** {la} &nbsp;|&nbsp; **B** {lb}" if (la or lb) else
            "Score at least one query in the Inspect tab first."}


def build(studio) -> None:
    """Lay out the tab inside the current gr.Tab and register its wiring."""
    studio.extra_wiring.append(wiring)
    add = studio.add
    gr.Markdown("Any two components of any two scored queries, side by side, one opacity for both.")
    with gr.Row():
        for side in SIDES:
            with gr.Column():
                add(f"cmp_query_{side}", gr.Dropdown(label=f"Query {side.upper()}", choices=[],
                                                     elem_id=f"compare-query-{side}"))
                add(f"cmp_comp_{side}", gr.Dropdown(label=f"Component {side.upper()}", choices=["aggregate"],
                                                    value="aggregate", elem_id=f"compare-component-{side}"))
                add(f"cmp_{side}", gr.Image(label=side.upper(), type="numpy", format="png", interactive=False,
                                            elem_id=f"compare-{side}", height=420))
    add("cmp_opacity", gr.Slider(0, 1, value=0.5, step=0.05, label="Opacity (both sides)", elem_id="compare-opacity"))
    add("cmp_caption", gr.Markdown("", elem_id="compare-caption"))


def wiring(s) -> None:
    C = s.C
    cmp_sel = ["cmp_query_a", "cmp_query_b", "cmp_comp_a", "cmp_comp_b"]
    cmp_ins = ["pid", "cmp_query_a", "cmp_comp_a", "cmp_query_b", "cmp_comp_b", WEIGHTS, "cmp_opacity"]
    cmp_outs = ["cmp_a", "cmp_b", "cmp_caption"]
    s.wire(s.tabs["Compare"].select, compare_choices, ["pid"], cmp_sel).then(*s.chained(compare, cmp_ins, cmp_outs))
    s.scored_event.then(*s.chained(compare_choices, ["pid"], cmp_sel))  # a new query is listed at once
    s.wire([C[n].input for n in cmp_sel], compare, cmp_ins, cmp_outs)
    s.wire(C["cmp_opacity"].input, compare, cmp_ins, cmp_outs, fast=True)
