"""Evaluation on MVTec-AD / VisA style folders with the papers' protocol and metrics.

Protocol (Abdali et al. 2025; WinCLIP; One-to-Normal):
- K normal shots are drawn with the seed from `train/good`;
- J anomalous shots are drawn with the same seed from the anomalous *test* images (all defect types
  pooled) together with their ground-truth masks, and are then excluded from the evaluation;
- the remaining test images (at most `max_test`, a stratified seeded subset) are scored with every
  component; image and pixel metrics are computed for the aggregate and for each component.

Pixel metrics are computed on maps and masks resized so that the longer side is at most
`pixel_size` (256 by default; maps bilinear, masks nearest), which bounds memory at about
4 bytes x 256^2 x (components + 1) per test image; the engine's maps are upsampled from a 15x15
patch grid, so nothing is lost at 256 px.

Layouts:
- MVTec AD: ROOT/CAT/train/good/*.png, ROOT/CAT/test/<type>/*.png,
  ROOT/CAT/ground_truth/<type>/<stem>_mask.png (also what `fsad_core.synth` writes);
- VisA: ROOT/split_csv/1cls.csv (columns object, split, label, image, mask; paths relative to ROOT),
  as distributed with the dataset; defect types are not in the split, so they read "anomaly".
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .metrics import METRIC_NAMES, evaluate_all
from .names import display, raw_b64
from .progress import Progress, steps

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VISA_SPLIT = Path("split_csv") / "1cls.csv"

__all__ = ["Sample", "Split", "load_split", "draw_protocol", "EvalRun", "evaluate_category", "write_run",
           "write_summary", "write_weights_table", "summary_rows", "list_categories", "weight_set"]


@dataclass(frozen=True)
class Sample:
    """One image of a dataset. label: 1 anomalous, 0 good; mask_path: None for good images."""

    path: str
    label: int
    defect_type: str
    mask_path: str | None = None


@dataclass(frozen=True)
class Split:
    category: str
    train: tuple[Sample, ...]  # good training images (the normal shot pool)
    test: tuple[Sample, ...]
    notes: tuple[str, ...] = ()  # e.g. anomalous images without a ground-truth mask


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder` (by extension), sorted; hidden files (e.g. macOS `._x.png`)
    and sub-folders are left out; [] when the folder does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not p.name.startswith("."))


def detect_layout(root: Path) -> str:
    return "visa" if (Path(root) / VISA_SPLIT).is_file() else "mvtec"


def list_categories(root) -> list[str]:
    """Categories under ROOT: folders with train/ and test/ (MVTec) or the `object`s of VisA's split."""
    root = Path(root)
    if detect_layout(root) == "visa":
        return sorted({r["object"] for r in _visa_rows(root)})
    return sorted(p.name for p in root.iterdir() if (p / "train").is_dir() and (p / "test").is_dir()) \
        if root.is_dir() else []


def load_split(root, category: str, layout: str = "auto") -> Split:
    """The train/test samples of one category (see the module docstring for the layouts)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "visa":
        return _load_visa(root, category)
    if layout != "mvtec":
        raise ValueError(f"layout must be auto, mvtec or visa, got {layout!r}")
    d = root / category
    if not (d / "train" / "good").is_dir() or not (d / "test").is_dir():
        found = ", ".join(list_categories(root)) or "none"
        raise FileNotFoundError(f"{str(d)!r} is not an MVTec-layout category (needs train/good and test/); "
                                f"categories found under {str(root)!r}: {found}")
    train = tuple(Sample(str(p), 0, "good") for p in image_files(d / "train" / "good"))
    test: list[Sample] = []
    unmasked = []
    for tdir in sorted(p for p in (d / "test").iterdir() if p.is_dir()):
        for p in image_files(tdir):
            if tdir.name == "good":
                test.append(Sample(str(p), 0, "good"))
                continue
            m = d / "ground_truth" / tdir.name / f"{p.stem}_mask.png"
            if not m.is_file():  # image-label-only data: image metrics still work (see evaluate_category)
                unmasked.append(f"{tdir.name}/{p.name}")
                test.append(Sample(str(p), 1, tdir.name, None))
                continue
            test.append(Sample(str(p), 1, tdir.name, str(m)))
    if not train:
        raise FileNotFoundError(f"no training images in {str(d / 'train' / 'good')!r}")
    if not test:
        raise FileNotFoundError(f"no test images under {str(d / 'test')!r}")
    notes = ()
    if unmasked:
        n_bad = sum(s.label for s in test)
        notes = (f"{len(unmasked)} of {n_bad} anomalous test images have no ground-truth mask "
                 f"(ground_truth/<type>/<stem>_mask.png), e.g. {', '.join(unmasked[:3])}: pixel metrics "
                 + ("are skipped" if len(unmasked) == n_bad else "use only the images with a mask")
                 + "; anomalous shots are drawn from the masked ones",)
    return Split(category, train, tuple(test), notes)


VISA_COLUMNS = ("object", "split", "label", "image")  # and "mask" for anomalous rows


def _visa_rows(root: Path) -> list[dict]:
    """The rows of VisA's split CSV, checked: a missing column or an empty required field is a
    ValueError naming the file, the line and the field (never a KeyError)."""
    path = root / VISA_SPLIT
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in VISA_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{display(str(path))} has no column {', '.join(missing)} (its header: "
                                 f"{', '.join(reader.fieldnames or []) or 'empty'}); VisA's split_csv/1cls.csv has "
                                 f"{', '.join(VISA_COLUMNS)}, mask")
            rows = []
            for r in reader:
                empty = [c for c in VISA_COLUMNS if not (r.get(c) or "").strip()]
                if empty:
                    raise ValueError(f"{display(str(path))} line {reader.line_num}: field {empty[0]!r} is empty")
                rows.append(r)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{display(str(path))} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return rows


def _load_visa(root: Path, category: str) -> Split:
    train, test = [], []
    rows = [r for r in _visa_rows(root) if r["object"] == category]
    if not rows:
        raise FileNotFoundError(f"category {category!r} not in {root / VISA_SPLIT}; "
                                f"found: {', '.join(list_categories(root))}")
    for r in rows:
        anomalous = r["label"].strip().lower() in ("anomaly", "anomalous", "1")
        s = Sample(str(root / r["image"]), int(anomalous), "anomaly" if anomalous else "good",
                   str(root / r["mask"]) if anomalous and r.get("mask") else None)
        (train if r["split"].strip().lower() == "train" else test).append(s)
    train = [s for s in train if s.label == 0]
    return Split(category, tuple(train), tuple(test))


@dataclass(frozen=True)
class Protocol:
    normal_shots: tuple[Sample, ...]
    anomalous_shots: tuple[Sample, ...]
    test: tuple[Sample, ...]
    validation_normals: tuple[Sample, ...] = ()


def draw_protocol(split: Split, k: int, j: int, seed: int, max_test: int | None = None,
                  validation_normal: int = 0) -> Protocol:
    """Draw K normal shots (train) and J anomalous shots (test, excluded afterwards) with the seed,
    and `validation_normal` more normal images from the rest of train (validation-only shots; drawn
    with their own stream, so the K shots are the same with or without them)."""
    rng = np.random.default_rng([seed, sum(map(ord, split.category))])
    if k + validation_normal > len(split.train):
        raise ValueError(f"{k} normal shots (+ {validation_normal} for validation) asked but {split.category} has "
                         f"{len(split.train)} training images")
    anomalous = [s for s in split.test if s.label == 1 and s.mask_path]
    if j > len(anomalous):
        n_bad = sum(s.label for s in split.test)
        if n_bad > len(anomalous):  # image-label-only data: say why, and what to do
            raise ValueError(f"{j} anomalous shots asked but only {len(anomalous)} of {split.category}'s {n_bad} "
                             "anomalous test images have a ground-truth mask, and an anomalous shot needs its mask "
                             "(ground_truth/<type>/<stem>_mask.png): add masks, or run with --anomalous-shots "
                             f"{len(anomalous)} (image-level metrics need no masks)")
        raise ValueError(f"{j} anomalous shots asked but {split.category} has {len(anomalous)} anomalous test images")
    normals = [split.train[i] for i in sorted(rng.choice(len(split.train), k, replace=False))]
    picked = [anomalous[i] for i in sorted(rng.choice(len(anomalous), j, replace=False))]
    taken = {s.path for s in picked}
    test = [s for s in split.test if s.path not in taken]
    if max_test is not None and len(test) > max_test:
        # stratified: keep the good/defect ratio, and at least one of each when both exist
        good = [s for s in test if s.label == 0]
        bad = [s for s in test if s.label == 1]
        n_bad = int(round(max_test * len(bad) / len(test)))
        if good and bad:
            n_bad = min(max(n_bad, 1), max_test - 1)
        n_good = max_test - n_bad
        keep = {good[i].path for i in rng.choice(len(good), min(n_good, len(good)), replace=False)}
        keep |= {bad[i].path for i in rng.choice(len(bad), min(n_bad, len(bad)), replace=False)}
        test = [s for s in test if s.path in keep]
    if not test:
        raise ValueError(f"no test images left for {split.category} after drawing the shots")
    chosen = {s.path for s in normals}
    rest = [s for s in split.train if s.path not in chosen]
    vrng = np.random.default_rng([seed, sum(map(ord, split.category)), 1])
    held = [rest[i] for i in sorted(vrng.choice(len(rest), validation_normal, replace=False))] if validation_normal else []
    return Protocol(tuple(normals), tuple(picked), tuple(test), tuple(held))


@dataclass(frozen=True)
class EvalRun:
    """One category x one seed. metrics: the aggregate's; component_metrics: per component.

    rows: one dict per test image (path, label, defect_type, aggregate, <component>...).
    """

    category: str
    seed: int
    metrics: dict[str, float]
    component_metrics: dict[str, dict[str, float]]
    rows: list[dict]
    components: list[str]
    weights: dict[str, float]
    weights_mode: str
    shots: dict[str, list[str]]
    n_test: tuple[int, int]  # (good, defective)
    seconds: dict[str, float]
    model: dict[str, str] = field(default_factory=dict)
    tuning: dict | None = None
    rule: str = "mean_of_scores"  # the weight set's score rule (fsad_core.aggregate)
    map_weights: dict[str, float] | None = None
    notes: dict = field(default_factory=dict)  # e.g. "ground_truth": masks missing; "one_to_normal"
    decision: dict | None = None  # the calibrated threshold and its rates on the test set (`_decision`)


def _resize_for_pixels(arr: np.ndarray, pixel_size: int, nearest: bool) -> np.ndarray:
    import cv2

    h, w = arr.shape[:2]
    s = pixel_size / max(h, w)
    if s >= 1:
        return arr
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if nearest:
        return cv2.resize(arr.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(arr.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)


def resolve_weights(mode, names: Sequence[str]) -> dict[str, float]:
    """'default' / a preset name / a mapping -> the score weights over `names` (validated).
    Kept for callers that want a dict; `weight_set` gives the full WeightSet (with its score rule)."""
    return {k: v for k, v in weight_set(mode, names).weights.items() if k in names}


def weight_set(mode, names: Sequence[str]):
    """'default' / a preset name / 'name=w,...' / a mapping / a WeightSet -> a checked WeightSet."""
    from .aggregate import resolve_weights as _resolve

    if isinstance(mode, str) and mode == "tuned":
        raise ValueError("'tuned' weights come from tuning; pass them as a mapping")
    return _resolve("paper" if mode is None or mode == "default" else mode, list(names))


def weights_label(mode, index: int = 0) -> str:
    """A short, file-name-safe label for a weight set in tables and folder names."""
    if isinstance(mode, str) and "=" not in mode:
        return "paper" if mode == "default" else mode
    return "custom" if index == 0 else f"custom{index + 1}"


def evaluate_category(root, category: str, engine, normal_shots: int = 1, anomalous_shots: int = 1, seed: int = 0,
                      max_test: int | None = None, weights="default",
                      pixel_size: int = 256, layout: str = "auto", tune_kwargs: Mapping | None = None,
                      progress: Progress | None = None, validation_normal: int = 0,
                      threshold: str | float | None = None, calibration_normal: int = 0, alpha: float = 0.1,
                      confidence: float = 0.95):
    """Run the protocol for one category and seed on `engine` (its shots are replaced).

    weights: "default" | "tuned" (Monte-Carlo on augmented shots, `fsad_core.tuning`) | a preset name |
    "name=w,..." | a {component: weight} mapping | a WeightSet — or a list of these: every weight set
    is evaluated on the same scores (one encoding per image) and a list of EvalRuns is returned.
    validation_normal: extra normal images drawn from train/good as validation-only shots (weight
    tuning validates on them; no memory holds them). progress(fraction, message) is called per test image.
    threshold: None | "auto" (the shots-only calibration `inspect --threshold auto` uses) | a number:
    each run's `decision` then holds it and its false-alarm / miss rates on the test images.
    calibration_normal=n > 0: n good test images (seeded) are held out of the test set and the
    decision is the conformal threshold on their scores (false alarms <= alpha at `confidence`),
    measured on the remaining test images.
    Anomalous test images without a mask count for image metrics only (`notes["ground_truth"]`).
    """
    several = isinstance(weights, (list, tuple))
    modes = list(weights) if several else [weights]
    if not modes:
        raise ValueError("no weight set to evaluate")
    t0 = time.perf_counter()
    root = Path(root)
    split = load_split(root, category, layout)
    proto = draw_protocol(split, normal_shots, anomalous_shots, seed, max_test, int(validation_normal))
    proto, held_out = _hold_out_normals(proto, calibration_normal, seed, split.category)
    engine.clear_shots()
    engine.set_class_name(category)
    images = _add_protocol_shots(engine, proto)
    names = list(engine.component_names)
    t_shots = time.perf_counter()
    sets, tunings, labels_ = _weight_sets(engine, modes, names, images, tune_kwargs)
    t_tune = time.perf_counter()
    keys = [f"aggregate#{i}" for i in range(len(sets))]
    ok_scores = _score_held_out(engine, held_out, keys, sets)
    sc = _score_test_images(engine, proto.test, root, keys, sets, names, pixel_size, progress)
    t_score = time.perf_counter()
    gt_notes = list(split.notes)
    per = _all_metrics(sc, [*keys, *names], gt_notes)
    decisions = {k: _run_decision(engine, ws, images, threshold, sc.scores[k], sc.labels, gt_notes, held_out,
                                  ok_scores[k], root, alpha, confidence)
                 for k, ws in zip(keys, sets)}
    t_metrics = time.perf_counter()
    model = _model_record(engine)
    notes = _run_notes(engine, names, gt_notes)
    n_bad = int(sum(sc.labels))
    total = len(proto.test)
    out = []
    for j, (ws, tuning, label, key) in enumerate(zip(sets, tunings, labels_, keys)):
        out.append(EvalRun(
            category=category, seed=seed, metrics=per[key], component_metrics={n: per[n] for n in names},
            rows=sc.rows[j], components=names, weights={k: float(v) for k, v in ws.weights.items() if k in names},
            weights_mode=label,
            shots={"normal": [display(s.path) for s in proto.normal_shots],
                   "validation_normal": [display(s.path) for s in proto.validation_normals],
                   "anomalous": [display(s.path) for s in proto.anomalous_shots]},
            n_test=(len(sc.labels) - n_bad, n_bad),
            seconds={"shots": t_shots - t0, "tuning": t_tune - t_shots, "scoring": t_score - t_tune,
                     "per_image": (t_score - t_tune) / max(total, 1), "metrics": t_metrics - t_score,
                     "total": t_metrics - t0},
            model=model, tuning=tuning, rule=ws.rule, map_weights=None if ws.map_weights is None else dict(ws.map_weights),
            notes=notes, decision=decisions[key],
        ))
    return out if several else out[0]


def _add_protocol_shots(engine, proto: Protocol) -> dict:
    """Add the protocol's normal, validation-only and anomalous shots to `engine`; {shot id: RGB array}."""
    from .images import to_mask_array, to_rgb_array

    images = {}
    for s in proto.normal_shots:
        rgb = to_rgb_array(s.path)
        images[engine.add_shot(rgb, kind="normal")] = rgb
    for s in proto.validation_normals:
        rgb = to_rgb_array(s.path)
        images[engine.add_shot(rgb, kind="normal", role="validation")] = rgb
    for s in proto.anomalous_shots:
        rgb = to_rgb_array(s.path)
        mask = to_mask_array(s.mask_path, rgb.shape[:2], what=f"mask {s.mask_path}")
        images[engine.add_shot(rgb, kind="anomalous", mask=mask, defect_type=s.defect_type)] = rgb
    return images


def _weight_sets(engine, modes: Sequence, names: Sequence[str], images: dict,
                 tune_kwargs: Mapping | None) -> tuple[list, list, list[str]]:
    """Resolve each weight mode (tuning the 'tuned' ones on the shots): (WeightSets, tuning records, labels)."""
    sets, tunings, labels = [], [], []
    for i, mode in enumerate(modes):
        tuning = None
        if isinstance(mode, str) and mode == "tuned":
            from .aggregate import WeightSet
            from .tuning import tune_weights

            tr = tune_weights(engine, images=images, **dict(tune_kwargs or {}))
            ws = WeightSet(dict(tr.weights), tr.rule, name="tuned")
            tuning = {**tr.to_dict(), "record": tr.protocol_record()}
        else:
            ws = weight_set(mode, names)
        sets.append(ws)
        tunings.append(tuning)
        labels.append(weights_label(mode, i))
    return sets, tunings, labels


def _score_held_out(engine, held_out: Sequence[Sample], keys: Sequence[str], sets: Sequence) -> dict[str, list[float]]:
    """Aggregate scores of the held-out OK images (calibration_normal), one list per weight set key."""
    from .images import to_rgb_array

    ok_scores: dict[str, list[float]] = {k: [] for k in keys}
    for s in held_out:
        result = engine.score(to_rgb_array(s.path))
        for k, ws in zip(keys, sets):
            ok_scores[k].append(float(result.aggregate(ws).score))
    return ok_scores


def _relative(path: str, root: Path) -> str:
    """`path` relative to the dataset root (POSIX), or unchanged when it lies outside it."""
    return Path(path).relative_to(root).as_posix() if Path(path).is_relative_to(root) else path


@dataclass
class _Scored:
    """The test images' scores and maps per series (aggregate keys, then components), masks
    (None: ground truth unknown), labels, and the scores.csv rows per weight set."""

    scores: dict[str, list[float]]
    maps: dict[str, list[np.ndarray]]
    masks: list[np.ndarray | None]
    labels: list[int]
    rows: list[list[dict]]


def _ground_truth(s: Sample, shape) -> np.ndarray | None:
    """The test image's mask: its file, all-False for a good image, None for an anomalous one without a mask."""
    from .images import to_mask_array

    if s.label and s.mask_path:
        return to_mask_array(s.mask_path, shape, what=f"mask {s.mask_path}")
    if s.label:
        return None  # no ground truth: this image counts for image metrics only
    return np.zeros(shape, bool)


def _score_test_images(engine, test: Sequence[Sample], root: Path, keys: Sequence[str], sets: Sequence,
                       names: Sequence[str], pixel_size: int, progress: Progress | None) -> _Scored:
    """Score every test image once and combine it with every weight set; maps and masks resized to `pixel_size`."""
    from .images import to_rgb_array

    sc = _Scored({n: [] for n in [*keys, *names]}, {n: [] for n in [*keys, *names]}, [], [], [[] for _ in sets])
    total = len(test)
    for i, s in enumerate(test):
        rgb = to_rgb_array(s.path)
        gt = _ground_truth(s, rgb.shape[:2])
        result = engine.score(rgb)
        aggs = {k: result.aggregate(ws) for k, ws in zip(keys, sets)}
        comps = {**aggs, **{n: result.components[n] for n in names}}
        rel = _relative(s.path, root)
        # file names are bytes: the escaped form, and the exact bytes for names that needed escaping
        base = {"path": display(rel), "label": s.label, "defect_type": display(s.defect_type),
                "path_b64": raw_b64(rel) or ""}
        for n, sm in comps.items():
            sc.scores[n].append(float(sm.score))
            sc.maps[n].append(_resize_for_pixels(sm.map, pixel_size, nearest=False))
        for j, k in enumerate(keys):
            sc.rows[j].append({**base, "aggregate": float(aggs[k].score), **{n: float(result.components[n].score)
                                                                           for n in names}})
        sc.masks.append(None if gt is None else _resize_for_pixels(gt, pixel_size, nearest=True))
        sc.labels.append(s.label)
        steps(progress, i + 1, total, "test images scored")
    return sc


def _all_metrics(sc: _Scored, series: Sequence[str], gt_notes: list) -> dict[str, dict]:
    """Image metrics on every test image, pixel metrics on those with known ground truth; notes what was skipped."""
    labels, scores, masks, maps = sc.labels, sc.scores, sc.masks, sc.maps
    known = [i for i, m in enumerate(masks) if m is not None]  # images whose ground truth is known
    if any(labels[i] for i in known):
        per = {n: {**evaluate_all(labels, scores[n]),
                   **_pixel_only(evaluate_all([labels[i] for i in known], [scores[n][i] for i in known],
                                              [masks[i] for i in known], [maps[n][i] for i in known]))}
               for n in series}
        if len(known) < len(masks):
            gt_notes.append(f"pixel metrics on the {len(known)} of {len(masks)} test images with known ground truth")
    else:
        per = {n: evaluate_all(labels, scores[n]) for n in series}  # pixel metrics: nan
        if any(labels):
            gt_notes.append("pixel metrics skipped: no anomalous test image has a ground-truth mask")
    return per


def _run_decision(engine, ws, images, threshold, agg_scores, labels, gt_notes: list, held_out: Sequence[Sample],
                  ok_scores, root: Path, alpha: float, confidence: float) -> dict | None:
    """One weight set's decision: conformal on the held-out OK images, else `threshold` (None: no decision)."""
    if held_out:
        d = _decision(engine, ws, images, "conformal", agg_scores, labels, gt_notes, ok_scores=ok_scores,
                      alpha=alpha, confidence=confidence)
        d["held_out"] = [_relative(s.path, root) for s in held_out]
        return d
    if threshold is not None:
        return _decision(engine, ws, images, threshold, agg_scores, labels, gt_notes)
    return None


def _model_record(engine) -> dict[str, str]:
    """Which model produced the numbers: CLIP id, profile and precision (and a note for the tiny profile)."""
    bb = getattr(engine, "backbone", None)
    model = {"clip": getattr(bb, "model_id", "?"), "profile": getattr(engine.config, "profile", "?"),
             "precision": getattr(bb, "precision_name", "?")}  # bf16 and fp32 differ in the 4th digit
    if model["profile"] == "tiny":
        model["note"] = "tiny profile: random weights, numbers test the pipeline only"
    return model


def _run_notes(engine, names: Sequence[str], gt_notes: Sequence[str]) -> dict:
    """The run's notes: ground-truth caveats (deduplicated) and, with One-to-Normal, its pool and text branch."""
    notes = {"ground_truth": list(dict.fromkeys(gt_notes))} if gt_notes else {}
    one = next((sc for sc in engine.scorers if sc.name == "one-to-normal"), None)
    if one is not None:
        notes["one_to_normal"] = {"pool": getattr(one, "pool_note", ""),
                                  "text_branch": "adapter_text" if "adapter_text" in names else
                                  "zero_shot (no APRIL-GAN adapter loaded: WinCLIP's zero-shot map stands in for S_text)",
                                  "model_dir": str(getattr(one, "model_dir", "") or "")}
    return notes


def _pixel_only(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("pixel_") or k == "pro"}


def _hold_out_normals(proto: "Protocol", n: int, seed: int, category: str) -> tuple["Protocol", list[Sample]]:
    """Move n good test images (seeded) out of the test set: held-out OK images for a conformal
    threshold, as an engineer's calibration folder would be."""
    if not n:
        return proto, []
    good = [s for s in proto.test if s.label == 0]
    if n >= len(good):
        raise ValueError(f"--calibration-normal {n}: {category} has {len(good)} good test images after drawing the "
                         "shots; at least one must stay in the test set")
    rng = np.random.default_rng([seed, 14, sum(map(ord, category))])
    picked = {good[i].path for i in rng.choice(len(good), n, replace=False)}
    held = [s for s in proto.test if s.path in picked]
    import dataclasses

    return dataclasses.replace(proto, test=tuple(s for s in proto.test if s.path not in picked)), held


def _decision(engine, weights, shot_images, threshold, agg_scores, labels, notes: list, ok_scores=(),
              alpha: float = 0.1, confidence: float = 0.95) -> dict | None:
    """The threshold inspection would use ("auto": the shots-only calibration, the same function as
    `inspect --threshold auto`; "conformal": on held-out OK scores; or a given number) and what it
    does on this test set."""
    from .calibration import calibrate_engine, conformal, confusion, manual

    y = np.asarray(labels, bool)
    s = np.asarray(agg_scores, np.float64)
    if threshold == "conformal":
        cal = conformal(ok_scores, alpha=alpha, confidence=confidence)
    elif threshold == "auto":
        try:
            cal = calibrate_engine(engine, weights=weights, mode="heuristic", shot_images=shot_images)
        except ValueError as exc:  # e.g. no normal shot
            notes.append(f"no automatic threshold: {exc}")
            return None
    else:
        cal = manual(float(threshold))
    c = confusion(s[~y], s[y], cal.threshold)
    return {"calibration": cal.to_dict(), "test": {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                                  for k, v in c.items()}}


def _clean(x):
    """NaN -> None for strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_run(run: EvalRun, out_dir) -> Path:
    """DIR/metrics.json, DIR/scores.csv and DIR/roc.png for one run; returns DIR."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = asdict(run)
    rows = d.pop("rows")
    d["aggregate"] = d.pop("metrics")
    d["components"] = d.pop("component_metrics")
    d["component_order"] = run.components
    (out / "metrics.json").write_text(json.dumps(_clean(d), indent=2), encoding="utf-8")
    extra = []
    if run.decision is not None:  # the verdict at the run's calibrated threshold, next to the label
        from .calibration import verdict

        cal = run.decision["calibration"]
        rows = [{**r, "verdict": verdict(r["aggregate"], cal["threshold"], cal.get("margin") or 0.0)} for r in rows]
        extra = ["verdict"]
    with open(out / "scores.csv", "w", newline="", encoding="utf-8") as f:
        wr = csv.DictWriter(f, fieldnames=["path", "label", "defect_type", "aggregate", *extra, *run.components,
                                           "path_b64"])
        wr.writeheader()
        wr.writerows(rows)
    plot_roc([run], out / "roc.png", title=f"{run.category} (seed {run.seed})")
    return out


def plot_roc(runs: Sequence[EvalRun], path, title: str = "") -> None:
    """Image-level ROC: the aggregate of every run (solid) and each component of the first (thin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for r in runs:
        y = [row["label"] for row in r.rows]
        if len(set(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, [row["aggregate"] for row in r.rows])
        ax.plot(fpr, tpr, lw=2, label=f"aggregate s{r.seed} ({r.metrics['image_auroc']:.3f})")
    first = runs[0] if runs else None
    if first is not None and len({row["label"] for row in first.rows}) == 2:
        y = [row["label"] for row in first.rows]
        for n in first.components:
            fpr, tpr, _ = roc_curve(y, [row[n] for row in first.rows])
            ax.plot(fpr, tpr, lw=0.8, alpha=0.7, label=f"{n} s{first.seed} ({first.component_metrics[n]['image_auroc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- several seeds and categories -> the papers' tables -------------------------------------------------
METRIC_LABELS = {"image_auroc": "I-AUROC", "image_ap": "I-AP", "image_f1_max": "I-F1max",
                 "pixel_auroc": "P-AUROC", "pixel_f1_max": "P-F1max", "pro": "PRO"}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=0))


def summary_rows(runs: Sequence[EvalRun], component: str = "aggregate") -> list[dict]:
    """Per category (and a final "mean" row): {metric: (mean, std)} over seeds, in percent."""
    cats = list(dict.fromkeys(r.category for r in runs))
    out = []
    for c in cats:
        rs = [r for r in runs if r.category == c]
        row = {"category": c, "seeds": len(rs)}
        for m in METRIC_NAMES:
            vals = [(r.metrics if component == "aggregate" else r.component_metrics.get(component, {})).get(m,
                    float("nan")) for r in rs]
            row[m] = tuple(100 * x for x in _mean_std(vals))
        out.append(row)
    if len(out) > 1:
        mean = {"category": "mean", "seeds": max(r["seeds"] for r in out)}
        for m in METRIC_NAMES:
            means = [r[m][0] for r in out if math.isfinite(r[m][0])]
            stds = [r[m][1] for r in out if math.isfinite(r[m][1])]
            mean[m] = (float(np.mean(means)) if means else float("nan"), float(np.mean(stds)) if stds else float("nan"))
        out.append(mean)
    return out


def _fmt(ms: tuple[float, float], seeds: int) -> str:
    m, s = ms
    if not math.isfinite(m):
        return "–"
    return f"{m:.1f} ± {s:.1f}" if seeds > 1 else f"{m:.1f}"


def write_summary(runs: Sequence[EvalRun], out_dir, title: str = "") -> dict[str, Path]:
    """table.md / table.csv (aggregate, mean ± std over seeds, %), components.md (image and pixel AUROC
    per component), roc_<category>.png; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(runs)
    heads = [METRIC_LABELS[m] for m in METRIC_NAMES]
    md = []
    if title:
        md += [f"**{title}**", ""]
    md += ["| category | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for r in rows:
        md.append(f"| {r['category']} | " + " | ".join(_fmt(r[m], r["seeds"]) for m in METRIC_NAMES) + " |")
    paths = {"table_md": out / "table.md", "table_csv": out / "table.csv", "components_md": out / "components.md"}
    # a category is a folder name (bytes): never let one that is not UTF-8 stop the summary
    paths["table_md"].write_text("\n".join(md) + "\n", encoding="utf-8", errors="backslashreplace")
    with open(paths["table_csv"], "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        wr = csv.writer(f)
        wr.writerow(["category", "seeds"] + [f"{m}_{k}" for m in METRIC_NAMES for k in ("mean", "std")])
        for r in rows:
            wr.writerow([r["category"], r["seeds"]] + [f"{x:.4f}" for m in METRIC_NAMES for x in r[m]])
    comps = list(dict.fromkeys(n for r in runs for n in r.components))
    cats = list(dict.fromkeys(r.category for r in runs))
    cmd = ["Image AUROC / pixel AUROC (%) per component, mean over seeds", "",
           "| component | " + " | ".join(cats) + " |", "|---|" + "---:|" * len(cats)]
    for n in ["aggregate", *comps]:
        cells = []
        for c in cats:
            rs = [r for r in runs if r.category == c]
            get = (lambda r, m: r.metrics[m]) if n == "aggregate" else \
                (lambda r, m, n=n: r.component_metrics.get(n, {}).get(m, float("nan")))
            ia = _mean_std([get(r, "image_auroc") for r in rs])[0]
            pa = _mean_std([get(r, "pixel_auroc") for r in rs])[0]
            cells.append("–" if not math.isfinite(ia) else f"{100 * ia:.1f} / {100 * pa:.1f}")
        cmd.append(f"| {n} | " + " | ".join(cells) + " |")
    paths["components_md"].write_text("\n".join(cmd) + "\n", encoding="utf-8", errors="backslashreplace")
    for c in cats:
        p = out / f"roc_{c}.png"
        plot_roc([r for r in runs if r.category == c], p, title=c)
        paths[f"roc_{c}"] = p
    return paths


def write_weights_table(runs: Sequence[EvalRun], out_dir, title: str = "") -> dict[str, Path]:
    """table.md / table.csv with one row per weight set (`EvalRun.weights_mode`): each metric as the
    mean over categories of the per-category mean over seeds (± the mean of the per-category std),
    all computed on the same scores. Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = list(dict.fromkeys(r.weights_mode for r in runs))
    heads = [METRIC_LABELS[m] for m in METRIC_NAMES]
    md = [f"**{title}**", ""] if title else []
    md += ["| weights | rule | " + " | ".join(heads) + " |", "|---|---|" + "---:|" * len(heads)]
    csv_rows = []
    for label in labels:
        rs = [r for r in runs if r.weights_mode == label]
        rows = summary_rows(rs)
        final = rows[-1]  # the "mean" row when there are several categories, else the only one
        md.append(f"| {label} | {rs[0].rule} | " + " | ".join(_fmt(final[m], final["seeds"]) for m in METRIC_NAMES) + " |")
        csv_rows.append([label, rs[0].rule, final["seeds"]] + [f"{x:.4f}" for m in METRIC_NAMES for x in final[m]])
    paths = {"table_md": out / "table.md", "table_csv": out / "table.csv"}
    paths["table_md"].write_text("\n".join(md) + "\n")
    with open(paths["table_csv"], "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["weights", "rule", "seeds"] + [f"{m}_{k}" for m in METRIC_NAMES for k in ("mean", "std")])
        wr.writerows(csv_rows)
    return paths
