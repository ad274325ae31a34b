"""`python -m fsad_core adapters train|info`: train APRIL-GAN adapter heads, show a checkpoint."""
from __future__ import annotations

from fsad_core.runtime import PRECISIONS, PROFILES, check_profile


def register(sub) -> None:
    p = sub.add_parser("adapters", help="train APRIL-GAN adapters (per-stage linear heads on a frozen CLIP)")
    asub = p.add_subparsers(dest="adapters_command", required=True)
    t = asub.add_parser("train", help="train the heads on a labelled MVTec-layout folder (progress bar, resumable)",
                        description="Train the 4 per-stage linear heads (CLIP frozen) with focal + dice loss on the "
                                    "test images and masks of the chosen categories. An interrupted run resumes "
                                    "from OUT.resume.pt when started again with the same data and settings.")
    t.add_argument("--data", required=True, metavar="DIR", help="MVTec-AD layout (CAT/test/<type>, CAT/ground_truth) or VisA")
    t.add_argument("--categories", default="all", help="all | a,b,c")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write (.safetensors)")
    t.add_argument("--profile", default=None, choices=PROFILES, help="tiny = random 4-block CLIP, for testing")
    t.add_argument("--backbone", default=None, help="open_clip architecture (default ViT-L-14-336; tiny: fsad-tiny-clip-s4)")
    t.add_argument("--pretrained", default=None, help="pretrained tag or local file (default openai)")
    t.add_argument("--resolution", type=int, default=None, help="training/scoring size in px (default 518; tiny 240)")
    t.add_argument("--stage-norm", action="store_true", help="apply ln_post to the stage tokens (default: raw)")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--mosaic", type=float, default=0.2, help="probability of the 4-image mosaic")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT.resume.pt exists")
    t.add_argument("--precision", default="auto", choices=PRECISIONS)
    t.add_argument("--device", default="auto")
    t.add_argument("--cache-dir", default=None)
    t.set_defaults(func=run_train)
    i = asub.add_parser("info", help="print a checkpoint's header (backbone, stages, training data, metrics)")
    i.add_argument("ckpt", metavar="CKPT")
    i.set_defaults(func=run_info)


def backbone_ref_from_args(args):
    import os

    from fsad_core.adapters.stages import BackboneRef

    profile = args.profile or os.environ.get("FSAD_PROFILE", "standard")
    profile = check_profile(profile)
    ref = BackboneRef.default(profile, args.resolution)
    if args.resolution is not None and args.resolution < 32:
        raise ValueError(f"--resolution must be at least 32 px, got {args.resolution}")
    return BackboneRef(args.backbone or ref.name, args.pretrained or ref.tag, profile, ref.resolution,
                       bool(args.stage_norm))


def run_train(args) -> int:
    import sys

    from fsad_core.cli.common import check_output_file
    from fsad_core.models.registry import hub_offline_if_unreachable

    out = check_output_file(args.out, "--out")
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be at least 1")
    from fsad_core.adapters.train import TrainConfig, folder_items, resume_path, train_adapters

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, mosaic_p=args.mosaic, seed=args.seed)
    items, data = folder_items(args.data, args.categories)  # layout errors before the model loads
    ref = backbone_ref_from_args(args)
    hub_offline_if_unreachable()
    from fsad_core.adapters.stages import AdapterBackbone
    from fsad_core.progress import tqdm_progress

    backbone = AdapterBackbone(ref, device=args.device, precision=args.precision, cache_dir=args.cache_dir)
    if args.no_resume:
        resume_path(out).unlink(missing_ok=True)
    elif resume_path(out).is_file():
        print(f"resuming from {resume_path(out)}", file=sys.stderr)
    print(f"training adapters on {len(items)} images ({', '.join(data['categories'])}) with "
          f"{ref.name}@{ref.tag} at {ref.resolution} px, stages {backbone.stages}", file=sys.stderr)
    with tqdm_progress("adapters") as progress:
        ckpt = train_adapters(backbone, items, out, cfg, data, progress=progress, resume=not args.no_resume)
    m = ckpt.metrics
    print(f"wrote {out}: loss {m['first_loss']:.4f} -> {m['final_loss']:.4f} over {m['steps']} steps "
          f"({m['train_seconds']:.1f} s)")
    return 0


def run_info(args) -> int:
    import json

    from fsad_core.adapters.checkpoint import read_header

    print(json.dumps(read_header(args.ckpt), indent=2))
    return 0
