"""`python -m fsad_core score`: score query images against normal/anomalous shots."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fsad_core.runtime import PRECISIONS, PROFILES


def register(sub) -> None:
    p = sub.add_parser("score", help="score query images with every component",
                       description="Score query images against normal and annotated anomalous shots.")
    p.add_argument("--normal", action="append", default=[], metavar="N.png", help="normal shot (repeatable)")
    p.add_argument("--anomalous", action="append", default=[], metavar="A.png", help="anomalous shot (repeatable)")
    p.add_argument("--mask", action="append", default=[], metavar="M.png",
                   help="defect mask of the matching --anomalous (same order; non-zero = defect)")
    p.add_argument("--defect-type", action="append", default=[], metavar="T", help="defect type of the matching --anomalous")
    p.add_argument("--query", action="append", required=True, metavar="Q.png", help="query image (repeatable)")
    p.add_argument("--class-name", required=True, help="object class used by the text prompts, e.g. bottle")
    add_model_args(p)
    from fsad_core.cli.common import add_personalize_args

    add_personalize_args(p)
    p.add_argument("--weights", default=None,
                   help="a preset (paper = posWinCLIP+ eq. 2, the default; winclip+; equal; one-to-normal; "
                        "april-gan) or name=w,... Unknown component names are an error")
    p.add_argument("--json", required=True, metavar="OUT.json", help="where to write the scores")
    p.add_argument("--maps-dir", default=None, metavar="DIR", help="write <component>.npy maps and PNG overlays here")
    p.set_defaults(func=run)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip-model", default="ViT-B-16-plus-240")
    p.add_argument("--clip-pretrained", default="laion400m_e31", help="pretrained tag or a local checkpoint file")
    p.add_argument("--profile", default=None, choices=PROFILES, help="tiny = random weights, for testing")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--device", default="auto")
    p.add_argument("--scales", default="1,2,3,7", help="window scales in patches (16 px each)")
    p.add_argument("--cache-dir", default=None)
    from fsad_core.cli.adapter_args import add_adapter_argument

    add_adapter_argument(p)  # --adapter CKPT (APRIL-GAN adapter components)


def config_from_args(args):
    from fsad_core.config import EngineConfig

    try:
        scales = tuple(int(s) for s in str(args.scales).split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--scales must be comma-separated integers, got {args.scales!r}") from None
    kw = dict(clip_model=args.clip_model, clip_pretrained=args.clip_pretrained, precision=args.precision,
              device=args.device, scales=scales, cache_dir=args.cache_dir)
    if args.profile:
        kw["profile"] = args.profile
    return EngineConfig(**kw)


def _unique_dirs(paths: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = Path(p).stem or "query"
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}_{n}")
    return out


def run(args) -> int:
    if len(args.mask) != len(args.anomalous):
        raise ValueError(f"give one --mask per --anomalous ({len(args.anomalous)} anomalous, {len(args.mask)} masks)")
    if args.defect_type and len(args.defect_type) != len(args.anomalous):
        raise ValueError("give one --defect-type per --anomalous, or none")
    if not args.normal and not args.anomalous:
        raise ValueError("give at least one --normal or --anomalous shot")
    from fsad_core.cli.common import (
        attach_scorers,
        check_output_dir,
        check_output_file,
        check_personalize_args,
        engine_component_names,
        extra_component_names,
        weights_from_arg,
    )
    from fsad_core.models.registry import hub_offline_if_unreachable

    # everything that can be checked before the model loads is checked first
    json_path = check_output_file(args.json, "--json")
    if args.maps_dir:
        check_output_dir(args.maps_dir, "--maps-dir")
    check_personalize_args(args)
    config = config_from_args(args)
    wset = weights_from_arg(args.weights, engine_component_names(config, extra_component_names(args)), "score")
    hub_offline_if_unreachable()
    import numpy as np
    from PIL import Image

    from fsad_core import names
    from fsad_core.aggregate import effective_weights
    from fsad_core.engine import Engine
    from fsad_core.images import to_mask_array, to_rgb_array
    from fsad_core.overlay import overlay

    engine = Engine(config)
    attach_scorers(engine, args)
    engine.set_class_name(args.class_name)
    for path in args.normal:
        engine.add_shot(path, kind="normal")
    for i, (path, mpath) in enumerate(zip(args.anomalous, args.mask)):
        rgb = to_rgb_array(path)
        mask = to_mask_array(mpath, rgb.shape[:2], what=f"mask {mpath}")
        engine.add_shot(rgb, kind="anomalous", mask=mask,
                        defect_type=args.defect_type[i] if args.defect_type else None)
    out = {"class_name": engine.class_name, "model": engine.backbone.model_id, "profile": engine.config.profile,
           "precision": engine.backbone.precision_name, "queries": []}
    dirs = _unique_dirs(args.query)
    for qpath, sub in zip(args.query, dirs):
        rgb = to_rgb_array(qpath)
        result = engine.score(rgb)
        agg = result.aggregate(wset)
        out["queries"].append({
            **names.record(str(qpath), "query"), "size": list(result.size_hw),  # escaped name (+ query_b64)
            "components": {k: {"score": float(v.score)} for k, v in result.components.items()},
            "aggregate": {"score": float(agg.score), "weights": effective_weights(wset, result.components),
                          "rule": wset.rule, "preset": wset.name},
        })
        if args.maps_dir:
            d = Path(args.maps_dir) / sub if len(args.query) > 1 else Path(args.maps_dir)
            d.mkdir(parents=True, exist_ok=True)
            for name, sm in list(result.components.items()) + [("aggregate", agg)]:
                np.save(d / f"{name}.npy", sm.map.astype(np.float32))
                Image.fromarray(overlay(rgb, sm.map)).save(d / f"{name}.png")
    if len(out["queries"]) == 1:  # convenience: one query's scores also at the top level
        out["components"] = out["queries"][0]["components"]
        out["aggregate"] = out["queries"][0]["aggregate"]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=2))
    for q in out["queries"]:
        print(f"{names.display(q['query'])}: aggregate {q['aggregate']['score']:.4f}")
    return 0
