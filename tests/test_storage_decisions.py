"""Decisions in the store: thresholds per weight set, verdicts, review labels that survive a
restart, labelled-folder import (OK/ + NG/<type>/ and good/ + <type>/), decisions in the export."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from storage import Store, StoreError
from storage.__main__ import main as cli
from storage.decisions import weights_key
from storage.folders import export_project, import_folder


def rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_thresholds_per_weight_set_with_history(tmp_path):
    store = Store(tmp_path / "d")
    pid = store.create_project("p")
    assert store.get_threshold(pid, None) is None
    cal = {"mode": "conformal", "threshold": 0.61, "margin": 0.02, "n": 29, "alpha": 0.1, "confidence": 0.95,
           "text": "at most 10 % false alarms"}
    store.save_threshold(pid, None, cal)
    store.save_threshold(pid, {"text": 1.0}, {**cal, "mode": "manual", "threshold": 0.3})
    store.save_threshold(pid, None, {**cal, "threshold": 0.65})
    assert store.get_threshold(pid)["threshold"] == 0.65  # the latest is in force
    assert store.get_threshold(pid)["calibration"]["text"] == "at most 10 % false alarms"
    assert store.get_threshold(pid, {"text": 3.0})["mode"] == "manual"  # scaling weights alike: same key
    assert store.get_threshold(pid, {"zero_shot": 1.0}) is None
    assert store.get_threshold(pid, {"zero_shot": 1.0}, any_weights=True)["threshold"] == 0.65
    assert len(store.list_thresholds(pid)) == 3
    with pytest.raises(StoreError):
        store.save_threshold(pid, None, {"threshold": 1})
    with pytest.raises(ValueError):
        store.save_threshold(pid, None, {**cal, "threshold": float("nan")})
    assert weights_key({"a": 1, "b": 0}) == '{"a":1.0}'


def test_a_correction_persists_across_a_restart(tmp_path):
    """The review queue's promise: a reviewer's correction is in the database after the server restarts."""
    store = Store(tmp_path / "d")
    pid = store.create_project("p")
    iid = store.add_image(pid, rgb(1), role="query", filename="q.png")
    store.save_verdict(iid, 0.42, "OK", threshold=0.5)
    store.save_label(iid, "OK", reviewer="ana", score=0.42, verdict="OK", threshold=0.5)
    store.save_label(iid, "NG", reviewer="ben", defect_type="scratch", score=0.42, verdict="OK", threshold=0.5)
    store.close()

    again = Store(tmp_path / "d")  # a new process: nothing cached
    lab = again.get_label(iid)
    assert (lab["label"], lab["reviewer"], lab["defect_type"], lab["verdict"]) == ("NG", "ben", "scratch", "OK")
    assert [r["label"] for r in again.label_history(iid)] == ["OK", "NG"]
    assert again.get_image(iid)["defect_type"] == "scratch"
    assert [r["id"] for r in again.labelled_images(pid, "NG")] == [iid]
    d = again.decisions(pid)
    assert d == [{"image_id": iid, "path": None, "filename": "q.png", "role": "query", "score": 0.42, "verdict": "OK",
                  "threshold": 0.5, "label": "NG", "reviewer": "ben", "defect_type": "scratch",
                  "labelled_at": lab["created_at"]}]
    with pytest.raises(StoreError, match="OK or NG"):
        again.save_label(iid, "maybe")
    with pytest.raises(StoreError):
        again.save_verdict(iid, 0.1, "fine")
    again.close()


def _labelled_tree(root, ok="OK", ng="NG"):
    for i in range(3):
        (root / ok).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb(i)).save(root / ok / f"ok{i}.png")
    for t, k in (("scratch", 10), ("dent", 11)):
        d = root / ng / t if ng else root / t
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb(k)).save(d / f"{t}.png")


@pytest.mark.parametrize("layout", ["OK/NG", "good/types"])
def test_import_labelled_folder_as_labelled_queries(tmp_path, layout):
    root = tmp_path / "line3"
    if layout == "OK/NG":
        _labelled_tree(root)
    else:
        _labelled_tree(root, ok="good", ng=None)
    store = Store(tmp_path / "d")
    s = import_folder(store, root, "line 3")
    assert (s.normal, s.anomalous, s.query) == (0, 0, 5) and s.labels == {"OK": 3, "NG": 2}
    assert set(s.defect_types) == {"scratch", "dent"}
    ng = store.labelled_images(s.project_id, "NG")
    assert sorted(r["defect_type"] for r in ng) == ["dent", "scratch"] and all(r["reviewer"] == "import" for r in ng)
    assert len(store.labelled_images(s.project_id, "OK")) == 3


def test_export_writes_decisions_and_labelled_layout_and_round_trips(tmp_path):
    store = Store(tmp_path / "d")
    pid = store.create_project("p", class_name="widget")
    store.add_image(pid, rgb(0), role="normal", filename="n.png")
    q_ok = store.add_image(pid, rgb(1), role="query", filename="ok.png")
    q_ng = store.add_image(pid, rgb(2), role="query", filename="bad.png")
    store.add_image(pid, rgb(3), role="query", filename="unreviewed.png")
    store.save_verdict(q_ok, 0.2, "OK", threshold=0.5)
    store.save_verdict(q_ng, 0.45, "uncertain", threshold=0.5)
    store.save_label(q_ok, "OK", reviewer="ana")
    store.save_label(q_ng, "NG", reviewer="ana", defect_type="crack")
    s = export_project(store, pid, tmp_path / "out")
    assert s.decisions == 2
    out = tmp_path / "out"
    with open(out / "decisions.csv") as f:
        rows = {r["filename"]: r for r in csv.DictReader(f)}
    assert rows["bad.png"]["label"] == "NG" and rows["bad.png"]["verdict"] == "uncertain"
    assert rows["bad.png"]["path"].startswith("test/crack/") and rows["ok.png"]["path"].startswith("test/good/")
    assert rows["bad.png"]["score"] == "0.45" and rows["bad.png"]["defect_type"] == "crack"
    js = json.loads((out / "decisions.json").read_text())
    assert len(js["decisions"]) == 2 and js["decisions"][0]["reviewer"] == "ana"
    back = import_folder(store, out, "copy")
    assert back.query == 3 and back.labels == {"OK": 1, "NG": 1}
    ng = store.labelled_images(back.project_id, "NG")
    assert len(ng) == 1 and ng[0]["role"] == "query" and ng[0]["defect_type"] == "crack"


def test_cli_imports_a_labelled_folder(tmp_path, capsys):
    root = tmp_path / "ds"
    _labelled_tree(root)
    assert cli(["import", "--data-dir", str(tmp_path / "d"), "--folder", str(root), "--project", "x"]) == 0
    assert "review labels: 2 NG, 3 OK" in capsys.readouterr().out
    (tmp_path / "empty" / "stuff").mkdir(parents=True)
    assert cli(["import", "--data-dir", str(tmp_path / "d"), "--folder", str(tmp_path / "empty"), "--project", "y"]) == 2
    assert "OK/" in capsys.readouterr().err
