"""A project's named weight presets ({component: weight}) and its log of batch / tuning /
inspection runs (parameters and results as strict JSON).

A mixin of `Store` (it uses the store's write transactions and row helpers), as
`storage.decisions` is.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .values import NotFoundError, StoreError, check_name, dumps, int_id, now


class RecordsMixin:
    """Store methods for weight presets and runs (see the module docstring)."""

    # -- weights --------------------------------------------------------------------------------
    def save_weights(self, pid: int, name: str, weights: Mapping[str, float]) -> None:
        """Save (or overwrite) the named preset {component: weight} of a project."""
        name = check_name(name, "preset name")
        if not isinstance(weights, Mapping) or not weights:
            raise StoreError("Weights must be a non-empty mapping {component name: number}.")
        clean = {}
        for k, v in weights.items():
            check_name(k, "component name")
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise StoreError(f"The weight of {k!r} must be a number, got {type(v).__name__}.")
            if not math.isfinite(float(v)):
                raise StoreError(f"The weight of {k!r} is {v}; weights must be finite numbers.")
            clean[k] = float(v)
        text = json.dumps(clean, ensure_ascii=False)
        ts = now()
        with self._write() as db:
            self._project_row(pid)
            if self._one("SELECT 1 AS x FROM weights WHERE project_id = ? AND name = ?", [int(pid), name]):
                db.execute("UPDATE weights SET weights = ?, updated_at = ? WHERE project_id = ? AND name = ?",
                           [text, ts, int(pid), name])
            else:
                db["weights"].insert({"project_id": int(pid), "name": name, "weights": text,
                                      "created_at": ts, "updated_at": ts})

    def load_weights(self, pid: int, name: str) -> dict[str, float]:
        """The named preset; NotFoundError (a KeyError and ValueError) if there is none."""
        row = self._one("SELECT weights FROM weights WHERE project_id = ? AND name = ?",
                        [int_id(pid, "project id"), name])
        if row is None:
            have = [w["name"] for w in self.list_weights(pid)]
            raise NotFoundError(f"Project {pid} has no weight preset {name!r}"
                                + (f"; saved presets: {', '.join(map(repr, have))}." if have else "; none is saved yet."))
        return json.loads(row["weights"])

    def list_weights(self, pid: int) -> list[dict]:
        """[{name, weights, created_at, updated_at}] in order of creation (NotFoundError for an
        unknown project id; a soft-deleted project's are still listed)."""
        self._project_row(pid, active=False)
        rows = self._all("SELECT name, weights, created_at, updated_at FROM weights WHERE project_id = ? "
                         "ORDER BY created_at, name", [int_id(pid, "project id")])
        for r in rows:
            r["weights"] = json.loads(r["weights"])
        return rows

    def delete_weights(self, pid: int, name: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM weights WHERE project_id = ? AND name = ?", [int_id(pid, "project id"), name])

    # -- runs -----------------------------------------------------------------------------------
    def save_run(self, pid: int, kind: str, params: Mapping, results: Any) -> int:
        """Log a batch / tuning / inspection run; params and results are stored as JSON
        (numpy values converted, NaN/inf stored as null). Returns the run id."""
        kind = check_name(kind, "run kind")
        p, r = dumps(params, "run parameters"), dumps(results, "run results")
        with self._write() as db:
            self._project_row(pid)
            return int(db["runs"].insert({"project_id": int(pid), "kind": kind, "params": p, "results": r,
                                          "created_at": now()}).last_pk)

    def list_runs(self, pid: int, kind: str | None = None) -> list[dict]:
        """[{id, kind, params, results, created_at}] oldest first (NotFoundError for an unknown
        project id; a soft-deleted project's runs are still listed)."""
        self._project_row(pid, active=False)
        sql, params = "SELECT id, project_id, kind, params, results, created_at FROM runs WHERE project_id = ?", [
            int_id(pid, "project id")]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._all(sql + " ORDER BY id", params)
        for r in rows:
            r["params"], r["results"] = json.loads(r["params"]), json.loads(r["results"])
        return rows

    def get_run(self, run_id: int) -> dict:
        row = self._one("SELECT * FROM runs WHERE id = ?", [int_id(run_id, "run id")])
        if row is None:
            raise NotFoundError(f"There is no run {run_id}.")
        row["params"], row["results"] = json.loads(row["params"]), json.loads(row["results"])
        return row
