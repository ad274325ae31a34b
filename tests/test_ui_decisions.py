"""Studio decisions without a browser: the badge follows the threshold, the contour is in score
units, Calibrate saves a threshold, the review queue saves labels that survive a restart, and a
corrected miss / confirmed OK become shots."""
from __future__ import annotations

import numpy as np
import pytest
from test_ui_events import project_with_shots, texture

from ui import decisions, render, review_tab
from ui.context import StudioContext
from ui.weights import initial_weights

storage = pytest.importorskip("storage")


def test_badge_and_contour_follow_the_threshold_in_score_units():
    assert 'data-verdict="NG"' in decisions.badge_html(0.6, 0.5)
    assert 'data-verdict="OK"' in decisions.badge_html(0.4, 0.5)
    assert 'data-verdict="uncertain"' in decisions.badge_html(0.49, 0.5, margin=0.02)
    assert decisions.badge_html(None, 0.5) == decisions.NO_VERDICT
    img = np.full((64, 64, 3), 128, np.uint8)
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    a = render.aggregate_panel(img, ramp, 0.0, 0.25, score_units=True)
    b = render.aggregate_panel(img, ramp, 0.0, 0.75, score_units=True)
    c = render.aggregate_panel(img, ramp * 0.5, 0.0, 0.75, score_units=True)  # nothing reaches 0.75
    assert not np.array_equal(a, b)
    base = render.aggregate_panel(img, ramp * 0.5, 0.0, 0.0, score_units=True)
    assert np.array_equal(c, base)  # same value, same meaning: no pixel of this map is at or above it


def test_calibrate_review_queue_and_restart(ctx, tmp_path):
    pid, _ = project_with_shots(ctx, tmp_path)
    for i, defect in enumerate([False, False, True, False]):
        ctx.store.add_image(pid, texture(defect, seed=20 + i), role="query", filename=f"q{i}.png")
    w = initial_weights()
    # nothing labelled: the shots-only heuristic, saved for these weights
    out = decisions.calibrate(ctx, pid, w, 0.1)
    assert out["decision"]["mode"] == "heuristic" and "heuristic" in out["calibration_text"].lower()
    thr = out["decision"]["threshold"]
    assert ctx.store.get_threshold(pid, decisions.slider_weight_set(w))["mode"] == "heuristic"
    loaded = decisions.load_decision(ctx, pid, w)
    assert loaded["decision"]["threshold"] == pytest.approx(thr)
    # the badge moves with the threshold
    assert 'data-verdict="NG"' in decisions.update_badge(ctx, pid, f"{thr + 1:.4f}", thr, out["decision"], w)["verdict"]
    assert 'data-verdict="OK"' in decisions.update_badge(ctx, pid, f"{thr - 1:.4f}", thr, out["decision"], w)["verdict"]
    other = {**w, "text": 1.0}
    assert "other weights" in decisions.update_badge(ctx, pid, "0.5", thr, out["decision"], other)["verdict"]

    q = review_tab.load_queue(ctx, pid, w, thr, out["decision"])
    items = q["review_items"]
    assert len(items) == 4 and len(q["review_queue"]) == 4
    doubt = [abs(it["score"] - thr) for it in items]
    assert doubt == sorted(doubt)  # most doubtful first
    assert ctx.store.get_verdict(items[0]["iid"])["verdict"] in ("OK", "NG", "uncertain")
    first = items[0]
    label = "OK" if first["verdict"] == "NG" else "NG"  # a correction
    r = review_tab.decide(ctx, pid, items, 0, label, "ana", "stain")
    assert "correction" in r["review_status"] and r["review_items"][0]["label"] == label
    assert r["review_sel"] == 1
    r2 = review_tab.decide(ctx, pid, r["review_items"], 1, "OK", "ana", None)
    assert r2["review_items"][1]["label"] == "OK"
    # the threshold view shows both groups once labelled
    sc = decisions.labelled_scores(ctx, pid, w)
    assert len(sc["ok"]) + len(sc["ng"]) == 2
    tv = decisions.threshold_view(ctx, pid, thr, sc)
    assert tv["threshold_view"].ndim == 3 and "At this threshold" in tv["threshold_rates"]
    saved = decisions.save_typed(ctx, pid, w, thr * 1.1, out["decision"], sc)
    assert saved["decision"]["mode"] == "manual"

    # "after a server restart": a new store and context on the same folder
    ctx.store.close()
    store2 = storage.Store(tmp_path / "data")
    ctx2 = StudioContext(store2, profile="tiny", backbone=ctx._backbone)
    lab = store2.get_label(first["iid"])
    assert (lab["label"], lab["reviewer"]) == (label, "ana")
    assert store2.get_threshold(pid, decisions.slider_weight_set(w))["mode"] == "manual"
    again = review_tab.load_queue(ctx2, pid, w, thr, out["decision"])
    assert sum(it["label"] is not None for it in again["review_items"]) == 2
    assert again["review_items"][0]["label"] is None  # reviewed ones go to the back
    # a confirmed OK becomes a normal shot; a missed defect opens as an anomalous image in Shots
    items2 = again["review_items"]
    n_normal = len(store2.list_images(pid, role="normal"))
    review_tab.to_normal(ctx2, pid, items2, 0, "ben")
    assert len(store2.list_images(pid, role="normal")) == n_normal + 1
    shot = review_tab.to_shot(ctx2, pid, items2, 1, "ben", "crack")
    assert shot["anom_id"] == items2[1]["iid"] and store2.get_image(items2[1]["iid"])["role"] == "anomalous"
    assert store2.get_label(items2[1]["iid"])["label"] == "NG"
    # images that became shots are no calibration images (their scores are not held out)
    shots = {items2[0]["iid"], items2[1]["iid"]}
    assert not shots & {r["id"] for r in store2.labelled_images(pid, role="query")}
    assert shots <= {r["id"] for r in store2.labelled_images(pid)}
    store2.close()


def test_studio_has_the_decision_element_ids(ctx):
    from ui.studio import build_studio

    demo = build_studio(ctx)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"verdict", "calibrate", "threshold-view", "threshold-rates", "review-queue", "review-ok", "review-ng",
            "reviewer", "review-load", "review-to-shot", "review-to-normal", "review-to-calibration"} <= ids
