"""Import and export of MVTec-AD-layout folders.

Layout written by `export_project` (what anomalib's MVTecAD and Folder datamodules read):

    <out>/train/good/000.png                 normal shots
    <out>/test/good/000.png                  query images (import reads test/good back as queries)
    <out>/test/<type>/000.png                anomalous shots, one folder per defect type
    <out>/ground_truth/<type>/000_mask.png   their masks, 8-bit 0/255 (none for a shot whose mask
                                             is still to be drawn)
    <out>/fsad_project.json                  manifest: project and class name, the defect types in
                                             order, each file's role, original filename and label
    <out>/decisions.csv, decisions.json      per image with a verdict or a review label: path, score,
                                             verdict, threshold, label, reviewer, defect type, time

A query a reviewer labelled NG goes to test/<its defect type>/ (with its mask in ground_truth/ when
it has one), a query labelled OK or not labelled to test/good/; the manifest keeps role and label.

Folder names are derived from defect-type names by `safe_component` (letters, digits, `._-`; no
separators, no leading dots, never `good`, unique case-insensitively), and every path is checked
to resolve inside `<out>` before anything is written, so no name can write outside the target.
The export is written into a temporary sibling folder renamed to `<out>` at the end: a failed
export leaves nothing behind. The manifest keeps the exact names, so export -> import is lossless
for every image of the project (removed images excepted): pixels, roles, latest masks (a mask on a
normal or query image travels in the manifest), defect types and their order, class name,
filenames. Mask history is not exported. anomalib's MVTecAD reader needs a mask for every
`test/<type>` image and reads `test/good` as labelled-normal test data; `mvtec_strict=True` writes
only normal shots and masked anomalous shots for it, listing the rest as skipped.

`import_folder` also reads a labelled folder, OK/ + NG/<type>/ (or good/ + <type>/) without train/
or test/ (`fsad_core.labelled_folder`): every image becomes a query with a review label OK or NG
(reviewer "import") and NG images get their defect type.

`import_folder` reads an MVTec-layout folder (with or without a manifest): train/good -> normal,
test/good -> query, test/<type> -> anomalous with defect type <type> and the mask
`ground_truth/<type>/<stem>_mask.*` (or `<stem>.*`) when there is one (else its mask is pending).
It validates every file before the project is created and inserts everything in one transaction.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import re
import secrets
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fsad_core.images import ImageError, sha256_of_array, to_mask_array, to_rgb_array
from fsad_core.names import display, from_record

from .blobs import decode_mask_png, encode_mask_png, encode_rgb_png, fsync_dir, mask_png_for_export, write_atomic
from .bulk import NewImage
from .decisions import LABELS
from .maintenance import pid_alive
from .store import Store
from .values import ROLES, StoreError, check_filename, check_name, now

MANIFEST = "fsad_project.json"
MANIFEST_FORMAT = "fsad-studio/mvtec-layout"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
MAX_COMPONENT_CHARS = 64


@dataclass(frozen=True)
class ExportSummary:
    folder: Path
    normal: int
    anomalous: int  # every anomalous image written, with a mask or not
    defect_types: dict[str, str]  # defect type -> folder name
    skipped: tuple[str, ...] = ()  # human-readable reasons, one per image left out (mvtec_strict only)
    query: int = 0  # query images, in test/good
    masks: int = 0  # ground-truth files written (anomalous images with a non-empty mask)
    decisions: int = 0  # rows of decisions.csv / decisions.json (images with a verdict or a review label)


@dataclass(frozen=True)
class ImportSummary:
    project_id: int
    normal: int
    anomalous: int
    query: int
    masks: int
    defect_types: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())
    labels: dict = field(default_factory=dict)  # review labels imported: {"OK": n, "NG": n}


def safe_component(name: str, used: set[str], fallback: str = "defect") -> str:
    """A folder name for `name` that is one harmless path component, unique in `used`
    (compared case-insensitively; the chosen name is added to `used`).

    >>> used = {"good"}
    >>> [safe_component(n, used) for n in ["../../etc", "good", "a/b", "A_B", "..", "scratch"]]
    ['etc', 'good-2', 'a_b', 'A_B-2', 'defect', 'scratch']
    """
    s = unicodedata.normalize("NFKC", str(name))
    s = re.sub(r"[^\w.-]+", "_", s, flags=re.UNICODE)  # separators, spaces, control chars -> _
    s = s.strip("._-")[:MAX_COMPONENT_CHARS].strip("._-")
    if not s:
        s = fallback
    if s.lower() in _WINDOWS_RESERVED:
        s += "_"
    base, k = s, 1
    while s.lower() in used:
        k += 1
        s = f"{base}-{k}"
    used.add(s.lower())
    return s


def _inside(root: Path, rel: str) -> Path:
    """root/rel, refusing anything that resolves outside root (symlinks included)."""
    root_real = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root_real, rel))
    if os.path.commonpath([root_real, target]) != root_real or target == root_real:
        raise StoreError(f"Refusing to use '{display(rel)}': it resolves outside {display(str(root))} "
                         f"(to {display(target)}); copy the file into the folder instead of linking to it.")
    return Path(target)


def _resolve_project(store: Store, project: int | str) -> dict:
    if isinstance(project, str):
        row = store.find_project(project)
        if row is None:
            names = ", ".join(repr(p["name"]) for p in store.list_projects()) or "none yet"
            raise StoreError(f"There is no project named {project!r} (projects: {names}).")
        return row
    row = store.get_project(project)
    if row is None:
        raise StoreError(f"There is no project {project}.")
    return row


def export_project(store: Store, project: int | str, out: str | os.PathLike, *,
                   mvtec_strict: bool = False) -> ExportSummary:
    """Write every image of a project (not the removed ones), its latest masks and defect types
    as an MVTec-AD-layout folder; `import_folder` reads it back losslessly.

    `out` must not exist or be an empty folder. The export is written into a temporary sibling
    folder that is renamed to `out` at the end, so a failed export leaves nothing (and a retry
    into the same `out` works). With `mvtec_strict=True` only what anomalib's MVTecAD reader
    accepts is written (normal shots and anomalous shots with a mask); query images and
    anomalous shots without a mask are then listed in `skipped`.
    """
    proj = _resolve_project(store, project)
    out = Path(out).expanduser()
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise StoreError(f"{out} already exists and is not an empty folder; export into a new folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_export_tmp(out.parent)
    tmp = out.parent / f".{out.name[:40]}.{os.getpid()}.{secrets.token_hex(4)}.export-tmp"
    os.mkdir(tmp)  # (not mkdtemp: its 0700 mode would stick to the export)
    try:
        summary = _write_export(store, proj, tmp, mvtec_strict=mvtec_strict)
        try:
            os.rename(tmp, out)  # onto a missing or empty folder; anything else fails, nothing is lost
        except OSError as exc:
            raise StoreError(f"Could not move the export into {out} ({exc.strerror or exc}); "
                             "it must be a new or empty folder.") from None
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dataclasses.replace(summary, folder=out)


_EXPORT_TMP = re.compile(r"\..*\.(\d+)\.[0-9a-f]{8}\.export-tmp")


def _remove_stale_export_tmp(parent: Path) -> int:
    """Remove the temporary folders of exports into `parent` whose process is gone (killed, power
    cut): `.<name>.<pid>.<token>.export-tmp`. An export still running elsewhere keeps its own.
    Returns how many were removed."""
    n = 0
    try:
        entries = list(parent.iterdir())
    except OSError:
        return 0
    for d in entries:
        m = _EXPORT_TMP.fullmatch(d.name)
        if m is None or d.is_symlink() or not d.is_dir():
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and pid_alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        n += not d.exists()
    return n


def _write_export(store: Store, proj: dict, out: Path, *, mvtec_strict: bool) -> ExportSummary:
    rows = store.list_images(proj["id"])
    labels = {r["id"]: r for r in store.labelled_images(proj["id"])}
    path_of: dict[int, str] = {}
    used = {"good"}  # test/good holds the query images: no defect type may take it
    folder_of: dict[str | None, str] = {}
    for name in store.defect_types(proj["id"]):
        folder_of[name] = safe_component(name, used)
    entries, skipped = [], []
    n = {"normal": 0, "anomalous": 0, "query": 0, "masks": 0}
    counters: dict[str, int] = {}
    for r in rows:
        label = display(r["filename"]) if r["filename"] else f"image {r['id']}"
        mask = store.get_mask(r["id"])
        has_mask = mask is not None and bool(mask.any())  # an empty latest mask counts as no mask
        if mvtec_strict and (r["role"] == "query" or (r["role"] == "anomalous" and not has_mask)):
            why = "a query image" if r["role"] == "query" else "an anomalous image without a mask"
            skipped.append(f"{label} (#{r['id']}): {why} (left out by --mvtec-strict)")
            continue
        review = labels.get(r["id"])
        if r["role"] == "normal":
            rel_dir = "train/good"
        elif r["role"] == "query" and (review is None or review["label"] == "OK"):
            rel_dir = "test/good"  # import reads test/good back as query images (the manifest keeps the label)
        else:  # anomalous shots, and queries a reviewer labelled NG: test/<defect type>
            dt = r["defect_type"]
            if dt not in folder_of:  # unlabelled anomalous shots
                folder_of[dt] = safe_component("defect", used)
            rel_dir = f"test/{folder_of[dt]}"
        k = counters.get(rel_dir, 0)
        counters[rel_dir] = k + 1
        rel = f"{rel_dir}/{k:03d}.png"
        path_of[r["id"]] = rel
        # the blob already is a lossless RGB PNG of exactly these pixels: copy its bytes
        blob = store.blobs.path(r["sha256"])
        try:
            data = blob.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"The file of image {label} (#{r['id']}) is missing from the blob folder ({blob}); "
                             "restore it from a backup or remove the image, then export again.") from None
        write_atomic(_inside(out, rel), data)
        entry = {"path": rel, "role": r["role"], "filename": r["filename"], "defect_type": r["defect_type"],
                 "mask": None, "sha256": r["sha256"], "validation_only": bool(r.get("validation_only"))}
        if r.get("filename_b64"):  # a name that is not UTF-8: its exact bytes (filename is the escaped form)
            entry["filename_b64"] = r["filename_b64"]
        if review is not None:
            entry["label"] = {k: review[k] for k in ("label", "reviewer", "defect_type", "use")}
            entry["label"]["created_at"] = review["labelled_at"]
        if has_mask and (r["role"] == "anomalous" or rel_dir != "test/good" and r["role"] == "query"):
            mask_rel = f"ground_truth/{rel_dir.split('/', 1)[1]}/{k:03d}_mask.png"
            write_atomic(_inside(out, mask_rel), mask_png_for_export(mask))
            entry["mask"] = mask_rel
            n["masks"] += 1
        elif has_mask:
            # a normal or query image with a mask (e.g. re-roled after masking): MVTec has no
            # ground truth for good images, so the mask travels in the manifest only
            entry["mask_png"] = base64.b64encode(encode_mask_png(mask)).decode("ascii")
        n[r["role"]] += 1
        entries.append(entry)
    manifest = {
        "format": MANIFEST_FORMAT, "version": 1, "exported_at": now(),
        "project": proj["name"], "class_name": proj["class_name"],
        "defect_types": store.defect_types(proj["id"]),
        "folders": {f: name for name, f in folder_of.items()},
        "images": entries, "skipped": skipped,
    }
    write_atomic(_inside(out, MANIFEST), json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8"))
    n["decisions"] = _write_decisions(store, proj, out, path_of)
    return ExportSummary(folder=out, normal=n["normal"], anomalous=n["anomalous"],
                         defect_types={k: v for k, v in folder_of.items() if k is not None},
                         skipped=tuple(skipped), query=n["query"], masks=n["masks"], decisions=n["decisions"])


DECISIONS_CSV = "decisions.csv"
DECISIONS_JSON = "decisions.json"


def _write_decisions(store: Store, proj: dict, out: Path, path_of: dict[int, str]) -> int:
    """decisions.csv / decisions.json next to the images: per image with a verdict or a review label,
    its exported path, score, verdict, threshold, reviewer label, reviewer, defect type. Nothing is
    written when there is no decision."""
    from .decisions import decisions_csv

    decided = store.decisions(proj["id"])
    if not decided:
        return 0
    for d in decided:
        d["path"] = path_of.get(d["image_id"])  # None: left out (--mvtec-strict)
    write_atomic(_inside(out, DECISIONS_CSV), decisions_csv(decided).encode("utf-8"))
    write_atomic(_inside(out, DECISIONS_JSON), json.dumps(
        {"project": proj["name"], "decisions": decided}, ensure_ascii=False, indent=1).encode("utf-8"))
    return len(decided)


# --- import --------------------------------------------------------------------------------------
@dataclass
class _Item:
    path: Path
    role: str
    filename: str | None
    defect_type: str | None
    mask_path: Path | None
    mask_png: bytes | None = None  # a mask carried in the manifest (normal / query images)
    validation_only: bool = False  # a normal shot for weight tuning only (no memory holds it)
    label: dict | None = None  # a review label: {label, reviewer, defect_type, created_at, use}


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def _find_mask(root: Path, type_dir: str, stem: str) -> Path | None:
    gt = root / "ground_truth" / type_dir
    for cand in (f"{stem}_mask", stem):
        for ext in IMAGE_EXTENSIONS:
            p = gt / f"{cand}{ext}"
            if p.is_file():
                return p
    return None


def _manifest_list(mf: Path, manifest: dict, key: str, item_type: type | None = None) -> list:
    value = manifest.get(key, [])
    if not isinstance(value, list):
        raise StoreError(f"{display(str(mf))}: field {key!r} must be a list, got {type(value).__name__}.")
    if item_type is not None:
        for k, v in enumerate(value):
            if not isinstance(v, item_type):
                raise StoreError(f"{display(str(mf))}: field {key}[{k}] must be text, got {type(v).__name__}.")
    return value


def _manifest_item(root: Path, mf: Path, k: int, e) -> _Item:
    """One `images[k]` entry of a manifest, every field checked; a bad one is a StoreError naming it."""
    where = f"{display(str(mf))}: images[{k}]"
    if not isinstance(e, dict):
        raise StoreError(f"{where} must be an object with path, role, ..., got {type(e).__name__}.")

    def text(field: str, required: bool = False) -> str | None:
        v = e.get(field)
        if (v is None or v == "") and not required:
            return None
        if not isinstance(v, str) or not v:
            got = "nothing" if v is None else f"{type(v).__name__} {str(v)[:60]!r}"
            raise StoreError(f"{where}.{field} must be {'non-empty text' if required else 'text or null'}, got {got}.")
        return v

    path, role = text("path", True), text("role", True)
    if role not in ROLES:
        raise StoreError(f"{where}.role is {role!r}; use one of {', '.join(ROLES)}.")
    try:
        filename = text("filename")
        b64 = text("filename_b64")
        filename = from_record(filename, b64) if filename is not None else None
    except ValueError:
        raise StoreError(f"{where}.filename_b64 is not base64.") from None
    defect_type, mask = text("defect_type"), text("mask")
    mask_png = None
    if text("mask_png") is not None:
        try:
            mask_png = base64.b64decode(e["mask_png"], validate=True)
        except (binascii.Error, ValueError):
            raise StoreError(f"{where}.mask_png is not base64.") from None
    validation_only = e.get("validation_only", False)
    if not isinstance(validation_only, bool):
        raise StoreError(f"{where}.validation_only must be true or false, got {str(validation_only)[:60]!r}.")
    review = e.get("label")
    if review is not None and not isinstance(review, dict):
        raise StoreError(f"{where}.label must be an object (label, reviewer, defect_type, created_at, use) or null.")
    return _Item(_inside(root, path), role, filename, defect_type, _inside(root, mask) if mask else None, mask_png,
                 validation_only and role == "normal", review)


def _scan(root: Path) -> tuple[list[_Item], list[str], dict]:
    """Items to import from a manifest if there is one, else from the folder structure."""
    mf = root / MANIFEST
    if mf.is_file():
        return _scan_manifest(root, mf)
    if not (root / "train").is_dir() and not (root / "test").is_dir():
        from fsad_core.labelled_folder import LAYOUT_HELP, is_labelled_folder

        if is_labelled_folder(root):
            return _scan_labelled(root)
        raise StoreError(f"{root} has neither train/ nor test/; point --folder at one MVTec-layout category "
                         "(the folder that holds train/, test/ and ground_truth/), or at a labelled folder: "
                         f"{LAYOUT_HELP}.")
    return _scan_mvtec(root)


def _scan_manifest(root: Path, mf: Path) -> tuple[list[_Item], list[str], dict]:
    """Items listed by the manifest `mf`, every field checked; a bad manifest is a StoreError."""
    try:
        manifest = json.loads(mf.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{mf} is not valid JSON ({exc}); fix it or delete it to import by folder structure.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise StoreError(f"{mf} is not an fsad-studio manifest; delete it to import by folder structure.")
    items = [_manifest_item(root, mf, k, e) for k, e in enumerate(_manifest_list(mf, manifest, "images"))]
    _manifest_list(mf, manifest, "defect_types", item_type=str)
    for key in ("class_name", "project"):
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            raise StoreError(f"{mf}: field {key!r} must be text, got {type(manifest[key]).__name__}.")
    return items, [], manifest


def _scan_mvtec(root: Path) -> tuple[list[_Item], list[str], dict]:
    """Items of an MVTec-layout folder (train/good, test/good, test/<type> + ground_truth/<type>)."""
    items, notes = [], []
    # one rule for links, as for manifest paths: whatever resolves outside the folder is refused
    inside = lambda p: _inside(root, os.path.relpath(p, root))  # noqa: E731
    for p in _images_in(root / "train" / "good"):
        items.append(_Item(inside(p), "normal", p.name, None, None))
    train = root / "train"
    if train.is_dir():
        for d in sorted(x for x in train.iterdir() if x.is_dir() and x.name != "good"):
            notes.append(f"train/{display(d.name)}/ ignored (only train/good holds training images in this layout)")
    for p in _images_in(root / "test" / "good"):
        items.append(_Item(inside(p), "query", p.name, None, None))
    test = root / "test"
    if test.is_dir():
        for d in sorted(x for x in test.iterdir() if x.is_dir() and x.name != "good"):
            _scan_defect_dir(root, d, inside, items, notes)
    if not items:
        raise StoreError(f"No images found under {root}/train/good or {root}/test/*.")
    return items, notes, {}


def _scan_defect_dir(root: Path, d: Path, inside, items: list[_Item], notes: list[str]) -> None:
    """Append the anomalous images of test/<type> `d` to `items` (a note for each one without a mask)."""
    for p in _images_in(d):
        m = _find_mask(root, d.name, p.stem)
        if m is None:
            notes.append(f"test/{display(d.name)}/{display(p.name)} has no mask in "
                         f"ground_truth/{display(d.name)}/")
        # the defect type is a label: a folder name that is not UTF-8 becomes its escaped form
        items.append(_Item(inside(p), "anomalous", p.name, display(d.name),
                           inside(m) if m is not None else None))


def _scan_labelled(root: Path) -> tuple[list[_Item], list[str], dict]:
    """OK/ + NG/<type>/ (or good/ + <type>/): every image a query with a review label ("import")."""
    from fsad_core.labelled_folder import read_labelled_folder

    try:
        lf = read_labelled_folder(root)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    items = [_Item(p, "query", p.name, None, None, label={"label": "OK", "reviewer": "import"}) for p in lf.ok]
    items += [_Item(p, "query", p.name, t, None, label={"label": "NG", "reviewer": "import", "defect_type": t})
              for p, t in lf.ng]
    return items, list(lf.notes), {}


def import_folder(store: Store, folder: str | os.PathLike, project: str,
                  class_name: str | None = None) -> ImportSummary:
    """Read an MVTec-AD-layout folder into a new project named `project`.

    Every image and mask is decoded and checked (same rules as `Store.add_image` / `save_mask`)
    before the project exists; then the project, its defect types, images and masks are inserted
    in one transaction. A bad file raises `StoreError`/`ImageError` naming it, and leaves no
    project behind (blob files written for it are removed again).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise StoreError(f"No folder at {root}.")
    root = Path(os.path.realpath(root))
    project = check_name(project, "project name")
    if store.find_project(project) is not None:
        raise StoreError(f"A project named {project!r} already exists; choose another name (or delete it first).")
    items, notes, manifest = _scan(root)
    class_name = class_name or manifest.get("class_name") or "object"
    class_name = check_name(class_name, "object class name")
    type_order = _defect_type_order(manifest, items)

    prepared, created = [], []
    try:
        for it in items:
            prepared.append(_prepare_item(store, root, it, created))
        for im in prepared:  # (after every file is read, as before: a bad file is reported first)
            if im.label is not None:
                _check_label(im.label)
        pid = store.create_project_with_images(project, class_name, prepared, defect_types=type_order)
    except BaseException:
        _forget_blobs(store, created)
        raise
    return _import_summary(pid, prepared, type_order, notes)


def _defect_type_order(manifest: dict, items: list[_Item]) -> list[str]:
    """The manifest's defect types, then those first named by an item, each checked as a name."""
    type_order = [t for t in manifest.get("defect_types", []) if isinstance(t, str)]
    for it in items:
        if it.defect_type is not None and it.defect_type not in type_order:
            type_order.append(it.defect_type)
    for t in type_order:
        check_name(t, "defect type")
    return type_order


def _prepare_item(store: Store, root: Path, it: _Item, created: list[str]) -> NewImage:
    """Check and decode one item, write its blob (its sha appended to `created` when new) -> its row."""
    rel = display(os.path.relpath(it.path, root))
    if it.role not in ROLES:
        raise StoreError(f"{rel}: unknown role {it.role!r} in the manifest.")
    if it.filename is not None:
        try:
            check_filename(it.filename)
        except StoreError as exc:
            raise StoreError(f"{rel}: {exc}") from None
    rgb, mask_png, area = _decode_item(root, it, rel)
    sha = sha256_of_array(rgb)
    blob = store.blobs.path(sha)
    if blob.is_file():
        os.utime(blob)  # fresh mtime: purge's grace period protects it until we commit
    else:
        store.blobs.write(sha, encode_rgb_png(rgb))
        created.append(sha)
    return NewImage(sha, rgb.shape[1], rgb.shape[0], it.role, it.filename, it.defect_type,
                    mask_png, area, it.validation_only, it.label)


def _decode_item(root: Path, it: _Item, rel: str):
    """(RGB array, mask PNG or None, mask area or None) of one item; a bad file is a StoreError naming `rel`."""
    try:
        rgb = to_rgb_array(it.path)
        mask_png = area = None
        if it.mask_path is not None or it.mask_png is not None:
            src = it.mask_path if it.mask_path is not None else it.mask_png
            what = (f"mask {display(os.path.relpath(it.mask_path, root))}" if it.mask_path is not None
                    else "mask in the manifest")
            m = to_mask_array(src, rgb.shape[:2], what=what)
            mask_png, area = encode_mask_png(m), int(m.sum())
    except ImageError as exc:
        raise StoreError(f"{rel}: {exc}") from None
    return rgb, mask_png, area


def _import_summary(pid: int, prepared: list[NewImage], type_order: list[str], notes: list[str]) -> ImportSummary:
    """What an import added: counts by role, masks, defect types, notes and review labels."""
    counts = {role: sum(im.role == role for im in prepared) for role in ("normal", "anomalous", "query")}
    n_labels: dict[str, int] = {}
    for im in prepared:
        if im.label is not None:
            n_labels[im.label.get("label")] = n_labels.get(im.label.get("label"), 0) + 1
    return ImportSummary(project_id=pid, normal=counts["normal"], anomalous=counts["anomalous"],
                         query=counts["query"], masks=sum(im.mask_png is not None for im in prepared),
                         defect_types=tuple(type_order), notes=tuple(notes), labels=n_labels)


def _check_label(label: dict) -> None:
    """A review label read from a labelled folder or a manifest must be OK or NG."""
    value = label.get("label")
    if value not in LABELS:
        raise StoreError(f"a review label must be OK or NG, got {value!r} in the manifest")


def _forget_blobs(store: Store, shas: list[str]) -> None:
    """Remove blob files this import created if no row names them (checked under the write lock)."""
    if not shas:
        return
    try:
        store.delete_unused_blobs(shas)
    except Exception:  # noqa: BLE001 - cleanup is best effort; purge() removes strays later
        pass


def read_export_mask(path: str | os.PathLike) -> np.ndarray:
    """An exported ground-truth PNG -> bool (H, W) (helper for tests and scripts)."""
    return decode_mask_png(Path(path).read_bytes())
