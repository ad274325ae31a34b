"""The per-process state behind the studio: the Store, one Engine per open project, caches.

Gradio sessions carry only ids and hashes (project id, image id, query sha256) in `gr.State`; the
heavy objects live here, shared by every browser tab of this process and guarded by locks:

- `engine(pid)`: the project's Engine, rebuilt from the store the first time it is asked for (every
  normal shot, every anomalous shot with a saved mask), then kept in sync by the handlers.
- `results`: the last Result per (project, query sha256), so weight sliders only re-aggregate.
- `queries`: the decoded query images (display needs them for overlays), bounded.
- `sam()`: one Segment-Anything assistant for the process; its embeddings are cached by sha256.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fsad_core.progress import Progress, silent

log = logging.getLogger("fsad.ui")


class LRU(OrderedDict):
    """A small bounded mapping (oldest entry evicted first); thread-safe enough under the GIL for
    single get/set calls, which is all the studio does with it."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def get(self, key, default=None):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class SessionProjects:
    """The project each browser session shows, so that a step that follows an opening (its removed
    images, its last inspection) shows nothing once the session has moved on to another project.

    Openings (page load, Create / open, the picker, the sample) and those steps run one at a time
    in one queue (`ui.project_bar.OPENING`), each delivered before the next starts; an opening
    records its project here when it ends (`show`). A step queued behind a newer opening then sees
    that its `pid` is no longer the session's (`is_current`). Without this, a page load that
    reopens the last project and restores its inspection (seconds: it may score) painted that
    project over a sample project the user had loaded in the meantime.

    >>> p = SessionProjects()
    >>> p.show("s", 3); p.show("s", 7)          # the page load's project, then the sample's
    >>> p.is_current("s", 7), p.is_current("s", 3), p.is_current("other", 3)
    (True, False, True)
    >>> p.show("s", None)                       # a refused opening shows nothing and changes nothing
    >>> p.shown()
    {'s': 7}
    """

    def __init__(self, capacity: int = 256):
        self._lock = threading.Lock()
        self._shown: LRU = LRU(capacity)  # session -> project it shows

    def show(self, session: str | None, pid) -> None:
        """An opening of `pid` ended in `session` (None or "": it opened nothing)."""
        if pid is not None and pid != "":
            with self._lock:
                self._shown.put(session, int(pid))

    def shown(self) -> dict:
        """{browser session: the project it shows}."""
        with self._lock:
            return dict(self._shown)

    def is_current(self, session: str | None, pid) -> bool:
        """False only when the session shows another project than `pid`."""
        with self._lock:
            shown = self._shown.get(session)
        return shown is None or pid is None or pid == "" or int(pid) == shown


@dataclass
class CachedResult:
    result: Any  # fsad_core.Result
    image_id: int | None
    shots_version: int  # the project's shots version when it was scored (stale when it moved on)


@dataclass
class ProjectEngine:
    engine: Any  # fsad_core.Engine
    lock: threading.RLock = field(default_factory=threading.RLock)
    shot_of_image: dict[int, str] = field(default_factory=dict)  # store image id -> engine shot id
    version: int = 0  # bumps whenever the shots or the class name change


class StudioContext:
    """Everything the handlers share. `profile` is the active model profile ("standard" | "tiny");
    `banner` is the persistent notice shown on top (tiny profile, fallbacks), or None."""

    def __init__(self, store, profile: str = "tiny", banner: str | None = None,
                 engine_factory: Callable[[], Any] | None = None, sam_profile: str | None = None,
                 max_engines: int = 2, backbone=None, data_dir=None):
        self.store = store
        self.data_dir = data_dir  # where per-project files (LoRA weights, pools) go, next to the store
        self.profile = profile
        self.banner = banner
        self.sam_profile = sam_profile or profile
        self._engine_factory = engine_factory
        self._engines: LRU = LRU(max_engines)
        self._engines_lock = threading.RLock()
        self._backbone = backbone  # shared by every project's Engine (one CLIP per process)
        self.results: LRU = LRU(32)
        self.queries: LRU = LRU(32)
        self._sam = None
        self._sam_error: str | None = None
        self._sam_lock = threading.Lock()
        self.sam_jobs: dict[str, threading.Thread] = {}
        self.sam_proposals: LRU = LRU(16)  # image id -> the last click's MaskProposals
        self.mask_drafts: LRU = LRU(32)  # image id -> bool HxW mask being edited (before Save shot)
        self.personalizers: dict[int, Any] = {}
        self.tuned: dict[int, Any] = {}
        self.session_labels: dict[int, str] = {}  # project id -> the preset label of the sliders as last set
        self.openings = SessionProjects()  # per browser session: the project it shows

    # --- engines -------------------------------------------------------------------------------
    def new_engine(self):
        """An Engine on the process's shared backbone (one CLIP in memory however many projects)."""
        if self._engine_factory is not None:
            return self._engine_factory()
        from fsad_core import Engine, EngineConfig

        config = EngineConfig(profile=self.profile)
        with self._engines_lock:
            if self._backbone is None:
                from fsad_core.models.clip import ClipBackbone

                self._backbone = ClipBackbone(config)
        # the store's embeddings table makes reopening a project instant: shots are not re-encoded
        return Engine(config, backbone=self._backbone, encoding_store=getattr(self.store, "embeddings", None))

    def project_engine(self, pid: int, progress: Progress = silent) -> ProjectEngine:
        """The project's engine, built from the store on first use (encodes every shot once)."""
        with self._engines_lock:
            pe = self._engines.get(pid)
            if pe is None:
                pe = ProjectEngine(engine=self.new_engine())
                self._engines.put(pid, pe)
                fresh = True
            else:
                fresh = False
        if fresh:
            with pe.lock:
                self._sync_from_store(pid, pe, progress)
        return pe

    def engine(self, pid: int, progress: Progress = silent):
        return self.project_engine(pid, progress).engine

    def _sync_from_store(self, pid: int, pe: ProjectEngine, progress: Progress) -> None:
        proj = self.store.get_project(pid)
        pe.engine.set_class_name(proj.get("class_name") or "object")
        rows = [r for r in self.store.list_images(pid) if r["role"] in ("normal", "anomalous")]
        for i, row in enumerate(rows):
            progress(i / max(1, len(rows)), f"Encoding shot {i + 1}/{len(rows)}")
            self._add_to_engine(pe, row)
        from .adapters_panel import attach_saved_adapter  # the project's trained adapter, if any

        attach_saved_adapter(self, pid, pe.engine)
        pe.version += 1

    def _add_to_engine(self, pe: ProjectEngine, row: dict) -> str | None:
        iid = row["id"]
        img = self.store.read_image(iid)
        if row["role"] == "normal":
            sid = pe.engine.add_shot(img, kind="normal", role="validation" if row.get("validation_only") else "memory")
        else:
            mask = self.store.get_mask(iid)
            if mask is None or not np.asarray(mask).any():
                return None  # an anomalous image becomes a shot once its mask is saved
            sid = pe.engine.add_shot(img, kind="anomalous", mask=np.asarray(mask, bool),
                                     defect_type=row.get("defect_type"))
        pe.shot_of_image[iid] = sid
        return sid

    def sync_image(self, pid: int, iid: int) -> str | None:
        """Bring one stored image into the project's engine (add, update its mask, or drop it)."""
        pe = self._engines.get(pid)
        if pe is None:
            return None  # built lazily from the store when first needed
        with pe.lock:
            row = next((r for r in self.store.list_images(pid) if r["id"] == iid), None)
            sid = pe.shot_of_image.get(iid)
            if row is None or row["role"] not in ("normal", "anomalous"):
                if sid is not None:
                    self._drop(pe, iid)
                return None
            if sid is not None and row["role"] == "normal":
                pe.engine.set_shot_role(sid, "validation" if row.get("validation_only") else "memory")
            if sid is not None and row["role"] == "anomalous":
                mask = self.store.get_mask(iid)
                if mask is None or not np.asarray(mask).any():
                    self._drop(pe, iid)
                    sid = None
                else:
                    pe.engine.update_mask(sid, np.asarray(mask, bool), defect_type=row.get("defect_type"))
            elif sid is None:
                sid = self._add_to_engine(pe, row)
            pe.version += 1
            return sid

    def forget_image(self, pid: int, iid: int) -> None:
        pe = self._engines.get(pid)
        if pe is None:
            return
        with pe.lock:
            self._drop(pe, iid)

    @staticmethod
    def _drop(pe: ProjectEngine, iid: int) -> None:
        """Unlink a stored image from its shot; the shot goes when no other stored copy uses it
        (shot ids are pixel hashes, so the same picture uploaded twice is one shot)."""
        sid = pe.shot_of_image.pop(iid, None)
        if sid is not None and sid not in pe.shot_of_image.values():
            pe.engine.remove_shot(sid)
        pe.version += 1

    def set_class_name(self, pid: int, name: str) -> None:
        pe = self._engines.get(pid)
        if pe is not None:
            with pe.lock:
                pe.engine.set_class_name(name)
                pe.version += 1

    def shots_version(self, pid: int) -> int:
        pe = self._engines.get(pid)
        return pe.version if pe is not None else -1

    # --- results -------------------------------------------------------------------------------
    def put_result(self, pid: int, sha: str, result, image_id: int | None = None) -> None:
        self.results.put((pid, sha), CachedResult(result, image_id, self.shots_version(pid)))

    def get_result(self, pid: int | None, sha: str | None) -> CachedResult | None:
        if pid is None or not sha:
            return None
        return self.results.get((pid, sha))

    def project_results(self, pid: int) -> list[tuple[str, CachedResult]]:
        return [(k[1], v) for k, v in self.results.items() if k[0] == pid]

    # --- Segment-Anything ----------------------------------------------------------------------
    def sam(self):
        """The process's MaskAssistant, loaded on first use; when the standard SAM weights are
        missing it falls back to the tiny random SAM (labelled as such in the UI). Raises
        RuntimeError with a readable message when Segment-Anything cannot run at all."""
        with self._sam_lock:
            if self._sam is not None:
                return self._sam
            if self._sam_error is not None:
                raise RuntimeError(self._sam_error)
            try:
                from fsad_core.models.sam import MaskAssistant
            except ImportError as exc:
                self._sam_error = f"Segment-Anything is not installed here ({exc}); paint the mask with the brush."
                raise RuntimeError(self._sam_error) from None
            errors = []
            for profile in dict.fromkeys([self.sam_profile, "tiny"]):
                try:
                    # download=False: weights arrive through the Models tab / `make models`, with a
                    # progress bar, never silently in the middle of a click
                    sam = MaskAssistant(profile=profile, download=False)
                    sam.load()
                except Exception as exc:  # ModelUnavailableError and friends carry readable text
                    errors.append(f"{profile}: {exc}")
                    log.warning("SAM (%s profile) unavailable: %s", profile, exc)
                    continue
                self._sam, self.sam_profile = sam, profile
                return sam
            self._sam_error = "Segment-Anything could not be loaded (" + "; ".join(errors) + ")."
            raise RuntimeError(self._sam_error)

    def sam_note(self) -> str:
        """What the UI says about the mask assistant in use."""
        if self._sam is None:
            return "Segment-Anything"
        note = f"Segment-Anything ({getattr(self._sam, 'model_id', 'SAM')})"
        if self.sam_profile == "tiny":
            note += " — tiny: random weights — for testing only"
        return note

    def start_sam_embedding(self, sha: str, img: np.ndarray) -> threading.Thread:
        """Load SAM if needed and compute the image's embedding in the background, so that the first
        click answers fast (`predict` waits for a pending embedding of its image)."""
        job = self.sam_jobs.get(sha)
        if job is not None:
            return job

        def run():
            try:
                self.sam().set_image(img)
            except Exception as exc:  # reported when the user clicks; never crash a thread loudly
                log.info("background SAM embedding failed: %s", exc)

        t = threading.Thread(target=run, name=f"sam-embed-{sha[:8]}", daemon=True)
        self.sam_jobs[sha] = t
        t.start()
        return t

    def sam_ready(self, sha: str) -> bool:
        job = self.sam_jobs.get(sha)
        return job is not None and not job.is_alive()
