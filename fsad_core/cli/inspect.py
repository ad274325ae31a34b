"""`python -m fsad_core inspect`: score a folder of unlabelled images in batch (resumable)."""
from __future__ import annotations


def register(sub) -> None:
    from fsad_core.cli.score import add_model_args

    p = sub.add_parser("inspect", help="score a folder of images in batch: CSV, overlays, HTML report",
                       description="Score every image under --input with a project's shots, an MVTec-layout "
                                   "folder of shots, or shots given on the command line: scores.csv with verdicts "
                                   "at a threshold, heatmap overlays and a self-contained report.html. Re-running "
                                   "with the same --out resumes.")
    src = p.add_argument_group("shots: a stored project, an MVTec-layout folder, or files like the score command")
    src.add_argument("--project", default=None, metavar="NAME", help="use this studio project's shots")
    src.add_argument("--data-dir", default=None, help="the studio's data folder (default: the studio's default)")
    src.add_argument("--shots", default=None, metavar="DIR",
                     help="MVTec-AD-layout folder (as `python -m storage export` writes): train/good/* normal "
                          "shots, test/<type>/* anomalous shots with ground_truth/<type>/<stem>_mask.png; "
                          "test/good is ignored")
    src.add_argument("--normal", action="append", default=[], metavar="N.png", help="normal shot (repeatable)")
    src.add_argument("--anomalous", action="append", default=[], metavar="A.png", help="anomalous shot (repeatable)")
    src.add_argument("--mask", action="append", default=[], metavar="M.png", help="mask of the matching --anomalous")
    src.add_argument("--defect-type", action="append", default=[], metavar="T")
    src.add_argument("--bundle", default=None, metavar="FILE",
                     help="an inspection bundle (`bundle export`): its shots, weights and threshold; no shot is "
                          "re-encoded and the studio's database is not needed")
    ray = p.add_argument_group("scale-out on Ray (optional: pip install 'ray[data]')")
    ray.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="score on Ray actors, one engine each loaded from the bundle (without --bundle, one is "
                          "made from the shots): no ADDRESS = a local Ray, else a cluster address (auto, ray://...)")
    ray.add_argument("--ray-workers", type=int, default=2, metavar="N", help="actors in the pool (default 2)")
    ray.add_argument("--ray-threads", type=int, default=1, metavar="T",
                     help="torch threads (and Ray CPUs) per actor (default 1)")
    ray.add_argument("--ray-batch-size", type=int, default=4, metavar="B", help="images per actor call (default 4)")
    p.add_argument("--class-name", default=None,
                   help="object class for the text prompts (default: the project's, or the --shots folder's)")
    p.add_argument("--input", required=True, metavar="FOLDER", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (may lie inside --input: it is then skipped as input)")
    p.add_argument("--threshold", default=None,
                   help="aggregate score at or above which an image is NG; 'auto' (the default without --bundle) = "
                        "calibrated (fsad_core.calibration): on --calibration images if given (conformal on OK "
                        "images, F1-max with NG images too), else the project's saved threshold for these weights "
                        "(--project), else its review labels, else the shots-only heuristic on augmented shots "
                        "(needs a normal shot); with --bundle the default is the bundle's threshold")
    p.add_argument("--calibration", default=None, metavar="FOLDER",
                   help="held-out images for --threshold auto: OK/ + NG/<type>/ (or good/ + <type>/), or a flat "
                        "folder of good parts (all OK)")
    p.add_argument("--alpha", type=float, default=0.1, help="false-alarm rate to bound (conformal; default 0.1)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of that bound (default 0.95)")
    p.add_argument("--weights", default=None,
                   help="a preset (paper = posWinCLIP+ eq. 2, the default; winclip+; equal; one-to-normal; "
                        "april-gan) or name=w,... Checked before the run")
    p.add_argument("--no-overlays", action="store_true", help="skip the heatmap overlay PNGs")
    p.add_argument("--restart", action="store_true", help="discard an earlier run in --out instead of resuming it")
    p.add_argument("--force", action="store_true",
                   help="write into an --out folder that is not empty and holds no earlier inspect run (its "
                        "run.json, results.jsonl, scores.csv, report.html and overlays/ are replaced)")
    add_model_args(p)
    from fsad_core.cli.common import add_personalize_args

    add_personalize_args(p)
    p.set_defaults(func=run)


def _open_project(args):
    """(store, project id, class name) — without creating anything: the database must exist."""
    try:
        import storage
    except ImportError:
        raise ValueError("--project needs the studio's storage package, which is not installed here; "
                         "give the shots with --shots DIR or --normal/--anomalous/--mask instead") from None
    data_dir = args.data_dir or storage.default_data_dir()
    db_path, _ = storage.resolve_paths(data_dir)
    if not db_path.is_file():
        raise FileNotFoundError(f"no studio data in {str(data_dir)!r} (no database {str(db_path)!r}): pass the "
                                "studio's data folder with --data-dir, or give the shots with --shots DIR or "
                                "--normal/--anomalous/--mask")
    store = storage.Store(data_dir)
    proj = store.find_project(args.project)
    if proj is None:
        raise ValueError(f"no project named {args.project!r} in {data_dir}")
    pid = proj["id"] if isinstance(proj, dict) else proj
    return store, pid, store.get_project(pid).get("class_name")


def _shots_from_project(store, pid, name: str, engine) -> dict:
    """The project's shots into `engine` as the studio adds them (validation-only normals stay out of
    the memories; anomalous images once their mask is painted)."""
    from fsad_core.cli.bundle import project_shots

    images = project_shots(store, pid, engine)
    if not images:
        raise ValueError(f"project {name!r} has no shots: add normal (and annotated anomalous) images first")
    return images


def add_source_shots(engine, args, store, pid, normal, anomalous) -> dict:
    """The shots `shot_source` found, into `engine`; returns {shot id: pixels}."""
    if args.project:
        return _shots_from_project(store, pid, args.project, engine)
    return _add_files(engine, normal, anomalous)


def shot_source(args):
    """(store, project id, class name, normal files, anomalous files) from --project, --shots or the
    file flags; store and project id are None unless --project, the file lists empty with it."""
    import sys

    from fsad_core.names import display

    store = pid = class_name = None
    normal: list = []
    anomalous: list = []
    if args.project:
        store, pid, class_name = _open_project(args)
    elif args.shots:
        from fsad_core.inspect_batch import read_shot_folder

        folder = read_shot_folder(args.shots)
        for note in folder.ignored:
            print(f"note: {display(args.shots)}: {display(note)}", file=sys.stderr)
        class_name, normal, anomalous = folder.class_name, list(folder.normal), list(folder.anomalous)
    else:
        normal, anomalous = _file_shots(args)
    return store, pid, class_name, normal, anomalous


def parse_threshold(text):
    """--threshold: None or 'auto' as given, else a number (a readable error otherwise)."""
    if text in (None, "auto"):
        return text
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"--threshold must be a number or 'auto', got {text!r}") from None


def check_input_output(args):
    """--input must be a folder and --out a folder path that is not the input; returns --out's Path."""
    from pathlib import Path

    from fsad_core.cli.common import check_output_dir

    if not Path(args.input).is_dir():
        raise FileNotFoundError(f"input folder {args.input!r} does not exist")
    out = check_output_dir(args.out, "--out")
    if out.resolve() == Path(args.input).resolve():
        raise ValueError("--out is the --input folder: write the outputs to another folder "
                         "(a sub-folder of --input is fine; it is skipped)")
    return out


def _add_files(engine, normal, anomalous) -> dict:
    """normal: paths; anomalous: (image path, mask path, defect type or None)."""
    from fsad_core.images import to_mask_array, to_rgb_array

    images = {}
    for path in normal:
        rgb = to_rgb_array(path)
        images[engine.add_shot(rgb, kind="normal")] = rgb
    for path, mpath, dtype in anomalous:
        rgb = to_rgb_array(path)
        mask = to_mask_array(mpath, rgb.shape[:2], what=f"mask {mpath}")
        images[engine.add_shot(rgb, kind="anomalous", mask=mask, defect_type=dtype)] = rgb
    return images


def _file_shots(args) -> tuple[list, list]:
    if len(args.mask) != len(args.anomalous):
        raise ValueError(f"give one --mask per --anomalous ({len(args.anomalous)} anomalous, {len(args.mask)} masks)")
    if args.defect_type and len(args.defect_type) != len(args.anomalous):
        raise ValueError("give one --defect-type per --anomalous, or none")
    if not args.normal and not args.anomalous:
        raise ValueError("give the shots: --project NAME, --shots DIR, or --normal (and --anomalous with --mask)")
    anomalous = [(a, m, args.defect_type[i] if args.defect_type else None)
                 for i, (a, m) in enumerate(zip(args.anomalous, args.mask))]
    return list(args.normal), anomalous


def run(args) -> int:
    import sys

    from fsad_core.cli.common import (
        attach_scorers,
        check_personalize_args,
        engine_component_names,
        extra_component_names,
        weights_from_arg,
    )
    from fsad_core.cli.score import config_from_args
    from fsad_core.names import display

    # -- everything that can be checked before a model loads or a file is written ----------------
    sources = [n for n, on in (("--project", args.project), ("--shots", args.shots),
                               ("--normal/--anomalous", args.normal or args.anomalous),
                               ("--bundle", getattr(args, "bundle", None))) if on]
    if len(sources) > 1:
        raise ValueError(f"give the shots one way: {' or '.join(sources)}, not both")
    if getattr(args, "bundle", None) or getattr(args, "ray", None):
        from fsad_core.cli.inspect_ray import run_bundle

        return run_bundle(args)
    threshold = parse_threshold(args.threshold or "auto")
    out = check_input_output(args)
    check_personalize_args(args)
    from fsad_core.inspect_batch import check_output_folder

    check_output_folder(args.input, out, restart=args.restart, force=args.force)  # before any model loads
    config = config_from_args(args)
    weights = weights_from_arg(args.weights, engine_component_names(config, extra_component_names(args)), "inspect")
    store, pid, class_name, normal, anomalous = shot_source(args)
    calib = None
    if args.calibration is not None:
        if threshold != "auto":
            raise ValueError("--calibration is for --threshold auto; drop one of them")
        from fsad_core.calibration import check_alpha, check_confidence
        from fsad_core.labelled_folder import read_labelled_folder

        check_alpha(args.alpha)
        check_confidence(args.confidence)
        calib = read_labelled_folder(args.calibration, flat_ok=True)
        for note in calib.notes:
            print(f"note: {args.calibration}: {note}", file=sys.stderr)
        if not calib.ok:
            raise ValueError(f"--calibration {args.calibration!r} holds no OK image: a threshold needs good parts "
                             "(OK/ or good/)")
    if threshold == "auto" and calib is None and not args.project and not normal:
        raise ValueError("--threshold auto is calibrated on augmented copies of the normal shots and there are "
                         "none: give a threshold (--threshold T, an aggregate score such as 0.5) or a normal shot")

    from fsad_core.inspect_batch import list_images

    files = list_images(args.input, exclude=[out])
    if not files:
        raise FileNotFoundError(f"no images under {args.input!r} (looked for png, jpg, bmp, tif, webp)")

    from fsad_core.models.registry import hub_offline_if_unreachable

    hub_offline_if_unreachable()
    from fsad_core.engine import Engine
    from fsad_core.inspect_batch import run_batch
    from fsad_core.progress import tqdm_progress

    engine = Engine(config)
    attach_scorers(engine, args)
    engine.set_class_name(args.class_name or class_name or "object")
    images = add_source_shots(engine, args, store, pid, normal, anomalous)
    if threshold == "auto" and calib is not None:
        threshold = _calibrate_on_folder(engine, calib, weights, args)
    elif threshold == "auto" and args.project:
        threshold = _project_calibration(store, pid, engine, weights, images, args) or "auto"
    if not isinstance(threshold, (str, float)):
        print(f"threshold: {threshold.text}", file=sys.stderr)
    with tqdm_progress("inspect") as progress:
        s = run_batch(engine, args.input, out, weights=weights, threshold=threshold,
                      overlays=not args.no_overlays, restart=args.restart, images=images, files=files,
                      progress=progress, force=args.force)
    print(f"{s.n_images} images: {s.n_scored} scored, {s.n_resumed} already done, {s.n_failed} unreadable; "
          f"{s.n_anomalous} anomalous at threshold {s.threshold:.4f} ({s.threshold_source})")
    print(f"wrote {display(s.csv_path)} and {display(s.html_path)}")
    return 0


def _calibrate_on_folder(engine, calib, weights, args):
    """A Calibration from a labelled (or flat, all-OK) folder of held-out images."""
    from fsad_core.calibration import calibrate_engine
    from fsad_core.images import to_rgb_array

    ok = [to_rgb_array(p) for p in calib.ok]
    ng = [to_rgb_array(p) for p, _ in calib.ng]
    return calibrate_engine(engine, ok, ng, weights=weights, alpha=args.alpha, confidence=args.confidence)


def _project_calibration(store, pid, engine, weights, images, args):
    """--project and --threshold auto: the project's saved threshold for these weights, else one
    calibrated on its review labels (OK / NG queries), else None (the shots-only heuristic)."""
    get = getattr(store, "get_threshold", None)
    if get is None:  # a storage without decisions (older schema): the heuristic
        return None
    from fsad_core.calibration import Calibration, calibrate_engine

    rec = get(pid, weights)
    if rec is not None:
        return Calibration.from_dict(rec["calibration"])
    ok, ng = [], []
    for row in store.labelled_images(pid, role="query"):  # shots are in the memory: not held out
        (ok if row["label"] == "OK" else ng).append(store.read_image(row["id"]))
    if not ok:
        return None
    return calibrate_engine(engine, ok, ng, weights=weights, alpha=args.alpha, confidence=args.confidence)
