"""CPU time of defect-type classification with ResNet-50 at 256 px (random weights: the timing does not
depend on them): PatchCore memory building, pretraining on synthetic pseudo-classes, fine-tuning and
one classification.

    python benchmarks/bench_defects.py [--threads 2] [--normal 4] [--shots 3] [--types 3] [--iters 20]

Pretraining is timed for `--iters` episodes (it stops when training accuracy passes 0.4, which random
features may never reach; the per-episode time and the synthetic-set time are what scale).
Fine-tuning runs the paper's passes for `--shots` shots per type (45 / 25 / 15 for 2 / 3 / 4-5).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--normal", type=int, default=4, help="normal shots in the memory")
    ap.add_argument("--shots", type=int, default=3, help="painted shots per defect type")
    ap.add_argument("--types", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20, help="pretraining episodes timed")
    ap.add_argument("--per-class", type=int, default=4, help="synthetic images per pseudo-class")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from fsad_core.defects.api import DefectTypeModel
    from fsad_core.defects.episodes import finetune_passes
    from fsad_core.defects.pretrain import finetune, pretrain
    from fsad_core.defects.synthetic import builtin_textures
    from fsad_core.patchcore.features import build_extractor
    from fsad_core.patchcore.knn import faiss_available
    from fsad_core.scorers.base import Query, ScorerContext, ShotData
    from fsad_core.scorers.patchcore import PatchCoreScorer
    from fsad_core.synth import DEFECT_TYPES, add_defect, normal_image

    rng = np.random.default_rng(0)
    ext = build_extractor("standard", "resnet50", image_size=args.size, random_weights=True)
    scorer = PatchCoreScorer(extractor=ext)
    types = DEFECT_TYPES[:args.types]
    normals = [normal_image("brick", rng, args.size) for _ in range(args.normal)]
    painted = [(t, *add_defect(normal_image("brick", rng, args.size), t, rng)) for t in types for _ in range(args.shots)]
    shots = [ShotData(f"n{i}", "normal", im) for i, im in enumerate(normals)]
    shots += [ShotData(f"a{i}", "anomalous", im, m, t) for i, (t, im, m) in enumerate(painted)]
    out: dict = {"backbone": "resnet50 (random weights)", "image_size": args.size, "threads": args.threads,
                 "knn": "faiss" if faiss_available() else "torch", "normal_shots": args.normal,
                 "shots_per_type": args.shots, "types": args.types}

    t = time.perf_counter()
    scorer.prepare(ScorerContext(tuple(shots), "brick", 1))
    out["memory_s"] = time.perf_counter() - t
    out["memory_rows"] = int(scorer.memory.shape[0])
    out["feature_s_per_image"] = out["memory_s"] / len(shots)

    textures = builtin_textures()
    marks: dict = {}

    def progress(fraction, message):  # the synthetic set is the first half of pretrain's bar
        if fraction >= 0.5 and "synthetic_done" not in marks:
            marks["synthetic_done"] = time.perf_counter()

    t = time.perf_counter()
    clf, log = pretrain(scorer, normals, textures, "contrastive", n_per_class=args.per_class, max_iters=args.iters,
                        target_acc=2.0, use_cache=False, progress=progress)
    out["pretrain_s"] = time.perf_counter() - t
    out["pretrain_synthetic_set_s"] = marks["synthetic_done"] - t
    out["pretrain_s_per_episode"] = (time.perf_counter() - marks["synthetic_done"]) / max(1, log.iterations)
    out["pretrain_iterations"] = log.iterations
    out["pretrain_pseudo_classes"] = len(textures)
    out["pretrain_synthetic_images"] = len(textures) * args.per_class

    support = torch.stack([scorer.residual_map(im, m) for _, im, m in painted])
    support_y = np.repeat(np.arange(len(types)), args.shots)
    passes = finetune_passes(args.shots)
    t = time.perf_counter()
    ft, flog = finetune(clf, support, support_y, passes)
    out["finetune_s"] = time.perf_counter() - t
    out["finetune_passes"] = passes
    out["finetune_episodes"] = flog.iterations
    out["finetune_s_per_episode"] = out["finetune_s"] / max(1, flog.iterations)

    model = DefectTypeModel("contrastive", list(types), ft, support, torch.from_numpy(support_y))
    q_img, q_mask = add_defect(normal_image("brick", rng, args.size), types[0], rng)
    t = time.perf_counter()
    model.predict(scorer.residual_map(q_img, q_mask))
    out["classify_s"] = time.perf_counter() - t
    t = time.perf_counter()
    scorer.score(Query(q_img, "q2", q_img.shape[:2]))
    out["patchcore_score_s"] = time.perf_counter() - t
    out["load_average_1min_at_end"] = os.getloadavg()[0]  # other work on the machine inflates every time
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
