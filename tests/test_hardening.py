"""Hardening: hostile file names, a damaged database, the web server's limits, outputs that never
clobber, one rule for links, malformed manifests. Each test fails on the code before the change."""
from __future__ import annotations

import base64
import csv
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsad_core import names, synth
from fsad_core.images import ImageError, to_rgb_array
from fsad_core.inspect_batch import check_output_folder, overlay_name, read_results, read_shot_folder, run_batch

BAD = b"bad\xff\xfe.png"  # not UTF-8
CTRL = "ctl\x1b[31mred\x07.png"  # ESC sequence and BEL: valid UTF-8, unsafe on a terminal


def _img(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def _save(folder: Path, name: str | bytes, seed: int = 0) -> Path:
    """An image under a name given as text or raw bytes (the way a file system holds it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else os.fsencode(name))
    Image.fromarray(_img(seed)).save(path, format="PNG")
    return Path(os.fsdecode(path))


def _bomb_png(path: Path, w: int = 13000, h: int = 13000) -> Path:
    """A 200-byte PNG whose header claims w x h pixels (169 MP): only a full decode would notice."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# --- names ---------------------------------------------------------------------------------------
def test_display_form_is_safe_and_b64_is_lossless():
    for raw in (BAD, os.fsencode(CTRL), "crème\u202eexe.png".encode(), b"plain.png"):
        name = os.fsdecode(raw)
        shown = names.display(name)
        shown.encode("utf-8")  # always writable as UTF-8
        assert not any(ord(c) < 32 or c in "\x7f\u202e" for c in shown)
        rec = names.record(name)
        assert names.from_record(rec["path"], rec.get("path_b64")).encode("utf-8", "surrogateescape") == raw
    assert names.display(os.fsdecode(BAD)) == "bad\\xff\\xfe.png" and names.raw_b64("plain.png") is None


def test_image_errors_name_the_whole_path(tmp_path):
    bad = tmp_path / "test" / "crack" / "000.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"garbage")
    with pytest.raises(ImageError, match="test/crack/000.png"):
        to_rgb_array(bad)


# --- inspect: hostile names, overlays, non-clobbering outputs ------------------------------------
@pytest.fixture(scope="module")
def project():
    return synth.sample_project(seed=0, size=96)


def _engine(tiny_engine, project):
    tiny_engine.set_class_name(project.class_name)
    images = {}
    for n in project.normals[:1]:
        images[tiny_engine.add_shot(n, kind="normal")] = n
    return tiny_engine, images


def test_inspect_scores_hostile_names_and_writes_its_report(tiny_engine, project, tmp_path):
    engine, images = _engine(tiny_engine, project)
    src = tmp_path / "in"
    _save(src, BAD, 1)
    _save(src, CTRL, 2)
    _save(src / "a", "b.png", 3)
    _save(src, "a__b.png", 4)  # the old overlay name of a/b.png
    (src / os.fsdecode(b"broken\xff.png")).write_bytes(b"not an image")
    out = tmp_path / "out"
    s = run_batch(engine, src, out, threshold=0.5, images=images)
    assert (s.n_images, s.n_scored, s.n_failed) == (5, 4, 1)
    with open(out / "scores.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    exact = {names.from_record(r["path"], r["path_b64"]) for r in rows}
    assert exact == {os.fsdecode(BAD), CTRL, "a/b.png", "a__b.png", os.fsdecode(b"broken\xff.png")}
    raw = (out / "scores.csv").read_bytes() + (out / "report.html").read_bytes() + (out / "results.jsonl").read_bytes()
    raw.decode("utf-8")  # valid UTF-8 throughout
    assert b"\x1b" not in raw and b"\x07" not in raw and b"bad\\\\xff\\\\xfe.png" in (out / "results.jsonl").read_bytes()
    assert "bad\\xff\\xfe.png" in (out / "report.html").read_text(encoding="utf-8")
    overlays = {r["overlay"] for r in read_results(out) if "overlay" in r}
    assert len(overlays) == 4 and overlay_name("a/b.png") != overlay_name("a__b.png")
    assert all((out / o).is_file() for o in overlays)
    # resume: every exact name is recognised (nothing rescored), the unreadable one is retried
    s = run_batch(engine, src, out, threshold=0.5, images=images)
    assert (s.n_resumed, s.n_scored, s.n_failed) == (4, 0, 1)


def test_inspect_output_folder_rules(tmp_path):
    src = tmp_path / "in"
    _save(src, "q.png")
    assert check_output_folder(src, tmp_path / "new") == "new"
    assert check_output_folder(src, src / "results") == "new"  # inside the input: skipped as input
    with pytest.raises(ValueError, match="contains the input folder"):
        check_output_folder(src, tmp_path)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("years of work")
    with pytest.raises(ValueError, match="not empty and holds no earlier inspect run.*thesis.docx.*--force"):
        check_output_folder(src, foreign)
    with pytest.raises(ValueError, match="not empty"):
        check_output_folder(src, foreign, restart=True)  # --restart alone does not clobber a foreign folder
    assert check_output_folder(src, foreign, force=True) == "replace"
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "results.jsonl").write_text("")
    (ours / "run.json").write_text('{"signature": {"model": "x"')  # torn by a crash mid-write
    with pytest.raises(ValueError, match="run.json is damaged or was not written by `inspect`.*--restart"):
        check_output_folder(src, ours)
    assert check_output_folder(src, ours, restart=True) == "replace"
    (ours / "run.json").write_text('["someone else\'s file"]')
    with pytest.raises(ValueError, match="no run signature"):
        check_output_folder(src, ours)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # The package is installed (pip install -e .): the commands work from any folder.
    return subprocess.run([sys.executable, *args], capture_output=True, cwd=cwd, timeout=120)


def test_inspect_cli_refuses_before_loading_a_model(tmp_path):
    src = tmp_path / "in"
    _save(src, "q.png")
    _save(src, "n.png", 1)
    out = tmp_path / os.fsdecode(b"out\x1b[2J\xff")
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    from fsad_core.__main__ import main

    r = _cli("-m", "fsad_core", "inspect", "--normal", str(src / "n.png"), "--input", str(src), "--out",
             os.fsdecode(os.fsencode(out)), "--profile", "tiny", "--threshold", "0.5")
    assert r.returncode == 2 and r.stderr.startswith(b"error: ") and b"Traceback" not in r.stderr
    assert b"--force" in r.stderr and b"\x1b" not in r.stderr and b"\\x1b[2J\\xff" in r.stderr
    assert (out / "keep.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert main(["inspect", "--normal", str(src / "n.png"), "--input", str(src), "--out", str(tmp_path),
                 "--profile", "tiny"]) == 2


# --- eval: a dataset with a name that is not UTF-8 -----------------------------------------------
def test_eval_writes_its_csv_with_a_hostile_test_name(tiny_engine, tmp_path):
    from fsad_core.evaluate import evaluate_category, write_run

    root = tmp_path / "ds"
    synth.make_dataset(root, categories=("brick",), n_train=2, n_test_good=2, n_test_defect=2, size=64, seed=0)
    good = next((root / "brick" / "test" / "good").glob("*.png"))
    bad_name = os.path.join(os.fsencode(good.parent), BAD)
    os.rename(good, bad_name)
    run = evaluate_category(root, "brick", tiny_engine, 1, 1, seed=0)
    out = write_run(run, tmp_path / "run")
    with open(out / "scores.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    hostile = [r for r in rows if r["path_b64"]]
    assert len(hostile) == 1 and hostile[0]["path"] == "brick/test/good/bad\\xff\\xfe.png"
    assert base64.b64decode(hostile[0]["path_b64"]).endswith(BAD)


def test_visa_split_with_a_missing_column_names_it(tmp_path):
    from fsad_core.evaluate import load_split

    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("object,split,image\ncandle,train,a.png\n")
    with pytest.raises(ValueError, match="no column label"):
        load_split(tmp_path, "candle")


def test_shots_manifest_errors_name_the_field(tmp_path):
    _save(tmp_path / "train" / "good", "000.png")
    (tmp_path / "fsad_project.json").write_text('{"class_name": "x", "folders": ["crack"]}')
    with pytest.raises(ValueError, match="field 'folders'"):
        read_shot_folder(tmp_path)
    (tmp_path / "fsad_project.json").write_text('{"class_name": ')
    with pytest.raises(ValueError, match="fsad_project.json is not readable JSON"):
        read_shot_folder(tmp_path)


def test_score_cli_prints_and_records_a_hostile_query_name(tmp_path, capsys):
    from fsad_core.__main__ import main

    q = _save(tmp_path, BAD, 1)
    n = _save(tmp_path, "n.png", 2)
    assert main(["score", "--normal", str(n), "--query", str(q), "--class-name", "x", "--profile", "tiny",
                 "--json", str(tmp_path / "o.json")]) == 0
    out = capsys.readouterr().out
    assert "bad\\xff\\xfe.png: aggregate" in out
    rec = json.loads((tmp_path / "o.json").read_text("utf-8"))["queries"][0]
    assert names.from_record(rec["query"], rec["query_b64"]) == str(q)
