"""The weight sliders and the presets behind them, shared by Inspect, Personalize, Batch, Review
and the session restore: which sliders exist, the names the preset picker lists, the weights a
preset name stands for, and the `WeightSet` the sliders stand for (the CLI resolves the same
preset names through the same `fsad_core.aggregate.preset`).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import gradio as gr

from fsad_core.aggregate import PRESET_NAMES, STABLE_NAMES, WeightSet
from fsad_core.aggregate import preset as preset_set

from .context import StudioContext

#: Every component a weight slider exists for (Gradio layouts are static: sliders are created for
#: all stable names and shown when the current result has that component).
WEIGHT_NAMES: tuple[str, ...] = STABLE_NAMES
#: The sliders' component names in the studio's table (`Studio.C`), in WEIGHT_NAMES order.
SLIDERS: tuple[str, ...] = tuple(f"weight:{n}" for n in WEIGHT_NAMES)
#: Marker in a wiring input list: all weight sliders, passed to the handler as one dict.
WEIGHTS = "@weights"
#: The store's weights entries that are user presets: "preset:<name>", listed as "saved: <name>".
USER_PRESET_PREFIX = "preset:"
BUILTIN_PRESETS = PRESET_NAMES  # fsad_core.aggregate's presets: one list for studio, CLI and eval


def ordered_names(components: Mapping) -> list[str]:
    """Component names in slider order, then any the sliders do not know."""
    known = [n for n in WEIGHT_NAMES if n in components]
    return known + [n for n in components if n not in known]


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


def load_weights(ctx: StudioContext, pid: int, name: str) -> dict | None:
    """A weights entry of the project ("tuned", "preset:<name>", …), or None."""
    try:
        w = ctx.store.load_weights(pid, name)
    except (KeyError, ValueError):
        return None
    return dict(w) if w else None


def preset_choices(ctx: StudioContext, pid: int | None, names: Iterable[str] = ()) -> list[str]:
    """The preset picker's entries: built-ins, "only X" per component, saved presets, tuned, custom."""
    out = list(BUILTIN_PRESETS)
    out += [f"only {n}" for n in ordered_names(dict.fromkeys(names))]
    if pid is not None:
        out += [f"saved: {n}" for n in user_presets(ctx, pid)]
        if ctx.tuned.get(pid) is not None or load_weights(ctx, pid, "tuned") is not None:
            out.append("tuned")
    return out + ["custom"]  # the label once a slider is moved by hand


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
        w = w if w is not None else load_weights(ctx, int(pid), "tuned")
        if w is None:
            raise gr.Error("No tuned weights yet: press Auto-tune first.")
        return {n: float(w.get(n, 0.0)) for n in names}
    if preset.startswith("saved: ") and pid is not None:
        w = load_weights(ctx, int(pid), USER_PRESET_PREFIX + preset[len("saved: "):])
        if w is None:
            raise gr.Error(f"The preset {preset!r} is not in this project any more.")
        return {n: float(w.get(n, 0.0)) for n in names}
    raise gr.Error(f"Unknown preset {preset!r}.")


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


def effective_weights(weights: Mapping[str, float] | None, names: Iterable[str]) -> dict[str, float] | None:
    """The slider weights restricted to a result's components (None stays None: the default weights)."""
    if weights is None:
        return None
    names = list(names)
    return {n: float(weights.get(n, 0.0)) for n in names}
