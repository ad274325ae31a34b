"""Folders of images labelled by folder name: how factories keep OK / NG images, without masks.

Accepted layouts (folder names compared case-insensitively):

    ROOT/OK/*.png   ROOT/NG/<defect type>/*.png   (images directly in NG/ have no defect type)
    ROOT/good/*.png ROOT/<defect type>/*.png      (MVTec's test/ layout: every other folder is a type)
    ROOT/test/...   either of the above under test/ (an MVTec-AD category folder)
    ROOT/*.png      a flat folder: all OK, only where the caller allows it (`flat_ok=True`, e.g. a
                    "calibration" folder of good parts)

Torch-free (the storage package imports it for `storage import`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .evaluate import image_files

__all__ = ["LabelledFolder", "read_labelled_folder", "is_labelled_folder", "LAYOUT_HELP"]

OK_NAMES = ("ok", "good")
NG_NAMES = ("ng", "nok")
LAYOUT_HELP = ("OK/*.png and NG/<defect type>/*.png (or good/*.png and <defect type>/*.png, "
               "as in an MVTec test/ folder)")


@dataclass(frozen=True)
class LabelledFolder:
    root: Path
    ok: tuple[Path, ...]
    ng: tuple[tuple[Path, str | None], ...]  # (image, defect type or None)
    notes: tuple[str, ...] = ()

    @property
    def defect_types(self) -> list[str]:
        return list(dict.fromkeys(t for _, t in self.ng if t))


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []


def is_labelled_folder(root) -> bool:
    """True when ROOT (or ROOT/test) has an OK/ or good/ folder, or an NG/ folder."""
    root = Path(root)
    for base in (root, root / "test"):
        names = {p.name.lower() for p in _subdirs(base)}
        if names & set(OK_NAMES) or names & set(NG_NAMES):
            return True
    return False


def read_labelled_folder(root, flat_ok: bool = False) -> LabelledFolder:
    """The OK and NG images of a labelled folder (module docstring); ValueError naming the expected
    layout when ROOT is not one, FileNotFoundError when it does not exist."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"folder {str(root)!r} does not exist")
    base = root / "test" if not is_labelled_folder(root) and is_labelled_folder(root / "test") else root
    dirs = _subdirs(base)
    ok_dirs = [d for d in dirs if d.name.lower() in OK_NAMES]
    ng_dirs = [d for d in dirs if d.name.lower() in NG_NAMES]
    notes: list[str] = []
    if not ok_dirs and not ng_dirs:
        flat = image_files(base)
        if flat and flat_ok:
            return LabelledFolder(root, tuple(flat), (), ("a flat folder: every image is taken as OK",))
        found = ", ".join(d.name + "/" for d in dirs[:10]) or "no sub-folders"
        raise ValueError(f"{str(root)!r} is not a labelled folder (found {found}); expected {LAYOUT_HELP}")
    ok = [p for d in ok_dirs for p in image_files(d)]
    ng: list[tuple[Path, str | None]] = []
    if ng_dirs:  # OK/ + NG/<type>/: other top-level folders are not labels
        for d in ng_dirs:
            ng += [(p, None) for p in image_files(d)]
            ng += [(p, t.name) for t in _subdirs(d) for p in image_files(t)]
        others = [d.name for d in dirs if d not in ok_dirs and d not in ng_dirs]
        if others:
            notes.append(f"ignored folders (not OK/ or NG/): {', '.join(others)}")
    else:  # good/ + <type>/
        ng += [(p, d.name) for d in dirs if d not in ok_dirs for p in image_files(d)]
    nested = [d.name for d in ok_dirs if _subdirs(d)]
    if nested:
        notes.append(f"sub-folders of {', '.join(nested)}/ ignored (OK images are read from the folder itself)")
    if not ok and not ng:
        raise ValueError(f"no images in the labelled folder {str(root)!r}; expected {LAYOUT_HELP}")
    return LabelledFolder(root, tuple(ok), tuple(ng), tuple(notes))
