"""Inspection bundles: everything an engine needs to score, in one zip, without the studio's database.

What an engineer tuned in the studio runs on the line (`python -m fsad_core serve`) and on large
folders (`python -m fsad_core inspect --bundle`, optionally on Ray) from one file:

    manifest.json                 format name + version, model ids and weight checksums, profile,
                                  precision, scales, class name, shots, weights, threshold, files
    shots/<id>.png                the shot pixels (lossless; tuning and auto thresholds need them)
    masks/<id>.png                the defect mask of each anomalous shot (white = defect)
    features/<id>/<kind>.npy      the shot's encoded features (float32): image_emb, patch_tokens,
                                  token_map, windows@<scale>: memory banks rebuild without re-encoding
    text/embeddings.npy           the prompt-ensemble text embeddings for the class name
    ext/<section>/...             optional sections (adapter, defect classifier): see `register_extension`

Model weights are referenced by id and checksum, never copied (they are large and licensed
separately). `load_bundle` / `Engine.from_bundle` rebuild an engine whose scores equal the exporting
engine's bit for bit: same model (checked by a sha256 over its state dict), same precision, same
shot features, same text embeddings; the bundle's weight set becomes the engine's `default_weights`,
so `result.aggregate()` uses it. The format is documented in docs/bundle.md.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

FORMAT = "fsad-bundle"
VERSION = 1
VERDICTS = ("OK", "NG", "uncertain")
FEATURE_KINDS = ("image_emb", "patch_tokens", "token_map")


class BundleError(ValueError):
    """A bundle that cannot be written or loaded here; the message names what differs."""


# -- verdicts -------------------------------------------------------------------------------------
def verdict(score: float, threshold: float, margin: float = 0.0) -> str:
    """OK / NG / uncertain for an aggregate score: the one decision rule of
    `fsad_core.calibration.verdict` (NG at or above the threshold, "uncertain" within `margin` of it).

    >>> [verdict(s, 0.5, 0.1) for s in (0.3, 0.45, 0.55, 0.7)]
    ['OK', 'uncertain', 'uncertain', 'NG']
    >>> verdict(0.5, 0.5)
    'NG'
    """
    from .calibration import verdict as _verdict

    return _verdict(score, threshold, margin)


# -- extension point: optional sections (adapter, defect classifier, ...) ----------------------------
@dataclass(frozen=True)
class Extension:
    """An optional bundle section carrying one engine scorer (e.g. an APRIL-GAN adapter).

    scorer_name: the `Scorer.name` this section carries.
    export(engine, scorer) -> (meta: JSON-able dict, files: {relative name: bytes}); files are stored
        under ext/<name>/.
    load(engine, meta, read) -> None: plugs the scorer into `engine`; `read(relative name) -> bytes`.
    """

    name: str
    scorer_name: str
    export: Callable
    load: Callable


EXTENSIONS: dict[str, Extension] = {}


def register_extension(ext: Extension) -> Extension:
    """Teach bundles a new optional section (one line in the module that defines the scorer)."""
    EXTENSIONS[ext.name] = ext
    return ext


# -- model identity -----------------------------------------------------------------------------------
def model_sha256(model) -> str:
    """sha256 over a torch module's state dict (names, dtypes, shapes and raw bytes, in order): the
    identity of the weights actually loaded, whatever file or hub tag they came from."""
    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def backbone_sha256(backbone) -> str:
    """`model_sha256` of a ClipBackbone's model, computed once per backbone."""
    sha = getattr(backbone, "_fsad_weights_sha256", None)
    if sha is None:
        sha = model_sha256(backbone.model)
        backbone._fsad_weights_sha256 = sha
    return sha


# -- small IO helpers ----------------------------------------------------------------------------------
def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(np.asarray(arr, dtype=np.float32)), allow_pickle=False)
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _from_npy(data: bytes):
    import torch

    return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).copy())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- export --------------------------------------------------------------------------------------------
def export_bundle(engine, path, *, threshold: float, margin: float = 0.0, weights=None,
                  calibration: Mapping | None = None, threshold_source: str = "given",
                  project: str | None = None) -> Path:
    """Write `engine`'s scoring setup to one zip file at `path` (written atomically) and return the path.

    threshold / margin: the aggregate score at which an image is NG, and the half-width of the
        "uncertain" band around it (see `verdict`).
    weights: what `result.aggregate()` uses after loading (a preset name, 'name=w,...', a mapping or a
        `WeightSet`; None = the engine's `default_weights`, else the paper preset).
    calibration: a free-form JSON-able record of how the threshold was chosen (method, n, alpha, ...);
        stored as is (`threshold_source` is a one-word summary of it).
    Scorers other than WinCLIP go in only through a registered `Extension`; without one this is a
    BundleError (the bundle would score differently).
    """
    import torch  # noqa: F401  (features are torch tensors)

    from . import __version__
    from .aggregate import resolve_weights

    if not engine.shots:
        raise BundleError("the engine has no shots: add normal (and annotated anomalous) shots before exporting")
    threshold, margin = float(threshold), float(margin)
    if not np.isfinite(threshold):
        raise BundleError(f"the threshold must be a finite number, got {threshold}")
    if not np.isfinite(margin) or margin < 0:
        raise BundleError(f"the margin must be a finite number >= 0, got {margin}")
    names = list(engine.component_names)
    wset = resolve_weights(weights if weights is not None else engine.default_weights, names, strict=False)
    sections = []
    for scorer in engine.scorers[1:]:
        ext = next((e for e in EXTENSIONS.values() if e.scorer_name == scorer.name), None)
        if ext is None:
            raise BundleError(f"the engine uses the {scorer.name!r} scorer, which bundles cannot carry yet "
                              "(no bundle extension registered for it): export without it")
        sections.append((ext, scorer))

    bb = engine.backbone
    files: dict[str, bytes] = {}
    shots = []
    for shot in engine.shots:
        feats = engine.shot_features(shot.id)
        for s in engine.window_scales:
            engine.scale_features(feats, s)  # add_shot computed them; a no-op
        rec = {"id": shot.id, "kind": shot.kind, "role": shot.role, "defect_type": shot.defect_type,
               "size_hw": list(shot.size_hw), "image": f"shots/{shot.id}.png", "features": {}}
        files[rec["image"]] = _png(engine.shot_image(shot.id))
        if shot.mask is not None:
            rec["mask"] = f"masks/{shot.id}.png"
            files[rec["mask"]] = _png(np.asarray(shot.mask, bool).astype(np.uint8) * 255)
        for kind in FEATURE_KINDS:
            name = f"features/{shot.id}/{kind}.npy"
            files[name] = _npy(getattr(feats.encoding, kind).numpy())
            rec["features"][kind] = name
        for s, t in sorted(feats.windows.items()):
            name = f"features/{shot.id}/windows@{s}.npy"
            files[name] = _npy(t.numpy())
            rec["features"][f"windows@{s}"] = name
        shots.append(rec)
    files["text/embeddings.npy"] = _npy(engine.text_embeddings().numpy())
    extensions = {}
    for ext, scorer in sections:
        meta, ext_files = ext.export(engine, scorer)
        extensions[ext.name] = {"scorer": scorer.name, "meta": meta,
                                "files": sorted(f"ext/{ext.name}/{k}" for k in ext_files)}
        files.update({f"ext/{ext.name}/{k}": v for k, v in ext_files.items()})

    cfg = engine.config
    manifest = {
        "format": FORMAT, "version": VERSION, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fsad_version": __version__, "project": project,
        "model": {"clip": {"id": bb.spec.id, "model_id": bb.model_id, "arch": cfg.clip_model,
                           "pretrained": cfg.clip_pretrained, "profile": cfg.profile, "source": bb.spec.source,
                           "file_sha256": bb.spec.sha256, "weights_sha256": backbone_sha256(bb)}},
        "profile": cfg.profile, "precision": bb.precision_name, "grid": list(bb.grid),
        "config": {"scales": list(cfg.scales), "temperature": cfg.temperature, "mask_coverage": cfg.mask_coverage,
                   "pool_in_normal_memory": cfg.pool_in_normal_memory},
        "window_scales": list(engine.window_scales),
        "class_name": engine.class_name,
        "shots": shots,
        "text_embeddings": {"file": "text/embeddings.npy", "class_name": engine.class_name},
        "components": names,
        "weights": wset.to_dict(),
        "threshold": {"value": threshold, "margin": margin, "source": threshold_source,
                      "verdict_rule": "uncertain if abs(score - value) < margin, else NG if score >= value, else OK (fsad_core.calibration.verdict)",
                      "calibration": dict(calibration or {})},
        "extensions": extensions,
        "files": {k: _sha(v) for k, v in sorted(files.items())},
    }
    try:
        json.dumps(manifest["threshold"]["calibration"])
    except (TypeError, ValueError) as exc:
        raise BundleError(f"the calibration record is not JSON-serialisable: {exc}") from None
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=1), compress_type=zipfile.ZIP_DEFLATED)
            for name, data in files.items():
                z.writestr(name, data)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# -- load ------------------------------------------------------------------------------------------------
@dataclass
class LoadedBundle:
    """What an engine built by `load_bundle` scores with (`engine.bundle`)."""

    path: str
    manifest: dict = field(repr=False)
    weights: object = None  # WeightSet
    threshold: float = 0.0
    margin: float = 0.0

    @property
    def calibration(self) -> dict:
        return dict(self.manifest["threshold"].get("calibration") or {})

    def verdict(self, score: float) -> str:
        return verdict(score, self.threshold, self.margin)

    def summary(self) -> dict:
        """What the service's GET /bundle shows: everything but the per-file checksums."""
        m = self.manifest
        shots = m["shots"]
        return {
            "path": self.path, "format": m["format"], "version": m["version"], "created_at": m.get("created_at"),
            "fsad_version": m.get("fsad_version"), "project": m.get("project"), "model": m["model"],
            "profile": m["profile"], "precision": m["precision"], "class_name": m["class_name"],
            "scales": m["config"]["scales"], "components": m["components"], "weights": m["weights"],
            "threshold": {k: v for k, v in m["threshold"].items()},
            "shots": {"normal": sum(s["kind"] == "normal" and s["role"] == "memory" for s in shots),
                      "anomalous": sum(s["kind"] == "anomalous" for s in shots),
                      "validation": sum(s["role"] == "validation" for s in shots)},
            "extensions": sorted(m.get("extensions") or {}),
        }


def read_manifest(path) -> dict:
    """The manifest of a bundle file, format and version checked (BundleError naming what differs)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"no bundle file at {str(p)!r}")
    try:
        with zipfile.ZipFile(p) as z:
            m = json.loads(z.read("manifest.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise BundleError(f"{str(p)!r} is not an fsad-studio inspection bundle (a zip with a manifest.json): "
                          f"{exc.__class__.__name__}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f"{str(p)!r} is not an fsad-studio inspection bundle (manifest format "
                          f"{m.get('format') if isinstance(m, dict) else None!r}, expected {FORMAT!r})")
    if m.get("version") != VERSION:
        raise BundleError(f"{str(p)!r} is bundle format version {m.get('version')!r} (written by fsad-studio "
                          f"{m.get('fsad_version', '?')}); this fsad-studio reads version {VERSION}: export the "
                          "bundle again with this version, or score with the version that wrote it")
    return m


def _check_extensions(p: Path, m: dict) -> None:
    """Raise BundleError when the manifest holds extension sections this installation cannot load."""
    unknown = [k for k in (m.get("extensions") or {}) if k not in EXTENSIONS]
    if unknown:
        raise BundleError(f"{str(p)!r} holds section(s) {', '.join(unknown)} that this installation cannot load "
                          f"(known: {', '.join(sorted(EXTENSIONS)) or 'none'}); scores without them would differ")


def _engine_config(m: dict, *, device: str, cache_dir: str | None, clip_pretrained: str | None):
    """The EngineConfig a manifest was exported with, run on `device` with weights cached in `cache_dir`."""
    from .config import EngineConfig

    clip = m["model"]["clip"]
    return EngineConfig(clip_model=clip["arch"], clip_pretrained=clip_pretrained or clip["pretrained"],
                        profile=m["profile"], scales=tuple(m["config"]["scales"]), precision=m["precision"],
                        device=device, temperature=m["config"]["temperature"],
                        mask_coverage=m["config"]["mask_coverage"],
                        pool_in_normal_memory=m["config"]["pool_in_normal_memory"], cache_dir=cache_dir)


def _model_differences(m: dict, backbone) -> list[str]:
    """How the loaded `backbone` differs from the model in manifest `m` (empty: the same model)."""
    clip, prec = m["model"]["clip"], m["precision"]
    diffs = []
    if backbone.model_id != clip["model_id"]:
        diffs.append(f"model {clip['model_id']} in the bundle, {backbone.model_id} here")
    if backbone.precision_name != prec:
        diffs.append(f"precision {prec} in the bundle, {backbone.precision_name} here")
    if list(backbone.grid) != list(m["grid"]):
        diffs.append(f"patch grid {m['grid']} in the bundle, {list(backbone.grid)} here")
    here = backbone_sha256(backbone)
    if here != clip["weights_sha256"]:
        diffs.append(f"weights sha256 {clip['weights_sha256'][:16]}… in the bundle, {here[:16]}… here "
                     "(another checkpoint of the same architecture)")
    return diffs


def load_bundle(path, *, device: str = "auto", cache_dir: str | None = None, clip_pretrained: str | None = None,
                backbone=None):
    """An Engine that scores exactly as the engine that exported `path` did (module docstring).

    device / cache_dir: where to run and where the model weights are cached on this machine.
    clip_pretrained: a local checkpoint file standing in for the bundle's pretrained tag or path (the
        weights' checksum must still match). backbone: an already loaded ClipBackbone to reuse.
    Raises BundleError for another format version, a different model, precision or patch grid, or a
    damaged file; ModelUnavailableError when the model's weights are not available here.
    """
    from .aggregate import WeightSet
    from .engine import Engine, Features
    from .images import to_mask_array, to_rgb_array
    from .models.clip import ClipBackbone, Encoding
    from .models.registry import ModelUnavailableError

    p = Path(path).expanduser()
    m = read_manifest(p)
    clip = m["model"]["clip"]
    _check_extensions(p, m)
    config = _engine_config(m, device=device, cache_dir=cache_dir, clip_pretrained=clip_pretrained)
    if backbone is None:
        try:
            backbone = ClipBackbone(config)
        except ModelUnavailableError as exc:
            raise ModelUnavailableError(f"the bundle scores with {clip['id']} ({m['profile']} profile), whose weights "
                                        f"are not available here: {exc}", spec=exc.spec, reason=exc.reason,
                                        detail=exc.detail) from None
    diffs = _model_differences(m, backbone)
    if diffs:
        raise BundleError(f"{str(p)!r} was built for a different model than the one loaded here: {'; '.join(diffs)}")

    engine = Engine(config, backbone=backbone)
    with zipfile.ZipFile(p) as z:
        sums = m.get("files") or {}

        def read(name: str) -> bytes:
            try:
                data = z.read(name)
            except KeyError:
                raise BundleError(f"{str(p)!r} is damaged: {name} is missing") from None
            if sums.get(name) != _sha(data):
                raise BundleError(f"{str(p)!r} is damaged: {name} does not match its checksum")
            return data

        engine.set_class_name(m["class_name"])
        text = m["text_embeddings"]
        if text["class_name"] == engine.class_name:
            backbone.text_cache.setdefault((backbone.model_id, engine.class_name), _from_npy(read(text["file"])))
        for rec in m["shots"]:
            rgb = to_rgb_array(read(rec["image"]))
            enc = Encoding(*(_from_npy(read(rec["features"][k])) for k in FEATURE_KINDS))
            windows = {int(k.split("@")[1]): _from_npy(read(v)) for k, v in rec["features"].items()
                       if k.startswith("windows@")}
            feats = Features(rec["id"], tuple(rec["size_hw"]), enc, windows)
            mask = to_mask_array(read(rec["mask"]), tuple(rec["size_hw"])) if rec.get("mask") else None
            engine.add_shot(rgb, kind=rec["kind"], mask=mask, defect_type=rec.get("defect_type"),
                            role=rec.get("role", "memory"), features=feats)
        for name, sec in (m.get("extensions") or {}).items():
            EXTENSIONS[name].load(engine, sec.get("meta") or {}, lambda rel, _n=name: read(f"ext/{_n}/{rel}"))
    names = list(engine.component_names)
    if names != list(m["components"]):
        raise BundleError(f"{str(p)!r}: the loaded engine computes {', '.join(names)}, the bundle was made with "
                          f"{', '.join(m['components'])}")
    wset = WeightSet.from_dict(m["weights"])
    engine.default_weights = wset
    thr = m["threshold"]
    engine.bundle = LoadedBundle(str(p), m, wset, float(thr["value"]), float(thr.get("margin", 0.0)))
    return engine
