"""`python -m fsad_core inspect --bundle FILE [--ray [ADDRESS]]`: batch inspection from an inspection bundle,
in this process or on Ray actors (fsad_core/ray_batch.py). Same outputs as `inspect` with shots."""
from __future__ import annotations

import tempfile
from pathlib import Path


def _engine_from_shots(args):
    """--ray without --bundle: the engine `inspect` would build from --project/--shots/files."""
    from fsad_core.cli.inspect import add_source_shots, shot_source
    from fsad_core.cli.score import config_from_args
    from fsad_core.engine import Engine

    config = config_from_args(args)
    store, pid, class_name, normal, anomalous = shot_source(args)
    engine = Engine(config)
    engine.set_class_name(args.class_name or class_name or "object")
    add_source_shots(engine, args, store, pid, normal, anomalous)
    return engine


def run_bundle(args) -> int:
    from fsad_core.cli.common import weights_from_arg
    from fsad_core.inspect_batch import list_images

    if getattr(args, "personalize", None):
        raise ValueError("--personalize cannot run from a bundle or on Ray yet (bundles carry WinCLIP's memories "
                         "only): drop --bundle/--ray, or --personalize")
    if args.ray_workers < 1 or args.ray_threads < 1 or args.ray_batch_size < 1:
        raise ValueError("--ray-workers, --ray-threads and --ray-batch-size must be >= 1")
    if args.ray:
        from fsad_core.ray_batch import _require_ray

        _require_ray()
    from fsad_core.cli.inspect import check_input_output, parse_threshold

    threshold = parse_threshold(args.threshold)
    out = check_input_output(args)
    if args.bundle:
        from fsad_core.bundle import read_manifest

        read_manifest(args.bundle)  # format and version before a model loads
    files = list_images(args.input, exclude=[out])
    if not files:
        raise FileNotFoundError(f"no images under {args.input!r} (looked for png, jpg, bmp, tif, webp)")

    from fsad_core.models.registry import hub_offline_if_unreachable

    hub_offline_if_unreachable()
    from fsad_core.bundle import export_bundle
    from fsad_core.engine import Engine
    from fsad_core.inspect_batch import auto_threshold
    from fsad_core.progress import tqdm_progress

    tmp = None
    if args.bundle:
        bundle = args.bundle
        engine = Engine.from_bundle(bundle, device=args.device, cache_dir=args.cache_dir)
        weights = weights_from_arg(args.weights, list(engine.component_names), "inspect") if args.weights \
            else engine.default_weights
    else:  # --ray with shots: a bundle made here carries them to the actors
        engine = _engine_from_shots(args)
        weights = weights_from_arg(args.weights, list(engine.component_names), "inspect")
    source = "given"
    if threshold is None and args.bundle:
        threshold = engine.bundle.threshold
    elif threshold in (None, "auto") and args.ray:
        threshold, source = auto_threshold(engine, weights)
    elif threshold is None:
        threshold = "auto"  # run_batch calibrates it (and keeps it when resuming)
    if not args.bundle:
        tmp = tempfile.TemporaryDirectory(prefix="fsad-bundle-")
        bundle = export_bundle(engine, Path(tmp.name) / "run.fsad.zip", threshold=threshold, weights=weights,
                               threshold_source=source)
        engine = Engine.from_bundle(bundle, device=args.device, cache_dir=args.cache_dir, backbone=engine.backbone)
    try:
        with tqdm_progress("inspect" + (" (ray)" if args.ray else "")) as progress:
            if args.ray:
                from fsad_core.ray_batch import run_batch_ray

                s = run_batch_ray(bundle, args.input, out, engine=engine, weights=weights, threshold=threshold,
                                  threshold_source=source, overlays=not args.no_overlays, restart=args.restart,
                                  files=files, address=None if args.ray == "local" else args.ray,
                                  num_workers=args.ray_workers, threads_per_worker=args.ray_threads,
                                  batch_size=args.ray_batch_size, device=args.device, progress=progress)
            else:
                from fsad_core.inspect_batch import run_batch

                s = run_batch(engine, args.input, out, weights=weights, threshold=threshold,
                              overlays=not args.no_overlays, restart=args.restart, files=files, progress=progress)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"{s.n_images} images: {s.n_scored} scored, {s.n_resumed} already done, {s.n_failed} unreadable; "
          f"{s.n_anomalous} anomalous at threshold {s.threshold:.4f} ({s.threshold_source}) in {s.seconds:.1f} s")
    print(f"wrote {s.csv_path} and {s.html_path}")
    return 0
