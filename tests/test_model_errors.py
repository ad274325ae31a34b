"""ModelUnavailableError carries what went wrong as fields (spec, reason, detail), so callers such as
the studio's start-up banner branch on them instead of parsing the message."""
from __future__ import annotations

import pickle

import pytest

from fsad_core.models import registry
from fsad_core.models.registry import REASONS, ModelUnavailableError


def test_fields_survive_pickling_and_reasons_are_checked():
    spec = registry.get("sam", "vit_b")
    err = registry.unavailable(spec, "its weights are not in the cache and download=False", reason="missing")
    assert "is not available: its weights are not in the cache" in str(err)  # the message is as before
    back = pickle.loads(pickle.dumps(err))  # Ray workers and process pools send errors back pickled
    assert (str(back), back.spec, back.reason, back.detail) == (str(err), err.spec, err.reason, err.detail)
    plain = ModelUnavailableError("something else")
    assert (plain.spec, plain.reason, plain.detail, plain.model_id) == (None, "missing", "something else", None)
    assert set(REASONS) >= {"offline", "missing", "checksum"}
    with pytest.raises(ValueError, match="reason must be one of offline, missing"):
        ModelUnavailableError("x", reason="broken")


def test_offline_pull_says_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = registry.get("vae", "taesd")
    with pytest.raises(ModelUnavailableError) as err:
        registry.pull(spec, tmp_path)
    assert err.value.reason == "offline" and err.value.spec == spec


def test_the_studio_banner_is_built_from_the_fields(tmp_path, monkeypatch):
    """No standard CLIP weights here (offline, empty cache): the studio starts on tiny and says why."""
    import app

    monkeypatch.setenv("FSAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    profile, backbone, banner = app.resolve_profile("standard")
    assert profile == "tiny" and backbone.model_id.startswith("clip/fsad-tiny-clip")
    assert "not available** (ViT-B-16-plus-240: no network and not in the cache)" in banner
