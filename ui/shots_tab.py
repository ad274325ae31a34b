"""The Shots tab: normal and anomalous images, the defect mask of each anomalous image (brush
strokes and Segment-Anything proposals), its defect type, and pasting from the clipboard.

The mask being edited lives on the server (`ctx.mask_drafts`) and is drawn into the editor's
background; the editor's layer carries only new strokes (`render.editor_value`). *Add strokes /
Remove strokes / Clear* commit them, *Save shot* saves draft ∪ pending strokes. Removal is soft
(`ui/session.py`: *Undo remove* brings an image back).
"""
from __future__ import annotations

import time

import gradio as gr
import numpy as np

from fsad_core.images import ImageError, sha256_of_array
from fsad_core.progress import Progress, silent

from . import render, session
from .common import (
    anomalous_choices,
    anomalous_gallery,
    anomalous_rows,
    as_list,
    defect_types,
    friendly,
    images,
    need_project,
    normal_gallery,
    project_status,
    read_upload,
)
from .context import StudioContext
from .inspect_tab import add_query
from .uploads import UploadedImage

HELP = (
    "Drop **normal** images (good parts) and **anomalous** images (with a defect). For each anomalous "
    "image paint the defect with the brush (eraser to fix), or click on it and let Segment-Anything "
    "propose a mask; choose or type the defect type and press **Save shot**. Everything is saved as you go."
)
SAM_MODES = ("add (+)", "remove (−)", "box corner")
#: What picking an anomalous image updates (the image, its mask in the editor, SAM's pane).
ANOMALOUS_VIEW = ("anom_id", "anom_pick", "editor", "sam_view", "sam_proposals", "sam_prompts", "sam_status",
                  "defect_type")

#: Strokes painted in the mask editor live only in the browser until Add / Remove strokes, a SAM
#: operation or Save shot sends them: leaving the page before that asks first.
UNSAVED_STROKES_JS = """<script>
(() => {
  const COMMIT = "#strokes-add, #strokes-remove, #mask-clear, #save-shot, #sam-replace, #sam-add, #sam-subtract";
  window.fsadPendingStrokes = false;
  document.addEventListener("pointerup", (e) => {
    if (e.target.closest && e.target.closest("#mask-editor canvas")) window.fsadPendingStrokes = true;
  }, true);
  document.addEventListener("click", (e) => {
    if (e.target.closest && e.target.closest(COMMIT)) window.fsadPendingStrokes = false;
  }, true);
  window.addEventListener("beforeunload", (e) => {
    if (window.fsadPendingStrokes) { e.preventDefault(); e.returnValue = ""; }
  });
})();
</script>"""


def new_prompts() -> dict:
    """The SAM clicks of an image: none yet."""
    return {"points": [], "box": None, "box_start": None, "choice": 0, "sha": None}


def gallery_image_id(ctx: StudioContext, pid, role: str, index) -> int | None:
    """The store id of the `index`-th image of a role's gallery (galleries list images in store order)."""
    if pid is None or index is None:
        return None
    rows = images(ctx, int(pid), role)
    return int(rows[index]["id"]) if 0 <= index < len(rows) else None


# --- normal shots ------------------------------------------------------------------------------------
@friendly
def add_normals(ctx: StudioContext, pid, files, progress: Progress = silent) -> dict:
    """Store dropped normal images and add them to the engine as normal shots."""
    pid = need_project(pid)
    files = as_list(files)
    if not files:
        return {}
    pe = ctx.project_engine(pid, progress)
    errors = []
    for i, f in enumerate(files):
        progress(i / len(files), f"Encoding normal image {i + 1}/{len(files)}")
        try:
            img, fname = read_upload(f)
            iid = ctx.store.add_image(pid, img, role="normal", filename=fname)
            ctx.sync_image(pid, int(iid))
        except (ValueError, ImageError) as exc:
            errors.append(str(exc))
    if errors:
        gr.Warning("Some images were skipped: " + " ".join(errors))
    del pe
    return {"normal_gallery": normal_gallery(ctx, pid), "project_status": project_status(ctx, pid),
            "normal_upload": None}


@friendly
def set_validation_only(ctx: StudioContext, pid, sel, on: bool) -> dict:
    """The "use for tuning only" checkbox of the selected normal shot (Abdali et al. section 4.3:
    weight tuning validates on it; no memory holds it). Saved at once; the memory rebuilds from
    cached encodings."""
    pid = need_project(pid)
    iid = gallery_image_id(ctx, pid, "normal", sel)
    if iid is None:
        raise gr.Error("Click a normal shot in the gallery first.")
    ctx.store.set_validation_only(int(iid), bool(on))
    ctx.sync_image(pid, int(iid))
    return {"normal_gallery": normal_gallery(ctx, pid), "project_status": project_status(ctx, pid)}


def normal_selected(ctx: StudioContext, pid, index) -> dict:
    """A normal shot was clicked: remember it and show its "use for tuning only" state."""
    iid = gallery_image_id(ctx, pid, "normal", index) if pid is not None else None
    row = next((r for r in images(ctx, int(pid), "normal") if r["id"] == iid), None) if iid is not None else None
    return {"normal_sel": index, "normal_validation": bool(row and row.get("validation_only"))}


# --- anomalous shots ---------------------------------------------------------------------------------
def _anomalous_view(ctx: StudioContext, pid: int, iid: int) -> dict:
    img = ctx.store.read_image(iid)
    mask = ctx.store.get_mask(iid)
    mask = np.asarray(mask, bool) if mask is not None else np.zeros(img.shape[:2], bool)
    row = next(r for r in images(ctx, pid, "anomalous") if int(r["id"]) == iid)
    sha = row.get("sha256") or sha256_of_array(img)
    prompts = new_prompts() | {"sha": sha}
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
        "defect_type": gr.update(choices=defect_types(ctx, pid), value=row.get("defect_type")),
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
    pid = need_project(pid)
    files = as_list(files)
    if not files:
        return {}
    last = None
    errors = []
    for f in files:
        try:
            img, fname = read_upload(f)
            last = int(ctx.store.add_image(pid, img, role="anomalous", filename=fname))
            ctx.start_sam_embedding(sha256_of_array(img), img)
        except (ValueError, ImageError) as exc:
            errors.append(str(exc))
    if errors:
        gr.Warning("Some images were skipped: " + " ".join(errors))
    if last is None:
        return {"anomalous_upload": None}
    rows = anomalous_rows(ctx, pid)
    out = {
        "anomalous_upload": None,
        "anomalous_gallery": anomalous_gallery(ctx, pid, rows),
        "project_status": project_status(ctx, pid),
    }
    out.update(_anomalous_view(ctx, pid, last))
    out["anom_pick"] = gr.update(choices=anomalous_choices(rows), value=last)
    return out


@friendly
def pick_anomalous(ctx: StudioContext, pid, iid) -> dict:
    if pid is None or iid is None or iid == "":
        return {}
    return _anomalous_view(ctx, int(pid), int(iid))


# --- Segment-Anything --------------------------------------------------------------------------------
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
    pid = need_project(pid)
    if iid is None:
        raise gr.Error("Upload or pick an anomalous image first.")
    if xy is None:
        return {}
    img = ctx.store.read_image(int(iid))
    prompts = dict(prompts or new_prompts())
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
    prompts = dict(prompts or new_prompts(), choice=int(index))
    img = ctx.store.read_image(int(iid))
    index = min(int(index), len(masks) - 1)
    view = render.click_view(render.draw_prompts(render.tint_mask(img, masks[index].mask), prompts["points"],
                                                 prompts.get("box")))
    return {"sam_view": view, "sam_prompts": prompts,
            "sam_status": f"Showing proposal #{int(index) + 1}; Replace / Add / Subtract puts it into the editor."}


@friendly
def sam_reset(ctx: StudioContext, iid, prompts: dict | None) -> dict:
    if iid is None:
        return {}
    ctx.sam_proposals.pop(int(iid), None)
    img = ctx.store.read_image(int(iid))
    return {"sam_view": render.click_view(img), "sam_proposals": [], "sam_status": "Clicks cleared.",
            "sam_prompts": new_prompts() | {"sha": (prompts or {}).get("sha")}}


# --- the mask ----------------------------------------------------------------------------------------
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
def save_shot(ctx: StudioContext, pid, iid, editor, defect_type: str | None) -> dict:
    """Save the mask (SAM's and earlier edits, plus strokes not yet applied) and the defect type;
    the image becomes (or updates) an anomalous shot."""
    pid = need_project(pid)
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
    rows = anomalous_rows(ctx, pid)
    gr.Info(f"Saved the mask ({int(mask.sum())} px)" + (f" as {dt!r}." if dt else " (no defect type)."))
    return {
        **_set_draft(ctx, iid, img, mask, "Saved."),
        "anomalous_gallery": anomalous_gallery(ctx, pid, rows),
        "anom_pick": gr.update(choices=anomalous_choices(rows), value=iid),
        "defect_type": gr.update(choices=defect_types(ctx, pid), value=dt),
        "sam_view": render.click_view(render.tint_mask(img, mask)),
        "project_status": project_status(ctx, pid),
    }


@friendly
def add_pasted(ctx: StudioContext, pid, img, role: str) -> dict:
    """An image pasted from the clipboard, added with the chosen role."""
    pid = need_project(pid)
    if img is None:
        raise gr.Error("Paste an image (Ctrl+V) into the box first.")
    if role == "normal":
        return add_normals(ctx, pid, [img]) | {"paste": None}
    if role == "anomalous":
        return add_anomalous(ctx, pid, [img]) | {"paste": None}
    out = add_query(ctx, pid, img)
    return out | {"paste": None}


# --- layout and wiring -------------------------------------------------------------------------------
def build(studio) -> None:
    """Lay out the tab inside the current gr.Tab and register its wiring."""
    studio.extra_wiring.append(wiring)
    add = studio.add
    gr.Markdown(HELP)
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown("### Normal shots")
            add("normal_upload", gr.File(label="Drop normal images", file_count="multiple",
                                         file_types=["image"], elem_id="normal-upload", height=120))
            add("normal_gallery", gr.Gallery(label="Normal shots (click one to select it)", columns=4,
                                             height=240, format="png", elem_id="normal-gallery", fit_columns=False,
                                             allow_preview=False, interactive=False))
            with gr.Row():
                add("normal_remove", gr.Button("Remove selected normal", size="sm", elem_id="normal-remove"))
                add("normal_validation", gr.Checkbox(
                    label="Use selected normal for tuning only", value=False, elem_id="normal-validation",
                    info="Weight tuning validates on it; no memory holds it (Abdali et al. §4.3)"))
        with gr.Column(scale=1):
            gr.Markdown("### Anomalous shots")
            add("anomalous_upload", gr.File(label="Drop anomalous images", file_count="multiple",
                                            file_types=["image"], elem_id="anomalous-upload", height=120))
            add("anomalous_gallery", gr.Gallery(label="Anomalous shots (click one to edit its mask)",
                                                columns=4, height=240, format="png",
                                                elem_id="anomalous-gallery", fit_columns=False, allow_preview=False,
                                                interactive=False))
            with gr.Row():
                add("anom_pick", gr.Dropdown(label="Editing", choices=[], elem_id="anomalous-pick", scale=3))
                add("anom_remove", gr.Button("Remove", size="sm", elem_id="anomalous-remove", scale=1))
            with gr.Row(equal_height=True):  # removal is soft in the store: undo it here
                add("removed_pick", gr.Dropdown(label="Recently removed", choices=[], elem_id="removed-pick",
                                                scale=3))
                add("image_restore", gr.Button("Undo remove", size="sm", elem_id="image-restore", scale=1))
            add("removed_status", gr.Markdown("", elem_id="removed-status"))
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown("### Click on the defect (Segment-Anything)")
            add("sam_mode", gr.Radio(list(SAM_MODES), value=SAM_MODES[0], label="Click adds", elem_id="sam-mode"))
            add("sam_view", gr.Image(label="Click on the defect", type="numpy", interactive=False,
                                     format="png", elem_id="sam-click", height=420, buttons=["fullscreen"]))
            add("sam_proposals", gr.Gallery(label="Proposals (best first; click to choose)", columns=3,
                                            height=230, format="png", elem_id="sam-proposals",
                                            allow_preview=False, interactive=False))
            with gr.Row():
                add("sam_replace", gr.Button("Replace mask", size="sm", elem_id="sam-replace"))
                add("sam_add", gr.Button("Add to mask", size="sm", elem_id="sam-add"))
                add("sam_subtract", gr.Button("Subtract", size="sm", elem_id="sam-subtract"))
                add("sam_clear", gr.Button("Clear clicks", size="sm", elem_id="sam-clear"))
            add("sam_status", gr.Markdown("", elem_id="sam-status"))
        with gr.Column(scale=1):
            gr.Markdown("### Paint the defect mask")
            add("editor", gr.ImageEditor(
                label="Mask editor (current mask in red)",
                type="numpy", format="png",
                brush=gr.Brush(colors=[("#ff2828", 0.6)], color_mode="fixed", default_size=12),
                eraser=gr.Eraser(default_size=16),
                layers=gr.LayerOptions(allow_additional_layers=False, layers=["defect"]),
                sources=(), transforms=(), elem_id="mask-editor", height=460))
            with gr.Row():
                add("strokes_add", gr.Button("Add strokes to mask", size="sm", elem_id="strokes-add"))
                add("strokes_remove", gr.Button("Remove strokes from mask", size="sm", elem_id="strokes-remove"))
                add("mask_clear", gr.Button("Clear mask", size="sm", elem_id="mask-clear"))
            add("mask_status", gr.Markdown("Strokes not yet added are included when you save.",
                                           elem_id="mask-status"))
            with gr.Row(equal_height=True):
                add("defect_type", gr.Dropdown(label="Defect type (choose or type a new one)", choices=[],
                                               allow_custom_value=True, elem_id="defect-type", scale=3))
                add("save", gr.Button("Save shot", variant="primary", elem_id="save-shot", scale=1))
    with gr.Accordion("Paste an image from the clipboard", open=False):
        with gr.Row():
            add("paste", UploadedImage(label="Paste here (Ctrl+V)", sources=["clipboard"], type="filepath",
                                       image_mode=None, format="png", elem_id="paste-image", height=200))
            with gr.Column():
                add("paste_role", gr.Radio(["normal", "anomalous", "query"], value="normal", label="Add as",
                                           elem_id="paste-role"))
                add("paste_add", gr.Button("Add pasted image", elem_id="paste-add"))


def wiring(s) -> None:
    C = s.C
    removed_outs = list(session.REMOVED_OUTPUTS)
    anom_view = list(ANOMALOUS_VIEW)
    s.wire(C["normal_upload"].upload, add_normals, ["pid", "normal_upload"],
           ["normal_gallery", "project_status", "normal_upload"], progress=True)
    s.wire(C["normal_gallery"].select, normal_selected, ["pid"], ["normal_sel", "normal_validation"], select=True)
    s.wire(C["normal_validation"].input, set_validation_only, ["pid", "normal_sel", "normal_validation"],
           ["normal_gallery", "project_status"])
    s.wire(C["normal_remove"].click,
           lambda ctx, pid, sel: session.remove(ctx, pid, gallery_image_id(ctx, pid, "normal", sel)),
           ["pid", "normal_sel"], removed_outs)
    s.wire(C["image_restore"].click, session.restore, ["pid", "removed_pick"], removed_outs)
    s.wire(C["anomalous_upload"].upload, add_anomalous, ["pid", "anomalous_upload"],
           ["anomalous_upload", "anomalous_gallery", "project_status"] + anom_view)
    s.wire(C["anom_pick"].input, pick_anomalous, ["pid", "anom_pick"], anom_view)
    s.wire(C["anomalous_gallery"].select,
           lambda ctx, pid, index: pick_anomalous(ctx, pid, gallery_image_id(ctx, pid, "anomalous", index)),
           ["pid"], anom_view, select=True)
    s.wire(C["anom_remove"].click,
           lambda ctx, pid, iid: session.remove(ctx, pid, iid) | {"anom_id": None, "editor": None,
                                                                "sam_view": None, "sam_proposals": []},
           ["pid", "anom_id"], removed_outs + ["anom_id", "editor", "sam_view", "sam_proposals"])
    sam_outs = ["sam_view", "sam_proposals", "sam_prompts", "sam_status"]
    s.wire(C["sam_view"].select, sam_click, ["pid", "anom_id", "sam_prompts", "sam_mode"], sam_outs,
           select=True, progress=True, concurrency_id="models")
    s.wire(C["sam_proposals"].select, sam_choose, ["anom_id", "sam_prompts"], sam_outs, select=True)
    for key, op in (("sam_replace", "replace"), ("sam_add", "add"), ("sam_subtract", "subtract")):
        s.wire(C[key].click, lambda ctx, iid, prompts, editor, _op=op: sam_apply(ctx, iid, prompts, editor, _op),
               ["anom_id", "sam_prompts", "editor"], ["editor", "sam_status", "mask_status"], show_progress="hidden")
    for key, op in (("strokes_add", "add"), ("strokes_remove", "remove"), ("mask_clear", "clear")):
        s.wire(C[key].click, lambda ctx, iid, editor, _op=op: commit_strokes(ctx, iid, editor, _op),
               ["anom_id", "editor"], ["editor", "mask_status", "sam_view"], show_progress="hidden")
    s.wire(C["sam_clear"].click, sam_reset, ["anom_id", "sam_prompts"], sam_outs)
    s.wire(C["save"].click, save_shot, ["pid", "anom_id", "editor", "defect_type"],
           ["editor", "mask_status", "anomalous_gallery", "anom_pick", "defect_type", "sam_view",
            "project_status"], show_progress="hidden")
    s.wire(C["paste_add"].click, add_pasted, ["pid", "paste", "paste_role"],
           ["paste", "normal_gallery", "project_status", "anomalous_gallery", "query_pick", "query_iid"] + anom_view)
