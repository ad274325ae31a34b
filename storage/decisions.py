"""Decisions kept with a project: the threshold per weight set (with how it was obtained), the
tool's latest verdict per image, and reviewers' OK / NG labels (every correction a new row).

A mixin of `Store` (it uses the store's write transactions and row helpers), kept in its own
module so that the store's core stays about projects, images and masks. Tables: migration
`m005_decisions_thresholds_review_labels`. The threshold's calibration record is the JSON of
`fsad_core.calibration.Calibration.to_dict()`; storage stores it and never imports torch.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from typing import Any

from .values import MAX_NAME_CHARS, StoreError, check_name, dumps, now

LABELS = ("OK", "NG")
VERDICTS = ("OK", "NG", "uncertain")
DECISION_COLUMNS = ("image_id", "path", "filename", "role", "score", "verdict", "threshold", "label", "reviewer",
                    "defect_type", "labelled_at")


def weights_key(weights) -> str:
    """The key a threshold is stored under: 'default' for None; for a mapping (or a weight set with
    the plain eq.-2 rule, `fsad_core.aggregate.WeightSet`) the canonical JSON of the positive weights
    normalised to sum 1 (rounded to 6 digits), so scaling all sliders alike finds the same threshold;
    a weight set with another score rule or its own map weights adds them to the key.

    >>> weights_key(None), weights_key({"text": 2, "normal@16": 2, "zero_shot": 0})
    ('default', '{"normal@16":0.5,"text":0.5}')
    """
    if weights is None:
        return "default"
    rule, map_weights = "mean_of_scores", None
    if hasattr(weights, "weights") and hasattr(weights, "rule"):  # a WeightSet (storage does not import it)
        rule, map_weights, weights = weights.rule, weights.map_weights, weights.weights
    key = _normalised(weights)
    if rule == "mean_of_scores" and map_weights is None:
        return key
    return json.dumps({"rule": rule, "weights": json.loads(key),
                       "map_weights": None if map_weights is None else json.loads(_normalised(map_weights))},
                      separators=(",", ":"), sort_keys=True)


def _normalised(weights: Mapping[str, float]) -> str:
    w = {str(k): float(v) for k, v in weights.items() if float(v) > 0 and math.isfinite(float(v))}
    total = sum(w.values())
    if not w or total <= 0:
        raise ValueError("weights with no positive value have no threshold")
    return json.dumps({k: round(v / total, 6) for k, v in sorted(w.items())}, separators=(",", ":"))


def _finite(x, what: str) -> float | None:
    if x is None:
        return None
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"the {what} must be a finite number, got {x}")
    return v


class DecisionsMixin:
    """Store methods for thresholds, verdicts and review labels (see the module docstring)."""

    # -- thresholds -----------------------------------------------------------------------------
    def save_threshold(self, pid: int, weights, calibration: Mapping[str, Any]) -> int:
        """Record a threshold for project `pid` and these weights; `calibration` is a
        `Calibration.to_dict()` (mode, threshold, margin, text, ...). Returns the row id; the latest
        row per (project, weights) is the one in force, earlier ones stay as history."""
        if not isinstance(calibration, Mapping) or "threshold" not in calibration or "mode" not in calibration:
            raise StoreError("A threshold record needs at least 'mode' and 'threshold' (Calibration.to_dict()).")
        thr = _finite(calibration["threshold"], "threshold")
        margin = _finite(calibration.get("margin") or 0.0, "margin")
        key = weights_key(weights)
        with self._write() as db:
            self._project_row(pid)
            return int(db["thresholds"].insert({
                "project_id": int(pid), "weights_key": key, "threshold": thr, "margin": max(0.0, margin),
                "mode": str(calibration["mode"]), "calibration": dumps(calibration, "calibration"),
                "created_at": now()}).last_pk)

    def get_threshold(self, pid: int, weights=None, *,
                      any_weights: bool = False) -> dict | None:
        """The threshold in force for these weights ({id, weights_key, threshold, margin, mode,
        calibration (dict), created_at}) or None; `any_weights=True` falls back to the project's
        latest threshold for any weights (the caller should say so)."""
        key = weights_key(weights)
        row = self._one("SELECT * FROM thresholds WHERE project_id = ? AND weights_key = ? ORDER BY id DESC LIMIT 1",
                        [int(pid), key])
        if row is None and any_weights:
            row = self._one("SELECT * FROM thresholds WHERE project_id = ? ORDER BY id DESC LIMIT 1", [int(pid)])
        if row is None:
            return None
        row["calibration"] = json.loads(row["calibration"])
        return row

    def list_thresholds(self, pid: int) -> list[dict]:
        """Every threshold recorded for the project, oldest first."""
        rows = self._all("SELECT * FROM thresholds WHERE project_id = ? ORDER BY id", [int(pid)])
        for r in rows:
            r["calibration"] = json.loads(r["calibration"])
        return rows

    # -- verdicts -------------------------------------------------------------------------------
    def save_verdict(self, iid: int, score: float, verdict: str, threshold: float | None = None,
                     weights=None) -> None:
        """The tool's latest verdict on an image (replaces the previous one)."""
        if verdict not in VERDICTS:
            raise StoreError(f"A verdict is one of {', '.join(VERDICTS)}, got {verdict!r}.")
        s = _finite(score, "score")
        t = _finite(threshold, "threshold")
        with self._write() as db:
            row = self._image_row(iid, active=True)
            db.execute("INSERT OR REPLACE INTO verdicts (image_id, score, verdict, threshold, weights_key, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", [row["id"], s, verdict, t,
                                                     None if weights is None and t is None else weights_key(weights),
                                                     now()])

    def get_verdict(self, iid: int) -> dict | None:
        return self._one("SELECT * FROM verdicts WHERE image_id = ?", [int(iid)])

    # -- review labels --------------------------------------------------------------------------
    def save_label(self, iid: int, label: str, *, reviewer: str | None = None, defect_type: str | None = None,
                   score: float | None = None, verdict: str | None = None, threshold: float | None = None,
                   use: str | None = None) -> int:
        """A reviewer's OK / NG decision on an image (a correction is simply a newer label). For NG
        with a defect type, the image's defect type is set too. `use="calibration"` marks an OK image
        as held out for calibration. Returns the label's row id."""
        if label not in LABELS:
            raise StoreError(f"A review label is OK or NG, got {label!r}.")
        if reviewer is not None:
            reviewer = reviewer.strip() or None
            if reviewer is not None:
                check_name(reviewer, "reviewer name", max_chars=MAX_NAME_CHARS)
        if defect_type is not None:
            defect_type = defect_type.strip() or None
            if defect_type is not None:
                check_name(defect_type, "defect type")
        if label == "OK":
            defect_type = None
        if use not in (None, "calibration"):
            raise StoreError(f"use is None or 'calibration', got {use!r}.")
        if verdict is not None and verdict not in VERDICTS:
            raise StoreError(f"A verdict is one of {', '.join(VERDICTS)}, got {verdict!r}.")
        with self._write() as db:
            row = self._image_row(iid, active=True)
            if defect_type is not None:
                dt = self._defect_type_id(row["project_id"], defect_type, create=True)
                db["images"].update(row["id"], {"defect_type_id": dt})
            return int(db["review_labels"].insert({
                "image_id": row["id"], "label": label, "reviewer": reviewer, "defect_type": defect_type,
                "score": _finite(score, "score"), "verdict": verdict, "threshold": _finite(threshold, "threshold"),
                "use": use, "created_at": now()}).last_pk)

    def get_label(self, iid: int) -> dict | None:
        """The label in force (the latest), or None."""
        return self._one("SELECT * FROM review_labels WHERE image_id = ? ORDER BY id DESC LIMIT 1", [int(iid)])

    def label_history(self, iid: int) -> list[dict]:
        return self._all("SELECT * FROM review_labels WHERE image_id = ? ORDER BY id", [int(iid)])

    def labelled_images(self, pid: int, label: str | None = None, *, role: str | None = None) -> list[dict]:
        """Active images of the project with a label in force: image fields plus label, reviewer,
        defect_type (the label's), use, labelled_at. Oldest image first. role="query" leaves out
        images that became shots: a shot is in the memory, so its score is no held-out score."""
        sql = """SELECT i.id, i.role, i.filename, i.sha256, r.label, r.reviewer, r.defect_type, r.use,
                        r.created_at AS labelled_at
                 FROM images i JOIN review_labels r ON r.id = (
                     SELECT id FROM review_labels WHERE image_id = i.id ORDER BY id DESC LIMIT 1)
                 WHERE i.project_id = ? AND i.removed_at IS NULL"""
        params: list = [int(pid)]
        if label is not None:
            sql += " AND r.label = ?"
            params.append(label)
        if role is not None:
            sql += " AND i.role = ?"
            params.append(role)
        return self._all(sql + " ORDER BY i.id", params)

    # -- decisions export -----------------------------------------------------------------------
    def decisions(self, pid: int) -> list[dict]:
        """One row per active image with a verdict or a label: `DECISION_COLUMNS` (path is filled
        in by the export; the others come from the database)."""
        self._project_row(pid, active=False)
        rows = self._all(
            """SELECT i.id AS image_id, i.filename, i.role, v.score, v.verdict, v.threshold,
                      r.label, r.reviewer, r.defect_type, r.created_at AS labelled_at,
                      r.score AS label_score, r.verdict AS label_verdict, r.threshold AS label_threshold
               FROM images i
               LEFT JOIN verdicts v ON v.image_id = i.id
               LEFT JOIN review_labels r ON r.id = (
                   SELECT id FROM review_labels WHERE image_id = i.id ORDER BY id DESC LIMIT 1)
               WHERE i.project_id = ? AND i.removed_at IS NULL AND (v.image_id IS NOT NULL OR r.id IS NOT NULL)
               ORDER BY i.id""", [int(pid)])
        out = []
        for r in rows:
            for k in ("score", "verdict", "threshold"):  # a label carries what the reviewer saw
                lk = r.pop(f"label_{k}")
                if r[k] is None:
                    r[k] = lk
            out.append({c: r.get(c) for c in DECISION_COLUMNS})
        return out


def decisions_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=list(DECISION_COLUMNS), lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: "" if r.get(k) is None else r[k] for k in DECISION_COLUMNS})
    return buf.getvalue()
