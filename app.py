"""fsad-studio: `python app.py` (or `make app`) opens the studio in the browser.

Flags (each also an environment variable):
  --profile standard|tiny   FSAD_PROFILE   (default standard; falls back to tiny when the weights
                                            are absent and cannot be downloaded, with a banner)
  --data-dir PATH           FSAD_DATA_DIR  (projects database and images)
  --host HOST               FSAD_HOST      (default 127.0.0.1)
  --port PORT               FSAD_PORT      (default 7860)
  --share                   FSAD_SHARE=1   (public Gradio link; off by default)
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
    return p.parse_args(argv)


def resolve_profile(requested: str):
    """(profile, backbone or None, banner or None): try the requested profile's CLIP; when the
    standard weights are missing fall back to tiny and say so, persistently."""
    from fsad_core import EngineConfig
    from fsad_core.models.clip import ClipBackbone
    from fsad_core.models.registry import TINY_NOTE, ModelUnavailableError

    tiny_banner = (f"**Tiny profile: {TINY_NOTE}.** Scores and masks are meaningless; the workflow is real. "
                   "Get the real models with `make models` (or the Models tab) and restart with `--profile standard`.")
    if requested == "tiny":
        return "tiny", ClipBackbone(EngineConfig(profile="tiny")), tiny_banner
    try:
        return "standard", ClipBackbone(EngineConfig(profile="standard")), None
    except ModelUnavailableError as exc:
        log.warning("standard weights unavailable, starting on the tiny profile: %s", exc)
        reason = str(exc).split(". It comes from")[0]
        banner = (f"**The standard model weights are not available** ({reason}), so the studio runs on the "
                  f"**tiny profile — {TINY_NOTE}**. Get the real models with `make models` or the Models tab, "
                  "then restart with `--profile standard`.")
        return "tiny", ClipBackbone(EngineConfig(profile="tiny")), banner


def create_app(profile: str = "tiny", data_dir: str | None = None):
    """(demo, ctx): the studio on a store in `data_dir`; used by `main` and by the end-to-end tests."""
    from fsad_core.models import registry

    registry.hub_offline_if_unreachable()  # before anything imports huggingface_hub (open_clip, diffusers)
    from storage import Store, default_data_dir

    from ui.context import StudioContext
    from ui.studio import build_studio

    data_dir = data_dir or default_data_dir()
    store = Store(data_dir)
    active, backbone, banner = resolve_profile(profile)
    ctx = StudioContext(store, profile=active, banner=banner, backbone=backbone, data_dir=data_dir)
    return build_studio(ctx), ctx


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    demo, ctx = create_app(args.profile, args.data_dir)
    from ui.studio import launch_kwargs

    log.info("profile %s; data in %s", ctx.profile, getattr(ctx.store, "path", args.data_dir))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True, **launch_kwargs())
    return 0


if __name__ == "__main__":
    sys.exit(main())
