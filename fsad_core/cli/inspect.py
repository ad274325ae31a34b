"""`python -m fsad_core inspect`: score a folder of unlabelled images in batch (resumable)."""
from __future__ import annotations


def register(sub) -> None:
    from fsad_core.cli.score import add_model_args

    p = sub.add_parser("inspect", help="score a folder of images in batch: CSV, overlays, HTML report",
                       description="Score every image under --input with a project's shots (or shots given on the "
                                   "command line): scores.csv with verdicts at a threshold, heatmap overlays and a "
                                   "self-contained report.html. Re-running with the same --out resumes.")
    src = p.add_argument_group("shots: a stored project, or files like the score command")
    src.add_argument("--project", default=None, metavar="NAME", help="use this studio project's shots")
    src.add_argument("--data-dir", default=None, help="the studio's data folder (default: the studio's default)")
    src.add_argument("--normal", action="append", default=[], metavar="N.png", help="normal shot (repeatable)")
    src.add_argument("--anomalous", action="append", default=[], metavar="A.png", help="anomalous shot (repeatable)")
    src.add_argument("--mask", action="append", default=[], metavar="M.png", help="mask of the matching --anomalous")
    src.add_argument("--defect-type", action="append", default=[], metavar="T")
    p.add_argument("--class-name", default=None, help="object class for the text prompts (default: the project's)")
    p.add_argument("--input", required=True, metavar="FOLDER", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--threshold", default="auto",
                   help="aggregate score at or above which an image is 'anomalous'; 'auto' = F1-max on augmented shots")
    p.add_argument("--weights", default=None, help="name=w,... or a preset (paper, equal); default: the paper's eq. 2")
    p.add_argument("--no-overlays", action="store_true", help="skip the heatmap overlay PNGs")
    p.add_argument("--restart", action="store_true", help="discard an earlier run in --out instead of resuming it")
    add_model_args(p)
    p.set_defaults(func=run)


def _shots_from_project(args, engine) -> dict:
    try:
        from storage import Store
    except ImportError:
        raise ValueError("--project needs the studio's storage package, which is not installed here; "
                         "give the shots with --normal/--anomalous/--mask instead") from None
    import storage

    data_dir = args.data_dir or storage.default_data_dir()
    store = Store(data_dir)
    proj = store.find_project(args.project)
    if proj is None:
        raise ValueError(f"no project named {args.project!r} in {data_dir}")
    pid = proj["id"] if isinstance(proj, dict) else proj
    engine.set_class_name(args.class_name or store.get_project(pid).get("class_name") or "object")
    images = {}
    for role in ("normal", "anomalous"):
        for row in store.list_images(pid, role=role):
            rgb = store.read_image(row["id"])
            if role == "normal":
                images[engine.add_shot(rgb, kind="normal")] = rgb
            else:
                mask = store.get_mask(row["id"])
                if mask is None or not mask.any():
                    continue  # an anomalous image without a painted mask cannot be a shot yet
                images[engine.add_shot(rgb, kind="anomalous", mask=mask, defect_type=row.get("defect_type"))] = rgb
    if not images:
        raise ValueError(f"project {args.project!r} has no shots: add normal (and annotated anomalous) images first")
    return images


def _shots_from_files(args, engine) -> dict:
    from fsad_core.images import to_mask_array, to_rgb_array

    if len(args.mask) != len(args.anomalous):
        raise ValueError(f"give one --mask per --anomalous ({len(args.anomalous)} anomalous, {len(args.mask)} masks)")
    if args.defect_type and len(args.defect_type) != len(args.anomalous):
        raise ValueError("give one --defect-type per --anomalous, or none")
    if not args.normal and not args.anomalous:
        raise ValueError("give --project NAME, or shots with --normal (and --anomalous with --mask)")
    engine.set_class_name(args.class_name or "object")
    images = {}
    for path in args.normal:
        rgb = to_rgb_array(path)
        images[engine.add_shot(rgb, kind="normal")] = rgb
    for i, (path, mpath) in enumerate(zip(args.anomalous, args.mask)):
        rgb = to_rgb_array(path)
        mask = to_mask_array(mpath, rgb.shape[:2], what=f"mask {mpath}")
        images[engine.add_shot(rgb, kind="anomalous", mask=mask,
                               defect_type=args.defect_type[i] if args.defect_type else None)] = rgb
    return images


def run(args) -> int:
    import sys
    from pathlib import Path

    from fsad_core.cli.common import parse_weights
    from fsad_core.models.registry import hub_offline_if_unreachable

    if args.project and (args.normal or args.anomalous):
        raise ValueError("give either --project or --normal/--anomalous shots, not both")
    threshold = args.threshold
    if threshold != "auto":
        try:
            threshold = float(threshold)
        except ValueError:
            raise ValueError(f"--threshold must be a number or 'auto', got {args.threshold!r}") from None
    if not Path(args.input).is_dir():
        raise FileNotFoundError(f"input folder {args.input!r} does not exist")
    hub_offline_if_unreachable()
    from tqdm import tqdm

    from fsad_core.aggregate import PRESETS
    from fsad_core.cli.score import config_from_args
    from fsad_core.engine import Engine
    from fsad_core.inspect_batch import list_images, run_batch

    files = list_images(args.input)
    if not files:
        raise FileNotFoundError(f"no images under {args.input!r} (looked for {', '.join(('png', 'jpg', 'bmp', 'tif'))} ...)")
    engine = Engine(config_from_args(args))
    images = _shots_from_project(args, engine) if args.project else _shots_from_files(args, engine)
    if args.weights in PRESETS:
        weights = {k: v for k, v in PRESETS[args.weights].items() if k in engine.component_names}
    else:
        weights = parse_weights(args.weights)
    bar = tqdm(total=len(files), desc="inspect", unit="img", file=sys.stderr)

    def progress(done, total, path):
        bar.update(done - bar.n)

    try:
        s = run_batch(engine, args.input, args.out, weights=weights, threshold=threshold,
                      overlays=not args.no_overlays, restart=args.restart, images=images, files=files,
                      progress=progress)
    finally:
        bar.close()
    print(f"{s.n_images} images: {s.n_scored} scored, {s.n_resumed} already done, {s.n_failed} unreadable; "
          f"{s.n_anomalous} anomalous at threshold {s.threshold:.4f} ({s.threshold_source})")
    print(f"wrote {s.csv_path} and {s.html_path}")
    return 0
