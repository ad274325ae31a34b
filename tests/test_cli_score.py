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
    assert set(q["aggregate"]) == {"score", "weights"}
    assert q["aggregate"]["weights"]["zero_shot"] == pytest.approx(1 / 3)
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
