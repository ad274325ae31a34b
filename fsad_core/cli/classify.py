"""`python -m fsad_core classify`: the defect type of query images, from an MVTec-layout shots folder."""
from __future__ import annotations


def register(sub) -> None:
    from fsad_core.cli.score import add_model_args

    p = sub.add_parser("classify", help="predict the defect type of query images (Liu et al. 2024)",
                       description="Build a PatchCore memory from the shots folder's normal images, train a few-shot "
                                   "classifier on the residuals of its painted defects (one class per test/<type> "
                                   "folder, at least two), and classify each query's anomalous region.")
    p.add_argument("--shots", required=True, metavar="DIR",
                   help="MVTec-layout folder: train/good/* normal shots, test/<type>/* defects with "
                        "ground_truth/<type>/<name>_mask.png")
    p.add_argument("--query", action="append", required=True, metavar="Q.png", help="query image (repeatable)")
    p.add_argument("--query-mask", action="append", default=[], metavar="M.png",
                   help="defect mask of the matching --query (same order); without it the region is the "
                        "aggregate anomaly map above --threshold")
    p.add_argument("--classifier", default="contrastive", choices=("contrastive", "relation", "prototype"))
    p.add_argument("--pretrained", default="auto", metavar="auto|none|FILE",
                   help="auto: pretrain on synthetic pseudo-classes (cached per backbone); none: fine-tune from "
                        "random weights; FILE: a saved pretrained classifier")
    p.add_argument("--textures", default=None, metavar="DIR",
                   help="texture images for pretraining (e.g. DTD's images/; default: built-in textures)")
    p.add_argument("--backbone", default="resnet50", choices=("resnet50", "wide_resnet50_2"))
    p.add_argument("--threshold", type=float, default=None,
                   help="aggregate-map threshold of the query region (default: half way from the map's min to max)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True, metavar="OUT.json")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from fsad_core.cli.common import check_output_file
    from fsad_core.cli.score import config_from_args
    from fsad_core.inspect_batch import read_shot_folder

    if args.query_mask and len(args.query_mask) != len(args.query):
        raise ValueError(f"give one --query-mask per --query, or none ({len(args.query)} queries, "
                         f"{len(args.query_mask)} masks)")
    out = check_output_file(args.json, "--json")
    for q in args.query:
        if not Path(q).is_file():
            raise FileNotFoundError(f"query image {q!r} does not exist")
    if args.pretrained not in ("auto", "none") and not Path(args.pretrained).is_file():
        raise FileNotFoundError(f"--pretrained {args.pretrained!r}: no such file (or use auto / none)")
    if args.textures and not Path(args.textures).is_dir():
        raise FileNotFoundError(f"--textures folder {args.textures!r} does not exist")
    folder = read_shot_folder(args.shots)
    types = sorted({t for _, _, t in folder.anomalous})
    if len(types) < 2:
        raise ValueError(f"{args.shots!r} has painted defects of {len(types)} type(s) ({', '.join(types) or 'none'}); "
                         "classification needs test/<type>/ folders of at least 2 types with ground_truth masks")
    config = config_from_args(args)
    from fsad_core.models.registry import hub_offline_if_unreachable

    hub_offline_if_unreachable()
    from fsad_core.cli.inspect import _add_files
    from fsad_core.engine import Engine
    from fsad_core.images import to_rgb_array
    from fsad_core.progress import printer
    from fsad_core.scorers.patchcore import PatchCoreScorer

    engine = Engine(config)
    engine.set_class_name(folder.class_name)
    engine.add_scorer(PatchCoreScorer.for_engine(engine, backbone=args.backbone, seed=args.seed))
    _add_files(engine, folder.normal, folder.anomalous)

    progress = printer("classify", every=2.0)
    engine.train_defect_classifier(args.classifier, pretrained=args.pretrained, textures_dir=args.textures,
                                   seed=args.seed, progress=progress)
    rows = []
    for i, q in enumerate(args.query):
        mask = args.query_mask[i] if args.query_mask else None
        pred = engine.classify_defect(to_rgb_array(q), mask=mask, threshold=args.threshold)
        rows.append({"query": q, "type": pred.type, "probabilities": dict(pred.probabilities)})
        print(f"{q}: {pred.type} ({pred.probabilities[pred.type]:.2f})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"queries": rows, "classifier": args.classifier, "types": types}, indent=2))
    print(f"wrote {out}")
    return 0
