"""Shared test setup: offline, single-threaded, seeded; tiny random models built once per session."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("FSAD_CACHE_DIR", str(Path(__file__).resolve().parent / "_artifacts" / "cache"))

ROOT = Path(__file__).resolve().parents[1]  # the checkout (the package itself is installed: pip install -e .)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# On a loaded 2-core box a tiny forward takes 317 ms with 2 threads and 5 ms with 1.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_config():
    from fsad_core import EngineConfig

    return EngineConfig(profile="tiny", precision="fp32", device="cpu")


@pytest.fixture(scope="session")
def tiny_backbone(tiny_config):
    from fsad_core.models.clip import ClipBackbone

    return ClipBackbone(tiny_config)


@pytest.fixture(scope="module")
def backbone():
    """The studio's tiny CLIP (the profile's default precision, as `app.py --profile tiny` runs)."""
    from fsad_core import EngineConfig
    from fsad_core.models.clip import ClipBackbone

    return ClipBackbone(EngineConfig(profile="tiny"))


@pytest.fixture()
def ctx(tmp_path, backbone):
    """A studio context on a fresh store, sharing the module's backbone (the studio's handler tests)."""
    import storage
    from ui.context import StudioContext

    store = storage.Store(tmp_path / "data")
    return StudioContext(store, profile="tiny", banner="tiny", backbone=backbone, data_dir=tmp_path / "data")


@pytest.fixture
def tiny_engine(tiny_config, tiny_backbone):
    from fsad_core import Engine

    return Engine(tiny_config, backbone=tiny_backbone)


@pytest.fixture
def encoder_calls(tiny_backbone, monkeypatch):
    """Counts the tiny backbone's image passes and window passes: {"encode": n, "windows": n}."""
    calls = {"encode": 0, "windows": 0}
    real = {"encode": tiny_backbone.encode, "windows": tiny_backbone.window_embeddings}

    def counting(kind):
        def wrapper(*a, **k):
            calls[kind] += 1
            return real[kind](*a, **k)
        return wrapper

    monkeypatch.setattr(tiny_backbone, "encode", counting("encode"))
    monkeypatch.setattr(tiny_backbone, "window_embeddings", counting("windows"))
    return calls


def textured(seed: int, h: int = 160, w: int = 200) -> np.ndarray:
    """A smooth random colour texture (more CLIP-like structure than white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    import cv2

    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def images():
    normal = textured(1)
    anomalous = textured(1).copy()
    anomalous[60:100, 80:130] = (255, 0, 0)
    mask = np.zeros(anomalous.shape[:2], bool)
    mask[60:100, 80:130] = True
    query = textured(2)
    return {"normal": normal, "anomalous": anomalous, "mask": mask, "query": query}


# -- a clean exit status --------------------------------------------------------------------------
# The whole suite leaves daemon threads behind (Gradio servers, studio background jobs, native thread
# pools of torch / faiss). At interpreter shutdown one of them can be torn down inside native code,
# and the process then aborts ("terminate called without an active exception", exit code 134) after
# every test has passed — each test file alone exits cleanly. So once pytest has printed its summary,
# the process leaves with pytest's own exit status without running interpreter finalization.
# FSAD_PYTEST_HARD_EXIT=0 turns this off (to debug the teardown itself).
_EXIT_STATUS = {"code": None}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if os.environ.get("FSAD_PYTEST_HARD_EXIT", "1") == "0" or _EXIT_STATUS["code"] is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS["code"])
