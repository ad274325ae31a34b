"""`python -m fsad_core synth`: write the synthetic MVTec-layout benchmark (offline, seeded)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic MVTec-layout benchmark from bundled textures",
                       description="Write a synthetic MVTec-layout benchmark (brick, grass, gravel textures from "
                                   "scikit-image; scratch, stain, hole and foreign-texture defects with exact masks).")
    p.add_argument("--out", required=True, metavar="ROOT", help="folder to write ROOT/<category>/{train,test,ground_truth}")
    p.add_argument("--categories", default="brick,grass,gravel", help="comma-separated (brick, grass, gravel)")
    p.add_argument("--defect-types", default="scratch,stain,hole,foreign", help="comma-separated defect types")
    p.add_argument("--n-train", type=int, default=10, help="normal training images per category")
    p.add_argument("--n-test-good", type=int, default=6, help="normal test images per category")
    p.add_argument("--n-test-defect", type=int, default=8, help="defective test images per category")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args) -> int:
    from fsad_core.synth import make_dataset

    for name in ("n_train", "n_test_good", "n_test_defect"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
    man = make_dataset(args.out, categories=_split(args.categories), n_train=args.n_train,
                       n_test_good=args.n_test_good, n_test_defect=args.n_test_defect, size=args.size,
                       seed=args.seed, defect_types=_split(args.defect_types))
    for cat, c in man["categories"].items():
        defects = ", ".join(f"{k} {v}" for k, v in c["test_defect"].items()) or "none"
        print(f"{cat}: train {c['train_good']}, test good {c['test_good']}, defects: {defects}")
    print(f"wrote {args.out}")
    return 0
