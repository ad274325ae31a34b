"""fsad-studio: `python app.py` (or `make app`) opens the studio in the browser.

Flags (each also an environment variable):
  --profile standard|tiny   FSAD_PROFILE   (default standard; falls back to tiny when the weights
                                            are absent and cannot be downloaded, with a banner)
  --data-dir PATH           FSAD_DATA_DIR  (projects database and images)
  --host HOST               FSAD_HOST      (default 127.0.0.1)
  --port PORT               FSAD_PORT      (default 7860)
  --share                   FSAD_SHARE=1   (public Gradio link; off by default)
  --max-upload-mb MB        FSAD_MAX_UPLOAD_MB (default 200: larger uploads are refused by the server)

The studio refuses to start on a damaged database (SQLite's quick_check at start), with one
`error:` line that says how to recover; it never opens one that it cannot vouch for.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger("fsad.app")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="app.py", description="fsad-studio: few-shot visual anomaly inspection studio")
    p.add_argument("--profile", choices=("standard", "tiny"), default=os.environ.get("FSAD_PROFILE", "standard"),
                   help="model profile: standard (real weights) or tiny (random weights, for testing only) "
                        "[FSAD_PROFILE]")
    p.add_argument("--data-dir", default=os.environ.get("FSAD_DATA_DIR"),
                   help="where projects are stored [FSAD_DATA_DIR]; default: the store's default data dir")
    p.add_argument("--host", default=os.environ.get("FSAD_HOST", "127.0.0.1"), help="bind address [FSAD_HOST]")
    p.add_argument("--port", type=int, default=int(os.environ.get("FSAD_PORT", "7860")), help="port [FSAD_PORT]")
    p.add_argument("--share", action="store_true", default=_env_flag("FSAD_SHARE"),
                   help="create a public Gradio share link [FSAD_SHARE=1]")
    p.add_argument("--max-upload-mb", type=float, default=float(os.environ.get("FSAD_MAX_UPLOAD_MB", "200")),
                   help="largest file a browser may upload, in MB [FSAD_MAX_UPLOAD_MB; default 200]")
    return p.parse_args(argv)


def resolve_profile(requested: str):
    """(profile, backbone or None, banner or None): try the requested profile's CLIP; when the
    standard weights are missing fall back to tiny and say so, persistently."""
    from fsad_core import EngineConfig
    from fsad_core.models.clip import ClipBackbone
    from fsad_core.models.registry import TINY_NOTE, ModelSpec, ModelUnavailableError

    tiny_banner = (f"**Tiny profile: {TINY_NOTE}.** Scores and masks are meaningless; the workflow is real. "
                   "Get the real models with `make models` (or the Models tab) and restart with `--profile standard`.")
    if requested == "tiny":
        return "tiny", ClipBackbone(EngineConfig(profile="tiny")), tiny_banner
    try:
        return "standard", ClipBackbone(EngineConfig(profile="standard")), None
    except ModelUnavailableError as exc:
        log.warning("standard weights unavailable, starting on the tiny profile: %s", exc)
        model = exc.spec.name if isinstance(exc.spec, ModelSpec) else (exc.spec or "CLIP")
        why = "no network and not in the cache" if exc.reason == "offline" else exc.detail
        banner = (f"**The standard model weights are not available** ({model}: {why}), so the studio runs on the "
                  f"**tiny profile — {TINY_NOTE}**. Get the real models with `make models` or the Models tab, "
                  "then restart with `--profile standard`.")
        return "tiny", ClipBackbone(EngineConfig(profile="tiny")), banner


def check_store(store, data_dir) -> None:
    """Refuse to serve a damaged database: SQLite's quick_check reads every page (0.6-0.9 s for a
    300 MB database on a 2-core machine). A damaged store raises DamagedStoreError naming the damage and the way to recover; the studio
    does not start on it, so it never claims that saved work is intact when it cannot know."""
    from storage.health import recovery_hint
    from storage.store import DamagedStoreError

    problems = store.quick_check()
    if problems:
        store.close()
        shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise DamagedStoreError(f"The studio's database in {data_dir} is damaged ({shown}); the studio was not "
                                f"started and nothing was changed. `python -m storage check --data-dir {data_dir}` "
                                "says what is damaged. " + recovery_hint(data_dir))


def create_app(profile: str = "tiny", data_dir: str | None = None):
    """(demo, ctx): the studio on a store in `data_dir`; used by `main` and by the end-to-end tests."""
    from fsad_core.models import registry

    registry.hub_offline_if_unreachable()  # before anything imports huggingface_hub (open_clip, diffusers)
    from storage import Store, default_data_dir

    data_dir = data_dir or default_data_dir()
    store = Store(data_dir)  # a database SQLite cannot open raises DamagedStoreError, with the way out
    check_store(store, data_dir)  # before the UI and the models load: a damaged store is refused at once
    from ui.context import StudioContext
    from ui.studio import build_studio

    active, backbone, banner = resolve_profile(profile)
    ctx = StudioContext(store, profile=active, banner=banner, backbone=backbone, data_dir=data_dir)
    return build_studio(ctx), ctx


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if not args.max_upload_mb > 0:
        print(f"error: --max-upload-mb must be a positive number of MB, got {args.max_upload_mb}", file=sys.stderr)
        return 2
    from storage import StoreError
    from storage.migrations import SchemaError

    try:
        demo, ctx = create_app(args.profile, args.data_dir)
    except (StoreError, SchemaError) as exc:  # a damaged database, not a studio database, a newer schema
        from fsad_core.names import safe_line

        print(f"error: {safe_line(str(exc))}", file=sys.stderr)
        return 2
    from ui.studio import launch_kwargs

    log.info("profile %s; data in %s", ctx.profile, getattr(ctx.store, "path", args.data_dir))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True,
                **launch_kwargs(max_upload_mb=args.max_upload_mb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
