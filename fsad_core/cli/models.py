"""`python -m fsad_core models list|pull`: what each model is, where it comes from, fetch it."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="list or fetch model weights")
    msub = p.add_subparsers(dest="models_command", required=True)
    ls = msub.add_parser("list", help="every known model, its size, source and whether it is cached")
    ls.add_argument("--kind", default=None)
    ls.add_argument("--cache-dir", default=None)
    ls.set_defaults(func=run_list)
    pull = msub.add_parser("pull", help="download a model into the cache (progress bar)")
    pull.add_argument("kind", help="clip | sam | diffusion | ...")
    pull.add_argument("--name", default=None, help="default: the kind's default model")
    pull.add_argument("--tag", default=None)
    pull.add_argument("--cache-dir", default=None)
    pull.set_defaults(func=run_pull)


def run_list(args) -> int:
    from fsad_core.models import registry

    rows = registry.describe(registry.specs(args.kind), args.cache_dir)
    for r in rows:
        mark = "present" if r["present"] else "missing"
        print(f"{r['kind']:<10} {r['name'] + '@' + r['tag']:<48} {r['profile']:<9} {r['size']:>9}  {mark:<8} {r['source']}")
    print(f"cache: {registry.cache_dir(args.cache_dir)}")
    return 0


def run_pull(args) -> int:
    from fsad_core.models import registry

    if args.kind == "sam" and args.name is None and args.tag is None:
        from fsad_core.models.sam import resolve_spec

        spec = resolve_spec("standard")  # the model the studio's mask assistant uses on this machine
    else:
        spec = registry.get(args.kind, name=args.name, tag=args.tag)
    print(f"fetching {spec.kind} {spec.name}@{spec.tag} ({spec.size_text}) from {spec.source}")
    path = registry.pull(spec, args.cache_dir)
    print(f"ok: {path}")
    return 0
