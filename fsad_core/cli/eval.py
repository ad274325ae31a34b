"""`python -m fsad_core eval`: the papers' protocol and metrics on MVTec-AD / VisA style folders."""
from __future__ import annotations


def register(sub) -> None:
    from fsad_core.cli.score import add_model_args

    p = sub.add_parser("eval", help="evaluate on an MVTec-AD / VisA style dataset",
                       description="Draw K normal shots (train/good) and J anomalous shots with masks (test/<type>, "
                                   "then excluded) with each seed, score the test images with every component, "
                                   "and write metrics.json, scores.csv, ROC curves and a mean ± std table.")
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root (MVTec layout, or VisA with split_csv/1cls.csv)")
    p.add_argument("--category", action="append", required=True, metavar="CAT",
                   help="category (repeatable or comma-separated; 'all' = every category under ROOT)")
    p.add_argument("--normal-shots", type=int, default=1, metavar="K")
    p.add_argument("--anomalous-shots", type=int, default=1, metavar="J")
    p.add_argument("--seed", action="append", default=None, metavar="S", help="seed (repeatable or comma-separated; default 0)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--max-test", type=int, default=None, metavar="N", help="at most N test images per category (stratified)")
    p.add_argument("--weights", default="default",
                   help="default (paper eq. 2) | tuned (Monte-Carlo on augmented shots) | paper | equal | name=w,...")
    p.add_argument("--tune-m", type=int, default=10, help="augmented copies per shot for --weights tuned")
    p.add_argument("--tune-samples", type=int, default=100, help="random weight vectors for --weights tuned")
    p.add_argument("--tune-distribution", default="uniform", choices=("uniform", "normal", "student-t"))
    p.add_argument("--pixel-size", type=int, default=256, help="longer side of maps/masks for pixel metrics")
    p.add_argument("--layout", default="auto", choices=("auto", "mvtec", "visa"))
    p.add_argument("--pool-dir", default=None, metavar="DIR",
                   help="generated anomaly-free images (One-to-Normal pool; DIR/<category>/ or DIR itself)")
    p.add_argument("--pool-in-memory", action="store_true",
                   help="add the --pool-dir images to the normal memory of the WinCLIP components")
    # defect-type accuracy (issue 16; fsad_core/defects/evaluate.py): replaces the anomaly metrics when given
    p.add_argument("--type-shots", type=int, default=None, metavar="K",
                   help="evaluate defect-type classification with K painted shots per type (seeds default to 1-5)")
    p.add_argument("--type-classifier", default="contrastive", choices=("contrastive", "relation", "prototype"))
    p.add_argument("--type-pretrained", default="auto", metavar="auto|none|FILE", help="see `classify --pretrained`")
    add_model_args(p)
    p.set_defaults(func=run)


def _split(values) -> list[str]:
    return [v.strip() for item in values or [] for v in str(item).split(",") if v.strip()]


def run(args) -> int:
    if getattr(args, "type_shots", None) is not None:
        from fsad_core.defects.evaluate import run_eval_args

        return run_eval_args(args)
    import sys
    from pathlib import Path

    from fsad_core.aggregate import PRESETS
    from fsad_core.cli.common import check_output_dir, check_preset, check_weights, engine_component_names, parse_weights
    from fsad_core.cli.score import config_from_args
    from fsad_core.models.registry import hub_offline_if_unreachable

    if args.normal_shots < 0 or args.anomalous_shots < 0:
        raise ValueError("--normal-shots and --anomalous-shots must be >= 0")
    if args.max_test is not None and args.max_test < 2:
        raise ValueError("--max-test must be at least 2 (one good and one defective image)")
    try:
        seeds = [int(s) for s in _split(args.seed)] or [0]
    except ValueError:
        raise ValueError(f"--seed must be integers, got {args.seed}") from None
    check_output_dir(args.out, "--out")
    config = config_from_args(args)
    valid = engine_component_names(config)
    if args.weights in ("default", "tuned"):
        weights = args.weights
    elif args.weights in PRESETS:
        check_preset(args.weights, valid, "eval")  # one-to-normal needs personal/pool: eval lacks them
        weights = args.weights
    else:
        weights = check_weights(parse_weights(args.weights) or {}, valid, "eval")
    if weights == "tuned" and (args.anomalous_shots < 1 or args.normal_shots < 1):
        raise ValueError("--weights tuned needs at least one normal and one anomalous shot")

    hub_offline_if_unreachable()
    from tqdm import tqdm

    from fsad_core.engine import Engine
    from fsad_core.evaluate import evaluate_category, list_categories, write_run, write_summary

    root = Path(args.data)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist "
                                "(make one with: python -m fsad_core synth --out ROOT)")
    cats = _split(args.category)
    if cats == ["all"]:
        cats = list_categories(root)
        if not cats:
            raise FileNotFoundError(f"no categories found under {str(root)!r}")
    engine = Engine(config)
    out = Path(args.out)
    single = len(cats) == 1 and len(seeds) == 1
    tune_kwargs = dict(m=args.tune_m, n_samples=args.tune_samples, distribution=args.tune_distribution)
    runs = []
    if args.pool_in_memory and not args.pool_dir:
        raise ValueError("--pool-in-memory needs --pool-dir (a folder of generated normal images)")
    engine.set_pool_in_normal_memory(args.pool_in_memory)
    for cat in cats:
        if args.pool_dir:
            from fsad_core.personalize import load_pool

            pool_root = Path(args.pool_dir)
            folder = pool_root / cat if (pool_root / cat).is_dir() else pool_root
            pool = load_pool(folder) or [p for p in sorted(folder.iterdir())
                                         if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")]
            if not pool:
                raise FileNotFoundError(f"no pool images in {str(folder)!r}")
            engine.set_pool(pool)
            print(f"{cat}: pool of {len(pool)} generated images, in normal memory: {args.pool_in_memory}")
        for seed in seeds:
            bar = tqdm(desc=f"{cat} seed {seed}", unit="img", file=sys.stderr, leave=False)

            def progress(done, total, bar=bar):
                bar.total = total
                bar.update(done - bar.n)

            run_ = evaluate_category(root, cat, engine, args.normal_shots, args.anomalous_shots, seed=seed,
                                     max_test=args.max_test, weights=weights, pixel_size=args.pixel_size,
                                     layout=args.layout, tune_kwargs={**tune_kwargs, "seed": seed},
                                     progress=progress)
            bar.close()
            write_run(run_, out if single else out / cat / f"seed{seed}")
            m = run_.metrics
            print(f"{cat} seed {seed}: image AUROC {100 * m['image_auroc']:.1f}, pixel AUROC "
                  f"{100 * m['pixel_auroc']:.1f}, PRO {100 * m['pro']:.1f} "
                  f"({run_.n_test[0]} good + {run_.n_test[1]} defective, {run_.seconds['per_image']:.2f} s/img)")
            runs.append(run_)
    note = "tiny profile: random weights" if engine.config.profile == "tiny" else engine.backbone.model_id
    title = (f"{args.normal_shots} normal + {args.anomalous_shots} anomalous shots, weights {args.weights}, "
             f"seeds {','.join(map(str, seeds))}; {note}")
    paths = write_summary(runs, out, title=title)
    print(paths["table_md"].read_text())
    print(f"wrote {out}")
    return 0
