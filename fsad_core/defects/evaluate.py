"""Defect-type evaluation (`python -m fsad_core eval --type-shots K`), as the paper's tables.

Per category and seed: K painted shots of every defect type (drawn with the seed from test/<type>,
with their ground-truth masks) and `normal_shots` normal shots (train/good) are the shots; every other
defective test image of those types is a query, classified inside its ground-truth mask (the paper
classifies known-anomalous images; the region rule of unmasked queries is the studio's concern).
Types with fewer than K + 1 images are left out (no query would remain). Accuracy per category =
mean over seeds; the table's last row = the mean over categories. Seeds 1-5 as the paper.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..progress import Progress, steps

PAPER_SEEDS = (1, 2, 3, 4, 5)


@dataclass
class TypeRun:
    category: str
    seed: int
    types: list[str]
    confusion: np.ndarray  # (T, T): rows = true type, columns = predicted
    seconds: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        n = self.confusion.sum()
        return float(np.trace(self.confusion) / n) if n else float("nan")


def draw_type_shots(split, k: int, seed: int) -> tuple[dict[str, list], dict[str, list]]:
    """({type: K shot samples}, {type: query samples}) for types with at least K + 1 images."""
    rng = np.random.default_rng(seed)
    by_type: dict[str, list] = {}
    for s in split.test:
        if s.label == 1:
            by_type.setdefault(s.defect_type, []).append(s)
    shots, queries = {}, {}
    for t in sorted(by_type):
        items = by_type[t]
        if len(items) < k + 1:
            continue
        order = rng.permutation(len(items))
        shots[t] = [items[i] for i in order[:k]]
        queries[t] = [items[i] for i in order[k:]]
    return shots, queries


def evaluate_types_category(root, category: str, engine, k: int, seed: int, classifier: str = "contrastive",
                            normal_shots: int = 1, max_queries: int | None = None, pretrained: str = "auto",
                            textures_dir=None, layout: str = "auto",
                            progress: Progress | None = None) -> TypeRun:
    from ..evaluate import load_split
    from ..images import to_mask_array, to_rgb_array

    if k < 1:
        raise ValueError("--type-shots must be at least 1")
    split = load_split(root, category, layout)
    shots, queries = draw_type_shots(split, k, seed)
    if len(shots) < 2:
        raise ValueError(f"{category}: fewer than 2 defect types have {k + 1} or more images; lower --type-shots")
    types = list(shots)
    t0 = time.perf_counter()
    engine.clear_shots()
    rng = np.random.default_rng([seed, 5])
    for i in rng.permutation(len(split.train))[:max(1, normal_shots)]:
        engine.add_shot(to_rgb_array(split.train[i].path), kind="normal")
    for t in types:
        for s in shots[t]:
            rgb = to_rgb_array(s.path)
            engine.add_shot(rgb, kind="anomalous", mask=to_mask_array(s.mask_path, rgb.shape[:2]), defect_type=t)
    engine.train_defect_classifier(classifier, pretrained=pretrained, textures_dir=textures_dir, seed=seed)
    t1 = time.perf_counter()
    todo = [(t, q) for t in types for q in queries[t]]
    if max_queries is not None and len(todo) > max_queries:
        todo = [todo[i] for i in sorted(rng.choice(len(todo), max_queries, replace=False))]
    conf = np.zeros((len(types), len(types)), np.int64)
    for n, (t, q) in enumerate(todo):
        rgb = to_rgb_array(q.path)
        pred = engine.classify_defect(rgb, mask=to_mask_array(q.mask_path, rgb.shape[:2]))
        conf[types.index(t), types.index(pred.type)] += 1
        steps(progress, n + 1, len(todo), "queries classified")
    t2 = time.perf_counter()
    return TypeRun(category, seed, types, conf, {"train": t1 - t0, "classify": t2 - t1,
                                                 "per_query": (t2 - t1) / max(1, len(todo))})


def summarize(runs: Sequence[TypeRun]) -> dict:
    """{"categories": {cat: {"accuracy": mean, "std": std, "seeds": {seed: acc}}}, "mean": mean over categories}."""
    cats: dict[str, dict] = {}
    for r in runs:
        c = cats.setdefault(r.category, {"seeds": {}})
        c["seeds"][r.seed] = r.accuracy
    for c in cats.values():
        v = np.array(list(c["seeds"].values()), float)
        c["accuracy"], c["std"] = float(v.mean()), float(v.std())
    mean = float(np.mean([c["accuracy"] for c in cats.values()])) if cats else float("nan")
    return {"categories": cats, "mean": mean}


def plot_confusion(runs: Sequence[TypeRun], path) -> Path:
    """One confusion matrix per category (summed over seeds), rows = true type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per: dict[str, tuple[list[str], np.ndarray]] = {}
    for r in runs:
        types, m = per.get(r.category, (r.types, np.zeros_like(r.confusion)))
        per[r.category] = (types, m + r.confusion)
    n = len(per)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 4), squeeze=False)
    for ax, (cat, (types, m)) in zip(axes[0], per.items()):
        ax.imshow(m, cmap="Blues")
        ax.set_xticks(range(len(types)), types, rotation=45, ha="right")
        ax.set_yticks(range(len(types)), types)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        acc = np.trace(m) / max(1, m.sum())
        ax.set_title(f"{cat} ({100 * acc:.1f} %)")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=9,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_type_report(runs: Sequence[TypeRun], out_dir, title: str = "") -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(runs)
    rows = [f"# Defect-type accuracy{(' — ' + title) if title else ''}", "", "| category | accuracy (%) | seeds |",
            "|---|---|---|"]
    for cat, c in s["categories"].items():
        rows.append(f"| {cat} | {100 * c['accuracy']:.1f} ± {100 * c['std']:.1f} | {len(c['seeds'])} |")
    rows.append(f"| **mean** | **{100 * s['mean']:.1f}** | |")
    md = out / "defect_types.md"
    md.write_text("\n".join(rows) + "\n")
    js = out / "defect_types.json"
    js.write_text(json.dumps({**s, "runs": [{"category": r.category, "seed": r.seed, "types": r.types,
                                             "confusion": r.confusion.tolist(), "accuracy": r.accuracy,
                                             "seconds": r.seconds} for r in runs]}, indent=2, default=float))
    png = plot_confusion(runs, out / "defect_types_confusion.png")
    return {"table_md": md, "json": js, "confusion_png": png}


def run_eval_args(args) -> int:
    """The `eval --type-shots K` command (args from fsad_core/cli/eval.py)."""
    import sys

    from ..cli.common import check_output_dir
    from ..cli.score import config_from_args
    from ..evaluate import list_categories

    if args.type_shots < 1:
        raise ValueError("--type-shots must be at least 1")
    try:
        seeds = [int(v) for item in args.seed or [] for v in str(item).split(",") if v.strip()] or list(PAPER_SEEDS)
    except ValueError:
        raise ValueError(f"--seed must be integers, got {args.seed}") from None
    out = check_output_dir(args.out, "--out")
    root = Path(args.data)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist")
    cats = [v.strip() for item in args.category for v in str(item).split(",") if v.strip()]
    if cats == ["all"]:
        cats = list_categories(root)
    config = config_from_args(args)
    from ..models.registry import hub_offline_if_unreachable

    hub_offline_if_unreachable()
    from ..engine import Engine
    from ..scorers.patchcore import PatchCoreScorer

    engine = Engine(config)
    engine.add_scorer(PatchCoreScorer.for_engine(engine))
    runs = []
    for cat in cats:
        engine.set_class_name(cat)
        for seed in seeds:
            r = evaluate_types_category(root, cat, engine, args.type_shots, seed, args.type_classifier,
                                        normal_shots=max(1, args.normal_shots), max_queries=args.max_test,
                                        pretrained=args.type_pretrained, layout=args.layout)
            print(f"{cat} seed {seed}: defect-type accuracy {100 * r.accuracy:.1f} % ({int(r.confusion.sum())} "
                  f"queries, {len(r.types)} types)", file=sys.stderr)
            runs.append(r)
    note = "tiny profile: random weights" if config.profile == "tiny" else "ResNet-50 PatchCore"
    paths = write_type_report(runs, out, f"{args.type_shots} shots per type, {args.type_classifier}, seeds "
                              f"{','.join(map(str, seeds))}; {note}")
    print(paths["table_md"].read_text())
    print(f"wrote {out}")
    return 0
