"""Batch inspection of a folder of unlabelled images: scores, verdicts, overlays, an HTML report.

Resumable: every scored image is appended to `DIR/results.jsonl` and flushed at once, so after a crash
(or Ctrl-C) the next run with the same output folder skips what is already there. `DIR/run.json`
records what the scores depend on (model, shots, class name, weights); resuming with different
settings is refused, since mixing two runs' scores in one ranking would be wrong: pass
`restart=True` (CLI `--restart`) to start over. The threshold is not part of that signature: verdicts
are re-derived from the stored scores whenever the CSV and HTML are written.

Outputs in DIR:
    results.jsonl   one JSON object per image (path, score, components, overlay, error)
    scores.csv      path, score, verdict (OK | NG | uncertain), one column per component (most anomalous
                    first), error, path_b64
    overlays/*.png  the aggregate map over each image (one file per distinct input path)
    report.html     self-contained (thumbnails inlined as data URIs), sortable by score
    run.json        settings and the threshold used (written atomically)

File names are bytes: `path` is the input's path relative to the input folder in the escaped form of
`fsad_core.names.display` (a name that is not UTF-8 or holds control characters is never written
raw), with `path_b64` (its exact bytes) for the names that needed escaping, so every output is valid
UTF-8 and lossless.

The output folder is never clobbered: it must be new, empty, or hold an earlier run of this tool
(`run.json` + `results.jsonl`); a folder with other files is refused unless `force=True`, and a
folder that contains the input folder is refused (a sub-folder of the input is fine: it is skipped).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from . import names
from .evaluate import IMAGE_EXTS, image_files
from .fileio import write_atomic
from .progress import Progress, steps

if TYPE_CHECKING:
    from .calibration import Calibration

__all__ = ["list_images", "run_batch", "BatchSummary", "write_outputs", "auto_threshold", "auto_calibration",
           "threshold_source", "read_results", "read_shot_folder", "ShotFolder", "is_output_folder",
           "check_batch_weights", "check_output_folder", "overlay_name", "OUTPUT_NAMES"]

OUTPUT_NAMES = ("run.json", "results.jsonl", "scores.csv", "report.html", "overlays")


def is_output_folder(folder) -> bool:
    """True for a folder `run_batch` wrote (it holds both run.json and results.jsonl)."""
    folder = Path(folder)
    return (folder / "run.json").is_file() and (folder / "results.jsonl").is_file()


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def list_images(folder, recursive: bool = True, exclude: Sequence = ()) -> list[Path]:
    """Image files under `folder` (by extension), sorted; hidden files and our own outputs excluded.

    Our own outputs: the folders in `exclude` (run_batch passes its output folder, which may lie inside
    the input folder) and any folder holding an earlier batch run (`is_output_folder`), so overlays
    are never scored as inputs.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {str(folder)!r} does not exist")
    skip = [Path(e).resolve() for e in exclude]
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        d = Path(dirpath)
        if d != folder and (d.name.startswith(".") or is_output_folder(d) or d.resolve() in skip):
            dirnames[:] = []
            continue
        dirnames[:] = sorted(x for x in dirnames if not x.startswith(".")) if recursive else []
        out.extend(d / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTS
                   and (d / f).is_file())
    return sorted(out)


@dataclass(frozen=True)
class ShotFolder:
    """Shots read from an MVTec-AD-layout folder (`read_shot_folder`)."""

    root: Path
    class_name: str
    normal: tuple[Path, ...]
    anomalous: tuple[tuple[Path, Path, str], ...]  # (image, mask, defect type)
    ignored: tuple[str, ...] = ()  # what was found and not used, in words


_LAYOUT_HELP = ("train/good/*.png (normal shots) and/or test/<defect type>/*.png with their masks in "
                "ground_truth/<defect type>/<name>_mask.png (what `python -m storage export` writes; test/good "
                "is not used for shots)")


def _read_shots_manifest(mf: Path) -> dict:
    """fsad_project.json of an export, checked where `read_shot_folder` uses it: unreadable JSON,
    or a `class_name` / `folders` of the wrong type, is a ValueError naming the file and the field
    (not a silent fallback to folder names, which would change the defect types' names)."""
    if not mf.is_file():
        return {}
    where = names.display(str(mf))
    try:
        manifest = json.loads(mf.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{where} is not readable JSON ({exc}); fix it, or delete it to read the folder "
                         "by its layout alone") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{where} must hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("class_name") is not None and not isinstance(manifest["class_name"], str):
        raise ValueError(f"{where}: field 'class_name' must be text, got {type(manifest['class_name']).__name__}")
    folders = manifest.get("folders")
    text_or_none = (str, type(None))  # None: the folder of unlabelled anomalous shots
    if folders is not None and (not isinstance(folders, dict) or not all(
            isinstance(k, str) and isinstance(v, text_or_none) for k, v in folders.items())):
        raise ValueError(f"{where}: field 'folders' must map folder names to defect-type names (text to text)")
    return manifest


def read_shot_folder(root) -> ShotFolder:
    """Shots from an MVTec-AD-layout folder, as `python -m storage export` writes one:
    train/good/* are normal shots; test/<type>/* (not test/good) are anomalous shots of defect type
    <type> with the mask ground_truth/<type>/<stem>_mask.<ext> (or <stem>.<ext>); one without a mask
    is skipped and listed in `ignored` (as `--project` skips unpainted shots). The defect types'
    exact names and the class name come from the export's fsad_project.json when there is one; without
    it, the folder names (and the folder's own name for the class). Raises FileNotFoundError /
    ValueError naming what is missing when the folder is not in this layout or holds no shot."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"shots folder {str(root)!r} does not exist")
    manifest = _read_shots_manifest(root / "fsad_project.json")
    type_names = manifest.get("folders") or {}
    train, test = root / "train", root / "test"
    if not train.is_dir() and not test.is_dir():
        found = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir()
                                 if not p.name.startswith("."))[:10]) or "nothing"
        raise ValueError(f"{str(root)!r} is not an MVTec-AD-layout shots folder (found: {found}); expected "
                         f"{_LAYOUT_HELP}")
    normal = tuple(image_files(train / "good"))
    ignored = []
    if train.is_dir():
        ignored += [f"train/{d.name}/" for d in sorted(train.iterdir()) if d.is_dir() and d.name != "good"]
    anomalous = []
    missing = []
    for d in sorted(p for p in test.iterdir() if p.is_dir()) if test.is_dir() else []:
        if d.name == "good":
            ignored.append("test/good/ (normal test images are not shots)")
            continue
        for img in image_files(d):
            cands = [root / "ground_truth" / d.name / f"{stem}{ext}" for stem in (f"{img.stem}_mask", img.stem)
                     for ext in IMAGE_EXTS]
            mask = next((c for c in cands if c.is_file()), None)
            if mask is None:  # a defect not painted yet (the studio exports those too): not a shot
                missing.append(names.display(f"{img.relative_to(root).as_posix()} (no ground_truth/{d.name}/"
                                             f"{img.stem}_mask.png)"))
                continue
            anomalous.append((img, mask, str(type_names.get(d.name) or names.display(d.name))))
    if missing:
        ignored.append(f"{len(missing)} anomalous image(s) without a mask, not used as shots: {', '.join(missing[:5])}"
                       + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if not normal and not anomalous:
        raise ValueError(f"no shots in {str(root)!r}" + (f" ({'; '.join(ignored)})" if ignored else "")
                         + f"; expected {_LAYOUT_HELP}")
    class_name = manifest.get("class_name") if isinstance(manifest.get("class_name"), str) else None
    return ShotFolder(root, class_name or root.name, normal, tuple(anomalous), tuple(ignored))


@dataclass(frozen=True)
class BatchSummary:
    n_images: int
    n_scored: int  # scored in this call
    n_resumed: int  # already in results.jsonl, skipped
    n_failed: int  # unreadable images (recorded with their error; retried on the next run)
    n_anomalous: int  # score at or above the threshold (verdict NG, or "uncertain" within the margin)
    threshold: float
    threshold_source: str  # "given" | "heuristic: ..." | "conformal: ..." | "labelled: ..." (threshold_source)
    out_dir: str
    csv_path: str
    html_path: str
    seconds: float


def read_results(out_dir) -> list[dict]:
    """Records of results.jsonl; a torn last line (crash mid-write) is ignored."""
    p = Path(out_dir) / "results.jsonl"
    out = []
    if p.is_file():
        for line in p.read_bytes().decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("path"), str):
                out.append(rec)
    return out


def record_name(rec: Mapping) -> str:
    """The exact input path (relative) of a results.jsonl record (`path` + `path_b64`)."""
    try:
        return names.from_record(rec["path"], rec.get("path_b64"))
    except ValueError:
        return rec["path"]


def auto_threshold(engine, weights=None, images: Mapping[str, object] | None = None,
                   m: int = 5, seed: int = 0) -> tuple[float, str]:
    """(threshold, source) of the shots-only heuristic (`fsad_core.calibration`, mode "heuristic"):
    F1-max on augmented copies of the normal and anomalous shots, or just above the highest normal
    copy without an anomalous shot; a ValueError asking for a threshold without a normal shot."""
    cal = auto_calibration(engine, weights, images=images, m=m, seed=seed)
    return cal.threshold, threshold_source(cal)


def auto_calibration(engine, weights=None, images: Mapping[str, object] | None = None, m: int = 5, seed: int = 0):
    """The shots-only `Calibration` (see `fsad_core.calibration.calibrate_engine`)."""
    from .calibration import calibrate_engine

    return calibrate_engine(engine, weights=weights, mode="heuristic", shot_images=images, m=m, seed=seed)


def threshold_source(cal) -> str:
    """How a Calibration was obtained, in a few words (the CSV/HTML/CLI summary)."""
    if cal.mode == "heuristic":
        return "heuristic: validation F1-max" if cal.n_ng else "heuristic: normal copies max"
    if cal.mode == "conformal":
        return f"conformal: {cal.n_ok} OK images, false alarms <= {cal.alpha:.3g} at {cal.confidence:.0%}"
    if cal.mode == "labelled":
        return f"labelled: {cal.n_ok} OK + {cal.n_ng} NG images"
    return cal.mode


def check_batch_weights(engine, weights):
    """Weights validated before any image is scored -> a `WeightSet` (None = the paper preset):
    non-negative, and a positive weight on at least one component these shots produce (otherwise
    every image would fail to aggregate)."""
    from .aggregate import WeightSet, resolve_weights

    names = list(engine.component_names)
    try:
        return resolve_weights(weights, names, strict=False)
    except ValueError as exc:
        w = weights.weights if isinstance(weights, WeightSet) else weights
        given = ", ".join(w) if isinstance(w, Mapping) else str(w)
        raise ValueError(f"the weights give no positive weight to any component these shots produce "
                         f"(weights for: {given or 'none'}; components: {', '.join(names)}): {exc}") from None


def _signature(engine, weights) -> dict:
    bb = getattr(engine, "backbone", None)
    ws = weights.to_dict() if weights is not None and hasattr(weights, "to_dict") else weights
    if isinstance(ws, dict) and ws.get("name") == "custom" and ws.get("rule") == "mean_of_scores" \
            and ws.get("map_weights") is None:
        ws = {k: float(v) for k, v in sorted(ws["weights"].items())}  # plain weights read as before
    return {
        "model": getattr(bb, "model_id", "?"), "profile": engine.config.profile,
        "precision": getattr(bb, "precision_name", "?"), "scales": list(engine.config.scales),
        "class_name": engine.class_name,
        "shots": sorted(f"{s.kind}:{s.id}" for s in engine.shots),
        "mask_hashes": sorted(_mask_hash(s.mask) for s in engine.shots if s.mask is not None),
        "weights": ws,
        "components": list(engine.component_names),
    }


def _mask_hash(mask) -> str:
    import hashlib

    return hashlib.sha256(np.packbits(np.asarray(mask, bool)).tobytes()).hexdigest()[:16]


def overlay_name(rel: str) -> str:
    """A file name for the overlay of input `rel`, unique per distinct `rel` (a digest of its exact
    bytes): `a/b.png` and `a__b.png` no longer share `a__b.png.png`. ASCII letters, digits and
    `._-` only, at most ~120 characters.

    >>> overlay_name("a/b.png") != overlay_name("a__b.png")
    True
    >>> overlay_name("bad\\udcff.png")
    'bad_xff.png-...'
    """
    import hashlib
    import re

    digest = hashlib.sha256(names.fs_bytes(rel)).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", names.display(rel).replace("/", "__").replace("\\", "_"))
    stem = stem.strip("._")[-100:] or "image"
    return f"{stem}-{digest}.png"


def _folder_listing(folder: Path, k: int = 6) -> str:
    items = sorted(names.display(p.name) + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


def _read_run_json(out: Path) -> dict | None:
    """DIR/run.json of an earlier run, None when there is none; ValueError when it is torn or foreign."""
    p = out / "run.json"
    if not p.exists():
        return None
    try:
        meta = json.loads(p.read_bytes().decode("utf-8"))
        why = "" if isinstance(meta, dict) and isinstance(meta.get("signature"), dict) else "no run signature"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = f"{exc.__class__.__name__}: {exc}"
    if why:
        raise ValueError(f"{names.display(str(p))} is damaged or was not written by `inspect` ({why}); "
                         "use another --out folder, or --restart to discard that run (--force if the folder is "
                         "not an earlier inspect run)")
    return meta


def check_output_folder(input_dir, out_dir, *, restart: bool = False, force: bool = False) -> str:
    """Decide whether `out_dir` may receive a run's outputs, before anything is written.

    Returns "new" (missing or empty), "resume" (an earlier run: run.json + results.jsonl) or "replace"
    (restart / force: our files there are replaced). Raises ValueError for an output folder that is
    the input folder or contains it, a file, a non-empty folder that holds no earlier run (unless
    `force`), and a torn or foreign run.json (unless `restart` on our own layout, or `force`)."""
    input_dir, out = Path(input_dir), Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output folder '{names.display(str(out))}' is a file")
    if out.resolve() == input_dir.resolve():
        raise ValueError("the output folder is the input folder: write the outputs to another folder "
                         "(a sub-folder of the input is fine; it is skipped)")
    if input_dir.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"the output folder '{names.display(str(out))}' contains the input folder "
                         f"'{names.display(str(input_dir))}': the outputs would land among your files; write them "
                         "to a new folder outside the input (or to a sub-folder of it, which is skipped)")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    entries = {p.name for p in out.iterdir()}
    ours = (out / "run.json").exists() and (out / "results.jsonl").is_file()
    if not ours and not force and not (entries <= {"overlays"} and not any((out / "overlays").iterdir())):
        raise ValueError(f"the output folder '{names.display(str(out))}' is not empty and holds no earlier inspect "
                         f"run (found: {_folder_listing(out)}); choose a new folder, or pass --force to write into it "
                         f"(its {', '.join(OUTPUT_NAMES)} would be replaced)")
    if force and not ours:
        return "replace"
    if restart:
        return "replace"
    if (out / "run.json").exists():
        _read_run_json(out)  # torn / foreign: a clear error now, not a traceback later
        return "resume"
    return "new"


def score_record(engine, path: Path, rel: str, weights, overlays: bool) -> tuple[dict, bytes]:
    """One image -> (the record `run_batch` writes for it, the overlay PNG bytes or b"")."""
    from PIL import Image

    from .images import ImageError, to_rgb_array
    from .overlay import overlay

    rec: dict = names.record(rel)  # the escaped name, plus its exact bytes when it needed escaping
    png = b""
    try:
        rgb = to_rgb_array(path)
        result = engine.score(rgb)
        agg = result.aggregate(weights)
        rec.update(score=float(agg.score), size=list(result.size_hw),
                   components={k: float(v.score) for k, v in result.components.items()})
        if overlays:
            buf = io.BytesIO()
            Image.fromarray(overlay(rgb, agg.map)).save(buf, format="PNG")
            png = buf.getvalue()
            rec["overlay"] = f"overlays/{overlay_name(rel)}"
    except (ImageError, OSError) as exc:  # an unreadable image: recorded, retried on the next run
        rec = {**names.record(rel), "error": names.display(str(exc))}
    return rec, png


def run_batch(engine, input_dir, out_dir, weights: Mapping[str, float] | None = None,
              threshold: "float | str | Calibration" = "auto", overlays: bool = True, restart: bool = False,
              images: Mapping[str, object] | None = None, files: Sequence[Path] | None = None,
              progress: Progress | None = None, force: bool = False) -> BatchSummary:
    """Score every image under `input_dir` with `engine`'s shots; write DIR's outputs (module docstring).

    weights: aggregation weights (None = the paper's eq. 2); threshold: a number, "auto" (the shots-only
    heuristic, `auto_calibration`; needs the shots' pixels in `images` when the engine does not keep
    them) or a `fsad_core.calibration.Calibration` (e.g. conformal, from held-out OK images).
    progress(fraction, "i/n path") after each image (`fsad_core.progress`; the path in its escaped
    display form). `force`: write
    into a non-empty folder that holds no earlier run (see `check_output_folder`). Returns a BatchSummary.
    """
    t0 = time.perf_counter()
    input_dir, out = Path(input_dir), Path(out_dir)
    state = check_output_folder(input_dir, out, restart=restart, force=force)
    # our own outputs are never inputs, even when the output folder lies inside the input folder
    paths = [Path(p) for p in (files if files is not None else list_images(input_dir, exclude=[out]))
             if not _inside(Path(p), out)]
    weights = check_batch_weights(engine, weights)
    sig = _signature(engine, weights)
    run_json = out / "run.json"
    old_meta = _read_run_json(out) if state == "resume" else None
    if old_meta is not None and old_meta["signature"] != sig:
        old = old_meta["signature"]
        changed = [k for k in sig if old.get(k) != sig[k]]
        raise ValueError(f"'{names.display(str(out))}' holds a batch run with different settings "
                         f"({', '.join(changed)}); use another output folder, or --restart to discard it")
    from .calibration import Calibration

    cal = None
    if isinstance(threshold, Calibration):
        cal = threshold
    elif isinstance(threshold, str):
        if threshold != "auto":
            raise ValueError(f"threshold must be a number or 'auto', got {threshold!r}")
        old_meta = old_meta or {}
        if old_meta.get("threshold_source", "given") != "given" and isinstance(old_meta.get("calibration"), dict):
            cal = Calibration.from_dict(old_meta["calibration"])  # resume: same threshold
        else:
            cal = auto_calibration(engine, weights, images=images)
    if cal is not None:
        thr, source, margin = cal.threshold, threshold_source(cal), cal.margin
    else:
        thr, source, margin = float(threshold), "given", 0.0
    if state == "replace":
        for p in (out / "results.jsonl", run_json):
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)  # only now: nothing is created when the settings are refused
    (out / "overlays").mkdir(exist_ok=True)
    write_atomic(run_json, json.dumps({"signature": sig, "threshold": thr, "threshold_source": source,
                                       "margin": margin, "calibration": None if cal is None else cal.to_dict(),
                                       "input": names.display(str(input_dir))}, indent=2).encode("utf-8"))
    done = {record_name(r) for r in read_results(out) if not r.get("error")}
    n_resumed = n_scored = n_failed = 0
    total = len(paths)
    jsonl = out / "results.jsonl"
    with open(jsonl, "a") as log:
        if log.tell() > 0 and not jsonl.read_bytes().endswith(b"\n"):
            log.write("\n")  # end a line torn by a crash, so the next record starts clean
        for i, p in enumerate(paths):
            rel = p.relative_to(input_dir).as_posix() if p.is_relative_to(input_dir) else str(p)
            if rel in done:
                n_resumed += 1
            else:
                rec, png = score_record(engine, p, rel, weights, overlays)
                if rec.get("overlay"):
                    (out / rec["overlay"]).write_bytes(png)
                n_failed += "error" in rec
                n_scored += "error" not in rec
                log.write(json.dumps(rec) + "\n")
                log.flush()
                os.fsync(log.fileno())
            steps(progress, i + 1, total, names.display(rel))
    csv_path, html_path, n_anom = write_outputs(out, input_dir, thr, source, margin=margin)
    return BatchSummary(n_images=total, n_scored=n_scored, n_resumed=n_resumed, n_failed=n_failed,
                        n_anomalous=n_anom, threshold=thr, threshold_source=source, out_dir=str(out),
                        csv_path=str(csv_path), html_path=str(html_path), seconds=time.perf_counter() - t0)


def _latest(records: list[dict]) -> list[dict]:
    """One record per path, the last written (a retried failure replaces its error)."""
    by = {}
    for r in records:
        by[record_name(r)] = r
    return list(by.values())


def _thumb(path: Path, side: int = 160) -> str:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except (OSError, ValueError):
        return ""


def _b64_attr(r: Mapping) -> str:
    """The exact bytes of an escaped name, kept in the report (data-path-b64) for lossless reading."""
    return f' data-path-b64="{html.escape(r["path_b64"])}"' if r.get("path_b64") else ""


def write_outputs(out_dir, input_dir, threshold: float, threshold_source: str = "given",
                  margin: float = 0.0) -> tuple[Path, Path, int]:
    """scores.csv and report.html from results.jsonl at `threshold` (verdicts OK / NG, "uncertain"
    within `margin` of it: `fsad_core.calibration.verdict`); returns (csv, html, n_at_or_above)."""
    from .calibration import verdict as _verdict

    out, input_dir = Path(out_dir), Path(input_dir)
    recs = _latest(read_results(out))
    ok = sorted((r for r in recs if "score" in r), key=lambda r: -r["score"])
    bad = [r for r in recs if "score" not in r]
    comps = list(dict.fromkeys(k for r in ok for k in r["components"]))
    csv_path = out / "scores.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow(["path", "score", "verdict", *comps, "error", "path_b64"])
        for r in ok:
            wr.writerow([r["path"], f"{r['score']:.6f}", _verdict(r["score"], threshold, margin),
                         *[f"{r['components'].get(c, float('nan')):.6f}" for c in comps], "", r.get("path_b64", "")])
        for r in bad:
            wr.writerow([r["path"], "", "error", *[""] * len(comps), names.display(r.get("error", "")),
                         r.get("path_b64", "")])
    n_anom = sum(r["score"] >= threshold for r in ok)
    rows = []
    for k, r in enumerate(ok):
        verdict = _verdict(r["score"], threshold, margin)
        img = _thumb(input_dir / record_name(r))
        ov = _thumb(out / r["overlay"]) if r.get("overlay") else ""
        top = max(r["components"].items(), key=lambda kv: kv[1])[0] if r["components"] else ""
        rows.append(
            f'<tr class="{verdict}" data-score="{r["score"]:.6f}"><td>{k + 1}</td>'
            f'<td{_b64_attr(r)}>{html.escape(r["path"])}</td><td>{r["score"]:.4f}</td><td class="v">{verdict}</td>'
            f'<td>{html.escape(top)}</td><td><img src="{img}" alt=""></td><td><img src="{ov}" alt=""></td></tr>')
    for r in bad:
        rows.append(f'<tr class="error"><td></td><td{_b64_attr(r)}>{html.escape(r["path"])}</td><td></td>'
                    f'<td class="v">error</td><td colspan="3">{html.escape(names.display(r.get("error", "")))}</td></tr>')
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fsad-studio batch inspection</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: left; }}
tr.NG td.v {{ color: #b00; font-weight: bold; }} tr.OK td.v {{ color: #070; }} tr.uncertain td.v {{ color: #a60; }}
tr.error td.v {{ color: #a60; }} img {{ max-height: 120px; }}
</style></head><body>
<h1>Batch inspection</h1>
<p>{len(ok)} images scored, <b>{n_anom}</b> at or above threshold {threshold:.4f} ({html.escape(threshold_source)};
verdict "uncertain" within {margin:.4g} of it),
{len(bad)} unreadable. Input: {html.escape(names.display(str(input_dir)))}. Most anomalous first; heatmap colours are scaled per image.</p>
<table><thead><tr><th>#</th><th>image</th><th>score</th><th>verdict</th><th>top component</th><th>image</th>
<th>aggregate map</th></tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
    html_path = out / "report.html"
    html_path.write_text(doc, encoding="utf-8")
    return csv_path, html_path, int(n_anom)
