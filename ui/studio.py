"""The studio's shell: gr.Blocks with the profile banner, the project bar and the tabs Shots /
Inspect / Compare / Personalize / Batch / Review / Models, each laid out and wired by its own module
(`TABS`: `ui/<tab>_tab.py` has the tab's layout and its handlers).

`Studio` keeps the name -> component table every tab adds to (`Studio.C`) and the wiring:
handlers return dicts keyed by those names; `Studio.wire` turns them into Gradio's positional
outputs (a name a handler leaves out stays unchanged) and adds the Progress / SelectData
parameters Gradio injects. Every component that shows a mask or a heatmap uses ``format="png"``
(Gradio's default WebP is lossy and would blur masks and heatmaps).
"""
import inspect
import logging
from typing import Callable, Sequence

import gradio as gr
import numpy as np

from fsad_core.progress import from_gradio

from . import (
    batch_tab,
    compare_tab,
    decisions,
    inspect_tab,
    models_tab,
    personalize_tab,
    project_bar,
    render,
    review_tab,
    shots_tab,
)
from .common import DOCS
from .context import StudioContext
from .weights import SLIDERS, WEIGHT_NAMES, WEIGHTS, weights_from_values

log = logging.getLogger("fsad.ui")

#: The tabs in the order the user sees them: (label, elem_id, the module whose `build(studio)` lays
#: the tab out and registers its wiring). A module that fails to import stops the studio.
TABS = (
    ("Shots", "shots-tab", shots_tab),
    ("Inspect", "inspect-tab", inspect_tab),
    ("Compare", "compare-tab", compare_tab),
    ("Personalize", "personalize-tab", personalize_tab),
    ("Batch", "batch-tab", batch_tab),
    ("Review", "review-tab", review_tab),
    ("Models", "models-tab", models_tab),
)

CSS = """
#profile-banner { background: #fff4ce; border: 1px solid #e0b400; border-radius: 6px; padding: 4px 12px; }
#profile-banner p { margin: 4px 0; color: #4a3b00; }
#aggregate-score textarea, #aggregate-score input { font-size: 1.6em; font-weight: 600; text-align: center; }
.weight-slider { min-width: 120px; }
#heatmaps .caption-label, #heatmaps .caption { font-family: ui-monospace, monospace; }
/* component name and score must stay readable: Gradio ellipsises captions at 80% of the tile */
#heatmaps .caption-label, #sam-proposals .caption-label { max-width: calc(100% - 8px); font-size: 11px; padding: 1px 5px; white-space: nowrap; }
"""


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


def _give_signature(call, n_in: int, *, select: bool = False, progress: bool = False, request: bool = False) -> None:
    """The signature Gradio reads to pass `n_in` input values and inject the extras: SelectData and
    Request by annotation, Progress by default value (in that order, after the inputs)."""
    P = inspect.Parameter
    params = [P(f"in{i}", P.POSITIONAL_OR_KEYWORD) for i in range(n_in)]
    annotations = {}
    if select:
        params.append(P("evt", P.POSITIONAL_OR_KEYWORD, annotation=gr.SelectData))
        annotations["evt"] = gr.SelectData
    if progress:
        params.append(P("progress", P.POSITIONAL_OR_KEYWORD, default=gr.Progress(track_tqdm=True)))
    if request:
        params.append(P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request))
        annotations["request"] = gr.Request
    call.__signature__ = inspect.Signature(params)
    call.__annotations__ = annotations


def _session(request) -> str | None:
    """The browser session a request comes from (None outside a browser, e.g. in tests)."""
    return getattr(request, "session_hash", None)


def _pack(res: dict | None, outs: Sequence[str]):
    res = res or {}
    vals = tuple(_to_browser(res[n]) if n in res else gr.skip() for n in outs)
    return vals[0] if len(vals) == 1 else vals


def _unpack(args: Sequence, ins: Sequence[str]) -> list:
    """Positional Gradio values -> handler arguments (the weight sliders become one dict)."""
    out, i = [], 0
    for name in ins:
        if name == WEIGHTS:
            n = len(WEIGHT_NAMES)
            out.append(weights_from_values(args[i:i + n]))
            i += n
        else:
            out.append(args[i])
            i += 1
    return out


class Studio:
    """Builds the Blocks and keeps the name -> component table used for wiring.

    What the tabs share while they are built: `C` (name -> component), `tabs` (label -> gr.Tab),
    `extra_wiring` (hooks `fn(studio)` each tab registers while laying itself out, run in that
    order once the whole layout exists), `opened_events` (the events that open a project: tabs
    chain their own refresh on them) and `scored_event` (Inspect's Score).
    """

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx
        self.C: dict[str, gr.components.Component] = {}
        self.tabs: dict[str, gr.Tab] = {}
        self.extra_wiring: list[Callable] = []
        self.opened_events: list = []
        self.scored_event = None
        self.demo: gr.Blocks | None = None

    def add(self, name: str, comp):
        self.C[name] = comp
        return comp

    def comps(self, names: Sequence[str]) -> list:
        out = []
        for n in names:
            if n == WEIGHTS:
                out += [self.C[k] for k in SLIDERS]
            else:
                out.append(self.C[n])
        return out

    def wire(self, trigger, handler: Callable, ins: Sequence[str], outs: Sequence[str], *,
             progress: bool = False, select: bool = False, fast: bool = False, opening: bool = False, **kw):
        """Connect `trigger` (an event listener or a list of them) to `handler(ctx, *ins)`.

        progress: the handler gets `progress=` (a gr.Progress mirroring tqdm).
        select: the handler gets the click's `evt.index` as its last argument.
        fast: the slider fast path (no queue, no spinner, only the last of a burst of events).
        opening: the handler opens a project: the project it shows is recorded for the browser session
            (`context.SessionProjects`; steps chained with `follows_opening` check it).
        """
        ctx = self.ctx
        n_in = len(self.comps(ins))
        is_gen = inspect.isgeneratorfunction(handler)

        def prepare(args):
            args = list(args)
            if opening:
                args.pop()  # the gr.Request, read by `call`
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
                session = _session(args[-1]) if opening else None
                vals, kwargs = prepare(args)
                try:
                    res = handler(ctx, *vals, **kwargs)
                except gr.Error as exc:
                    user_error(name, exc)
                    res = {}
                if opening:
                    ctx.openings.show(session, (res or {}).get("pid"))
                return _pack(res, outs)

        if opening and is_gen:
            raise ValueError("opening=True needs a plain (non-generator) handler")
        _give_signature(call, n_in, select=select, progress=progress, request=opening)
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
            self.demo = demo
            self.add("pid", gr.State(None))
            self.add("last_pid", gr.BrowserState(None, storage_key="fsad-studio-last-project"))
            self.add("anom_id", gr.State(None))
            self.add("sam_prompts", gr.State(shots_tab.new_prompts()))
            self.add("query_sha", gr.State(None))
            self.add("query_iid", gr.State(None))
            self.add("undo_weights", gr.State(None))
            self.add("undo_preset", gr.State(None))
            self.add("normal_sel", gr.State(None))

            self.add("banner", gr.Markdown(ctx.banner or "", visible=bool(ctx.banner), elem_id="profile-banner"))
            with gr.Row(equal_height=True):
                gr.Markdown("## fsad-studio · few-shot visual anomaly inspection")
            project_bar.build(self)
            with gr.Tabs(elem_id="tabs"):
                for label, elem_id, module in TABS:
                    with gr.Tab(label, elem_id=elem_id) as tab:
                        self.tabs[label] = tab
                        module.build(self)
            for hook in self.extra_wiring:  # the whole layout exists: a tab may wire to another's components
                hook(self)
        return demo

    def chained(self, handler, ins, outs, *, follows_opening: bool = False):
        """(fn, inputs, outputs) for a `.then(...)` chain, with the same packing as `wire`.

        follows_opening: the step follows a project opening (its removed images, its last
        inspection); what it returns is dropped once the browser session shows another project
        than its `pid` input (`context.SessionProjects`)."""
        ctx = self.ctx
        n_in = len(self.comps(ins))

        def call(*args):
            session = _session(args[n_in]) if follows_opening else None
            vals = _unpack(args[:n_in], ins)
            try:
                res = handler(ctx, *vals)
            except gr.Error as exc:
                user_error(getattr(handler, "__name__", "handler"), exc)
                res = {}
            if follows_opening and not ctx.openings.is_current(session, vals[ins.index("pid")]):
                res = {}  # the session moved on to another project meanwhile
            return _pack(res, outs)

        _give_signature(call, n_in, request=follows_opening)
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
    return {"css": CSS + decisions.CSS, "theme": gr.themes.Soft(),
            "head": review_tab.SHORTCUTS_JS + shots_tab.UNSAVED_STROKES_JS,
            "max_file_size": int(max_upload_mb * 1_000_000)}
