"""The studio layout: gr.Blocks with a project bar and the tabs Shots / Inspect / Compare /
Personalize / Batch / Models, wired to the handlers of `ui/events.py`.

Layout and wiring only. Handlers return dicts keyed by the names in `C` below; `_wire` turns
them into Gradio's positional outputs (a name a handler leaves out stays unchanged) and adds the
Progress / SelectData parameters Gradio injects. Every component that shows a mask or a heatmap
uses ``format="png"`` (Gradio's default WebP is lossy: see NOTES.md).
"""
import inspect
import logging
from pathlib import Path
from typing import Callable, Sequence

import gradio as gr
import numpy as np

from fsad_core.progress import from_gradio

from . import events, render, session
from .context import StudioContext
from .uploads import UploadedImage

log = logging.getLogger("fsad.ui")

WEIGHTS = "@weights"  # marker in an input list: all weight sliders, passed to the handler as one dict

CSS = """
#profile-banner { background: #fff4ce; border: 1px solid #e0b400; border-radius: 6px; padding: 4px 12px; }
#profile-banner p { margin: 4px 0; color: #4a3b00; }
#aggregate-score textarea, #aggregate-score input { font-size: 1.6em; font-weight: 600; text-align: center; }
.weight-slider { min-width: 120px; }
#heatmaps .caption-label, #heatmaps .caption { font-family: ui-monospace, monospace; }
/* component name and score must stay readable: Gradio ellipsises captions at 80% of the tile */
#heatmaps .caption-label, #sam-proposals .caption-label { max-width: calc(100% - 8px); font-size: 11px; padding: 1px 5px; white-space: nowrap; }
"""

HELP_SHOTS = (
    "Drop **normal** images (good parts) and **anomalous** images (with a defect). For each anomalous "
    "image paint the defect with the brush (eraser to fix), or click on it and let Segment-Anything "
    "propose a mask; choose or type the defect type and press **Save shot**. Everything is saved as you go."
)
HELP_INSPECT = (
    "Drop a query (or pick one of the project's) and press **Score**: patch-level maps appear first, then "
    "each window scale. Weight sliders re-aggregate instantly from cached maps. The threshold is in score units: "
    "the badge says OK / NG (uncertain near it) for the aggregate score, and the contour encloses the map at or "
    "above it, the same value on every image; **Calibrate** sets it (docs/decisions.md).\n\n"
    "Components live on different scales (memory scores sit near 0 or 1, text scores in between): each panel "
    "is coloured over its own range, blue = its lowest, red = its highest value (the bar under it gives both "
    "in score units), and its caption gives its image score — see [docs/engine.md]({engine_doc}) for what "
    "each component measures."
)
DOCS = Path(__file__).resolve().parents[1] / "docs"  # served read-only, for the help links


def _to_browser(value):
    """Images (uint8 H x W x 3 arrays, alone or as gallery items) -> fast-PNG file paths.

    Handlers return arrays (easy to test); this is where they become files, written at zlib
    level 1 instead of Gradio's level 6 (see `render.PngCache`). Editor values (dicts) and
    everything else pass through unchanged.
    """
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 3:
        return render.png_file(value)
    if isinstance(value, list) and value and isinstance(value[0], tuple) and isinstance(value[0][0], np.ndarray):
        return [(_to_browser(img), caption) for img, caption in value]
    return value


def user_error(handler_name: str, exc: gr.Error) -> None:
    """A handler refused its input: one readable toast, one log line, and every output unchanged.

    Re-raising would put Gradio's red "Error" badge on *every* output of the event (until each is
    dismissed) and drop what the user had in them, e.g. strokes painted in the mask editor.
    """
    log.info("user error in %s: %s", handler_name, exc.message)
    gr.Warning(exc.message, title="Cannot do that")


def _pack(res: dict | None, outs: Sequence[str]):
    res = res or {}
    vals = tuple(_to_browser(res[n]) if n in res else gr.skip() for n in outs)
    return vals[0] if len(vals) == 1 else vals


def _unpack(args: Sequence, ins: Sequence[str]) -> list:
    """Positional Gradio values -> handler arguments (the weight sliders become one dict)."""
    out, i = [], 0
    for name in ins:
        if name == WEIGHTS:
            n = len(events.WEIGHT_NAMES)
            out.append(events.weights_from_values(args[i:i + n]))
            i += n
        else:
            out.append(args[i])
            i += 1
    return out


class Studio:
    """Builds the Blocks and keeps the name -> component table used for wiring."""

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx
        self.C: dict[str, gr.components.Component] = {}

    def add(self, name: str, comp):
        self.C[name] = comp
        return comp

    def comps(self, names: Sequence[str]) -> list:
        out = []
        for n in names:
            if n == WEIGHTS:
                out += [self.C[f"weight:{w}"] for w in events.WEIGHT_NAMES]
            else:
                out.append(self.C[n])
        return out

    def wire(self, trigger, handler: Callable, ins: Sequence[str], outs: Sequence[str], *,
             progress: bool = False, select: bool = False, fast: bool = False, **kw):
        """Connect `trigger` (an event listener or a list of them) to `handler(ctx, *ins)`.

        progress: the handler gets `progress=` (a gr.Progress mirroring tqdm).
        select: the handler gets the click's `evt.index` as its last argument.
        fast: the slider fast path (no queue, no spinner, only the last of a burst of events).
        """
        ctx = self.ctx
        n_in = len(self.comps(ins))
        is_gen = inspect.isgeneratorfunction(handler)

        def prepare(args):
            args = list(args)
            prog = args.pop() if progress else None
            evt = args.pop() if select else None
            vals = _unpack(args[:n_in], ins)
            if select:
                vals.append(evt.index if evt is not None else None)
            kwargs = {}
            if progress:
                kwargs["progress"] = from_gradio(prog)
            return vals, kwargs

        name = getattr(handler, "__name__", "handler")
        if is_gen:
            def call(*args):
                vals, kwargs = prepare(args)
                try:
                    for res in handler(ctx, *vals, **kwargs):
                        yield _pack(res, outs)
                except gr.Error as exc:
                    user_error(name, exc)
                    yield _pack({}, outs)
        else:
            def call(*args):
                vals, kwargs = prepare(args)
                try:
                    res = handler(ctx, *vals, **kwargs)
                except gr.Error as exc:
                    user_error(name, exc)
                    res = {}
                return _pack(res, outs)

        params = [inspect.Parameter(f"in{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(n_in)]
        annotations = {}
        if select:  # Gradio injects these by annotation (SelectData) and by default value (Progress)
            params.append(inspect.Parameter("evt", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.SelectData))
            annotations["evt"] = gr.SelectData
        if progress:
            params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                            default=gr.Progress(track_tqdm=True)))
        call.__signature__ = inspect.Signature(params)
        call.__annotations__ = annotations
        call.__name__ = handler.__name__
        if fast:
            kw.setdefault("queue", False)
            kw.setdefault("show_progress", "hidden")
            kw.setdefault("trigger_mode", "always_last")
        kw.setdefault("api_visibility", "private")
        triggers = trigger if isinstance(trigger, list) else [trigger]
        return gr.on(triggers, call, inputs=self.comps(ins), outputs=self.comps(outs), **kw)

    # --- layout ----------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        ctx = self.ctx
        gr.set_static_paths([DOCS])
        with gr.Blocks(title="fsad-studio", delete_cache=DELETE_CACHE) as demo:
            self.add("pid", gr.State(None))
            self.add("last_pid", gr.BrowserState(None, storage_key="fsad-studio-last-project"))
            self.add("anom_id", gr.State(None))
            self.add("sam_prompts", gr.State(events._new_prompts()))
            self.add("query_sha", gr.State(None))
            self.add("query_iid", gr.State(None))
            self.add("undo_weights", gr.State(None))
            self.add("undo_preset", gr.State(None))
            self.add("normal_sel", gr.State(None))
            self.add("anom_sel", gr.State(None))

            self.add("banner", gr.Markdown(ctx.banner or "", visible=bool(ctx.banner), elem_id="profile-banner"))
            with gr.Row(equal_height=True):
                gr.Markdown("## fsad-studio · few-shot visual anomaly inspection")
            with gr.Row(equal_height=True):
                self.add("project_list", gr.Dropdown(label="Open project", choices=events.project_choices(ctx),
                                                     value=None, elem_id="project-list", scale=2))
                self.add("project_name", gr.Textbox(label="Project name", placeholder="e.g. bottle-line-3",
                                                    elem_id="project-name", scale=2))
                self.add("class_name", gr.Textbox(label="Object class (used by the text prompts)",
                                                  placeholder="e.g. bottle", elem_id="class-name", scale=2))
                self.add("project_open", gr.Button("Create / open", variant="primary", elem_id="project-open", scale=1))
                self.add("sample", gr.Button("Load sample project", elem_id="sample-project", scale=1))
            self.add("project_status", gr.Markdown("", elem_id="project-status"))

            with gr.Tabs(elem_id="tabs"):
                with gr.Tab("Shots", elem_id="shots-tab"):
                    self._shots_tab()
                with gr.Tab("Inspect", elem_id="inspect-tab"):
                    self._inspect_tab()
                with gr.Tab("Compare", elem_id="compare-tab") as compare_tab:
                    self._compare_tab()
                with gr.Tab("Personalize", elem_id="personalize-tab"):
                    self._personalize_tab()
                with gr.Tab("Batch", elem_id="batch-tab"):
                    self._batch_tab()
                with gr.Tab("Review", elem_id="review-tab"):
                    self._optional("review_tab", "build")
                with gr.Tab("Models", elem_id="models-tab"):
                    self._models_tab()
            self._wire_all(demo, compare_tab)
        return demo

    def _shots_tab(self):
        gr.Markdown(HELP_SHOTS)
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("### Normal shots")
                self.add("normal_upload", gr.File(label="Drop normal images", file_count="multiple",
                                                  file_types=["image"], elem_id="normal-upload", height=120))
                self.add("normal_gallery", gr.Gallery(label="Normal shots (click one to select it)", columns=4,
                                                      height=240, format="png", elem_id="normal-gallery", fit_columns=False,
                                                      allow_preview=False, interactive=False))
                with gr.Row():
                    self.add("normal_remove", gr.Button("Remove selected normal", size="sm", elem_id="normal-remove"))
                    self.add("normal_validation", gr.Checkbox(
                        label="Use selected normal for tuning only", value=False, elem_id="normal-validation",
                        info="Weight tuning validates on it; no memory holds it (Abdali et al. §4.3)"))
            with gr.Column(scale=1):
                gr.Markdown("### Anomalous shots")
                self.add("anomalous_upload", gr.File(label="Drop anomalous images", file_count="multiple",
                                                     file_types=["image"], elem_id="anomalous-upload", height=120))
                self.add("anomalous_gallery", gr.Gallery(label="Anomalous shots (click one to edit its mask)",
                                                         columns=4, height=240, format="png",
                                                         elem_id="anomalous-gallery", fit_columns=False, allow_preview=False,
                                                         interactive=False))
                with gr.Row():
                    self.add("anom_pick", gr.Dropdown(label="Editing", choices=[], elem_id="anomalous-pick", scale=3))
                    self.add("anom_remove", gr.Button("Remove", size="sm", elem_id="anomalous-remove", scale=1))
                with gr.Row(equal_height=True):  # removal is soft in the store: undo it here
                    self.add("removed_pick", gr.Dropdown(label="Recently removed", choices=[], elem_id="removed-pick",
                                                         scale=3))
                    self.add("image_restore", gr.Button("Undo remove", size="sm", elem_id="image-restore", scale=1))
                self.add("removed_status", gr.Markdown("", elem_id="removed-status"))
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("### Click on the defect (Segment-Anything)")
                self.add("sam_mode", gr.Radio(list(events.SAM_MODES), value=events.SAM_MODES[0], label="Click adds",
                                              elem_id="sam-mode"))
                self.add("sam_view", gr.Image(label="Click on the defect", type="numpy", interactive=False,
                                              format="png", elem_id="sam-click", height=420,
                                              buttons=["fullscreen"]))
                self.add("sam_proposals", gr.Gallery(label="Proposals (best first; click to choose)", columns=3,
                                                     height=230, format="png", elem_id="sam-proposals",
                                                     allow_preview=False, interactive=False))
                with gr.Row():
                    self.add("sam_replace", gr.Button("Replace mask", size="sm", elem_id="sam-replace"))
                    self.add("sam_add", gr.Button("Add to mask", size="sm", elem_id="sam-add"))
                    self.add("sam_subtract", gr.Button("Subtract", size="sm", elem_id="sam-subtract"))
                    self.add("sam_clear", gr.Button("Clear clicks", size="sm", elem_id="sam-clear"))
                self.add("sam_status", gr.Markdown("", elem_id="sam-status"))
            with gr.Column(scale=1):
                gr.Markdown("### Paint the defect mask")
                self.add("editor", gr.ImageEditor(
                    label="Mask editor (current mask in red)",
                    type="numpy", format="png",
                    brush=gr.Brush(colors=[("#ff2828", 0.6)], color_mode="fixed", default_size=12),
                    eraser=gr.Eraser(default_size=16),
                    layers=gr.LayerOptions(allow_additional_layers=False, layers=["defect"]),
                    sources=(), transforms=(), elem_id="mask-editor", height=460))
                with gr.Row():
                    self.add("strokes_add", gr.Button("Add strokes to mask", size="sm", elem_id="strokes-add"))
                    self.add("strokes_remove", gr.Button("Remove strokes from mask", size="sm",
                                                         elem_id="strokes-remove"))
                    self.add("mask_clear", gr.Button("Clear mask", size="sm", elem_id="mask-clear"))
                self.add("mask_status", gr.Markdown("Strokes not yet added are included when you save.",
                                                    elem_id="mask-status"))
                with gr.Row(equal_height=True):
                    self.add("defect_type", gr.Dropdown(label="Defect type (choose or type a new one)", choices=[],
                                                        allow_custom_value=True, elem_id="defect-type", scale=3))
                    self.add("save", gr.Button("Save shot", variant="primary", elem_id="save-shot", scale=1))
        with gr.Accordion("Paste an image from the clipboard", open=False):
            with gr.Row():
                self.add("paste", UploadedImage(label="Paste here (Ctrl+V)", sources=["clipboard"], type="filepath",
                                                image_mode=None, format="png", elem_id="paste-image", height=200))
                with gr.Column():
                    self.add("paste_role", gr.Radio(["normal", "anomalous", "query"], value="normal", label="Add as",
                                                    elem_id="paste-role"))
                    self.add("paste_add", gr.Button("Add pasted image", elem_id="paste-add"))

    def _inspect_tab(self):
        gr.Markdown(HELP_INSPECT.format(engine_doc=f"/gradio_api/file={DOCS / 'engine.md'}"), elem_id="inspect-help")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                self.add("query_image", UploadedImage(label="Query image (drop or paste)", type="filepath",
                                                      image_mode=None, format="png", sources=["upload", "clipboard"],
                                                      elem_id="query-upload", height=260))
                self.add("query_pick", gr.Dropdown(label="…or pick one of the project's queries", choices=[],
                                                   elem_id="query-pick"))
                with gr.Row():
                    self.add("score_btn", gr.Button("Score", variant="primary", elem_id="score-button", scale=3))
                    self.add("query_remove", gr.Button("Remove query", size="sm", elem_id="query-remove", scale=1))
                self.add("inspect_status", gr.Markdown("", elem_id="inspect-status"))
                self.add("opacity", gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="opacity"))
                self.add("threshold", gr.Slider(0, 1, value=0.5, step=0.001, elem_id="threshold",
                                                label="Threshold, aggregate score units (verdict and contour; 0 = off)"))
            with gr.Column(scale=2, min_width=360):
                self.add("aggregate_map", gr.Image(label="Aggregate map", type="numpy", format="png",
                                                   interactive=False, elem_id="aggregate-map", height=440))
                self.add("aggregate_score", gr.Textbox(label="Aggregate image score", interactive=False,
                                                       elem_id="aggregate-score"))
                self._optional("decisions", "build_inspect")  # verdict badge, Calibrate, threshold view
                from . import defects_panel  # defect-type prediction and training (issue 16)

                defects_panel.build(self)
            with gr.Column(scale=1, min_width=280):
                self.add("preset", gr.Dropdown(label="Weight preset", choices=events.preset_choices(self.ctx, None),
                                               value="paper", elem_id="preset"))
                with gr.Group():
                    initial = events.initial_weights()
                    for name in events.WEIGHT_NAMES:
                        self.add(f"weight:{name}", gr.Slider(0, 1, value=initial[name], step=0.01, label=name,
                                                             elem_id=f"weight-{name}", visible=False,
                                                             elem_classes=["weight-slider"]))
                with gr.Row(equal_height=True):
                    self.add("preset_name", gr.Textbox(placeholder="preset name", show_label=False,
                                                       elem_id="preset-name", scale=2))
                    self.add("preset_save", gr.Button("Save preset", size="sm", elem_id="preset-save", scale=1))
                with gr.Row():
                    self.add("tune_btn", gr.Button("Auto-tune weights", elem_id="tune-button"))
                    self.add("tune_undo", gr.Button("Undo tuning", elem_id="tune-undo"))
                self.add("tune_status", gr.Markdown("", elem_id="tune-status"))
                self.add("tune_chart", gr.BarPlot(x="component", y="AUROC", y_lim=[0, 1], x_label_angle=-45,
                                                  label="Validation AUROC per component", elem_id="tune-chart",
                                                  height=220, visible=False))
        self.add("heatmaps", gr.Gallery(label="Components (map · image score)", columns=5, height="auto",
                                        format="png", elem_id="heatmaps", allow_preview=True, interactive=False,
                                        object_fit="contain"))

    def _compare_tab(self):
        gr.Markdown("Any two components of any two scored queries, side by side, one opacity for both.")
        with gr.Row():
            for side in ("a", "b"):
                with gr.Column():
                    self.add(f"cmp_query_{side}", gr.Dropdown(label=f"Query {side.upper()}", choices=[],
                                                              elem_id=f"compare-query-{side}"))
                    self.add(f"cmp_comp_{side}", gr.Dropdown(label=f"Component {side.upper()}", choices=["aggregate"],
                                                             value="aggregate", elem_id=f"compare-component-{side}"))
                    self.add(f"cmp_{side}", gr.Image(label=side.upper(), type="numpy", format="png", interactive=False,
                                                     elem_id=f"compare-{side}", height=420))
        self.add("cmp_opacity", gr.Slider(0, 1, value=0.5, step=0.05, label="Opacity (both sides)",
                                          elem_id="compare-opacity"))
        self.add("cmp_caption", gr.Markdown("", elem_id="compare-caption"))

    def _personalize_tab(self):
        try:
            from . import personalize_tab
        except ImportError as exc:  # the personalization module has not landed / is not installed
            gr.Markdown(f"Personalization is not available in this installation ({exc}).")
            return
        personalize_tab.build(self)

    def _batch_tab(self):
        try:
            from . import batch_tab
        except ImportError as exc:
            gr.Markdown(f"Batch inspection is not available in this installation ({exc}).")
            return
        batch_tab.build(self)

    def _optional(self, module: str, fn: str) -> None:
        """Build a part that lives in its own module (ui/<module>.py: `fn(studio)`)."""
        import importlib

        try:
            mod = importlib.import_module(f"{__package__}.{module}")
        except ImportError as exc:
            gr.Markdown(f"Not available in this installation ({exc}).")
            return
        getattr(mod, fn)(self)

    def _models_tab(self):
        ctx = self.ctx
        from fsad_core.models import registry

        active = (f"Active profile: **{ctx.profile}**" +
                  (f" — **{registry.TINY_NOTE}**" if ctx.profile == "tiny" else ""))
        gr.Markdown(active + ". Get the real models with `make models` (or the button below), then restart "
                    "with `--profile standard`.", elem_id="models-profile")
        self.add("models_table", gr.Dataframe(value=events.models_table(ctx), headers=events.MODEL_COLUMNS,
                                              interactive=False, wrap=True, elem_id="models-table",
                                              column_widths=["7%", "14%", "14%", "8%", "6%", "8%", "7%", "18%", "18%"],
                                              max_height=900))
        with gr.Row(equal_height=True):
            self.add("model_pick", gr.Dropdown(label="Model", choices=events.downloadable_models(),
                                               elem_id="model-pick", scale=3))
            self.add("model_download", gr.Button("Download", elem_id="model-download", scale=1))
        self.add("models_status", gr.Markdown("", elem_id="models-status"))
        from . import adapters_panel  # APRIL-GAN adapters: train / status / checkpoints

        adapters_panel.build(self)

    # --- wiring ----------------------------------------------------------------------------------
    PROJECT_OUTS = ("pid", "last_pid", "project_list", "project_name", "class_name", "project_status",
                    "normal_gallery", "anomalous_gallery", "anom_pick", "defect_type", "query_pick", "preset",
                    "anom_id", "editor", "sam_view", "sam_proposals", "sam_prompts", "sam_status",
                    "heatmaps", "aggregate_map", "aggregate_score", "query_sha", "query_image", "inspect_status")

    def _wire_all(self, demo: gr.Blocks, compare_tab):
        C = self.C
        sliders = [f"weight:{n}" for n in events.WEIGHT_NAMES]
        project_outs = list(self.PROJECT_OUTS) + sliders

        restore_outs = ["query_pick", "query_image", "query_iid", "query_sha", "heatmaps", "aggregate_map",
                        "aggregate_score", "inspect_status", "preset"] + sliders
        opened = [
            self.wire(demo.load, events.on_load, ["last_pid"], project_outs + ["banner"]),
            self.wire([C["project_open"].click, C["project_name"].submit], events.open_project,
                      ["project_name", "class_name"], project_outs),
            self.wire(C["project_list"].input, events.select_project, ["project_list"], project_outs),
            self.wire(C["sample"].click, events.load_sample, [], project_outs, progress=True),
        ]
        self.opened_events = opened  # optional tabs chain their own refresh to these
        for dep in opened:  # a project (re)opened: its removed images, then its last inspection
            dep.then(*self._then(session.removed_view, ["pid"], ["removed_pick", "removed_status"])).then(
                *self._then(session.restore_inspect, ["pid", "opacity", "threshold"], restore_outs))
        self.wire(C["class_name"].submit, events.set_class_name, ["pid", "class_name"], ["project_status"])

        # shots
        self.wire(C["normal_upload"].upload, events.add_normals, ["pid", "normal_upload"],
                  ["normal_gallery", "project_status", "normal_upload"], progress=True)
        self.wire(C["normal_gallery"].select, events.normal_selected, ["pid"], ["normal_sel", "normal_validation"],
                  select=True)
        self.wire(C["normal_validation"].input, events.set_validation_only, ["pid", "normal_sel", "normal_validation"],
                  ["normal_gallery", "project_status"])
        removed_outs = ["normal_gallery", "anomalous_gallery", "anom_pick", "project_status", "query_pick",
                        "removed_pick", "removed_status"]
        self.wire(C["normal_remove"].click,
                  lambda ctx, pid, sel: session.remove(ctx, pid, events.gallery_image_id(ctx, pid, "normal", sel)),
                  ["pid", "normal_sel"], removed_outs)
        self.wire(C["image_restore"].click, session.restore, ["pid", "removed_pick"], removed_outs)
        anom_view = ["anom_id", "anom_pick", "editor", "sam_view", "sam_proposals", "sam_prompts", "sam_status",
                     "defect_type"]
        self.wire(C["anomalous_upload"].upload, events.add_anomalous, ["pid", "anomalous_upload"],
                  ["anomalous_upload", "anomalous_gallery", "project_status"] + anom_view)
        self.wire(C["anom_pick"].input, events.pick_anomalous, ["pid", "anom_pick"], anom_view)
        self.wire(C["anomalous_gallery"].select,
                  lambda ctx, pid, index: events.pick_anomalous(
                      ctx, pid, events.gallery_image_id(ctx, pid, "anomalous", index)),
                  ["pid"], anom_view, select=True)
        self.wire(C["anom_remove"].click,
                  lambda ctx, pid, iid: session.remove(ctx, pid, iid) | {"anom_id": None, "editor": None,
                                                                       "sam_view": None, "sam_proposals": []},
                  ["pid", "anom_id"], removed_outs + ["anom_id", "editor", "sam_view", "sam_proposals"])
        sam_outs = ["sam_view", "sam_proposals", "sam_prompts", "sam_status"]
        self.wire(C["sam_view"].select, events.sam_click, ["pid", "anom_id", "sam_prompts", "sam_mode"], sam_outs,
                  select=True, progress=True, concurrency_id="models")
        self.wire(C["sam_proposals"].select, events.sam_choose, ["anom_id", "sam_prompts"], sam_outs, select=True)
        for key, op in (("sam_replace", "replace"), ("sam_add", "add"), ("sam_subtract", "subtract")):
            self.wire(C[key].click, lambda ctx, iid, prompts, editor, _op=op: events.sam_apply(
                ctx, iid, prompts, editor, _op), ["anom_id", "sam_prompts", "editor"],
                ["editor", "sam_status", "mask_status"], show_progress="hidden")
        for key, op in (("strokes_add", "add"), ("strokes_remove", "remove"), ("mask_clear", "clear")):
            self.wire(C[key].click, lambda ctx, iid, editor, _op=op: events.commit_strokes(ctx, iid, editor, _op),
                      ["anom_id", "editor"], ["editor", "mask_status", "sam_view"], show_progress="hidden")
        self.wire(C["sam_clear"].click, events.sam_reset, ["anom_id", "sam_prompts"], sam_outs)
        self.wire(C["save"].click, events.save_shot, ["pid", "anom_id", "editor", "defect_type"],
                  ["editor", "mask_status", "anomalous_gallery", "anom_pick", "defect_type", "sam_view",
                   "project_status"], show_progress="hidden")
        self.wire(C["paste_add"].click, events.add_pasted, ["pid", "paste", "paste_role"],
                  ["paste", "normal_gallery", "project_status", "anomalous_gallery", "query_pick", "query_iid"]
                  + anom_view)

        # inspect
        self.wire(C["query_image"].upload, events.add_query, ["pid", "query_image"],
                  ["query_pick", "query_iid", "query_image", "inspect_status"])
        self.wire(C["query_image"].clear, lambda ctx: {"query_iid": None}, [], ["query_iid"])
        self.wire(C["query_remove"].click,
                  lambda ctx, pid, iid: session.remove(ctx, pid, iid) | {"query_iid": None, "query_image": None},
                  ["pid", "query_iid"], removed_outs + ["query_iid", "query_image"])
        self.wire(C["query_pick"].input, events.pick_query, ["pid", "query_pick"], ["query_image", "query_iid"])
        score_outs = ["heatmaps", "aggregate_map", "aggregate_score", "inspect_status", "query_sha", "preset"] + sliders
        scored = self.wire(C["score_btn"].click, events.score,
                           ["pid", "query_image", "query_iid", WEIGHTS, "opacity", "threshold", "preset"], score_outs,
                           progress=True, concurrency_id="models")
        self.scored_event = scored  # extra wiring chains on it (ui/defects_panel.py)
        agg_ins = ["pid", "query_sha", WEIGHTS, "opacity", "threshold", "preset"]
        self.wire([C[s].input for s in sliders],  # a slider moved by hand: no preset gives these weights
                  session.slider_moved, agg_ins, ["aggregate_map", "aggregate_score", "preset", "inspect_status"],
                  fast=True)
        self.wire(C["threshold"].input, events.reaggregate, agg_ins, ["aggregate_map", "aggregate_score"], fast=True)
        self.wire(C["opacity"].input, events.rerender, agg_ins, ["heatmaps", "aggregate_map", "aggregate_score"],
                  fast=True)
        self.wire(C["preset"].input, events.apply_preset, ["pid", "query_sha", "preset", "opacity", "threshold"],
                  sliders + ["aggregate_map", "aggregate_score", "inspect_status"], fast=True)
        self.wire(C["preset_save"].click, events.save_preset, ["pid", "preset_name", WEIGHTS, "query_sha"],
                  ["preset", "preset_name"])
        self.wire(C["tune_btn"].click, events.tune, ["pid", "query_sha", WEIGHTS, "opacity", "threshold", "preset"],
                  sliders + ["aggregate_map", "aggregate_score", "tune_chart", "undo_weights", "undo_preset",
                             "tune_status", "preset"], progress=True, concurrency_id="models")
        self.wire(C["tune_undo"].click, events.undo_tune,
                  ["pid", "query_sha", "undo_weights", "opacity", "threshold", "undo_preset"],
                  sliders + ["aggregate_map", "aggregate_score", "undo_weights", "tune_status", "preset"])

        # compare
        cmp_sel = ["cmp_query_a", "cmp_query_b", "cmp_comp_a", "cmp_comp_b"]
        cmp_ins = ["pid", "cmp_query_a", "cmp_comp_a", "cmp_query_b", "cmp_comp_b", WEIGHTS, "cmp_opacity"]
        cmp_outs = ["cmp_a", "cmp_b", "cmp_caption"]
        self.wire(compare_tab.select, events.compare_choices, ["pid"], cmp_sel).then(
            *self._then(events.compare, cmp_ins, cmp_outs))
        scored.then(*self._then(events.compare_choices, ["pid"], cmp_sel))
        self.wire([C[n].input for n in cmp_sel], events.compare, cmp_ins, cmp_outs)
        self.wire(C["cmp_opacity"].input, events.compare, cmp_ins, cmp_outs, fast=True)

        # models
        self.wire(C["model_download"].click, events.download_model, ["model_pick"], ["models_table", "models_status"],
                  progress=True, concurrency_id="models")
        for hook in getattr(self, "extra_wiring", []):
            hook(self)

    def _then(self, handler, ins, outs):
        """(fn, inputs, outputs) for a `.then(...)` chain, with the same packing as `wire`."""
        ctx = self.ctx

        def call(*args):
            try:
                res = handler(ctx, *_unpack(args, ins))
            except gr.Error as exc:
                user_error(getattr(handler, "__name__", "handler"), exc)
                res = {}
            return _pack(res, outs)

        return call, self.comps(ins), self.comps(outs)


def build_studio(ctx: StudioContext) -> gr.Blocks:
    """The studio's gr.Blocks for a context (launch it with `launch_kwargs()`)."""
    return Studio(ctx).build()


MAX_UPLOAD_MB = 200.0  # a 64 MP image (fsad_core.images.MAX_PIXELS) as PNG or JPEG is well under this
# Gradio's temp folder (uploads, and every PNG served: each slider move writes one): every 15 min,
# delete what is older than 2 h (a page left open longer re-fetches nothing it already shows)
DELETE_CACHE = (900, 7200)


def launch_kwargs(max_upload_mb: float = MAX_UPLOAD_MB) -> dict:
    """Arguments for `demo.launch`: the look (Gradio 6 moved css/theme to launch) and the server's
    limits (`max_file_size`: larger uploads are refused by the server before a handler runs)."""
    from . import decisions, review_tab

    return {"css": CSS + decisions.CSS, "theme": gr.themes.Soft(),
            "head": review_tab.SHORTCUTS_JS + UNSAVED_STROKES_JS, "max_file_size": int(max_upload_mb * 1_000_000)}


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

