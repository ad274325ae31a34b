"""`bundle export --project` and the scoring service, through HTTP against a real server process."""
from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import ROOT, textured
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _png(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def project_bundle(tmp_path_factory):
    """A studio project (normal, validation-only normal, painted anomalous shot) exported by the CLI."""
    from fsad_core.__main__ import main
    from storage import Store

    d = tmp_path_factory.mktemp("studio")
    anomalous = textured(1).copy()
    anomalous[60:100, 80:130] = (255, 0, 0)
    mask = np.zeros(anomalous.shape[:2], bool)
    mask[60:100, 80:130] = True
    with Store(d / "data") as store:
        pid = store.create_project("tiles", class_name="tile")
        store.add_image(pid, _png(textured(1)), role="normal")
        store.set_validation_only(store.add_image(pid, _png(textured(5)), role="normal"), True)
        store.save_mask(store.add_image(pid, _png(anomalous), role="anomalous"), mask, defect_type="stain")
        store.save_weights(pid, "tuned", {"text": 0.5, "normal@16": 0.25, "anomalous@16": 0.25})
    out = d / "tiles.fsad.zip"
    calib = d / "calibration.json"  # a calibration record as the verdicts work writes one
    calib.write_text(json.dumps({"mode": "conformal", "threshold": 0.25, "margin": 0.001, "n": 12, "alpha": 0.05}))
    rc = main(["bundle", "export", "--project", "tiles", "--data-dir", str(d / "data"), "--profile", "tiny",
               "--precision", "fp32", "--device", "cpu", "--weights", "tuned", "--calibration", str(calib),
               "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def server(project_bundle):
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "fsad_core", "serve", "--bundle", str(project_bundle),
                             "--port", str(port), "--threads", "1", "--device", "cpu", "--max-upload-mb", "1",
                             "--max-pending", "1"], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail("server did not come up within 120 s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_export_project_keeps_roles_weights_and_threshold(project_bundle):
    with zipfile.ZipFile(project_bundle) as z:
        m = json.loads(z.read("manifest.json"))
    assert sorted((s["kind"], s["role"]) for s in m["shots"]) == [
        ("anomalous", "memory"), ("normal", "memory"), ("normal", "validation")]
    assert m["project"] == "tiles" and m["class_name"] == "tile"
    assert m["weights"]["name"] == "tuned" and m["weights"]["weights"]["anomalous@16"] == 0.25
    assert m["threshold"]["value"] == 0.25 and m["threshold"]["margin"] == 0.001
    assert m["threshold"]["calibration"] == {"mode": "conformal", "threshold": 0.25, "margin": 0.001, "n": 12,
                                             "alpha": 0.05} and m["threshold"]["source"] == "conformal"


def test_score_matches_in_process_engine(server, project_bundle, tiny_backbone):
    from fsad_core import Engine

    engine = Engine.from_bundle(project_bundle, device="cpu", backbone=tiny_backbone)
    q = textured(11)
    r = httpx.post(server + "/score", files={"file": ("q.png", _png(q), "image/png")}, params={"heatmap": 1},
                   timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    agg = engine.score(q).aggregate()
    assert body["aggregate"]["score"] == agg.score  # same bundle, same bits (JSON floats round-trip)
    assert body["verdict"] == engine.bundle.verdict(agg.score) and body["verdict"] in ("OK", "NG", "uncertain")
    assert body["aggregate"]["threshold"] == engine.bundle.threshold
    assert set(body["components"]) == set(engine.component_names)
    heat = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
    assert heat.size == (q.shape[1], q.shape[0])
    info = httpx.get(server + "/bundle", timeout=10).json()
    assert info["class_name"] == "tile" and info["shots"] == {"normal": 1, "anomalous": 1, "validation": 1}
    assert httpx.get(server + "/openapi.json", timeout=10).json()["paths"]["/score"]


def test_bad_input_is_4xx_with_a_message(server):
    post = lambda **kw: httpx.post(server + "/score", timeout=30, **kw)  # noqa: E731
    cases = {
        "not an image": post(files={"file": ("x.png", b"this is not a png", "image/png")}),
        "too small": post(files={"file": ("t.png", _png(np.zeros((4, 4, 3), np.uint8)), "image/png")}),
        "text part": post(files={"file": ("x.txt", b"hello", "text/plain")}),
        "json body": post(json={"file": "x"}),
        "no file field": post(files={"other": ("q.png", _png(textured(3)), "image/png")}),
        "too large": post(files={"file": ("big.png", b"\0" * 1_500_000, "image/png")}),
    }
    codes = {k: r.status_code for k, r in cases.items()}
    assert codes == {"not an image": 422, "too small": 422, "text part": 415, "json body": 415,
                     "no file field": 422, "too large": 413}
    for r in cases.values():
        assert "Traceback" not in r.text and r.json()["detail"]
    assert "not a readable image" in cases["not an image"].json()["detail"]


def test_bounded_queue_answers_503(server):
    data = _png(textured(12, 480, 640))

    def one(_):
        return httpx.post(server + "/score", files={"file": ("q.png", data, "image/png")}, timeout=60).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(8)))
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
    assert httpx.get(server + "/health", timeout=10).json()["pending"] == 0


def test_inspect_from_bundle_cli_and_errors(project_bundle, tmp_path, capsys):
    """`inspect --bundle` scores with the bundle's weights and threshold; bad bundles are one error line."""
    from fsad_core import Engine
    from fsad_core.__main__ import main
    from fsad_core.inspect_batch import read_results

    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(2):
        Image.fromarray(textured(30 + i)).save(inp / f"q{i}.png")
    assert main(["inspect", "--bundle", str(project_bundle), "--input", str(inp), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--no-overlays"]) == 0
    engine = Engine.from_bundle(project_bundle, device="cpu")
    recs = {r["path"]: r["score"] for r in read_results(tmp_path / "o")}
    assert recs == {f"q{i}.png": engine.score(textured(30 + i)).aggregate().score for i in range(2)}
    assert json.loads((tmp_path / "o" / "run.json").read_text())["threshold"] == 0.25
    capsys.readouterr()
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    for argv in (["inspect", "--bundle", str(tmp_path / "bad.zip"), "--input", str(inp), "--out", str(tmp_path / "x")],
                 ["serve", "--bundle", str(tmp_path / "bad.zip")],
                 ["inspect", "--bundle", str(project_bundle), "--shots", str(inp), "--input", str(inp),
                  "--out", str(tmp_path / "y")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
