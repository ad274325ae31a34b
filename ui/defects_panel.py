"""Defect types in the studio: the predicted type next to the aggregate score (Inspect),
the "Train type classifier" action with progress and cancel, and the Batch report's type column.

Hooks: `build(studio)` is called inside the Inspect tab's layout; it registers its wiring through
`studio.extra_wiring` and chains the prediction on the Score event (`studio.scored_event`).
Weights are stored with the project: `<store project dir>/defect-types/classifier.pt`.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from fsad_core.progress import Progress, silent

from .context import StudioContext

CLASSIFIERS = ("contrastive", "relation", "prototype")



def model_path(ctx: StudioContext, pid: int) -> Path:
    return Path(ctx.store.project_dir(pid)) / "defect-types" / "classifier.pt"


def _cancel_set(ctx: StudioContext) -> set:
    if not hasattr(ctx, "defect_cancel"):
        ctx.defect_cancel = set()
    return ctx.defect_cancel


def _model(ctx: StudioContext, pid: int):
    """The project's current type model: in memory, else loaded from the project's file; None if
    there is none for the present shots."""
    from fsad_core.defects.api import current_model, load_type_model

    engine = ctx.engine(pid)
    model = current_model(engine)
    if model is None:
        try:
            model = load_type_model(engine, model_path(ctx, pid))
        except ValueError:  # an unreadable file: train again
            model = None
    return model


def train(ctx: StudioContext, pid, kind: str, progress: Progress = silent) -> dict:
    """Train the project's type classifier (pretraining cached per backbone) and store it with the project."""
    from fsad_core.defects.api import save_type_model, train_type_classifier
    from fsad_core.defects.pretrain import Cancelled

    if pid is None:
        return {"defect_status": "Open a project first."}
    cancel = _cancel_set(ctx)
    cancel.discard(pid)
    pe = ctx.project_engine(pid)

    try:
        with pe.lock:
            model = train_type_classifier(pe.engine, kind or "contrastive", progress=progress,
                                          cancel=lambda: pid in cancel)
        save_type_model(model, model_path(ctx, pid))
    except Cancelled:
        return {"defect_status": "Training cancelled; nothing was changed."}
    except (ValueError, OSError) as exc:
        return {"defect_status": f"Cannot train the type classifier: {exc}"}
    finally:
        cancel.discard(pid)
    per = ", ".join(f"{t}: {int((model.support_y == i).sum())}" for i, t in enumerate(model.types))
    return {"defect_status": f"Type classifier ({model.kind}) trained on {per} shots and saved with the project."}


def cancel_training(ctx: StudioContext, pid) -> dict:
    if pid is not None:
        _cancel_set(ctx).add(pid)
    return {"defect_status": "Cancelling…"}


def predict(ctx: StudioContext, pid, query_sha) -> dict:
    """{type: probability} of the scored query's anomalous region (the aggregate map above half its range)."""
    if pid is None or query_sha is None:
        return {"defect_pred": None}
    img = ctx.queries.get(query_sha)
    if img is None:
        return {"defect_pred": None}
    try:
        model = _model(ctx, pid)
        if model is None:
            return {"defect_pred": None, "defect_status": "Train the type classifier (painted shots of at least "
                                                         "2 defect types) to see the predicted defect type."}
        pe = ctx.project_engine(pid)
        with pe.lock:
            pred = pe.engine.classify_defect(img)
    except (ValueError, OSError) as exc:
        return {"defect_pred": None, "defect_status": f"No defect type: {exc}"}
    return {"defect_pred": dict(pred.probabilities), "defect_status": ""}


def predicted_type(ctx: StudioContext, pid, img) -> str:
    """The predicted type of an image for the Batch report, '' without a trained classifier."""
    try:
        pe = ctx.project_engine(pid)
        with pe.lock:
            if _model(ctx, pid) is None:
                return ""
            return pe.engine.classify_defect(img).type
    except (ValueError, OSError):
        return ""


def build(studio) -> None:
    add = studio.add
    with gr.Group():
        add("defect_pred", gr.Label(label="Predicted defect type", num_top_classes=5, elem_id="defect-prediction"))
        with gr.Row(equal_height=True):
            add("defect_kind", gr.Dropdown(choices=list(CLASSIFIERS), value="contrastive", label="Classifier",
                                           elem_id="defect-classifier", scale=2))
            add("defect_train", gr.Button("Train type classifier", elem_id="defect-train", scale=2))
            add("defect_cancel", gr.Button("Cancel", size="sm", elem_id="defect-train-cancel", scale=1))
        add("defect_status", gr.Markdown("", elem_id="defect-status"))

    def wiring(s) -> None:
        C = s.C
        s.wire(C["defect_train"].click, train, ["pid", "defect_kind"], ["defect_status"], progress=True,
               concurrency_id="models")
        s.wire(C["defect_cancel"].click, cancel_training, ["pid"], ["defect_status"], queue=False)
        scored = getattr(s, "scored_event", None)
        if scored is not None:
            scored.then(*s.chained(predict, ["pid", "query_sha"], ["defect_pred", "defect_status"]))

    studio.extra_wiring.append(wiring)


__all__ = ["build", "train", "cancel_training", "predict", "predicted_type", "model_path"]
