"""Batch inspection on a real local Ray (2 CPUs, 2 actors) gives the single-process run's files exactly.

Ray runs in a child pytest process: importing Ray installs a C++ terminate handler that aborts the
interpreter when any daemon thread (the studio tests leave some) is unwound at exit, which would turn
a green suite into exit code 134. The child runs the real test below (`FSAD_RAY_CHILD=1`).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, textured
from PIL import Image

CHILD = os.environ.get("FSAD_RAY_CHILD") == "1"
HAVE_RAY = importlib.util.find_spec("ray") is not None


@pytest.mark.slow
@pytest.mark.skipif(CHILD or not HAVE_RAY, reason="Ray is not installed (pip install 'ray[data]')")
def test_ray_batch_in_a_child_process():
    env = dict(os.environ, FSAD_RAY_CHILD="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{__file__}::test_ray_run_equals_single_process_run"],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert "1 passed" in out, out[-4000:]


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    env = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FSAD_CACHE_DIR") if k in os.environ}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env})
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.skipif(not CHILD, reason="runs in the child process of test_ray_batch_in_a_child_process")
def test_ray_run_equals_single_process_run(tiny_engine, images, tmp_path, local_ray):
    from fsad_core import Engine
    from fsad_core.bundle import export_bundle
    from fsad_core.inspect_batch import run_batch
    from fsad_core.ray_batch import run_batch_ray

    e = tiny_engine
    e.set_class_name("tile")
    e.add_shot(images["normal"], kind="normal")
    e.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"])
    bundle = export_bundle(e, tmp_path / "b.zip", threshold=0.3, weights="winclip+")
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(textured(20 + i)).save(inp / ("sub" if i % 2 else ".") / f"img{i}.png")
    (inp / "broken.png").write_bytes(b"not an image")

    single = Engine.from_bundle(bundle, device="cpu", backbone=e.backbone)
    s1 = run_batch(single, inp, tmp_path / "one", weights=single.default_weights, threshold=single.bundle.threshold)
    s2 = run_batch_ray(bundle, inp, tmp_path / "two", engine=single, num_workers=2, batch_size=2, device="cpu",
                       threshold_source="given")
    assert (s2.n_images, s2.n_scored, s2.n_failed, s2.n_anomalous) == (s1.n_images, s1.n_scored, s1.n_failed,
                                                                       s1.n_anomalous) == (6, 5, 1, s1.n_anomalous)
    for name in ("results.jsonl", "scores.csv", "report.html", "run.json"):
        a, b = (tmp_path / "one" / name).read_bytes(), (tmp_path / "two" / name).read_bytes()
        if name == "run.json":
            a, b = a.replace(b"/one", b""), b.replace(b"/two", b"")
        assert a == b, name
    ov1 = sorted((tmp_path / "one" / "overlays").iterdir())
    assert [p.name for p in ov1] == [p.name for p in sorted((tmp_path / "two" / "overlays").iterdir())]
    assert all(np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(tmp_path / "two" / "overlays" / p.name)))
               for p in ov1)
    # resumable: a second run scores nothing again
    s3 = run_batch_ray(bundle, inp, tmp_path / "two", engine=single, num_workers=2, device="cpu",
                       threshold_source="given")
    assert (s3.n_resumed, s3.n_scored) == (5, 0) and s3.n_failed == 1
