"""Loading CLIP: readable errors (unknown tag, missing or bad local file, offline), quiet open_clip
logs, a model id that identifies a local checkpoint file, and the tiny profile's config file."""
from __future__ import annotations

import json
import logging
import os
import tempfile

import pytest
import torch

from fsad_core import EngineConfig
from fsad_core.models import clip, registry
from fsad_core.models.registry import ModelUnavailableError


def _std(**kw) -> EngineConfig:
    return EngineConfig(profile="standard", precision="fp32", device="cpu", **kw)


def _open_clip_records(caplog):
    d = os.path.dirname(__import__("open_clip").__file__)
    return [r for r in caplog.records if r.pathname.startswith(d)]


def test_unknown_pretrained_tag_lists_the_valid_tags():
    with pytest.raises(ModelUnavailableError) as err:
        clip.build_open_clip(_std(clip_pretrained="laion400m_e99"))
    assert (err.value.reason, err.value.spec) == ("unknown", "clip/ViT-B-16-plus-240@laion400m_e99")
    msg = str(err.value)
    assert "'laion400m_e99' is not a pretrained tag of ViT-B-16-plus-240" in msg
    assert "laion400m_e31" in msg and "laion400m_e32" in msg


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(ModelUnavailableError, match="no model architecture 'ViT-B-16-plus-24'.*ViT-B-16-plus-240"):
        clip.build_open_clip(_std(clip_model="ViT-B-16-plus-24"))


def test_missing_local_checkpoint_says_fix_the_path(tmp_path):
    path = tmp_path / "weights" / "my_clip.pt"
    with pytest.raises(ModelUnavailableError) as err:
        clip.build_open_clip(_std(clip_pretrained=str(path)))
    assert err.value.reason == "missing" and err.value.detail == f"the checkpoint {path} does not exist"
    msg = str(err.value)
    assert f"{path} does not exist" in msg and "Fix the path" in msg
    assert "Fetch it on a machine with internet" not in msg and "copy the files here" not in msg
    assert not path.parent.exists()  # nothing created


def test_unloadable_local_checkpoint_is_one_readable_message(tmp_path, caplog):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint " * 40)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ModelUnavailableError) as err:
        clip.build_open_clip(_std(clip_pretrained=str(bad)))
    assert err.value.reason == "invalid" and err.value.spec.source == str(bad.resolve())
    msg = str(err.value)
    assert f"{bad} could not be loaded as ViT-B-16-plus-240" in msg and "Fetch it" not in msg
    assert not [r for r in _open_clip_records(caplog) if r.levelno >= logging.ERROR]


def test_offline_weights_error_without_open_clip_log_lines(tmp_path, caplog):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ModelUnavailableError) as err:
        clip.build_open_clip(_std(cache_dir=str(tmp_path / "cache")))
    msg = str(err.value)
    assert "ViT-B-16-plus-240 (laion400m_e31, 830.0 MB)" in msg and "models pull clip" in msg
    assert "offline" in msg
    assert not [r for r in _open_clip_records(caplog) if r.levelno >= logging.ERROR]  # no 'ERROR:root:' line


@pytest.mark.parametrize("text,limit", [
    ("Failed to download file (open_clip_pytorch_model.bin) for timm/vit_base_patch16_plus_clip_240. Last error: "
     "An error happened while trying to locate the file on the Hub", 120),
    ("word " * 100, 37),
    ("a" * 300, 50),  # one giant word: cut inside it is the only option
])
def test_shorten_cuts_at_a_word_boundary(text, limit):
    out = registry.shorten(text, limit)
    norm = " ".join(text.split())
    assert len(out) <= limit and out.endswith("…")
    body = out[:-1]
    assert norm.startswith(body)
    if " " in norm[:limit]:
        assert norm[len(body)] in " ,;:.-(" or norm[len(body)].isspace()  # the next character ends a word


def test_local_checkpoint_model_id_identifies_the_file(tmp_path):
    tiny_cfg = EngineConfig(profile="tiny", precision="fp32", device="cpu")
    model, _ = clip.build_open_clip(tiny_cfg)
    a, b = tmp_path / "a" / "clip.pt", tmp_path / "b" / "clip.pt"
    for p in (a, b):
        p.parent.mkdir()
        torch.save(model.state_dict(), p)
    cfg_a = _std(clip_model="fsad-tiny-clip", clip_pretrained=str(a))
    cfg_b = _std(clip_model="fsad-tiny-clip", clip_pretrained=str(b))
    _, spec_a = clip.build_open_clip(cfg_a)
    _, spec_b = clip.build_open_clip(cfg_b)
    assert spec_a.tag.startswith("file-") and spec_a.id != spec_b.id  # same name, different files
    assert spec_a.id == clip.build_open_clip(cfg_a)[1].id  # stable for the same file
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was replaced/edited
    assert clip.local_checkpoint_tag(a) != spec_a.tag
    bb = clip.ClipBackbone(cfg_b)
    assert bb.model_id == f"{spec_b.id}|standard"


def test_tiny_config_is_written_once_to_a_stable_place(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for _ in range(3):  # three "processes"
        monkeypatch.setattr(clip, "_TINY_REGISTERED", set())
        assert clip._register_tiny_config() == "fsad-tiny-clip"
    uid = os.getuid() if hasattr(os, "getuid") else None
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == [f"fsad-tiny-clip-{uid}"] if uid is not None else len(folders) == 1
    files = sorted(p.name for p in (tmp_path / folders[0]).iterdir())
    assert files == ["fsad-tiny-clip.json"]  # no leftover temp files
    spec = registry.get("clip", profile="tiny")
    assert json.loads((tmp_path / folders[0] / files[0]).read_text()) == spec.extra["config"]
    # the tiny profile does not log open_clip's "No pretrained weights loaded" warning
    caplog.set_level(logging.DEBUG)
    clip.build_open_clip(EngineConfig(profile="tiny", precision="fp32", device="cpu"))
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]
    # ...while other warnings still get through
    logging.getLogger().warning("still visible")
    assert any(r.getMessage() == "still visible" for r in caplog.records)
