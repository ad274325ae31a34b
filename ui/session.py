"""Studio state that must survive: the preset label, the Inspect session after a reload, and
removed images (with undo).

Handlers follow the tabs' convention (`ui/common.py`): `fn(ctx, ...values) -> {output name: value}`.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import gradio as gr
import numpy as np

from fsad_core.aggregate import PRESET_NAMES, WeightSet, missing_required
from fsad_core.aggregate import preset as preset_set
from fsad_core.images import sha256_of_array

from .common import friendly, image_label, log, need_project, project_lists, query_choices
from .context import StudioContext
from .result_view import aggregate_view, panels, reaggregate
from .weights import WEIGHT_NAMES, initial_weights, preset_choices, preset_weights, slider_updates, studio_weight_set

#: The preset label once a slider has been moved by hand (no preset gives those weights).
CUSTOM = "custom"
#: The store's weights entry that keeps the sliders as last set (not listed as a preset).
SESSION_WEIGHTS = "session:last"


# --- presets ---------------------------------------------------------------------------------------
def missing_components(preset_weights: Mapping[str, float], names: Iterable[str]) -> list[str]:
    """Components a preset gives a positive weight to that the result lacks (sorted).

    Pure: the caller passes the preset's own weights (not yet restricted to the result) and the
    result's component names. E.g. `one-to-normal` on a result without `personal` / `pool`.
    """
    have = set(names)
    return sorted(n for n, w in preset_weights.items() if float(w) > 0 and n not in have)


def preset_definition(ctx: StudioContext, pid, preset: str) -> dict[str, float] | None:
    """The weights a tuned or saved preset stands for over *every* component it names, or None for
    the built-in presets (their needs come from `fsad_core.aggregate`) and "only X" / custom."""
    if preset == "tuned" or preset.startswith("saved: "):
        return preset_weights(ctx, pid, preset, WEIGHT_NAMES)
    return None


def preset_note(ctx: StudioContext, pid, preset: str, names: Iterable[str]) -> str:
    """"" or one line saying which of the preset's components this result lacks.

    Built-in presets (`fsad_core.aggregate.PRESET_NAMES`) name the components they need (one-to-normal:
    personal and pool); without them the studio shows no aggregate rather than a different measure.
    Tuned and saved weights on absent components drop out and the rest renormalise (said here)."""
    names = list(names)
    if not names or not preset or preset == CUSTOM:
        return ""
    hint_for = lambda missing: (" (compute them in the Personalize tab)"  # noqa: E731
                                if {"personal", "pool"} & set(missing) else "")
    if preset in PRESET_NAMES:
        missing = missing_required(preset_set(preset, names), names)
        if not missing:
            return ""
        return (f"Preset **{preset}** needs {', '.join(f'`{m}`' for m in missing)}, which this result lacks"
                f"{hint_for(missing)}; no aggregate is shown until they are computed.")
    full = preset_definition(ctx, pid, preset)
    missing = missing_components(full, names) if full else []
    if not missing:
        return ""
    return (f"Preset **{preset}** needs {', '.join(f'`{m}`' for m in missing)}, which this result lacks"
            f"{hint_for(missing)}; the aggregate uses only its other components.")


# --- the sliders as last set ----------------------------------------------------------------------
def remember_weights(ctx: StudioContext, pid, weights: Mapping[str, float], label: str) -> None:
    """Keep the sliders' values with the project (and their preset label in this process), so that a
    reload shows the weights the user last had, not those of the last Score."""
    if pid is None or pid == "" or not weights:
        return
    try:
        ctx.store.save_weights(int(pid), SESSION_WEIGHTS, {k: float(v) for k, v in weights.items()})
    except (ValueError, KeyError) as exc:  # e.g. the project was deleted meanwhile
        log.info("could not keep the slider values: %s", exc)
        return
    ctx.session_labels[int(pid)] = label


def _session_weights(ctx: StudioContext, pid: int) -> tuple[dict, str] | None:
    """(weights, updated_at) of the sliders as last set, or None."""
    for item in ctx.store.list_weights(pid):
        if item["name"] == SESSION_WEIGHTS:
            return dict(item["weights"]), str(item["updated_at"])
    return None


@friendly
def slider_moved(ctx: StudioContext, pid, sha, weights: Mapping[str, float], opacity: float, threshold: float,
                 preset: str | None = None) -> dict:
    """A weight slider moved by hand: re-aggregate, label the weights "custom", keep them.
    `preset`: the label before the move (`ui.weights.studio_weight_set` keeps a preset's own score rule
    only while the sliders still show that preset's values)."""
    out = reaggregate(ctx, pid, sha, weights, opacity, threshold, preset)
    remember_weights(ctx, pid, weights, CUSTOM)
    return out | {"preset": CUSTOM, "inspect_status": ""}


# --- session restore -------------------------------------------------------------------------------
def last_inspection(ctx: StudioContext, pid: int) -> dict | None:
    """The newest inspect run of the project whose query image is still in it (params dict)."""
    live = {int(r["id"]): r for r in ctx.store.list_images(pid, role="query")}
    for run in reversed(ctx.store.list_runs(pid, "inspect")):
        params = run.get("params") or {}
        iid = params.get("query_image_id")
        if iid is not None and int(iid) in live:
            return dict(params, row=live[int(iid)], created_at=str(run.get("created_at") or ""))
    return None


@friendly
def restore_inspect(ctx: StudioContext, pid, opacity: float = 0.5, threshold: float = 0.5) -> dict:
    """After a reload (or opening a project): the last scored query with its maps and weights.

    The maps come from the process's cached Result, else from scoring again on the stored
    encodings (the store's embeddings table: no encoder pass for a query scored before).
    """
    if pid is None or pid == "":
        return {}
    pid = int(pid)
    last = last_inspection(ctx, pid)
    if last is None:
        return {}
    iid = int(last["query_image_id"])
    img = ctx.store.read_image(iid)
    sha = last.get("query_sha256") or sha256_of_array(img)
    cached = ctx.get_result(pid, sha)
    if cached is None or cached.shots_version != ctx.shots_version(pid):
        pe = ctx.project_engine(pid)
        with pe.lock:
            result = pe.engine.score(img)
        result = attach_personal(ctx, pid, sha, result)
        ctx.put_result(pid, sha, result, image_id=iid)
    else:
        result = cached.result
    ctx.queries.put(sha, img)
    names = list(result.components)
    weights = {n: float(v) for n, v in (last.get("weights") or {}).items()}
    preset = last.get("preset") or CUSTOM
    saved_set = last.get("weight_set")
    later = _session_weights(ctx, pid)
    if later is not None and later[1] >= last["created_at"]:  # sliders moved after that Score
        weights = later[0]
        preset = ctx.session_labels.get(pid, CUSTOM)
        saved_set = None
    if not weights:
        weights = initial_weights()
    wset = (WeightSet.from_dict(saved_set) if saved_set
            else studio_weight_set(preset, weights, names))
    panel, text = aggregate_view(result, wset, img, opacity, threshold)
    choices = preset_choices(ctx, pid, names)
    if preset not in choices:
        preset = CUSTOM
    return {
        "query_pick": gr.update(choices=query_choices(ctx, pid), value=iid),
        "query_image": img, "query_iid": iid, "query_sha": sha,
        "heatmaps": panels(ctx, result, img, opacity), "aggregate_map": panel, "aggregate_score": text,
        "inspect_status": f"Restored the last inspection: {image_label(last['row'])}.",
        "preset": gr.update(choices=choices, value=preset),
        **slider_updates({n: weights.get(n, 0.0) for n in WEIGHT_NAMES}, visible=names),
    }


# --- personal / pool kept with the project ---------------------------------------------------------
PERSONAL = ("personal", "pool")


def _personal_path(ctx: StudioContext, pid: int, sha: str):
    return ctx.store.project_dir(pid) / "personal" / f"{sha}.npz"


def save_personal(ctx: StudioContext, pid: int, sha: str, extra: Mapping) -> None:
    """Keep a query's `personal` / `pool` maps and scores with the project (one .npz per query)."""
    path = _personal_path(ctx, pid, sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in PERSONAL:
        sm = extra.get(name)
        if sm is not None:
            arrays[f"{name}_map"] = np.asarray(sm.map, np.float32)
            arrays[f"{name}_score"] = np.float64(sm.score)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def attach_personal(ctx: StudioContext, pid: int, sha: str, result):
    """`result` plus the query's stored `personal` / `pool` components, when they were computed."""
    from fsad_core.results import ScoreMap

    path = _personal_path(ctx, pid, sha)
    if not path.exists():
        return result
    try:
        with np.load(path) as z:
            extra = {n: ScoreMap(z[f"{n}_map"], float(z[f"{n}_score"])) for n in PERSONAL if f"{n}_map" in z}
        return result.with_components(extra)
    except Exception as exc:  # a stale or damaged file: score without it
        log.warning("ignoring stored personal maps %s: %s", path, exc)
        return result


# --- removal with undo -----------------------------------------------------------------------------
def removed_choices(ctx: StudioContext, pid: int) -> list[tuple[str, int]]:
    """Images removed from the project (soft-deleted in the store), most recently removed first."""
    rows = [r for r in ctx.store.list_images(pid, include_removed=True) if r.get("removed_at")]
    rows.sort(key=lambda r: str(r["removed_at"]), reverse=True)
    return [(f"{r['role']}: {image_label(r)}", int(r["id"])) for r in rows]


#: What `remove` and `restore` update: the project's image lists and the removed-images picker.
REMOVED_OUTPUTS = ("normal_gallery", "anomalous_gallery", "anom_pick", "project_status", "query_pick",
                   "removed_pick", "removed_status")


@friendly
def remove_image(ctx: StudioContext, pid, iid) -> dict:
    """Remove a stored image (normal, anomalous or query) and its shot."""
    pid = need_project(pid)
    if iid is None:
        raise gr.Error("Select an image first (click it in the gallery).")
    ctx.forget_image(pid, int(iid))
    ctx.store.remove_image(int(iid))
    return project_lists(ctx, pid)


@friendly
def remove(ctx: StudioContext, pid, iid) -> dict:
    """Remove an image (normal, anomalous or query); it stays restorable under *Recently removed*."""
    out = remove_image(ctx, pid, iid)
    pid, iid = int(pid), int(iid)
    row = ctx.store.get_image(iid)
    gr.Info(f"Removed {image_label(dict(row))}. Press Undo remove (or pick it under Recently removed) "
            "to bring it back.")
    return out | {"removed_pick": gr.update(choices=removed_choices(ctx, pid), value=iid),
                  "removed_status": f"Removed {image_label(dict(row))}."}


@friendly
def restore(ctx: StudioContext, pid, iid) -> dict:
    """Undo a removal: the image (and its shot, mask and defect type) is back in the project."""
    pid = need_project(pid)
    if iid is None or iid == "":
        raise gr.Error("Nothing to restore: pick an image under Recently removed first.")
    iid = int(iid)
    ctx.store.restore_image(iid)
    ctx.sync_image(pid, iid)
    row = dict(ctx.store.get_image(iid))
    choices = removed_choices(ctx, pid)
    return project_lists(ctx, pid) | {
        "removed_pick": gr.update(choices=choices, value=choices[0][1] if choices else None),
        "removed_status": f"Restored {image_label(row)}."}


def removed_view(ctx: StudioContext, pid) -> dict:
    if pid is None or pid == "":
        return {}
    choices = removed_choices(ctx, int(pid))
    return {"removed_pick": gr.update(choices=choices, value=choices[0][1] if choices else None),
            "removed_status": ""}
