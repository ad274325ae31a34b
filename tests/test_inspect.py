"""Batch inspection: outputs, verdicts, resume after a crash, and the CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from fsad_core import synth
from fsad_core.calibration import verdict
from fsad_core.inspect_batch import list_images, overlay_name, read_results, run_batch


@pytest.fixture(scope="module")
def project():
    return synth.sample_project(seed=0, size=96)


@pytest.fixture
def folder(tmp_path, project):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for i, q in enumerate(project.queries):
        Image.fromarray(q).save(d / ("sub" if i % 2 else ".") / f"q{i}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def _engine(tiny_engine, project, anomalous=True):
    images = {}
    tiny_engine.set_class_name(project.class_name)
    for n in project.normals[:2]:
        images[tiny_engine.add_shot(n, kind="normal")] = n
    if anomalous:
        img, m, t = project.anomalous[0]
        images[tiny_engine.add_shot(img, kind="anomalous", mask=m, defect_type=t)] = img
    return tiny_engine, images


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_batch_outputs_and_verdicts(tiny_engine, project, folder, tmp_path):
    engine, images = _engine(tiny_engine, project)
    out = tmp_path / "out"
    s = run_batch(engine, folder, out, threshold="auto", images=images)
    assert (s.n_images, s.n_scored, s.n_resumed, s.n_failed) == (6, 6, 0, 0)
    assert s.threshold_source == "heuristic: validation F1-max" and np.isfinite(s.threshold)
    rows = _rows(out / "scores.csv")
    assert len(rows) == 6 and {r["path"] for r in rows} == {p.relative_to(folder).as_posix() for p in list_images(folder)}
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    margin = json.loads((out / "run.json").read_text())["margin"]
    assert all(r["verdict"] == verdict(float(r["score"]), s.threshold, margin) for r in rows)
    assert all(r["verdict"] in ("NG", "uncertain") for r in rows if float(r["score"]) >= s.threshold + margin)
    assert sum(float(r["score"]) >= s.threshold for r in rows) == s.n_anomalous
    assert "normal@16" in rows[0] and "zero_shot" in rows[0]
    assert len(list((out / "overlays").glob("*.png"))) == 6
    html = (out / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 12 and "http" not in html
    # a given threshold re-derives the verdicts from the stored scores without rescoring
    s2 = run_batch(engine, folder, out, threshold=-1e9)
    assert s2.n_scored == 0 and s2.n_resumed == 6 and s2.n_anomalous == 6


def test_batch_resumes_after_crash(tiny_engine, project, folder, tmp_path):
    engine, images = _engine(tiny_engine, project)
    out = tmp_path / "out"

    class Crash(Exception):
        pass

    def crash_after_two(fraction, message):
        if message.startswith("2/"):
            raise Crash

    with pytest.raises(Crash):
        run_batch(engine, folder, out, threshold=0.5, progress=crash_after_two, overlays=False)
    assert len(read_results(out)) == 2
    with open(out / "results.jsonl", "a") as f:
        f.write('{"path": "torn')  # a write cut by the crash
    calls = []
    s = run_batch(engine, folder, out, threshold=0.5, overlays=False, progress=lambda f, m: calls.append(m))
    assert (s.n_resumed, s.n_scored) == (2, 4) and len(calls) == 6
    rows = _rows(out / "scores.csv")
    assert len(rows) == 6 and len({r["path"] for r in rows}) == 6


def test_batch_refuses_mixed_settings_and_restarts(tiny_engine, project, folder, tmp_path):
    engine, images = _engine(tiny_engine, project)
    out = tmp_path / "out"
    run_batch(engine, folder, out, threshold=0.5, overlays=False, files=list_images(folder)[:1])
    with pytest.raises(ValueError, match="weights.*--restart"):
        run_batch(engine, folder, out, weights={"text": 1.0}, threshold=0.5, overlays=False)
    s = run_batch(engine, folder, out, weights={"text": 1.0}, threshold=0.5, overlays=False, restart=True)
    assert s.n_resumed == 0 and s.n_scored == 6


def test_unreadable_image_is_recorded_and_retried(tiny_engine, project, folder, tmp_path):
    engine, images = _engine(tiny_engine, project)
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    s = run_batch(engine, folder, out, threshold=0.5, overlays=False)
    assert s.n_failed == 1 and s.n_scored == 6
    err = [r for r in _rows(out / "scores.csv") if r["verdict"] == "error"]
    assert err[0]["path"] == "broken.png" and "not a readable image" in err[0]["error"]
    Image.fromarray(project.queries[0]).save(folder / "broken.png")  # fixed
    s = run_batch(engine, folder, out, threshold=0.5, overlays=False)
    assert (s.n_scored, s.n_failed, s.n_resumed) == (1, 0, 6)
    assert not any(r["verdict"] == "error" for r in _rows(out / "scores.csv"))


def test_auto_threshold_with_normal_shots_only(tiny_engine, project, folder, tmp_path):
    engine, images = _engine(tiny_engine, project, anomalous=False)
    s = run_batch(engine, folder, tmp_path / "o", images=images, overlays=False,
                  files=list_images(folder)[:2])
    assert s.threshold_source == "heuristic: normal copies max"
    meta = json.loads((tmp_path / "o" / "run.json").read_text())
    assert meta["threshold"] == s.threshold


def test_inspect_cli_with_shot_files_and_resume(project, folder, tmp_path, capsys):
    from fsad_core.__main__ import main

    paths = {}
    for name, arr in (("n0", project.normals[0]), ("n1", project.normals[1]), ("a", project.anomalous[0][0]),
                      ("m", project.anomalous[0][1].astype(np.uint8) * 255)):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(arr).save(paths[name])
    args = ["inspect", "--normal", str(paths["n0"]), "--normal", str(paths["n1"]), "--anomalous", str(paths["a"]),
            "--mask", str(paths["m"]), "--class-name", "brick", "--input", str(folder), "--out", str(tmp_path / "o"),
            "--profile", "tiny", "--precision", "fp32", "--scales", "1,2"]
    assert main(args) == 0
    assert "6 scored, 0 already done" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 scored, 6 already done" in capsys.readouterr().out
    assert (tmp_path / "o" / "report.html").is_file()
    assert main(args[:1] + ["--input", str(folder), "--out", str(tmp_path / "x"), "--profile", "tiny"]) == 2
    assert "--project NAME" in capsys.readouterr().err


def test_inspect_cli_with_stored_project(project, folder, tmp_path, capsys):
    storage = pytest.importorskip("storage")
    from fsad_core.__main__ import main

    store = storage.Store(tmp_path / "data")
    pid = store.create_project("bricks", class_name="brick")
    for n in project.normals[:2]:
        store.add_image(pid, n, role="normal")
    img, m, t = project.anomalous[0]
    store.save_mask(store.add_image(pid, img, role="anomalous"), m, defect_type=t)
    store.add_image(pid, project.anomalous[1][0], role="anomalous")  # no mask yet: not a shot
    args = ["inspect", "--project", "bricks", "--data-dir", str(tmp_path / "data"), "--input", str(folder),
            "--out", str(tmp_path / "o"), "--profile", "tiny", "--precision", "fp32", "--scales", "1",
            "--threshold", "0.5", "--no-overlays"]
    assert main(args) == 0
    assert "6 scored" in capsys.readouterr().out
    meta = json.loads((tmp_path / "o" / "run.json").read_text())
    assert meta["signature"]["class_name"] == "brick" and len(meta["signature"]["shots"]) == 3
    assert main(args[:2] + ["nope"] + args[3:]) == 2
    assert "no project named 'nope'" in capsys.readouterr().err
    # --threshold auto: the project's review labels (an OK query), then its saved threshold for these weights
    ok = store.add_image(pid, project.normals[2], role="query")
    store.save_label(ok, "OK", reviewer="ana")
    auto = args[:-2] + ["auto", "--no-overlays", "--restart"]
    assert main(auto) == 0
    assert "conformal: 1 OK images" in capsys.readouterr().out
    paper = {"text": 1.0, "normal@16": 1.0, "anomalous@16": 1.0}  # the paper preset over these components
    store.save_threshold(pid, paper, {"mode": "manual", "threshold": 0.123, "margin": 0.0, "n": 0, "text": "typed"})
    assert main(auto) == 0
    assert "threshold 0.1230 (manual)" in capsys.readouterr().out


# -- output inside the input, anomalous-only shots, weights checked first ---------------------------
def test_outputs_inside_the_input_folder_are_not_inputs(tiny_engine, project, folder, tmp_path):
    engine, images = _engine(tiny_engine, project)
    out = folder / "results"
    s = run_batch(engine, folder, out, threshold=0.5, images=images)
    assert (s.n_images, s.n_scored) == (6, 6) and len(list((out / "overlays").glob("*.png"))) == 6
    s = run_batch(engine, folder, out, threshold=0.5, images=images)  # resume: overlays are not new inputs
    assert (s.n_images, s.n_scored, s.n_resumed) == (6, 0, 6)
    rows = _rows(out / "scores.csv")
    assert len(rows) == 6 and not any(r["path"].startswith("results/") for r in rows)
    expected = {overlay_name(p.relative_to(folder).as_posix()) for p in list_images(folder)}
    assert {p.name for p in (out / "overlays").iterdir()} == expected  # no overlays of overlays
    # an earlier run written elsewhere inside the input is skipped as well
    assert len(list_images(folder)) == 6
    assert len(list_images(folder, exclude=[folder / "sub"])) == 3
    with pytest.raises(ValueError, match="output folder is the input folder"):
        run_batch(engine, folder, folder, threshold=0.5)


def test_inspect_cli_out_inside_input_resumes_cleanly(project, folder, tmp_path, capsys):
    from fsad_core.__main__ import main

    n = tmp_path / "n.png"
    Image.fromarray(project.normals[0]).save(n)
    args = ["inspect", "--normal", str(n), "--input", str(folder), "--out", str(folder / "out"), "--profile", "tiny",
            "--precision", "fp32", "--scales", "1", "--threshold", "0.5"]
    assert main(args) == 0
    assert "6 images: 6 scored" in capsys.readouterr().out
    assert main(args) == 0
    assert "6 images: 0 scored, 6 already done" in capsys.readouterr().out


def test_auto_threshold_with_anomalous_shots_only_asks_for_a_threshold(tiny_engine, project, folder, tmp_path, capsys):
    img, m, t = project.anomalous[0]
    tiny_engine.add_shot(img, kind="anomalous", mask=m, defect_type=t)
    with pytest.raises(ValueError, match="give a threshold") as err:
        run_batch(tiny_engine, folder, tmp_path / "o", threshold="auto")
    assert "weight tuning" not in str(err.value)
    assert not (tmp_path / "o").exists()  # nothing written
    s = run_batch(tiny_engine, folder, tmp_path / "o", threshold=0.5, overlays=False)  # a given one works
    assert s.n_scored == 6
    # the CLI says so before loading anything
    from fsad_core.__main__ import main

    a, mp = tmp_path / "a.png", tmp_path / "m.png"
    Image.fromarray(img).save(a)
    Image.fromarray(m.astype(np.uint8) * 255).save(mp)
    assert main(["inspect", "--anomalous", str(a), "--mask", str(mp), "--input", str(folder), "--out",
                 str(tmp_path / "x"), "--profile", "tiny"]) == 2
    assert "--threshold T" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_inspect_weights_are_checked_before_the_run(tiny_engine, project, folder, tmp_path, capsys):
    from fsad_core.__main__ import main

    n = tmp_path / "n.png"
    Image.fromarray(project.normals[0]).save(n)
    base = ["inspect", "--normal", str(n), "--input", str(folder), "--out", str(tmp_path / "o"), "--profile", "tiny",
            "--precision", "fp32", "--scales", "1", "--threshold", "0.5"]
    for w, msg in (("normal@17=1", "unknown components normal@17"), ("text=0", "every weight is 0"),
                   ("one-to-normal", "personal, pool"), ("bogus", "bad weight")):
        assert main(base + ["--weights", w]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and msg in err, err
    assert not (tmp_path / "o").exists()
    # library: weights only on components these shots do not produce fail before any image is scored
    engine, _ = _engine(tiny_engine, project, anomalous=False)
    with pytest.raises(ValueError, match="no positive weight to any component"):
        run_batch(engine, folder, tmp_path / "lib", weights={"anomalous@16": 1.0}, threshold=0.5)
    assert not (tmp_path / "lib").exists()


# -- --shots DIR: an MVTec-AD-layout folder -------------------------------------------------------
def _mvtec_folder(root, project, manifest=True):
    from pathlib import Path

    root = Path(root)
    for i, n in enumerate(project.normals[:2]):
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(n).save(root / "train" / "good" / f"{i:03d}.png")
    img, m, _ = project.anomalous[0]
    (root / "test" / "scratch").mkdir(parents=True)
    (root / "ground_truth" / "scratch").mkdir(parents=True)
    Image.fromarray(img).save(root / "test" / "scratch" / "000.png")
    Image.fromarray(m.astype(np.uint8) * 255).save(root / "ground_truth" / "scratch" / "000_mask.png")
    (root / "test" / "good").mkdir()
    Image.fromarray(project.queries[0]).save(root / "test" / "good" / "000.png")  # not a shot
    if manifest:
        (root / "fsad_project.json").write_text(json.dumps({"class_name": "brick wall",
                                                            "folders": {"scratch": "Scratch (deep)"}}))
    return root


def test_read_shot_folder_layout_and_errors(project, tmp_path):
    from fsad_core.inspect_batch import read_shot_folder

    f = read_shot_folder(_mvtec_folder(tmp_path / "bricks", project))
    assert [p.name for p in f.normal] == ["000.png", "001.png"]
    assert [(a.name, m.name, t) for a, m, t in f.anomalous] == [("000.png", "000_mask.png", "Scratch (deep)")]
    assert f.class_name == "brick wall" and any("test/good" in x for x in f.ignored)
    plain = read_shot_folder(_mvtec_folder(tmp_path / "metal_nut", project, manifest=False))
    assert plain.class_name == "metal_nut" and plain.anomalous[0][2] == "scratch"
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(project.normals[0]).save(flat / "a.png")
    with pytest.raises(ValueError, match="not an MVTec-AD-layout shots folder.*train/good"):
        read_shot_folder(flat)
    # an anomalous image without its mask is not a shot (the studio exports unpainted ones too)
    (tmp_path / "bricks" / "ground_truth" / "scratch" / "000_mask.png").unlink()
    f = read_shot_folder(tmp_path / "bricks")
    assert f.anomalous == () and len(f.normal) == 2
    assert any("without a mask" in x and "ground_truth/scratch/000_mask.png" in x for x in f.ignored)
    for p in (tmp_path / "bricks" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(ValueError, match="no shots in.*without a mask"):
        read_shot_folder(tmp_path / "bricks")
    with pytest.raises(FileNotFoundError):
        read_shot_folder(tmp_path / "nope")


def test_inspect_cli_with_shots_folder(project, folder, tmp_path, capsys):
    from fsad_core.__main__ import main

    shots = _mvtec_folder(tmp_path / "bricks", project)
    args = ["inspect", "--shots", str(shots), "--input", str(folder), "--out", str(tmp_path / "o"), "--profile",
            "tiny", "--precision", "fp32", "--scales", "1,2", "--no-overlays"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "6 images: 6 scored" in out and "validation F1-max" in out  # auto threshold: normal + anomalous
    sig = json.loads((tmp_path / "o" / "run.json").read_text())["signature"]
    assert sig["class_name"] == "brick wall"
    assert sorted(s.split(":")[0] for s in sig["shots"]) == ["anomalous", "normal", "normal"]
    assert "anomalous@32" in _rows(tmp_path / "o" / "scores.csv")[0]
    # wrong layout: one line, exit 2
    assert main(args[:2] + [str(folder)] + args[3:]) == 2
    assert "not an MVTec-AD-layout shots folder" in capsys.readouterr().err
    assert main(args + ["--normal", str(folder / "q0.png")]) == 2
    assert "one way" in capsys.readouterr().err


def test_inspect_cli_shots_from_a_storage_export(project, folder, tmp_path, capsys):
    storage = pytest.importorskip("storage")
    from fsad_core.__main__ import main

    store = storage.Store(tmp_path / "data")
    pid = store.create_project("bricks", class_name="brick")
    store.add_image(pid, project.normals[0], role="normal")
    img, m, t = project.anomalous[0]
    store.save_mask(store.add_image(pid, img, role="anomalous"), m, defect_type=t)
    storage.export_project(store, pid, tmp_path / "export")
    assert main(["inspect", "--shots", str(tmp_path / "export"), "--input", str(folder), "--out", str(tmp_path / "o"),
                 "--profile", "tiny", "--precision", "fp32", "--scales", "1", "--threshold", "0.5",
                 "--no-overlays"]) == 0
    assert "6 scored" in capsys.readouterr().out
    sig = json.loads((tmp_path / "o" / "run.json").read_text())["signature"]
    assert sig["class_name"] == "brick" and len(sig["shots"]) == 2


def test_inspect_project_without_data_creates_nothing(project, folder, tmp_path, capsys):
    from fsad_core.__main__ import main

    base = ["inspect", "--project", "bricks", "--input", str(folder), "--out", str(tmp_path / "o"), "--profile",
            "tiny", "--threshold", "0.5"]
    missing = tmp_path / "no-such-data"
    assert main(base + ["--data-dir", str(missing)]) == 2
    assert "no studio data" in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "o").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(base + ["--data-dir", str(empty)]) == 2
    assert "no studio data" in capsys.readouterr().err
    assert list(empty.iterdir()) == []  # no database, no blob folder


def test_inspect_cli_threshold_auto_on_a_calibration_folder(project, folder, tmp_path, capsys):
    """--calibration OK/ + NG/<type>/: the labelled calibration (few OK images), recorded in run.json."""
    from fsad_core.__main__ import main

    cal = tmp_path / "cal"
    (cal / "OK").mkdir(parents=True)
    (cal / "NG" / "scratch").mkdir(parents=True)
    for i, img in enumerate(project.normals[1:]):
        Image.fromarray(img).save(cal / "OK" / f"ok{i}.png")
    Image.fromarray(project.anomalous[1][0]).save(cal / "NG" / "scratch" / "a.png")
    n0 = tmp_path / "n0.png"
    Image.fromarray(project.normals[0]).save(n0)
    args = ["inspect", "--normal", str(n0), "--input", str(folder), "--out", str(tmp_path / "o"), "--calibration",
            str(cal), "--profile", "tiny", "--precision", "fp32", "--scales", "1", "--no-overlays"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "labelled: 2 OK + 1 NG images" in captured.out and "F1-max threshold on 2 OK and 1 NG" in captured.err
    meta = json.loads((tmp_path / "o" / "run.json").read_text())
    assert meta["calibration"]["mode"] == "labelled" and meta["calibration"]["n"] == 3
    assert main(["inspect", "--normal", str(n0), "--input", str(folder), "--out", str(tmp_path / "p"),
                 "--calibration", str(cal), "--threshold", "0.5", "--profile", "tiny"]) == 2
    assert "--calibration is for --threshold auto" in capsys.readouterr().err
