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
    p.add_argument("--weights", action="append", default=None, metavar="W",
                   help="repeatable: several weight sets are evaluated on the same scores, one table row each. "
                        "default/paper (posWinCLIP+ eq. 2) | winclip+ | equal | one-to-normal | april-gan | "
                        "tuned (Monte-Carlo on augmented shots) | name=w,...")
    p.add_argument("--validation-normal", type=int, default=0, metavar="K",
                   help="K more normal images from train/good as validation-only shots: weight tuning validates "
                        "on them and no memory holds them (Abdali et al. section 4.3)")
    p.add_argument("--tune-m-total", type=int, default=10,
                   help="augmented images in total for --weights tuned, split evenly over the validation sources")
    p.add_argument("--tune-m", type=int, default=None, help="augmented copies per source instead of --tune-m-total")
    p.add_argument("--tune-samples", type=int, default=100, help="random weight vectors for --weights tuned")
    p.add_argument("--tune-distribution", default="uniform", choices=("uniform", "normal", "student-t"))
    p.add_argument("--threshold", default="auto",
                   help="auto (the shots-only calibration that `inspect --threshold auto` uses) | a number | none: "
                        "metrics.json's decision block gives its false-alarm and miss rates on the test images")
    p.add_argument("--calibration-normal", type=int, default=0, metavar="N",
                   help="hold N good test images out of the test set and set a conformal threshold on them "
                        "(false alarms <= --alpha at --confidence); the decision block measures it on the rest")
    p.add_argument("--alpha", type=float, default=0.1, help="false-alarm rate to bound (with --calibration-normal)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of that bound")
    p.add_argument("--pixel-size", type=int, default=256, help="longer side of maps/masks for pixel metrics")
    p.add_argument("--layout", default="auto", choices=("auto", "mvtec", "visa"))
    p.add_argument("--pool-dir", default=None, metavar="DIR",
                   help="generated anomaly-free images (One-to-Normal pool; DIR/<category>/ or DIR itself)")
    p.add_argument("--pool-in-memory", action="store_true",
                   help="add the --pool-dir images to the normal memory of the WinCLIP components")
    # defect-type accuracy (fsad_core/defects/evaluate.py): replaces the anomaly metrics when given
    p.add_argument("--type-shots", type=int, default=None, metavar="K",
                   help="evaluate defect-type classification with K painted shots per type (seeds default to 1-5)")
    p.add_argument("--type-classifier", default="contrastive", choices=("contrastive", "relation", "prototype"))
    p.add_argument("--type-pretrained", default="auto", metavar="auto|none|FILE", help="see `classify --pretrained`")
    add_model_args(p)
    from fsad_core.cli.common import add_personalize_args

    add_personalize_args(p)
    p.set_defaults(func=run)


def _split(values) -> list[str]:
    return [v.strip() for item in values or [] for v in str(item).split(",") if v.strip()]


def _pct(v) -> str:
    """A rate as a percentage with one decimal; '–' for a missing or NaN value."""
    return "–" if v is None or v != v else f"{100 * v:.1f}"


def _check_args(args) -> tuple[list[int], str | float | None]:
    """Validate the numeric options and --out, in the order users meet them; (seeds, threshold)."""
    from fsad_core.cli.common import check_output_dir

    if args.normal_shots < 0 or args.anomalous_shots < 0 or args.validation_normal < 0:
        raise ValueError("--normal-shots, --anomalous-shots and --validation-normal must be >= 0")
    if args.max_test is not None and args.max_test < 2:
        raise ValueError("--max-test must be at least 2 (one good and one defective image)")
    try:
        seeds = [int(s) for s in _split(args.seed)] or [0]
    except ValueError:
        raise ValueError(f"--seed must be integers, got {args.seed}") from None
    check_output_dir(args.out, "--out")
    if args.calibration_normal < 0:
        raise ValueError("--calibration-normal must be >= 0")
    from fsad_core.calibration import check_alpha, check_confidence

    check_alpha(args.alpha)
    check_confidence(args.confidence)
    return seeds, _parse_threshold(args.threshold)


def _parse_threshold(value) -> str | float | None:
    """--threshold: 'auto' | None (for 'none') | a float; anything else is a ValueError."""
    threshold = {"auto": "auto", "none": None}.get(str(value).lower(), value)
    if threshold not in ("auto", None):
        try:
            threshold = float(threshold)
        except ValueError:
            raise ValueError(f"--threshold must be auto, none or a number, got {value!r}") from None
    return threshold


def _check_weights(args, modes: list[str], valid) -> list[str]:
    """Check every --weights mode before any work (typos, missing components, shots 'tuned' needs)."""
    from fsad_core.aggregate import resolve_weights
    from fsad_core.cli.common import HOW_TO_GET

    weights = []
    for mode in modes:
        if mode == "tuned":
            if args.anomalous_shots < 1 or (args.normal_shots < 1 and args.validation_normal < 1):
                raise ValueError("--weights tuned needs at least one anomalous shot and a normal shot "
                                 "(--normal-shots or --validation-normal)")
        else:
            resolve_weights(mode, valid, HOW_TO_GET)  # typos and missing components fail before any work
        weights.append(mode)
    return weights


def _categories(root, values) -> list[str]:
    """The --category values under the dataset root ('all': every category found there)."""
    from fsad_core.evaluate import list_categories

    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist "
                                "(make one with: python -m fsad_core synth --out ROOT)")
    cats = _split(values)
    if cats == ["all"]:
        cats = list_categories(root)
        if not cats:
            raise FileNotFoundError(f"no categories found under {str(root)!r}")
    return cats


def _set_category_pool(engine, pool_dir: str, cat: str, in_memory: bool) -> None:
    """Give `engine` the category's generated normal images (POOL/<cat>/ or POOL itself) and say so."""
    from pathlib import Path

    from fsad_core.names import display
    from fsad_core.personalize import load_pool

    pool_root = Path(pool_dir)
    folder = pool_root / cat if (pool_root / cat).is_dir() else pool_root
    pool = load_pool(folder) or [p for p in sorted(folder.iterdir())
                                 if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")]
    if not pool:
        raise FileNotFoundError(f"no pool images in {str(folder)!r}")
    engine.set_pool(pool)
    print(f"{display(cat)}: pool of {len(pool)} generated images, in normal memory: {in_memory}")


def _print_run(cat: str, seed: int, label: str, several: bool, run_) -> None:
    """Print one run's metrics line, its decision (if any) and its ground-truth notes."""
    from fsad_core.names import display

    m = run_.metrics
    print(f"{display(cat)} seed {seed}{' ' + label if several else ''}: image AUROC {_pct(m['image_auroc'])}, "
          f"pixel AUROC {_pct(m['pixel_auroc'])}, PRO {_pct(m['pro'])} "
          f"({run_.n_test[0]} good + {run_.n_test[1]} defective, {run_.seconds['per_image']:.2f} s/img)")
    if run_.decision is not None:
        t = run_.decision["test"]
        print(f"  threshold {run_.decision['calibration']['threshold']:.4f} "
              f"({run_.decision['calibration']['mode']}): false alarms {_pct(t['false_alarm_rate'])} %, "
              f"misses {_pct(t['miss_rate'])} % on the test images")
    for note in run_.notes.get("ground_truth", []):
        print(f"  note: {note}")


def _write_tables(runs: list, out, labels: list[str], several: bool, title: str) -> dict:
    """Write the mean ± std summary (one per weight set and a comparison table when several); its paths."""
    from fsad_core.evaluate import write_summary, write_weights_table

    if several:
        for label in labels:
            write_summary([r for r in runs if r.weights_mode == label], out / label, title=f"{title} — {label}")
        return write_weights_table(runs, out, title=title)
    return write_summary(runs, out, title=title)


def run(args) -> int:
    if getattr(args, "type_shots", None) is not None:
        from fsad_core.defects.evaluate import run_eval_args

        return run_eval_args(args)
    from pathlib import Path

    from fsad_core.cli.common import (
        attach_scorers,
        check_personalize_args,
        engine_component_names,
        extra_component_names,
    )
    from fsad_core.cli.score import config_from_args
    from fsad_core.models.registry import hub_offline_if_unreachable
    from fsad_core.names import display

    seeds, threshold = _check_args(args)
    check_personalize_args(args)
    config = config_from_args(args)
    valid = engine_component_names(config, extra_component_names(args))
    modes = list(dict.fromkeys(args.weights or ["default"]))
    weights = _check_weights(args, modes, valid)
    from fsad_core.evaluate import weights_label

    labels = [weights_label(m, i) for i, m in enumerate(modes)]
    several = len(weights) > 1

    hub_offline_if_unreachable()
    from fsad_core.engine import Engine
    from fsad_core.evaluate import evaluate_category, write_run
    from fsad_core.progress import tqdm_progress

    root = Path(args.data)
    cats = _categories(root, args.category)
    engine = Engine(config)
    attach_scorers(engine, args)
    out = Path(args.out)
    single = len(cats) == 1 and len(seeds) == 1
    tune_kwargs = dict(m=args.tune_m, m_total=args.tune_m_total, n_samples=args.tune_samples,
                       distribution=args.tune_distribution)
    runs = []
    if args.pool_in_memory and not args.pool_dir:
        raise ValueError("--pool-in-memory needs --pool-dir (a folder of generated normal images)")
    engine.set_pool_in_normal_memory(args.pool_in_memory)
    for cat in cats:
        if args.pool_dir:
            _set_category_pool(engine, args.pool_dir, cat, args.pool_in_memory)
        for seed in seeds:
            with tqdm_progress(f"{display(cat)} seed {seed}") as progress:
                got = evaluate_category(root, cat, engine, args.normal_shots, args.anomalous_shots, seed=seed,
                                        max_test=args.max_test, weights=weights, pixel_size=args.pixel_size,
                                        layout=args.layout, tune_kwargs={**tune_kwargs, "seed": seed},
                                        progress=progress, validation_normal=args.validation_normal,
                                        threshold=threshold, calibration_normal=args.calibration_normal,
                                        alpha=args.alpha, confidence=args.confidence)
            for label, run_ in zip(labels, got):
                base = out if single else out / cat / f"seed{seed}"
                write_run(run_, base / label if several else base)
                _print_run(cat, seed, label, several, run_)
                runs.append(run_)
    note = "tiny profile: random weights" if engine.config.profile == "tiny" else engine.backbone.model_id
    title = (f"{args.normal_shots} normal + {args.anomalous_shots} anomalous shots"
             f"{f' (+{args.validation_normal} validation-only normal)' if args.validation_normal else ''}, "
             f"weights {', '.join(labels)}, seeds {','.join(map(str, seeds))}; {note}")
    paths = _write_tables(runs, out, labels, several, title)
    print(display(paths["table_md"].read_text(encoding="utf-8")).replace("\\n", "\n"))
    print(f"wrote {display(str(out))}")
    return 0
