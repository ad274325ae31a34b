"""`python -m fsad_core bundle export|show`: write an inspection bundle (fsad_core/bundle.py) and look into one."""
from __future__ import annotations

import json


def register(sub) -> None:
    from fsad_core.cli.score import add_model_args

    p = sub.add_parser("bundle", help="inspection bundles: export a project's scoring setup to one file",
                       description="An inspection bundle holds everything needed to score without the studio's "
                                   "database: shots' encoded features, masks, weights, threshold (docs/bundle.md).")
    bsub = p.add_subparsers(dest="bundle_command", required=True)
    e = bsub.add_parser("export", help="write a bundle from a project, an MVTec-layout folder or shot files")
    src = e.add_argument_group("shots: a stored project, an MVTec-layout folder, or files")
    src.add_argument("--project", default=None, metavar="NAME", help="use this studio project's shots (and roles)")
    src.add_argument("--data-dir", default=None, help="the studio's data folder (default: the studio's default)")
    src.add_argument("--shots", default=None, metavar="DIR", help="MVTec-AD-layout folder, as for `inspect --shots`")
    src.add_argument("--normal", action="append", default=[], metavar="N.png", help="normal shot (repeatable)")
    src.add_argument("--anomalous", action="append", default=[], metavar="A.png", help="anomalous shot (repeatable)")
    src.add_argument("--mask", action="append", default=[], metavar="M.png", help="mask of the matching --anomalous")
    src.add_argument("--defect-type", action="append", default=[], metavar="T")
    e.add_argument("--class-name", default=None, help="object class (default: the project's or the folder's)")
    e.add_argument("--weights", default=None,
                   help="what results aggregate with: a preset (paper, the default; winclip+; equal; ...), "
                        "name=w,..., or the name of weights saved in the project (tuned, or a saved preset)")
    e.add_argument("--threshold", default=None,
                   help="aggregate score at or above which an image is NG; 'auto' (the default without "
                        "--calibration) = F1-max on augmented shots, as `inspect --threshold auto`")
    e.add_argument("--margin", type=float, default=0.0,
                   help="half-width of the 'uncertain' band around the threshold (default 0: OK/NG only)")
    e.add_argument("--calibration", default=None, metavar="FILE.json",
                   help="a calibration record (JSON object) stored with the threshold; its 'threshold' and "
                        "'margin' keys are used unless --threshold/--margin are given")
    e.add_argument("--out", required=True, metavar="FILE", help="bundle file to write (a zip, e.g. line.fsad.zip)")
    add_model_args(e)
    e.set_defaults(func=run_export)
    s = bsub.add_parser("show", help="print a bundle's manifest summary as JSON")
    s.add_argument("bundle", metavar="FILE")
    s.set_defaults(func=run_show)


def project_shots(store, pid: int, engine) -> dict:
    """Add a stored project's shots to `engine` as the studio does (ui/context.py): normal shots with
    their role (validation-only ones stay out of the memories), anomalous ones once their mask is
    painted. Returns {shot id: pixels}."""
    import numpy as np

    images = {}
    for row in store.list_images(pid):
        if row["role"] not in ("normal", "anomalous"):
            continue
        rgb = store.read_image(row["id"])
        if row["role"] == "normal":
            sid = engine.add_shot(rgb, kind="normal", role="validation" if row.get("validation_only") else "memory")
        else:
            mask = store.get_mask(row["id"])
            if mask is None or not np.asarray(mask).any():
                continue
            sid = engine.add_shot(rgb, kind="anomalous", mask=np.asarray(mask, bool), defect_type=row.get("defect_type"))
        images[sid] = rgb
    return images


def _stored_weights(store, pid, spec: str | None):
    """--weights naming weights saved in the project ('tuned', 'preset:NAME' or a saved preset's NAME)."""
    if not spec or store is None:
        return None
    from fsad_core.aggregate import WeightSet

    saved = {w["name"]: w["weights"] for w in store.list_weights(pid)}
    for key in (spec, f"preset:{spec}", spec.replace("saved: ", "preset:", 1)):
        if key in saved:
            return WeightSet(dict(saved[key]), name="tuned" if key == "tuned" else f"saved: {key.split(':', 1)[-1]}")
    return None


def run_export(args) -> int:
    from pathlib import Path

    from fsad_core.cli.common import check_output_file, engine_component_names, weights_from_arg
    from fsad_core.cli.inspect import add_source_shots, shot_source
    from fsad_core.cli.score import config_from_args

    sources = [n for n, on in (("--project", args.project), ("--shots", args.shots),
                               ("--normal/--anomalous", args.normal or args.anomalous)) if on]
    if len(sources) > 1:
        raise ValueError(f"give the shots one way: {' or '.join(sources)}, not both")
    out = check_output_file(args.out, "--out")
    calibration = {}
    if args.calibration:
        try:
            calibration = json.loads(Path(args.calibration).read_text())
        except ValueError as exc:
            raise ValueError(f"--calibration {args.calibration!r} is not JSON: {exc}") from None
        if not isinstance(calibration, dict):
            raise ValueError(f"--calibration {args.calibration!r} must hold a JSON object")
    thr_arg = args.threshold if args.threshold is not None else calibration.get("threshold", "auto")
    if thr_arg != "auto":
        try:
            thr_arg = float(thr_arg)
        except (TypeError, ValueError):
            raise ValueError(f"--threshold must be a number or 'auto', got {thr_arg!r}") from None
    margin = args.margin if args.margin else float(calibration.get("margin", 0.0) or 0.0)
    if margin < 0:
        raise ValueError("--margin must be >= 0")
    config = config_from_args(args)
    store, pid, class_name, normal, anomalous = shot_source(args)
    weights = _stored_weights(store, pid, args.weights)
    if weights is None:
        weights = weights_from_arg(args.weights, engine_component_names(config), "bundle export")

    from fsad_core.models.registry import hub_offline_if_unreachable

    hub_offline_if_unreachable()
    from fsad_core.bundle import export_bundle
    from fsad_core.engine import Engine

    engine = Engine(config)
    engine.set_class_name(args.class_name or class_name or "object")
    add_source_shots(engine, args, store, pid, normal, anomalous)
    if thr_arg == "auto":
        from fsad_core.inspect_batch import auto_threshold

        thr, source = auto_threshold(engine, weights)
        calibration = {"mode": "auto", "method": source, "m": 5, "seed": 0, **calibration}
    else:
        thr, source = float(thr_arg), calibration.get("mode", "given")
    path = export_bundle(engine, out, threshold=thr, margin=margin, weights=weights, calibration=calibration,
                         threshold_source=str(source), project=args.project)
    n = {k: sum(s.kind == k for s in engine.shots) for k in ("normal", "anomalous")}
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {n['normal']} normal and {n['anomalous']} anomalous "
          f"shots, weights {weights.name}, threshold {thr:.4f} ({source}), margin {margin:g}")
    return 0


def run_show(args) -> int:
    from fsad_core.bundle import LoadedBundle, read_manifest

    m = read_manifest(args.bundle)
    print(json.dumps(LoadedBundle(str(args.bundle), m).summary(), indent=2))
    return 0
