"""Inspect's decision widgets: the OK / NG / uncertain badge next to the aggregate score,
the *Calibrate* button, and the threshold view (histogram of OK vs NG scores with the threshold
line, and the false-alarm and miss rates it implies on the labelled images).

The threshold slider (`threshold`) is in aggregate-score units: the badge compares the aggregate
score with it, and the aggregate map's contour is drawn at the same value (`render.aggregate_panel`
with score_units=True). Calibration is `fsad_core.calibration` (one implementation); thresholds
and labels live in the store (`storage/decisions.py`). Layout and wiring are added to the studio
through `build_inspect(studio)`; handlers are plain functions, tested without a browser.
"""
from __future__ import annotations

import html
import math
from typing import Mapping

import gradio as gr
import numpy as np

from fsad_core.progress import Progress, silent

from .common import friendly, need_project
from .context import StudioContext
from .result_view import reaggregate
from .weights import WEIGHT_NAMES, WEIGHTS, initial_weights, studio_weight_set

COLOURS = {"OK": ("#0a7a2f", "#e3f6e8"), "NG": ("#b00020", "#fde7ea"), "uncertain": ("#8a5a00", "#fff4ce")}
NO_VERDICT = '<div class="verdict-badge none" data-verdict="">—</div>'



def _key(weights):
    from storage.decisions import weights_key

    try:
        return weights_key(weights)
    except ValueError:
        return None


def badge_html(score: float | None, threshold: float | None, margin: float = 0.0, note: str = "") -> str:
    """The verdict badge: OK / NG / uncertain for `score` at `threshold`, as an HTML snippet whose
    `data-verdict` attribute tests can read.

    >>> 'data-verdict="NG"' in badge_html(0.8, 0.5)
    True
    """
    from fsad_core.calibration import verdict

    if score is None or threshold is None or not math.isfinite(float(score)) or float(threshold) <= 0:
        return NO_VERDICT
    v = verdict(score, threshold, margin)
    fg, bg = COLOURS[v]
    rel = "≥" if float(score) >= float(threshold) else "<"
    title = f"score {float(score):.4f} {rel} threshold {float(threshold):.4f}" + (f" (± {margin:.3g})" if margin else "")
    extra = f'<div class="verdict-note">{html.escape(note)}</div>' if note else ""
    return (f'<div class="verdict-badge" data-verdict="{v}" title="{html.escape(title)}" '
            f'style="color:{fg};background:{bg};border:2px solid {fg}">{v}</div>'
            f'<div class="verdict-detail">{html.escape(title)}</div>{extra}')


def _score_from_text(text) -> float | None:
    try:
        return float(str(text).strip())
    except (TypeError, ValueError):
        return None


def slider_weight_set(weights: Mapping[str, float] | None, preset: str | None = None):
    """The WeightSet the sliders stand for (`weights.studio_weight_set`: a preset's own set, with its
    score rule, while the sliders show it; the paper preset when every slider is 0), so the studio
    and the CLI key thresholds alike."""
    w = {k: float(v) for k, v in (weights or {}).items()}
    if not any(v > 0 for v in w.values()):
        w = initial_weights()
    return studio_weight_set(preset, w, WEIGHT_NAMES)


def labelled_scores(ctx: StudioContext, pid: int, weights,
                    progress: Progress = silent) -> dict:
    """{"ok": [scores], "ng": [scores], "ids": {"ok": [...], "ng": [...]}}: aggregate scores of the
    project's query images that carry a review label (encodings come from the store's cache)."""
    pe = ctx.project_engine(pid, progress)
    rows = ctx.store.labelled_images(pid, role="query")  # shots are in the memory: never calibration images
    out = {"ok": [], "ng": [], "ids": {"ok": [], "ng": []}}
    for i, r in enumerate(rows):
        progress(i / max(1, len(rows)), f"Scoring labelled image {i + 1}/{len(rows)}")
        img = ctx.store.read_image(r["id"])
        with pe.lock:
            result = pe.engine.score(img)
        try:
            s = float(result.aggregate(weights).score)
        except ValueError:
            continue
        k = "ok" if r["label"] == "OK" else "ng"
        out[k].append(s)
        out["ids"][k].append(int(r["id"]))
    return out


def histogram(ok, ng, threshold: float | None, width: int = 420, height: int = 220) -> np.ndarray:
    """uint8 (H, W, 3): histograms of OK (green) and NG (red) scores and the threshold line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
    vals = [float(x) for x in list(ok) + list(ng)]
    if threshold is not None:
        vals.append(float(threshold))
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.05, hi + 0.05
    bins = np.linspace(lo, hi, 25)
    if len(ok):
        ax.hist(ok, bins=bins, color="#2e9e4f", alpha=0.6, label=f"OK ({len(ok)})")
    if len(ng):
        ax.hist(ng, bins=bins, color="#d0283c", alpha=0.6, label=f"NG ({len(ng)})")
    if threshold is not None:
        ax.axvline(float(threshold), color="black", lw=1.5, ls="--", label=f"threshold {float(threshold):.3f}")
    ax.set_xlabel("aggregate score")
    ax.set_ylabel("images")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return arr


def rates_text(ok, ng, threshold: float | None) -> str:
    from fsad_core.calibration import confusion, far_upper_bound

    if threshold is None or (not len(ok) and not len(ng)):
        return "No labelled images yet: mark queries OK / NG in the Review tab (or import an OK/ + NG/ folder)."
    c = confusion(ok, ng, float(threshold))
    parts = []
    if len(ok):
        parts.append(f"false alarms **{c['fp']}/{len(ok)}** OK ({100 * c['false_alarm_rate']:.1f} %; at most "
                     f"{100 * far_upper_bound(len(ok), c['fp']):.1f} % at 95 % confidence)")
    if len(ng):
        parts.append(f"misses **{c['fn']}/{len(ng)}** NG ({100 * c['miss_rate']:.1f} %)")
    return "At this threshold: " + "; ".join(parts) + "."


@friendly
def calibrate(ctx: StudioContext, pid, weights, alpha, preset=None, progress: Progress = silent) -> dict:
    """Calibrate on what the project has (labelled OK / NG queries, else the shots) and save it."""
    from fsad_core.calibration import calibrate_engine

    pid = need_project(pid)
    w = slider_weight_set(weights, preset)
    scores = labelled_scores(ctx, pid, w, progress)
    pe = ctx.project_engine(pid, progress)
    a = float(alpha) / 100 if alpha and float(alpha) >= 1 else float(alpha or 0.1)
    with pe.lock:
        images = {sid: ctx.store.read_image(iid) for iid, sid in pe.shot_of_image.items()}
        cal = calibrate_engine(pe.engine, weights=w, alpha=a, ok_scores=scores["ok"], ng_scores=scores["ng"],
                               shot_images=images)
    ctx.store.save_threshold(pid, w, cal.to_dict())
    decision = {"threshold": cal.threshold, "margin": cal.margin, "mode": cal.mode, "key": _key(w)}
    return {"threshold": gr.update(value=round(cal.threshold, 4)), "decision": decision,
            "decision_scores": {"ok": scores["ok"], "ng": scores["ng"]},
            "calibration_text": f"**{cal.mode}** · {cal.text}",
            "threshold_view": histogram(scores["ok"], scores["ng"], cal.threshold),
            "threshold_rates": rates_text(scores["ok"], scores["ng"], cal.threshold)}


def load_decision(ctx: StudioContext, pid, weights, preset=None) -> dict:
    """On opening a project: the threshold in force (the one for these weights, else the latest)."""
    if pid is None:
        return {"decision": None, "calibration_text": "", "verdict": NO_VERDICT}
    rec = ctx.store.get_threshold(int(pid), slider_weight_set(weights, preset), any_weights=True)
    if rec is None:
        return {"decision": None, "verdict": NO_VERDICT,
                "calibration_text": "Not calibrated yet: press **Calibrate** (or type a threshold and save it)."}
    cal = rec["calibration"]
    return {"threshold": gr.update(value=round(float(rec["threshold"]), 4)),
            "decision": {"threshold": rec["threshold"], "margin": rec["margin"], "mode": rec["mode"],
                         "key": rec["weights_key"]},
            "calibration_text": f"**{rec['mode']}** · {cal.get('text', '')}"}


def update_badge(ctx: StudioContext, pid, score_text, threshold, decision, weights, preset=None) -> dict:
    """The badge for the aggregate score shown, at the threshold on the slider (instant)."""
    score = _score_from_text(score_text)
    margin = float((decision or {}).get("margin") or 0.0)
    note = ""
    if decision and decision.get("key") and decision.get("key") != _key(slider_weight_set(weights, preset)):
        note = "threshold calibrated for other weights: press Calibrate"
    if decision and threshold is not None and abs(float(threshold) - float(decision.get("threshold", 0))) > 5e-5:
        note = "threshold typed (not saved)" if not note else note
    return {"verdict": badge_html(score, threshold, margin, note)}


def threshold_view(ctx: StudioContext, pid, threshold, scores) -> dict:
    scores = scores or {"ok": [], "ng": []}
    return {"threshold_view": histogram(scores["ok"], scores["ng"], threshold),
            "threshold_rates": rates_text(scores["ok"], scores["ng"], threshold)}


@friendly
def save_typed(ctx: StudioContext, pid, weights, threshold, decision, scores, preset=None) -> dict:
    """Save the slider's (typed or dragged) threshold for these weights, with its rates."""
    from fsad_core.calibration import manual

    pid = need_project(pid)
    if threshold is None or float(threshold) <= 0:
        raise gr.Error("Type a threshold above 0 first.")
    scores = scores or {"ok": [], "ng": []}
    margin = float((decision or {}).get("margin") or 0.0)
    cal = manual(float(threshold), margin, scores["ok"], scores["ng"])
    w = slider_weight_set(weights, preset)
    ctx.store.save_threshold(pid, w, cal.to_dict())
    return {"decision": {"threshold": cal.threshold, "margin": margin, "mode": "manual", "key": _key(w)},
            "calibration_text": f"**manual** · {cal.text}"}


CSS = """
.verdict-badge { display:inline-block; font-size:1.6em; font-weight:700; padding:4px 18px; border-radius:8px; }
.verdict-badge.none { color:#888; border:2px dashed #bbb; }
.verdict-detail, .verdict-note { font-size:0.8em; color:#555; }
.verdict-note { color:#8a5a00; }
"""


def build_inspect(studio) -> None:
    """The badge, Calibrate and the threshold view, placed under the aggregate score."""
    add = studio.add
    add("decision", gr.State(None))  # {threshold, margin, mode, key}: the saved threshold in force
    add("decision_scores", gr.State(None))  # {"ok": [...], "ng": [...]} for the threshold view
    add("verdict", gr.HTML(NO_VERDICT, elem_id="verdict"))
    with gr.Row(equal_height=True):
        add("calibrate_alpha", gr.Dropdown([("10 % false alarms", 0.1), ("5 %", 0.05), ("1 %", 0.01)], value=0.1,
                                           label="Calibrate for at most", elem_id="calibrate-alpha", scale=2))
        add("calibrate", gr.Button("Calibrate", elem_id="calibrate", scale=1))
        add("threshold_save", gr.Button("Save typed threshold", size="sm", elem_id="threshold-save", scale=1))
    add("calibration_text", gr.Markdown("", elem_id="calibration-text"))
    with gr.Accordion("Threshold view (OK vs NG scores)", open=False):
        add("threshold_view", gr.Image(type="numpy", format="png", interactive=False, elem_id="threshold-view",
                                       show_label=False, height=230))
        add("threshold_rates", gr.Markdown("", elem_id="threshold-rates"))

    def wiring(s) -> None:
        C = s.C
        badge_ins = ["pid", "aggregate_score", "threshold", "decision", WEIGHTS, "preset"]
        s.wire([C["aggregate_score"].change, C["threshold"].input, C["decision"].change], update_badge, badge_ins,
               ["verdict"], fast=True)
        s.wire(C["threshold"].input, threshold_view, ["pid", "threshold", "decision_scores"],
               ["threshold_view", "threshold_rates"], fast=True)
        s.wire(C["pid"].change, load_decision, ["pid", WEIGHTS, "preset"],
               ["threshold", "decision", "calibration_text", "verdict"])
        s.wire(C["calibrate"].click, calibrate, ["pid", WEIGHTS, "calibrate_alpha", "preset"],
               ["threshold", "decision", "decision_scores", "calibration_text", "threshold_view", "threshold_rates"],
               progress=True, concurrency_id="models")
        s.wire(C["decision"].change, reaggregate, ["pid", "query_sha", WEIGHTS, "opacity", "threshold", "preset"],
               ["aggregate_map", "aggregate_score"], fast=True)  # the contour follows a calibrated threshold
        s.wire(C["threshold_save"].click, save_typed, ["pid", WEIGHTS, "threshold", "decision", "decision_scores",
                                                       "preset"],
               ["decision", "calibration_text"])

    studio.extra_wiring.append(wiring)
