"""The anomaly-free pool on disk and in memory: `Pool` (a list of images that says which model made
it), `save_pool` (all or nothing), `load_pool`, `pool_info`."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..images import to_rgb_array


class Pool(list):
    """The anomaly-free pool: a list of uint8 (H, W, 3) images that says where it came from.

    model_id: `model_id` of the customized model that made it, None = the base model
    (`from_base_model`; the paper's pool comes from the tuned model). lora_dir: that model's folder.
    requested: the number of images asked for; cancelled: generation stopped early (the list holds
    only the images made before the cancel)."""

    def __init__(self, images=(), *, model_id: str | None = None, lora_dir: str | None = None,
                 requested: int | None = None, cancelled: bool = False):
        super().__init__(images)
        self.model_id = model_id
        self.lora_dir = None if lora_dir is None else str(lora_dir)
        self.requested = len(self) if requested is None else int(requested)
        self.cancelled = bool(cancelled)

    @property
    def from_base_model(self) -> bool:
        return self.model_id is None

    @property
    def note(self) -> str:
        """One line for UIs and logs: what made the pool."""
        src = ("the base model (no customized model was loaded; the paper's pool comes from the tuned model)"
               if self.from_base_model else f"the customized model {self.model_id}")
        done = f"{len(self)} of {self.requested} images (cancelled)" if self.cancelled else f"{len(self)} images"
        return f"{done} from {src}"

    def info(self) -> dict:
        return {"n": len(self), "model_id": self.model_id, "from_base_model": self.from_base_model,
                "lora_dir": self.lora_dir, "requested": self.requested, "cancelled": self.cancelled}


POOL_INFO_NAME = "pool.json"


def save_pool(images: Sequence[np.ndarray], folder: str | Path) -> list[Path]:
    """Write pool images as pool_000.png ... into `folder`, replacing an older pool only once the
    new one is completely written: the images go to a temporary sibling folder first, which then
    takes the old folder's place. A `Pool`'s provenance goes to `folder/pool.json` (`pool_info`)."""
    import tempfile

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-new-", dir=folder.parent))
    try:
        names = []
        for i, img in enumerate(images):
            Image.fromarray(np.asarray(img, dtype=np.uint8)).save(tmp / f"pool_{i:03d}.png")
            names.append(f"pool_{i:03d}.png")
        info = images.info() if isinstance(images, Pool) else {"n": len(names), "model_id": None,
                                                                "from_base_model": None, "lora_dir": None}
        info["created"] = time.time()
        (tmp / POOL_INFO_NAME).write_text(json.dumps(info, indent=1))
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}-old-{tmp.name.rsplit('-', 1)[-1]}"
            folder.rename(old)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return [folder / n for n in names]


def pool_info(folder: str | Path) -> dict | None:
    """What `save_pool` recorded about a saved pool ({"n", "model_id", "from_base_model", ...}), or
    None (no pool, or one saved before provenance was recorded)."""
    p = Path(folder) / POOL_INFO_NAME
    return json.loads(p.read_text()) if p.is_file() else None


def load_pool(folder: str | Path) -> Pool:
    """The pool written by `save_pool`, in order (empty if none), with its provenance."""
    images = [to_rgb_array(p) for p in sorted(Path(folder).glob("pool_*.png"))]
    info = pool_info(folder) or {}
    return Pool(images, model_id=info.get("model_id"), lora_dir=info.get("lora_dir"),
                requested=info.get("requested"), cancelled=bool(info.get("cancelled", False)))
