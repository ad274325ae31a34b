"""Inspection bundles: export, load, bit-identical scores without re-encoding shots, clear errors."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from conftest import textured


@pytest.fixture
def studio_engine(tiny_engine, images):
    """An engine as the studio builds one: class name, normal + anomalous + validation-only shots."""
    e = tiny_engine
    e.set_class_name("tile")
    e.add_shot(images["normal"], kind="normal")
    e.add_shot(textured(5), kind="normal", role="validation")
    e.add_shot(images["anomalous"], kind="anomalous", mask=images["mask"], defect_type="stain")
    return e


def _rewrite(src, dst, change):
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    m = json.loads(members["manifest.json"])
    change(m, members)
    members["manifest.json"] = json.dumps(m).encode()
    with zipfile.ZipFile(dst, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    return dst


def test_roundtrip_bit_identical_without_reencoding_shots(studio_engine, images, tiny_config, tmp_path,
                                                          encoder_calls):
    from fsad_core import Engine
    from fsad_core.bundle import verdict

    e = studio_engine
    queries = [images["query"], textured(9), images["anomalous"]]
    want = [e.score(q) for q in queries]
    path = tmp_path / "line.fsad.zip"
    from fsad_core.bundle import export_bundle

    thr = float(np.median([r.aggregate("winclip+").score for r in want]))
    export_bundle(e, path, threshold=thr, margin=0.0, weights="winclip+",
                  calibration={"mode": "given", "n": 0}, project="tiles")
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        m = json.loads(z.read("manifest.json"))
    assert m["format"] == "fsad-bundle" and m["version"] == 1
    assert {s["role"] for s in m["shots"]} == {"memory", "validation"}
    assert any(n.endswith("windows@7.npy") for n in names) and "text/embeddings.npy" in names

    before = dict(encoder_calls)
    # the tiny backbone is shared with the studio engine: a fresh engine must not re-encode any shot
    loaded = Engine.from_bundle(path, device="cpu", backbone=e.backbone)
    assert encoder_calls == before, "loading a bundle encoded a shot"
    assert loaded.class_name == e.class_name and list(loaded.component_names) == list(e.component_names)
    assert [s.role for s in loaded.shots] == [s.role for s in e.shots]
    for q, w in zip(queries, want):
        got = loaded.score(q)
        assert got.scores() == w.scores()  # bit for bit, every component
        agg, ref = got.aggregate(), w.aggregate("winclip+")  # default = the bundle's weights
        assert agg.score == ref.score and np.array_equal(agg.map, ref.map)
        assert loaded.bundle.verdict(agg.score) == verdict(ref.score, thr)
    # the two new queries were encoded; the anomalous shot used as a query reuses its bundled features
    assert encoder_calls["encode"] == before["encode"] + 2


def test_loaded_in_a_fresh_backbone_matches(studio_engine, images, tmp_path):
    """A bundle loaded by a new process-like backbone (built from the manifest) scores the same."""
    from fsad_core.bundle import export_bundle, load_bundle

    e = studio_engine
    want = e.score(images["query"]).aggregate()
    path = export_bundle(e, tmp_path / "b.zip", threshold=want.score, margin=0.01)
    loaded = load_bundle(path, device="cpu")
    assert loaded.backbone is not e.backbone
    got = loaded.score(images["query"]).aggregate()
    assert got.score == want.score
    assert loaded.bundle.verdict(got.score) == "uncertain"


def test_load_errors_name_what_differs(studio_engine, tmp_path):
    from fsad_core.bundle import BundleError, export_bundle, load_bundle

    path = export_bundle(studio_engine, tmp_path / "b.zip", threshold=0.5)

    def version(m, _):
        m["version"] = 99
    with pytest.raises(BundleError, match="version 99.*reads version 1"):
        load_bundle(_rewrite(path, tmp_path / "v.zip", version), device="cpu")

    def other_weights(m, _):
        m["model"]["clip"]["weights_sha256"] = "0" * 64
    with pytest.raises(BundleError, match="different model.*weights sha256 0000"):
        load_bundle(_rewrite(path, tmp_path / "w.zip", other_weights), device="cpu")

    def damaged(m, members):
        first = next(n for n in members if n.endswith(".npy"))
        members[first] = members[first][:-4] + b"\0\0\0\0"
    with pytest.raises(BundleError, match="damaged"):
        load_bundle(_rewrite(path, tmp_path / "d.zip", damaged), device="cpu")

    def adapter(m, _):
        m["extensions"] = {"adapter": {"scorer": "april-gan", "meta": {}, "files": []}}
    with pytest.raises(BundleError, match="adapter"):
        load_bundle(_rewrite(path, tmp_path / "a.zip", adapter), device="cpu")

    (tmp_path / "not.zip").write_bytes(b"hello")
    with pytest.raises(BundleError, match="not an fsad-studio inspection bundle"):
        load_bundle(tmp_path / "not.zip")


def test_missing_model_weights_error(studio_engine, tmp_path):
    from fsad_core.bundle import export_bundle, load_bundle
    from fsad_core.models.registry import ModelUnavailableError

    path = export_bundle(studio_engine, tmp_path / "b.zip", threshold=0.5)

    def standard(m, _):
        m["profile"] = "standard"
        m["model"]["clip"]["pretrained"] = str(tmp_path / "missing.pt")
    with pytest.raises(ModelUnavailableError, match="the bundle scores with .*missing.pt"):
        load_bundle(_rewrite(path, tmp_path / "s.zip", standard), device="cpu")


def test_verdict_band():
    from fsad_core.bundle import verdict

    assert verdict(0.2, 0.5, 0.1) == "OK" and verdict(0.59, 0.5, 0.1) == "uncertain"
    assert verdict(0.61, 0.5, 0.1) == "NG" and verdict(0.4999, 0.5) == "OK"  # calibration.verdict: the one rule
