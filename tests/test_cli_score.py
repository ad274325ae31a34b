"""`python -m fsad_core score` and `models` end to end on the tiny profile."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsad_core.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path, images):
    paths = {}
    for name in ("normal", "anomalous", "query"):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(images[name]).save(paths[name])
    paths["mask"] = tmp_path / "mask.png"
    Image.fromarray(images["mask"].astype(np.uint8) * 255).save(paths["mask"])
    return paths


def test_score_writes_json_and_maps(files, tmp_path):
    out = tmp_path / "out.json"
    maps = tmp_path / "maps"
    rc = main(["score", "--normal", str(files["normal"]), "--anomalous", str(files["anomalous"]),
               "--mask", str(files["mask"]), "--defect-type", "crack", "--query", str(files["query"]),
               "--query", str(files["anomalous"]), "--class-name", "metal_nut", "--profile", "tiny",
               "--precision", "fp32", "--json", str(out), "--maps-dir", str(maps)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert len(data["queries"]) == 2
    q = data["queries"][1]
    assert q["components"]["anomalous@16"]["score"] == pytest.approx(1.0, abs=1e-5)
    assert set(q["aggregate"]) == {"score", "weights", "rule", "preset"}
    # the paper's eq. 2: 1/3 on the image-level text score, 1/12 on each memory score
    assert q["aggregate"]["weights"]["text"] == pytest.approx(1 / 3)
    assert q["aggregate"]["weights"]["normal@16"] == pytest.approx(1 / 12)
    assert "zero_shot" not in q["aggregate"]["weights"] and q["aggregate"]["preset"] == "paper"
    for sub in ("query", "anomalous"):
        npys = sorted(p.name for p in (maps / sub).glob("*.npy"))
        assert "anomalous@32.npy" in npys and "text.npy" in npys and len(npys) == 11
        m = np.load(maps / sub / "normal@16.npy")
        assert m.dtype == np.float32 and m.shape == (160, 200)
        assert (maps / sub / "normal@16.png").is_file()


def test_score_custom_weights_and_single_query(files, tmp_path):
    out = tmp_path / "o.json"
    rc = main(["score", "--normal", str(files["normal"]), "--query", str(files["query"]), "--class-name", "bottle",
               "--profile", "tiny", "--scales", "1,2,3", "--weights", "text=1,normal@16=1", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    c = data["components"]
    assert set(c) == {"text", "zero_shot", "normal@16", "normal@32", "normal@48"}
    assert data["aggregate"]["score"] == pytest.approx((c["text"]["score"] + c["normal@16"]["score"]) / 2, abs=1e-6)


def test_score_errors_are_one_line(files, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    rc = main(["score", "--normal", str(bad), "--query", str(files["query"]), "--class-name", "x",
               "--profile", "tiny", "--json", str(tmp_path / "o.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a readable image" in err and "Traceback" not in err
    rc = main(["score", "--anomalous", str(files["anomalous"]), "--query", str(files["query"]),
               "--class-name", "x", "--profile", "tiny", "--json", str(tmp_path / "o.json")])
    assert rc == 2 and "one --mask per --anomalous" in capsys.readouterr().err
    empty = tmp_path / "empty_mask.png"
    Image.fromarray(np.zeros((160, 200), np.uint8)).save(empty)
    rc = main(["score", "--anomalous", str(files["anomalous"]), "--mask", str(empty), "--query",
               str(files["query"]), "--class-name", "x", "--profile", "tiny", "--json", str(tmp_path / "o.json")])
    assert rc == 2 and "mask is empty" in capsys.readouterr().err


def test_missing_standard_weights_teach_instead_of_traceback(files, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "FSAD_CACHE_DIR": str(tmp_path / "empty-cache"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "fsad_core", "score", "--normal", str(files["normal"]),
                           "--query", str(files["query"]), "--class-name", "x", "--json", str(tmp_path / "o.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "ViT-B-16-plus-240" in proc.stderr and "models pull clip" in proc.stderr and "830" in proc.stderr


def test_models_list(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "ViT-B-16-plus-240@laion400m_e31" in out and "vit_b" in out and "built in" in out


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_unwritable_output_paths_are_one_line_errors(files, tmp_path, capsys):
    base = ["score", "--normal", str(files["normal"]), "--query", str(files["query"]), "--class-name", "x",
            "--profile", "tiny", "--precision", "fp32", "--scales", "1"]
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main(base + ["--json", str(folder)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err)
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    assert main(base + ["--json", str(tmp_path / "o.json"), "--maps-dir", str(a_file)]) == 2
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err)
    assert main(base + ["--json", str(a_file / "o.json")]) == 2  # a parent that is a file
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o.json").exists()


def test_os_errors_from_any_command_are_one_line():
    import argparse

    from fsad_core.cli.common import run_command

    def writes_into_a_folder(args):
        raise IsADirectoryError(21, "Is a directory", "/tmp/somewhere")

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_command(writes_into_a_folder, argparse.Namespace()) == 2
    assert _one_error_line(err.getvalue()) == "error: /tmp/somewhere: Is a directory"


def test_score_rejects_unknown_weight_names_with_the_valid_list(files, tmp_path, capsys):
    base = ["score", "--normal", str(files["normal"]), "--query", str(files["query"]), "--class-name", "x",
            "--profile", "tiny", "--precision", "fp32", "--scales", "1,2", "--json", str(tmp_path / "o.json")]
    assert main(base + ["--weights", "normal@17=1,text=1"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "unknown components normal@17" in line
    assert "text, zero_shot, normal@16, normal@32, anomalous@16, anomalous@32" in line
    assert main(base + ["--weights", "personal=1"]) == 2
    assert "One-to-Normal" in _one_error_line(capsys.readouterr().err)
    assert main(base + ["--weights", "one-to-normal"]) == 2
    assert "personal, pool" in _one_error_line(capsys.readouterr().err)
    assert main(base + ["--weights", "text=0"]) == 2
    assert "every weight is 0" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o.json").exists()
    # a preset works, over the components this run has
    assert main(base + ["--weights", "equal"]) == 0
    w = json.loads((tmp_path / "o.json").read_text())["aggregate"]["weights"]
    assert w["text"] == pytest.approx(0.25) and "normal@112" not in w  # 4 components present, renormalised


def test_score_patchcore_flag_adds_the_component(files, tmp_path):
    """`--patchcore` plugs PatchCoreScorer into the engine: the component is computed and weighable."""
    out = tmp_path / "pc.json"
    rc = main(["score", "--normal", str(files["normal"]), "--query", str(files["query"]), "--class-name", "x",
               "--profile", "tiny", "--precision", "fp32", "--scales", "1", "--patchcore",
               "--weights", "patchcore=1,text=1", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert "patchcore" in data["components"] and data["aggregate"]["weights"] == {"patchcore": 0.5, "text": 0.5}
