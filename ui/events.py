"""Handlers: thin glue from UI values to Store and Engine calls.

Every handler is a plain function `handler(ctx, ...values) -> dict` whose keys name the outputs
it updates (the layout in `ui/studio.py` maps names to components; a key left out is left
unchanged). Long handlers take `progress(fraction, text)`. Errors the user can fix become
`gr.Error` with the readable message of the underlying ValueError / ModelUnavailableError, never a
stack trace; anything unexpected is logged with its trace and shown as one short line.

Everything is saved to the store as it happens (shots, masks, defect types, queries, runs,
presets); the engine is rebuilt from the store when a project is opened in a fresh process.
"""
from __future__ import annotations

import functools
import inspect
import logging
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import gradio as gr
import numpy as np

from fsad_core.aggregate import PRESET_NAMES, STABLE_NAMES, WeightSet, combine, missing_required, preset as preset_set
from fsad_core.images import ImageError, sha256_of_array, to_rgb_array
from fsad_core.names import display

from fsad_core.progress import Progress, silent
from . import render
from .context import LRU, StudioContext

log = logging.getLogger("fsad.ui")
_DISPLAY = LRU(16)  # (result id, component names) -> (result, display image, display maps)

#: Every component a weight slider exists for (Gradio layouts are static: sliders are created for
#: all stable names and shown when the current result has that component).
WEIGHT_NAMES: tuple[str, ...] = STABLE_NAMES
SAM_MODES = ("add (+)", "remove (−)", "box corner")
USER_PRESET_PREFIX = "preset:"
BUILTIN_PRESETS = PRESET_NAMES  # fsad_core.aggregate's presets: one list for studio, CLI and eval



# --- error handling ------------------------------------------------------------------------------
def _user_message(exc: BaseException) -> str:
    """A readable one-liner for the UI; unexpected errors are logged in full on the server."""
    if isinstance(exc, gr.Error):
        return exc.message
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        # SQLite reports a damaged file: nobody can promise that saved work is intact
        log.error("the database reported damage: %s", exc)
        return (f"The studio's database reported damage ({exc}); your last change may not have been saved. "
                "Stop the studio and run `python -m storage check` on its data folder: it says what is damaged "
                "and how to recover (the latest backup, or `python -m storage recover`).")
    readable = (ValueError, KeyError, RuntimeError, FileNotFoundError, PermissionError)
    if isinstance(exc, readable):
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return msg or exc.__class__.__name__
    log.exception("unexpected error in a studio handler")
    return f"Something went wrong ({exc.__class__.__name__}: {str(exc)[:200]}). Saved work is intact; details are in the server log."


def friendly(fn: Callable) -> Callable:
    """Turn exceptions into `gr.Error(readable text)` (plain functions and generators alike)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise gr.Error(_user_message(exc)) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(_user_message(exc)) from None
    return wrapper


def _need_project(pid) -> int:
    if pid is None or pid == "":
        raise gr.Error("Open or create a project first (project bar at the top).")
    return int(pid)


# --- small helpers -------------------------------------------------------------------------------
def _project(ctx: StudioContext, pid: int) -> dict:
    p = ctx.store.get_project(pid)
    if p is None:
        raise gr.Error(f"Project {pid} no longer exists; pick another one.")
    return dict(p)


def project_choices(ctx: StudioContext) -> list[tuple[str, int]]:
    return [(p["name"], int(p["id"])) for p in ctx.store.list_projects()]


def _images(ctx: StudioContext, pid: int, role: str) -> list[dict]:
    return [dict(r) for r in ctx.store.list_images(pid, role=role)]


def _label(row: dict) -> str:
    name = row.get("filename") or f"image {row['id']}"
    extra = ""
    if row.get("role") == "anomalous":
        has_mask = row.get("has_mask")
        dt = row.get("defect_type")
        extra = f" — {dt}" if dt else (" — no mask yet" if has_mask is False else "")
    return f"#{row['id']} {name}{extra}"


def _read_upload(item) -> tuple[np.ndarray, str | None]:
    """A gr.File / gr.Image value (path, tempfile wrapper, bytes or array) -> (uint8 HxWx3, filename)."""
    if item is None:
        raise ImageError("No image was received.")
    if isinstance(item, np.ndarray):
        return to_rgb_array(item), None
    path = getattr(item, "name", None) if not isinstance(item, (str, Path, bytes)) else item
    if isinstance(path, (str, Path)):
        try:
            return to_rgb_array(path), Path(path).name
        except ImageError as exc:  # name the upload as the user knows it, not by Gradio's temp path
            raise ImageError(str(exc).replace(display(str(path)), display(Path(path).name))) from None
    return to_rgb_array(item), None


def _as_list(files) -> list:
    if files is None:
        return []
    return list(files) if isinstance(files, (list, tuple)) else [files]


def _normal_gallery(ctx: StudioContext, pid: int) -> list[tuple[np.ndarray, str]]:
    return [(render.thumbnail(ctx.store.read_image(r["id"])),
             _label(r) + (" · tuning only" if r.get("validation_only") else "")) for r in _images(ctx, pid, "normal")]


def _anomalous_rows(ctx: StudioContext, pid: int) -> list[dict]:
    rows = _images(ctx, pid, "anomalous")
    for r in rows:
        if "has_mask" not in r:
            m = ctx.store.get_mask(r["id"])
            r["has_mask"] = m is not None and bool(np.asarray(m).any())
    return rows


def _anomalous_gallery(ctx: StudioContext, pid: int, rows: list[dict] | None = None) -> list[tuple[np.ndarray, str]]:
    out = []
    for r in rows if rows is not None else _anomalous_rows(ctx, pid):
        img = ctx.store.read_image(r["id"])
        m = ctx.store.get_mask(r["id"])
        if m is not None and np.asarray(m).any():
            img = render.tint_mask(img, np.asarray(m, bool))
        out.append((render.thumbnail(img), _label(r)))
    return out


def _defect_types(ctx: StudioContext, pid: int) -> list[str]:
    return sorted({str(t) for t in ctx.store.defect_types(pid) if t})


def _query_choices(ctx: StudioContext, pid: int) -> list[tuple[str, int]]:
    return [(_label(r), int(r["id"])) for r in _images(ctx, pid, "query")]


def user_presets(ctx: StudioContext, pid: int) -> list[str]:
    lister = getattr(ctx.store, "list_weights", None)
    if lister is None:
        return []
    names = []
    for item in lister(pid):
        name = item["name"] if isinstance(item, Mapping) else str(item)
        if name.startswith(USER_PRESET_PREFIX):
            names.append(name[len(USER_PRESET_PREFIX):])
    return sorted(names)


def preset_choices(ctx: StudioContext, pid: int | None, names: Iterable[str] = ()) -> list[str]:
    out = list(BUILTIN_PRESETS)
    out += [f"only {n}" for n in _ordered_names(dict.fromkeys(names))]
    if pid is not None:
        out += [f"saved: {n}" for n in user_presets(ctx, pid)]
        if ctx.tuned.get(pid) is not None or _load_weights(ctx, pid, "tuned") is not None:
            out.append("tuned")
    return out + ["custom"]  # the label once a slider is moved by hand


def _load_weights(ctx: StudioContext, pid: int, name: str) -> dict | None:
    try:
        w = ctx.store.load_weights(pid, name)
    except (KeyError, ValueError):
        return None
    return dict(w) if w else None


def slider_updates(weights: Mapping[str, float] | None = None, visible: Iterable[str] | None = None) -> dict:
    """{"weight:<name>": gr.update(...)} for every slider: new values and/or visibility."""
    out = {}
    vis = set(visible) if visible is not None else None
    for n in WEIGHT_NAMES:
        kw = {}
        if weights is not None:
            kw["value"] = round(float(weights.get(n, 0.0)), 4)
        if vis is not None:
            kw["visible"] = n in vis
        if kw:
            out[f"weight:{n}"] = gr.update(**kw)
    return out


def initial_weights() -> dict[str, float]:
    """The sliders' starting values: the `paper` preset (eq. 2) over every stable name."""
    w = preset_set("paper", WEIGHT_NAMES).weights
    return {n: round(float(w.get(n, 0.0)), 4) for n in WEIGHT_NAMES}


def studio_weight_set(preset: str | None, weights: Mapping[str, float] | None, names: Iterable[str]) -> WeightSet:
    """The WeightSet the sliders stand for: a built-in preset's own set (its score rule and map
    weights, e.g. winclip+'s max-of-map score) while the sliders still show that preset's values,
    else the slider values as plain eq.-2-style weights ("custom"). The CLI resolves the same names
    through the same `fsad_core.aggregate.preset`."""
    names = list(names)
    if weights is None:
        return preset_set("paper", names)
    w = {k: float(v or 0.0) for k, v in weights.items()}
    if preset in PRESET_NAMES:
        ps = preset_set(preset, names)
        shown = {n: round(float(ps.weights.get(n, 0.0)), 4) for n in names}
        if all(abs(shown[n] - round(w.get(n, 0.0), 4)) < 5e-5 for n in names):
            return ps
    return WeightSet(w, name="custom")


def weights_from_values(values: Sequence[float]) -> dict[str, float]:
    """Slider values in WEIGHT_NAMES order -> {name: weight}."""
    return {n: float(v or 0.0) for n, v in zip(WEIGHT_NAMES, values)}


# --- project bar ---------------------------------------------------------------------------------
def _empty_inspect() -> dict:
    return {
        "heatmaps": [], "aggregate_map": None, "aggregate_score": "", "query_sha": None, "query_image": None,
        "inspect_status": "", **slider_updates(visible=()),
    }


def project_view(ctx: StudioContext, pid: int) -> dict:
    """Everything the UI shows for a project, read from the store."""
    p = _project(ctx, pid)
    rows = _anomalous_rows(ctx, pid)
    n_norm = len(_images(ctx, pid, "normal"))
    n_masked = sum(1 for r in rows if r["has_mask"])
    status = (f"**{p['name']}** — class *{p.get('class_name') or 'object'}* · {n_norm} normal, "
              f"{n_masked}/{len(rows)} anomalous shots with masks · profile `{ctx.profile}`")
    view = {
        "pid": pid,
        "last_pid": pid,
        "project_list": gr.update(choices=project_choices(ctx), value=pid),
        "project_name": p["name"],
        "class_name": p.get("class_name") or "",
        "project_status": status,
        "normal_gallery": _normal_gallery(ctx, pid),
        "anomalous_gallery": _anomalous_gallery(ctx, pid, rows),
        "anom_pick": gr.update(choices=[(_label(r), int(r["id"])) for r in rows], value=None),
        "defect_type": gr.update(choices=_defect_types(ctx, pid), value=None),
        "query_pick": gr.update(choices=_query_choices(ctx, pid), value=None),
        "preset": gr.update(choices=preset_choices(ctx, pid), value="paper"),
        "anom_id": None, "editor": None, "sam_view": None, "sam_proposals": [], "sam_prompts": _new_prompts(),
        "sam_status": "",
        **_empty_inspect(),
    }
    return view


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
        if class_name and class_name != (_project(ctx, pid).get("class_name") or ""):
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
    if class_name == (_project(ctx, pid).get("class_name") or ""):
        return {}
    ctx.store.set_class_name(pid, class_name)
    ctx.set_class_name(pid, class_name)
    gr.Info(f"Class name set to {class_name!r}; score again to update the text components.")
    return {"project_status": project_view(ctx, pid)["project_status"]}


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


# --- shots ---------------------------------------------------------------------------------------
@friendly
def add_normals(ctx: StudioContext, pid, files, progress: Progress = silent) -> dict:
    """Store dropped normal images and add them to the engine as normal shots."""
    pid = _need_project(pid)
    files = _as_list(files)
    if not files:
        return {}
    pe = ctx.project_engine(pid, progress)
    errors = []
    for i, f in enumerate(files):
        progress(i / len(files), f"Encoding normal image {i + 1}/{len(files)}")
        try:
            img, fname = _read_upload(f)
            iid = ctx.store.add_image(pid, img, role="normal", filename=fname)
            ctx.sync_image(pid, int(iid))
        except (ValueError, ImageError) as exc:
            errors.append(str(exc))
    if errors:
        gr.Warning("Some images were skipped: " + " ".join(errors))
    del pe
    out = project_view(ctx, pid)
    return {k: out[k] for k in ("normal_gallery", "project_status")} | {"normal_upload": None}


@friendly
def remove_image(ctx: StudioContext, pid, iid) -> dict:
    """Remove a stored image (normal, anomalous or query) and its shot."""
    pid = _need_project(pid)
    if iid is None:
        raise gr.Error("Select an image first (click it in the gallery).")
    ctx.forget_image(pid, int(iid))
    ctx.store.remove_image(int(iid))
    out = project_view(ctx, pid)
    keys = ("normal_gallery", "anomalous_gallery", "anom_pick", "project_status", "query_pick")
    return {k: out[k] for k in keys}


def gallery_image_id(ctx: StudioContext, pid, role: str, index) -> int | None:
    """The store id of the `index`-th image of a role's gallery (galleries list images in store order)."""
    if pid is None or index is None:
        return None
    rows = _images(ctx, int(pid), role)
    return int(rows[index]["id"]) if 0 <= index < len(rows) else None


def _new_prompts() -> dict:
    return {"points": [], "box": None, "box_start": None, "choice": 0, "sha": None}


def _anomalous_view(ctx: StudioContext, pid: int, iid: int) -> dict:
    img = ctx.store.read_image(iid)
    mask = ctx.store.get_mask(iid)
    mask = np.asarray(mask, bool) if mask is not None else np.zeros(img.shape[:2], bool)
    row = next(r for r in _images(ctx, pid, "anomalous") if int(r["id"]) == iid)
    sha = row.get("sha256") or sha256_of_array(img)
    prompts = _new_prompts() | {"sha": sha}
    sam_msg = _start_sam(ctx, sha, img)
    ctx.mask_drafts.put(iid, mask)
    return {
        "anom_id": iid,
        "anom_pick": gr.update(value=iid),
        "editor": render.editor_value(img, mask),
        "sam_view": render.click_view(render.tint_mask(img, mask) if mask.any() else img),
        "sam_proposals": [],
        "sam_prompts": prompts,
        "sam_status": sam_msg,
        "defect_type": gr.update(choices=_defect_types(ctx, pid), value=row.get("defect_type")),
    }


def _start_sam(ctx: StudioContext, sha: str, img: np.ndarray) -> str:
    if ctx._sam_error:
        return f"{ctx._sam_error} Paint the mask with the brush instead."
    ctx.start_sam_embedding(sha, img)
    return (f"{ctx.sam_note()} is embedding this image in the background; click on the defect "
            "(the first answer waits for the embedding, later clicks are instant).")


@friendly
def add_anomalous(ctx: StudioContext, pid, files) -> dict:
    """Store dropped anomalous images; open the last one in the mask editor and start SAM on it."""
    pid = _need_project(pid)
    files = _as_list(files)
    if not files:
        return {}
    last = None
    errors = []
    for f in files:
        try:
            img, fname = _read_upload(f)
            last = int(ctx.store.add_image(pid, img, role="anomalous", filename=fname))
            ctx.start_sam_embedding(sha256_of_array(img), img)
        except (ValueError, ImageError) as exc:
            errors.append(str(exc))
    if errors:
        gr.Warning("Some images were skipped: " + " ".join(errors))
    if last is None:
        return {"anomalous_upload": None}
    rows = _anomalous_rows(ctx, pid)
    out = {
        "anomalous_upload": None,
        "anomalous_gallery": _anomalous_gallery(ctx, pid, rows),
        "project_status": project_view(ctx, pid)["project_status"],
        "anom_pick": gr.update(choices=[(_label(r), int(r["id"])) for r in rows], value=last),
    }
    out.update(_anomalous_view(ctx, pid, last))
    out["anom_pick"] = gr.update(choices=[(_label(r), int(r["id"])) for r in rows], value=last)
    return out


@friendly
def pick_anomalous(ctx: StudioContext, pid, iid) -> dict:
    if pid is None or iid is None or iid == "":
        return {}
    return _anomalous_view(ctx, int(pid), int(iid))


def _sam_predict(ctx: StudioContext, iid: int, img: np.ndarray, prompts: dict) -> list:
    """Proposals for all clicks so far: a fresh multimask prediction for the first prompt, then
    SAM's interactive protocol (the previous best mask's logits fed back with every click)."""
    try:
        sam = ctx.sam()
    except RuntimeError as exc:
        raise gr.Error(f"{exc} Paint the mask with the brush instead.") from None
    sha = sam.set_image(img)  # cached by sha256: instant once the background embedding finished
    pts = [(int(x), int(y), bool(pos)) for x, y, pos in prompts["points"]]
    box = tuple(prompts["box"]) if prompts.get("box") else None
    if not pts and box is None:
        return []
    previous = ctx.sam_proposals.get(iid)
    if previous and len(pts) + (box is not None) > 1:
        best = previous[min(int(prompts.get("choice", 0)), len(previous) - 1)]
        try:
            return list(sam.refine(best, points=pts or None, box=box, multimask=False, image_sha=sha))
        except ValueError:
            pass  # e.g. a zoom crop that no longer holds the clicks: predict afresh
    return list(sam.predict(points=pts or None, box=box, multimask=len(pts) <= 1 and box is None, image_sha=sha))


def _sam_outputs(ctx: StudioContext, img: np.ndarray, prompts: dict, proposals: list, seconds: float | None) -> dict:
    choice = min(prompts.get("choice", 0), max(0, len(proposals) - 1))
    prompts = dict(prompts, choice=choice)
    base = img
    if proposals:
        base = render.tint_mask(img, proposals[choice].mask)
    pending = [prompts["box_start"]] if prompts.get("box_start") else []
    view = render.draw_prompts(base, prompts["points"], prompts.get("box"))
    if pending:
        view = render.draw_prompts(view, [], (*pending[0], *pending[0]))
    view = render.click_view(view)
    gallery = [(render.thumbnail(render.tint_mask(img, p.mask), 200), f"{i + 1}: IoU≈{p.iou:.2f}")
               for i, p in enumerate(proposals)]
    status = ""
    if proposals:
        status = (f"{len(proposals)} proposals" + (f" in {seconds * 1000:.0f} ms" if seconds is not None else "")
                  + f"; showing #{choice + 1}. Pick another below, then Replace / Add / Subtract.")
        if ctx.sam_profile == "tiny":
            status += " (tiny SAM: random weights — for testing only)"
    elif prompts.get("points") or prompts.get("box"):
        status = "SAM proposed no mask for these clicks; try another point or a box."
    return {"sam_view": view, "sam_proposals": gallery, "sam_prompts": prompts, "sam_status": status}


@friendly
def sam_click(ctx: StudioContext, pid, iid, prompts: dict | None, mode: str, xy,
              progress: Progress = silent) -> dict:
    """A click on the image: add a positive/negative point or a box corner, then ask SAM."""
    pid = _need_project(pid)
    if iid is None:
        raise gr.Error("Upload or pick an anomalous image first.")
    if xy is None:
        return {}
    img = ctx.store.read_image(int(iid))
    prompts = dict(prompts or _new_prompts())
    prompts["points"] = list(prompts.get("points") or [])
    x, y = render.click_to_image(xy, img.shape[:2])
    if mode == SAM_MODES[2]:
        if prompts.get("box_start") is None:
            prompts["box_start"] = [x, y]
            return _sam_outputs(ctx, img, prompts, [], None) | {"sam_status": "Box: now click the opposite corner."}
        x0, y0 = prompts.pop("box_start")
        prompts["box_start"] = None
        prompts["box"] = [min(x0, x), min(y0, y), max(x0, x), max(y0, y)]
    else:
        prompts["points"].append([x, y, mode != SAM_MODES[1]])
    if not ctx.sam_ready(prompts.get("sha") or ""):
        progress(0.2, "Segment-Anything is still embedding this image")
    t0 = time.perf_counter()
    proposals = _sam_predict(ctx, int(iid), img, prompts)
    seconds = time.perf_counter() - t0
    prompts["choice"] = 0
    ctx.sam_proposals.put(int(iid), proposals)
    return _sam_outputs(ctx, img, prompts, proposals, seconds)


@friendly
def sam_choose(ctx: StudioContext, iid, prompts: dict | None, index) -> dict:
    """Pick one of SAM's multimask proposals."""
    masks = ctx.sam_proposals.get(int(iid)) if iid is not None else None
    if not masks or index is None:
        return {}
    prompts = dict(prompts or _new_prompts(), choice=int(index))
    img = ctx.store.read_image(int(iid))
    index = min(int(index), len(masks) - 1)
    view = render.click_view(render.draw_prompts(render.tint_mask(img, masks[index].mask), prompts["points"],
                                                 prompts.get("box")))
    return {"sam_view": view, "sam_prompts": prompts,
            "sam_status": f"Showing proposal #{int(index) + 1}; Replace / Add / Subtract puts it into the editor."}


def _draft(ctx: StudioContext, iid: int, img: np.ndarray) -> np.ndarray:
    """The mask being edited for an image (server side; see `render.editor_value` for why)."""
    draft = ctx.mask_drafts.get(iid)
    if draft is None or draft.shape != img.shape[:2]:
        stored = ctx.store.get_mask(iid)
        draft = np.asarray(stored, bool) if stored is not None else np.zeros(img.shape[:2], bool)
    return draft


def _set_draft(ctx: StudioContext, iid: int, img: np.ndarray, mask: np.ndarray, note: str) -> dict:
    ctx.mask_drafts.put(iid, mask)
    return {"editor": render.editor_value(img, mask), "mask_status": f"{note} Mask: {int(mask.sum())} px."}


@friendly
def sam_apply(ctx: StudioContext, iid, prompts: dict | None, editor, op: str) -> dict:
    """Put the chosen proposal into the mask: replace, add (union) or subtract. Brush strokes
    painted so far are kept (added to the mask first)."""
    if iid is None:
        raise gr.Error("Upload or pick an anomalous image first.")
    masks = ctx.sam_proposals.get(int(iid))
    if not masks:
        raise gr.Error("No SAM proposal yet: click on the defect in the image on the left first.")
    img = ctx.store.read_image(int(iid))
    choice = min(int((prompts or {}).get("choice", 0)), len(masks) - 1)
    proposal = np.asarray(masks[choice].mask, bool)
    current = _draft(ctx, int(iid), img) | render.editor_mask(editor, img.shape[:2])
    if op == "replace":
        mask = proposal
    else:
        from fsad_core.masks import merge

        mask = merge(current, proposal, mode="union" if op == "add" else "subtract")
    out = _set_draft(ctx, int(iid), img, mask, f"SAM proposal applied ({op}); refine with the brush, then Save shot.")
    return out | {"sam_status": out["mask_status"]}


@friendly
def commit_strokes(ctx: StudioContext, iid, editor, op: str) -> dict:
    """Brush strokes -> the mask: "add" paints defect, "remove" erases defect, "clear" empties it."""
    if iid is None:
        raise gr.Error("Upload or pick an anomalous image first.")
    img = ctx.store.read_image(int(iid))
    strokes = render.editor_mask(editor, img.shape[:2])
    draft = _draft(ctx, int(iid), img)
    if op == "clear":
        mask = np.zeros_like(draft)
        out = _set_draft(ctx, int(iid), img, mask, "Mask cleared.")
    else:
        if not strokes.any():
            raise gr.Error("Paint over the part to change with the brush first, then press this button.")
        mask = draft | strokes if op == "add" else draft & ~strokes
        out = _set_draft(ctx, int(iid), img, mask, "Strokes added to the mask." if op == "add" else
                         "Strokes removed from the mask.")
    # the SAM pane shows the same mask (a cleared mask clears it there too)
    return out | {"sam_view": render.click_view(render.tint_mask(img, mask) if mask.any() else img)}


@friendly
def sam_reset(ctx: StudioContext, iid, prompts: dict | None) -> dict:
    if iid is None:
        return {}
    ctx.sam_proposals.pop(int(iid), None)
    img = ctx.store.read_image(int(iid))
    return {"sam_view": render.click_view(img), "sam_proposals": [], "sam_status": "Clicks cleared.",
            "sam_prompts": _new_prompts() | {"sha": (prompts or {}).get("sha")}}


@friendly
def save_shot(ctx: StudioContext, pid, iid, editor, defect_type: str | None) -> dict:
    """Save the mask (SAM's and earlier edits, plus strokes not yet applied) and the defect type;
    the image becomes (or updates) an anomalous shot."""
    pid = _need_project(pid)
    if iid is None:
        raise gr.Error("Upload or pick an anomalous image first.")
    iid = int(iid)
    img = ctx.store.read_image(iid)
    mask = _draft(ctx, iid, img) | render.editor_mask(editor, img.shape[:2])
    dt = (defect_type or "").strip() or None
    if not mask.any():
        if dt:
            ctx.store.set_defect_type(iid, dt)
        raise gr.Error("The mask is empty: paint the defect with the brush or click it for a SAM mask, then save.")
    ctx.store.save_mask(iid, mask, defect_type=dt)
    ctx.sync_image(pid, iid)
    rows = _anomalous_rows(ctx, pid)
    gr.Info(f"Saved the mask ({int(mask.sum())} px)" + (f" as {dt!r}." if dt else " (no defect type)."))
    return {
        **_set_draft(ctx, iid, img, mask, "Saved."),
        "anomalous_gallery": _anomalous_gallery(ctx, pid, rows),
        "anom_pick": gr.update(choices=[(_label(r), int(r["id"])) for r in rows], value=iid),
        "defect_type": gr.update(choices=_defect_types(ctx, pid), value=dt),
        "sam_view": render.click_view(render.tint_mask(img, mask)),
        "project_status": project_view(ctx, pid)["project_status"],
    }


@friendly
def add_pasted(ctx: StudioContext, pid, img, role: str) -> dict:
    """An image pasted from the clipboard, added with the chosen role."""
    pid = _need_project(pid)
    if img is None:
        raise gr.Error("Paste an image (Ctrl+V) into the box first.")
    if role == "normal":
        return add_normals(ctx, pid, [img]) | {"paste": None}
    if role == "anomalous":
        return add_anomalous(ctx, pid, [img]) | {"paste": None}
    out = add_query(ctx, pid, img)
    return out | {"paste": None}


# --- inspect -------------------------------------------------------------------------------------
@friendly
def add_query(ctx: StudioContext, pid, img) -> dict:
    """A query dropped into the Inspect tab: store it (role 'query') and select it."""
    pid = _need_project(pid)
    if img is None:
        return {}
    try:
        rgb, fname = _read_upload(img)
    except ImageError as exc:
        # refused: clear the picture and the selection, so the next Score cannot quietly use the
        # previous query instead
        msg = f"Not added: {exc}"
        gr.Warning(msg, title="Cannot read that file")
        return {"query_image": None, "query_iid": None, "query_pick": gr.update(value=None),
                "inspect_status": msg}
    sha = sha256_of_array(rgb)
    same = next((r for r in _images(ctx, pid, "query") if r.get("sha256") == sha), None)
    if same is not None:  # the same pixels again: reuse the stored query, no duplicate
        iid = int(same["id"])
        status = f"Already in the project as {_label(same)}; using it."
    else:
        iid = int(ctx.store.add_image(pid, rgb, role="query", filename=fname))
        status = ""
    return {"query_pick": gr.update(choices=_query_choices(ctx, pid), value=iid), "query_iid": iid,
            "inspect_status": status}


@friendly
def pick_query(ctx: StudioContext, pid, iid) -> dict:
    if pid is None or iid is None or iid == "":
        return {}
    return {"query_image": ctx.store.read_image(int(iid)), "query_iid": int(iid)}


def _in_worker(make_iter: Callable[[], Iterable], lock) -> Iterable:
    """Run an iterator in one worker thread holding `lock`, yielding its items here.

    Gradio advances a generator handler from a different thread at each step, so a lock held
    across `yield` would be released by the wrong thread; the worker owns it from start to end.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue()
    done = object()

    def run():
        try:
            with lock:
                for item in make_iter():
                    q.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)
        finally:
            q.put(done)

    threading.Thread(target=run, name="fsad-score", daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _panels(ctx: StudioContext, result, img: np.ndarray, opacity: float) -> list[tuple[np.ndarray, str]]:
    out = []
    for name in _ordered_names(result.components):
        sm = result.components[name]
        lo, hi = render.value_range(np.asarray(sm.map))
        out.append((render.with_colorbar(render.heat_panel(img, sm.map, opacity), lo, hi),
                    f"{name} · {float(sm.score):.4f}"))
    return out


def _ordered_names(components: Mapping) -> list[str]:
    known = [n for n in WEIGHT_NAMES if n in components]
    return known + [n for n in components if n not in known]


def _display_maps(result, img: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The query and every component map at the aggregate view's size, computed once per result.

    Weighted combination is linear and so is resampling, so combining the small maps equals
    shrinking the combined map: the slider path then touches ~0.25 MP whatever the query's size.
    """
    key = (id(result), tuple(result.components))
    hit = _DISPLAY.get(key)
    if hit is not None and hit[0] is result:
        return hit[1], hit[2]
    side = min(render.AGGREGATE_SIDE, max(render.MIN_AGGREGATE_SIDE, max(img.shape[:2])))
    hw = render.fit_size(img.shape[:2], side)
    small = render.resize_image(img, hw)
    maps = {n: render.resize_map(sm.map, hw) for n, sm in result.components.items()}
    _DISPLAY.put(key, (result, small, maps))
    return small, maps


def _aggregate(result, wset: WeightSet, img: np.ndarray, opacity: float, threshold: float):
    """(aggregate panel uint8 HxWx3, score text): `fsad_core.aggregate.combine` — the function behind
    `Result.aggregate` — on display-size maps (the score comes from the full result)."""
    comps = result.components
    small, maps = _display_maps(result, img)
    lost = missing_required(wset, list(comps))
    if lost:
        return small.copy(), (f"— the {wset.name} preset needs {', '.join(lost)}, which this result lacks "
                              "(Personalize the query first)")
    if not any(v > 0 and k in comps for k, v in wset.weights.items()):
        return small.copy(), "— every weight is 0 on this result's components: raise at least one"
    agg = combine(comps, wset, maps=maps)
    lo, hi = render.value_range(agg.map)
    panel = render.aggregate_panel(small, agg.map, opacity, threshold, score_units=True)  # issue 14: score units
    return render.with_colorbar(panel, lo, hi), f"{agg.score:.4f}"


def _effective_weights(weights: Mapping[str, float] | None, names: Iterable[str]) -> dict[str, float] | None:
    if weights is None:
        return None
    names = list(names)
    return {n: float(weights.get(n, 0.0)) for n in names}


@friendly
def score(ctx: StudioContext, pid, query_image, query_iid, weights: Mapping[str, float] | None,
          opacity: float, threshold: float, preset: str | None = None, progress: Progress = silent):
    """Score the query progressively: yields updated panels as each scale completes."""
    pid = _need_project(pid)
    if query_image is None and query_iid is None:
        raise gr.Error("Drop a query image (or pick one of the project's) first.")
    # what the query box shows first (an upload, read through the checked reader); else the picked query
    img = _read_upload(query_image)[0] if query_image is not None else ctx.store.read_image(int(query_iid))
    pe = ctx.project_engine(pid, progress)
    if not pe.engine.shots:
        gr.Warning("This project has no shots yet: only the zero-shot (text) components can be computed. "
                   "Add normal images in the Shots tab for the reference components.")
    if weights is None:
        weights = initial_weights()
    t0 = time.perf_counter()
    sha = None
    result = None
    for result in _in_worker(lambda: pe.engine.score_progressive(img), pe.lock):
        sha = result.query_sha256 or sha256_of_array(img)
        ctx.queries.put(sha, img)
        panel, text = _aggregate(result, studio_weight_set(preset, weights, result.components), img, opacity,
                                 threshold)
        status = (f"{len(result.components)} components so far ({time.perf_counter() - t0:.1f} s)…"
                  if not result.complete else "")
        yield {"heatmaps": _panels(ctx, result, img, opacity), "aggregate_map": panel,
               "aggregate_score": text, "inspect_status": status, "query_sha": sha}
    if result is None:
        return
    from .session import attach_personal

    with_personal = attach_personal(ctx, pid, sha, result)  # computed earlier for this query: still there
    ctx.put_result(pid, sha, with_personal, image_id=int(query_iid) if query_iid is not None else None)
    seconds = time.perf_counter() - t0
    wset = studio_weight_set(preset, weights, with_personal.components)
    try:
        agg_score = float(with_personal.aggregate(wset).score)
    except ValueError:  # every weight on a component of this result is 0 (the panel says so)
        agg_score = None
    try:
        ctx.store.save_run(pid, "inspect", {
            "query_image_id": int(query_iid) if query_iid is not None else None, "query_sha256": sha,
            "weights": {k: v for k, v in (weights or {}).items() if k in with_personal.components},
            "weight_set": wset.to_dict(), "preset": preset or None, "profile": ctx.profile,
        }, {"scores": result.scores(), "aggregate": agg_score, "seconds": round(seconds, 3)})
    except Exception as exc:  # a run log must never lose the result on screen
        log.warning("could not save the run: %s", exc)
    names = list(with_personal.components)
    final = {"query_sha": sha, "inspect_status": f"Scored {len(names)} components in {seconds:.1f} s.",
             "preset": gr.update(choices=preset_choices(ctx, pid, names)),
             **slider_updates(weights, visible=names)}
    if with_personal is not result:
        panel, text = _aggregate(with_personal, wset, img, opacity, threshold)
        final.update({"heatmaps": _panels(ctx, with_personal, img, opacity), "aggregate_map": panel,
                      "aggregate_score": text})
    yield final


@friendly
def reaggregate(ctx: StudioContext, pid, sha, weights: Mapping[str, float], opacity: float, threshold: float,
                preset: str | None = None) -> dict:
    """The fast path behind every weight slider: combine cached maps, colour, done (no encoding)."""
    cached = ctx.get_result(pid, sha)
    img = ctx.queries.get(sha) if sha else None
    if cached is None or img is None:
        return {}
    comps = cached.result.components
    panel, text = _aggregate(cached.result, studio_weight_set(preset, weights, comps), img, opacity, threshold)
    return {"aggregate_map": panel, "aggregate_score": text}


@friendly
def rerender(ctx: StudioContext, pid, sha, weights: Mapping[str, float], opacity: float, threshold: float,
             preset: str | None = None) -> dict:
    """Opacity changed: redraw every panel and the aggregate from cached maps."""
    cached = ctx.get_result(pid, sha)
    img = ctx.queries.get(sha) if sha else None
    if cached is None or img is None:
        return {}
    out = reaggregate(ctx, pid, sha, weights, opacity, threshold, preset)
    out["heatmaps"] = _panels(ctx, cached.result, img, opacity)
    return out


def preset_weights(ctx: StudioContext, pid, preset: str, names: Iterable[str]) -> dict[str, float]:
    """The weights a preset name stands for, over the given component names."""
    names = list(names) or list(WEIGHT_NAMES)
    if preset in PRESET_NAMES:
        w = preset_set(preset, names).weights
        return {n: float(w.get(n, 0.0)) for n in names}
    if preset.startswith("only "):
        only = preset[len("only "):]
        return {n: (1.0 if n == only else 0.0) for n in names}
    if preset == "tuned" and pid is not None:
        w = ctx.tuned.get(int(pid))
        w = w if w is not None else _load_weights(ctx, int(pid), "tuned")
        if w is None:
            raise gr.Error("No tuned weights yet: press Auto-tune first.")
        return {n: float(w.get(n, 0.0)) for n in names}
    if preset.startswith("saved: ") and pid is not None:
        w = _load_weights(ctx, int(pid), USER_PRESET_PREFIX + preset[len("saved: "):])
        if w is None:
            raise gr.Error(f"The preset {preset!r} is not in this project any more.")
        return {n: float(w.get(n, 0.0)) for n in names}
    raise gr.Error(f"Unknown preset {preset!r}.")


@friendly
def apply_preset(ctx: StudioContext, pid, sha, preset: str, opacity: float, threshold: float) -> dict:
    """Move every slider to a preset and re-aggregate; say so when the result lacks components the
    preset needs (e.g. `one-to-normal` before Personalize computed `personal`)."""
    from .session import CUSTOM, preset_note, remember_weights

    if not preset or preset == CUSTOM:
        return {}
    cached = ctx.get_result(pid, sha)
    names = list(cached.result.components) if cached is not None else list(WEIGHT_NAMES)
    w = preset_weights(ctx, pid, preset, names)
    full = {n: w.get(n, 0.0) for n in WEIGHT_NAMES}
    out = slider_updates(full)
    out.update(reaggregate(ctx, pid, sha, full, opacity, threshold, preset))
    note = preset_note(ctx, pid, preset, names) if cached is not None else ""
    remember_weights(ctx, pid, full, preset)
    if note:
        gr.Warning(note.replace("**", "").replace("`", ""), title="Preset incomplete")
    out["inspect_status"] = note
    return out


@friendly
def save_preset(ctx: StudioContext, pid, name: str, weights: Mapping[str, float], sha: str | None = None) -> dict:
    pid = _need_project(pid)
    name = (name or "").strip()
    if not name:
        raise gr.Error("Type a name for the preset first.")
    ctx.store.save_weights(pid, USER_PRESET_PREFIX + name, {k: float(v) for k, v in weights.items()})
    gr.Info(f"Saved preset {name!r}.")
    cached = ctx.get_result(pid, sha)
    cached_names = list(cached.result.components) if cached is not None else []  # keep the "only X" entries
    return {"preset": gr.update(choices=preset_choices(ctx, pid, cached_names), value=f"saved: {name}"),
            "preset_name": ""}


# --- validation-only normal shots ---------------------------------------------------------------
@friendly
def set_validation_only(ctx: StudioContext, pid, sel, on: bool) -> dict:
    """The "use for tuning only" checkbox of the selected normal shot (Abdali et al. section 4.3:
    weight tuning validates on it; no memory holds it). Saved at once; the memory rebuilds from
    cached encodings."""
    pid = _need_project(pid)
    iid = gallery_image_id(ctx, pid, "normal", sel)
    if iid is None:
        raise gr.Error("Click a normal shot in the gallery first.")
    ctx.store.set_validation_only(int(iid), bool(on))
    ctx.sync_image(pid, int(iid))
    return {"normal_gallery": _normal_gallery(ctx, pid), "project_status": project_view(ctx, pid)["project_status"]}


def normal_selected(ctx: StudioContext, pid, index) -> dict:
    """A normal shot was clicked: remember it and show its "use for tuning only" state."""
    iid = gallery_image_id(ctx, pid, "normal", index) if pid is not None else None
    row = next((r for r in _images(ctx, int(pid), "normal") if r["id"] == iid), None) if iid is not None else None
    return {"normal_sel": index, "normal_validation": bool(row and row.get("validation_only"))}


# --- auto-tune (issue 5) -------------------------------------------------------------------------
@friendly
def tune(ctx: StudioContext, pid, sha, weights: Mapping[str, float], opacity: float, threshold: float,
         preset: str | None = None, progress: Progress = silent) -> dict:
    """Monte-Carlo weight search on augmented shots; moves the sliders (undo restores them)."""
    pid = _need_project(pid)
    from fsad_core.tuning import tune_weights

    pe = ctx.project_engine(pid, progress)
    if not any(s.kind == "normal" for s in pe.engine.shots):
        raise gr.Error("Auto-tune needs at least one normal and one anomalous shot with a mask.")
    if not any(s.kind == "normal" and s.role == "memory" for s in pe.engine.shots):
        raise gr.Error("Every normal shot is 'for tuning only': keep at least one in the memory.")

    with pe.lock:
        images = {sid: ctx.store.read_image(iid) for iid, sid in pe.shot_of_image.items()}
        res = tune_weights(pe.engine, progress=progress, images=images)
    record = res.protocol_record()
    tuned = {k: float(v) for k, v in res.weights.items()}
    ctx.tuned[pid] = tuned
    ctx.store.save_weights(pid, "tuned", tuned)
    try:
        ctx.store.save_run(pid, "tune", record,
                           {"weights": tuned, "auroc_default": float(res.auroc_default),
                            "auroc_tuned": float(res.auroc_tuned),
                            "component_auroc": {k: float(v) for k, v in res.component_auroc.items()}})
    except Exception as exc:
        log.warning("could not save the tuning run: %s", exc)
    import pandas as pd

    chart = pd.DataFrame({"component": list(res.component_auroc),
                          "AUROC": [float(v) for v in res.component_auroc.values()]})
    full = {n: tuned.get(n, 0.0) for n in WEIGHT_NAMES}
    from .session import remember_weights

    remember_weights(ctx, pid, full, "tuned")
    out = slider_updates(full)
    out.update(reaggregate(ctx, pid, sha, full, opacity, threshold))
    out.update({
        "tune_chart": gr.update(value=chart, visible=True), "undo_weights": dict(weights),
        "undo_preset": preset or "custom",
        "tune_status": (f"Validation AUROC: default weights {res.auroc_default:.3f} → tuned {res.auroc_tuned:.3f}. "
                        "Sliders moved to the tuned weights (Undo restores yours). "
                        f"Ran: {record['protocol']} protocol, {record['m_total']} augmented images "
                        f"({record['n_validation'][0]} anomalous + {record['n_validation'][1]} normal), "
                        f"{record['n_samples']} {record['distribution']} draws, seed {record['seed']}."),
        "preset": gr.update(choices=preset_choices(ctx, pid, list(full)), value="tuned"),
    })
    return out


@friendly
def undo_tune(ctx: StudioContext, pid, sha, undo: Mapping[str, float] | None, opacity: float, threshold: float,
              undo_preset: str | None = None) -> dict:
    """Sliders (and the preset label) back to what they were before Auto-tune."""
    if not undo:
        raise gr.Error("Nothing to undo.")
    full = {n: float(undo.get(n, 0.0)) for n in WEIGHT_NAMES}
    out = slider_updates(full)
    out.update(reaggregate(ctx, pid, sha, full, opacity, threshold))
    out.update({"undo_weights": None, "tune_status": "Restored the weights from before tuning.",
                "preset": undo_preset or "custom"})
    from .session import remember_weights

    remember_weights(ctx, pid, full, undo_preset or "custom")
    return out


# --- compare -------------------------------------------------------------------------------------
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
                label = _label(dict(ctx.store.get_image(cached.image_id)))
            except (KeyError, ValueError):  # removed since: the hash still names it
                label = f"#{cached.image_id} ({sha[:8]})"
        queries.append((label, sha))
    comps = ["aggregate"]
    if items:
        comps += _ordered_names(items[-1][1].result.components)
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
            sm = cached.result.aggregate(_effective_weights(weights, cached.result.components))
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


# --- models --------------------------------------------------------------------------------------
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


MODEL_COLUMNS = ["kind", "name", "tag", "profile", "active", "size", "present", "source", "what it is"]


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
