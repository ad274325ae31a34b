"""A whole project written in one transaction: `Store.create_project_with_images`, what a folder
import (`storage.folders.import_folder`) inserts once every file has been decoded and checked.

A mixin of `Store` (it uses the store's write transactions and row helpers), as
`storage.decisions` is. Either the project and every row of it commit, or nothing does.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .decisions import LABELS
from .values import ROLES, StoreError, check_filename, check_name, now


@dataclass(frozen=True)
class NewImage:
    """One image of `create_project_with_images`. Its blob file must already be written
    (`store.blobs.write(sha256, png)`): the slow encoding happens before the transaction."""

    sha256: str
    width: int
    height: int
    role: str
    filename: str | bytes | None = None
    defect_type: str | None = None
    mask_png: bytes | None = None  # the latest mask, 1-bit PNG (`storage.blobs.encode_mask_png`)
    mask_area: int | None = None  # its number of defect pixels
    validation_only: bool = False
    label: Mapping | None = None  # a review label {label, reviewer, defect_type, score, verdict, threshold,
    #                              use, created_at}; created_at defaults to now


class BulkInsertMixin:
    """Store methods that insert a prepared project at once (see the module docstring)."""

    def create_project_with_images(self, name: str, class_name: str, images: Iterable[NewImage], *,
                                   defect_types: Sequence[str] = ()) -> int:
        """A new project holding `images` (with their masks and review labels), its defect types
        created in the order of `defect_types` then of first use. One transaction: a bad record,
        a taken name or a blob file that vanished leaves no project behind (the blob files written
        ahead stay: `delete_unused_blobs` removes them). Returns the project id."""
        name = check_name(name, "project name")
        class_name = check_name(class_name, "object class name")
        images = list(images)
        order = list(defect_types)
        for im in images:
            if im.defect_type is not None and im.defect_type not in order:
                order.append(im.defect_type)
        for t in order:
            check_name(t, "defect type")
        for im in images:
            if im.role not in ROLES:
                raise StoreError(f"Unknown role {im.role!r}; use one of {', '.join(ROLES)}.")
        for im in images:
            if im.label is not None and im.label.get("label") not in LABELS:
                raise StoreError(f"A review label is OK or NG, got {im.label.get('label')!r}.")
        with self._write() as db:
            if self._active_by_name(name) is not None:
                raise StoreError(f"A project named {name!r} already exists; open it or choose another name.")
            ts = now()
            pid = int(db["projects"].insert({"name": name, "class_name": class_name, "created_at": ts,
                                             "updated_at": ts, "deleted_at": None}).last_pk)
            type_ids = {t: self._defect_type_id(pid, t, create=True) for t in order}
            for im in images:
                self._ensure_blob(im.sha256, None, None, im.width, im.height)
                dt_id = type_ids.get(im.defect_type) if im.defect_type is not None else None
                iid = int(db["images"].insert({
                    "project_id": pid, "sha256": im.sha256, "role": im.role,
                    "filename": check_filename(im.filename) if im.filename is not None else None,
                    "defect_type_id": dt_id, "created_at": now(), "removed_at": None,
                    "validation_only": int(im.validation_only)}).last_pk)
                if im.mask_png is not None:
                    db["masks"].insert({"image_id": iid, "png": im.mask_png, "width": im.width, "height": im.height,
                                        "area": im.mask_area, "defect_type_id": dt_id, "created_at": now()})
                if im.label is not None:
                    lab = im.label
                    db["review_labels"].insert({
                        "image_id": iid, "label": lab["label"], "reviewer": lab.get("reviewer"),
                        "defect_type": lab.get("defect_type") if lab["label"] == "NG" else None,
                        "score": lab.get("score"), "verdict": lab.get("verdict"), "threshold": lab.get("threshold"),
                        "use": lab.get("use"), "created_at": lab.get("created_at") or now()})
        return pid
