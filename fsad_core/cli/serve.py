"""`python -m fsad_core serve --bundle FILE`: the scoring service (fsad_core/serve.py)."""
from __future__ import annotations

import sys


def register(sub) -> None:
    from fsad_core.serve import DEFAULT_MAX_PENDING, DEFAULT_MAX_UPLOAD_MB

    p = sub.add_parser("serve", help="serve an inspection bundle over HTTP (POST /score, GET /health, GET /bundle)",
                       description="A small HTTP scoring service: one engine per process, loaded from an inspection "
                                   "bundle (`bundle export`). OpenAPI docs at /docs.")
    p.add_argument("--bundle", required=True, metavar="FILE", help="the inspection bundle to score with")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help="request size limit (413 above)")
    p.add_argument("--max-pending", type=int, default=DEFAULT_MAX_PENDING,
                   help="requests queued or running at once; more get 503 (default %(default)s)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--cache-dir", default=None, help="model weights cache")
    p.add_argument("--clip-pretrained", default=None, metavar="FILE",
                   help="a local checkpoint standing in for the bundle's weights (their checksum must match)")
    p.set_defaults(func=run)


def run(args) -> int:
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be 1..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_pending < 1:
        raise ValueError("--max-upload-mb must be > 0 and --max-pending >= 1")
    from fsad_core.bundle import read_manifest

    read_manifest(args.bundle)  # format and version, before a model loads
    from fsad_core.models.registry import hub_offline_if_unreachable

    hub_offline_if_unreachable()
    import torch
    import uvicorn

    if args.threads:
        torch.set_num_threads(int(args.threads))
    from fsad_core.engine import Engine
    from fsad_core.serve import create_app

    engine = Engine.from_bundle(args.bundle, device=args.device, cache_dir=args.cache_dir,
                                clip_pretrained=args.clip_pretrained)
    app = create_app(engine, max_upload_bytes=int(args.max_upload_mb * 1e6), max_pending=args.max_pending)
    b = engine.bundle
    print(f"serving {args.bundle} ({b.manifest['class_name']}, {b.manifest['model']['clip']['id']}, "
          f"threshold {b.threshold:.4f}) on http://{args.host}:{args.port} (docs at /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
