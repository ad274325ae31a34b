"""Batch inspection scaled out on Ray: the same outputs as `inspect_batch.run_batch`, scored by a pool of actors.

    Ray Data: from_items(paths) -> map_batches(BundleScorer, ActorPoolStrategy(n)) -> driver writes

Each actor loads one engine from the inspection bundle (shipped once through Ray's object store, so
workers need no shared copy of it and never see the studio's database) and scores a batch of image
paths; the driver appends each record to `results.jsonl` as it arrives (resumable exactly as
`run_batch`: done paths are skipped, `run.json` carries the same settings signature), writes the
overlay PNGs the actors return, and finally the same `scores.csv` and `report.html`
(`inspect_batch.write_outputs`). Records are those `run_batch` writes, in the same order (Ray Data's
`preserve_order`), so a Ray run and a single-process run of the same bundle give identical files.

Images are read by the actors from their paths: on a cluster the input folder must be mounted at
the same path on every node (see docs/scaling.md). Ray is optional: `pip install ray[data]`.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

from . import names
from .fileio import write_atomic
from .inspect_batch import (
    BatchSummary,
    _inside,
    _signature,
    check_batch_weights,
    check_output_folder,
    list_images,
    read_results,
    record_name,
    score_record,
    write_outputs,
)
from .progress import Progress, steps

#: environment variables the driver passes on to the workers (offline hub, weights cache, bf16 override)
WORKER_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FSAD_CACHE_DIR", "FSAD_CPU_BF16", "FSAD_PROFILE")


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def _require_ray():
    if not ray_available():
        raise ValueError("--ray needs Ray with Ray Data, which is not installed here: pip install 'ray[data]'")
    import ray

    return ray


class BundleScorer:
    """A Ray Data actor: one engine loaded from the bundle bytes; scores batches of paths."""

    def __init__(self, bundle, weights: dict, overlays: bool, threads: int = 1, device: str = "auto"):
        import torch

        from .aggregate import WeightSet
        from .bundle import load_bundle

        torch.set_num_threads(max(1, int(threads)))
        data = bundle
        if not isinstance(data, (bytes, bytearray)):  # an ObjectRef
            import ray

            data = ray.get(data)
        fd, tmp = tempfile.mkstemp(suffix=".fsad.zip")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.engine = load_bundle(tmp, device=device)
        finally:
            os.unlink(tmp)
        self.weights = WeightSet.from_dict(weights)
        self.overlays = overlays

    def __call__(self, batch: dict) -> dict:
        recs, pngs, secs = [], [], []
        for path, rel in zip(batch["path"], batch["rel"]):
            t = time.perf_counter()
            rec, png = score_record(self.engine, Path(str(path)), str(rel), self.weights, self.overlays)
            secs.append(time.perf_counter() - t)
            recs.append(json.dumps(rec))
            pngs.append(png)
        return {"record": recs, "overlay_png": pngs, "seconds": secs, "worker": [os.getpid()] * len(recs)}


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to a cluster (`address`, e.g. "ray://head:10001" or "auto") or start a local Ray with
    `num_cpus`; an already initialised Ray (e.g. a test's) is used as it is."""
    ray = _require_ray()
    if ray.is_initialized():
        return ray
    env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    kw = dict(runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False,
              configure_logging=False)
    if address and address != "local":
        ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=num_cpus, **kw)
    return ray


def _resolve_threshold(engine, threshold: float | None, margin: float | None) -> tuple[float, float]:
    """The run's (threshold, margin): those given, or the bundle's when `threshold` is None."""
    if threshold is None:
        threshold = engine.bundle.threshold
        if margin is None:
            margin = engine.bundle.margin
    return float(threshold), float(margin or 0.0)


def _prepare_output(out: Path, state: str, sig: dict) -> None:
    """Refuse to resume a run made with other settings, drop a replaced run's files, create the folders."""
    run_json = out / "run.json"
    if state == "resume":
        old = json.loads(run_json.read_text()).get("signature")
        if old is not None and old != sig:
            changed = [k for k in sig if old.get(k) != sig[k]]
            raise ValueError(f"'{names.display(str(out))}' holds a batch run with different settings "
                             f"({', '.join(changed)}); use another output folder, or --restart to discard it")
    if state == "replace":
        for p in (out / "results.jsonl", run_json):
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(exist_ok=True)


def _pending_items(paths: Sequence[Path], input_dir: Path, done: set) -> list[dict]:
    """The Ray items ({"path": absolute, "rel": record name}) of `paths` whose record name is not in `done`.

    >>> _pending_items([Path("in/a.png"), Path("in/b/c.png")], Path("in"), {"a.png"})[0]["rel"]
    'b/c.png'
    """
    items = []
    for p in paths:
        rel = p.relative_to(input_dir).as_posix() if p.is_relative_to(input_dir) else str(p)
        if rel not in done:
            items.append({"path": str(p.resolve()), "rel": rel})
    return items


def _scored_dataset(items: list[dict], bundle_bytes: bytes, weights, *, address: str | None, num_workers: int,
                    threads_per_worker: int, batch_size: int, overlays: bool, device: str):
    """Start (or join) Ray and return the lazy Ray Dataset of `items` scored by a pool of BundleScorer actors."""
    init_ray(address, num_cpus=num_workers * threads_per_worker)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # results.jsonl in the single-process order
    ctx.enable_progress_bars = False
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), max(1, len(items) // batch_size)))
    return ds.map_batches(BundleScorer, batch_size=batch_size, batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=threads_per_worker,
                          fn_constructor_kwargs={"bundle": ray.put(bundle_bytes), "weights": weights.to_dict(),
                                                 "overlays": overlays, "threads": threads_per_worker,
                                                 "device": device})


def _add_stats(stats: dict, batch: dict, t0: float) -> None:
    """Note in `stats` the seconds until the first result (from `t0`) and each worker's seconds spent scoring."""
    stats.setdefault("first_result_s", time.perf_counter() - t0)
    busy = stats.setdefault("busy_s", {})
    for pid, sec in zip(batch["worker"], batch["seconds"]):
        busy[int(pid)] = busy.get(int(pid), 0.0) + float(sec)


def _drain(ds, out: Path, *, done_now: int, total: int, progress: Progress | None, stats: dict | None,
           t0: float) -> tuple[int, int]:
    """Append each scored record to results.jsonl as it arrives, write its overlay -> (n_scored, n_failed)."""
    n_scored = n_failed = 0
    jsonl = out / "results.jsonl"
    with open(jsonl, "a") as log:
        if log.tell() > 0 and not jsonl.read_bytes().endswith(b"\n"):
            log.write("\n")
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if stats is not None:
                _add_stats(stats, batch, t0)
            for text, png in zip(batch["record"], batch["overlay_png"]):
                rec = json.loads(str(text))
                if rec.get("overlay") and len(png):
                    (out / rec["overlay"]).write_bytes(bytes(png))
                n_failed += "error" in rec
                n_scored += "error" not in rec
                log.write(json.dumps(rec) + "\n")
                done_now += 1
                steps(progress, done_now, total, rec["path"])
            log.flush()
            os.fsync(log.fileno())
    return n_scored, n_failed


def run_batch_ray(bundle_path, input_dir, out_dir, *, engine=None, weights=None, threshold: float | None = None,
                  threshold_source: str = "given", overlays: bool = True, restart: bool = False,
                  files: Sequence[Path] | None = None, address: str | None = None, num_workers: int = 2,
                  threads_per_worker: int = 1, batch_size: int = 4, device: str = "auto",
                  progress: Progress | None = None, stats: dict | None = None,
                  force: bool = False, margin: float | None = None) -> BatchSummary:
    """Score every image under `input_dir` with the bundle's engine on Ray actors; same outputs as
    `run_batch` (module docstring).

    engine: the bundle's engine on the driver if already loaded (settings signature, weights), else it
        is loaded here. weights / threshold: None = the bundle's. num_workers: actors (one engine each,
        `threads_per_worker` torch threads and as many Ray CPUs). stats: a dict to fill with
        `busy_s` ({worker pid: seconds spent scoring}) and `first_result_s` (start-up: seconds until
        the first record reached the driver). Returns a BatchSummary.
    """
    from .bundle import load_bundle

    t0 = time.perf_counter()
    input_dir, out = Path(input_dir), Path(out_dir)
    state = check_output_folder(input_dir, out, restart=restart, force=force)  # never clobbers an unrelated folder
    if num_workers < 1 or batch_size < 1:
        raise ValueError("num_workers and batch_size must be >= 1")
    bundle_bytes = Path(bundle_path).expanduser().read_bytes()
    if engine is None:
        engine = load_bundle(bundle_path, device=device)
    paths = [Path(p) for p in (files if files is not None else list_images(input_dir, exclude=[out]))
             if not _inside(Path(p), out)]
    weights = check_batch_weights(engine, weights if weights is not None else engine.default_weights)
    thr, margin = _resolve_threshold(engine, threshold, margin)
    sig = _signature(engine, weights)
    run_json = out / "run.json"
    _prepare_output(out, state, sig)
    cal = getattr(getattr(engine, "bundle", None), "calibration", None)
    write_atomic(run_json, json.dumps({"signature": sig, "threshold": thr, "threshold_source": threshold_source,
                                       "margin": margin, "calibration": (cal or None) if isinstance(cal, dict) else None,
                                       "input": names.display(str(input_dir))}, indent=2).encode("utf-8"))
    done = {record_name(r) for r in read_results(out) if not r.get("error")}
    items = _pending_items(paths, input_dir, done)
    total, n_resumed = len(paths), len(paths) - len(items)
    n_scored = n_failed = 0
    if items:
        ds = _scored_dataset(items, bundle_bytes, weights, address=address, num_workers=num_workers,
                             threads_per_worker=threads_per_worker, batch_size=batch_size, overlays=overlays,
                             device=device)
        n_scored, n_failed = _drain(ds, out, done_now=n_resumed, total=total, progress=progress, stats=stats, t0=t0)
    csv_path, html_path, n_anom = write_outputs(out, input_dir, thr, threshold_source, margin=margin)
    return BatchSummary(n_images=total, n_scored=n_scored, n_resumed=n_resumed, n_failed=n_failed,
                        n_anomalous=n_anom, threshold=thr, threshold_source=threshold_source, out_dir=str(out),
                        csv_path=str(csv_path), html_path=str(html_path), seconds=time.perf_counter() - t0)
