"""Content-addressed image files next to the database, and the PNG codecs of images and masks.

A blob is the decoded, RGB-normalised picture saved as a lossless PNG and named by
`fsad_core.images.sha256_of_array` of its pixels: the same picture is one file whatever container
it arrived in (JPEG, 16-bit TIFF, an array), and the engine caches encodings by the same hash.

Layout: `<blob dir>/<sha[:2]>/<sha>.png`. Files are immutable once written and are written
atomically (temp file in the same folder + fsync + rename + fsync of the folder), so a reader sees
either no file or the whole file, never a torn one, whatever happens to the process or the power.

Who creates and deletes files is decided by `storage.store.Store` (inside its write transaction);
this module only knows how to put bytes on disk safely and how to turn pixels into PNG and back.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from fsad_core.fileio import fsync_dir, write_atomic  # noqa: F401 - re-exported for storage
from fsad_core.images import ImageError

PNG_COMPRESS_LEVEL = 3  # lossless either way; 3 is ~3x faster than 6 for a few % more bytes
_SHA_CHARS = frozenset("0123456789abcdef")


def check_sha(sha256: str) -> str:
    """A lowercase 64-hex-digit sha256, or ValueError (a blob name must never be a path)."""
    if not isinstance(sha256, str) or len(sha256) != 64 or not set(sha256) <= _SHA_CHARS:
        raise ValueError(f"Not a sha256 hex digest: {sha256!r}.")
    return sha256


# --- codecs --------------------------------------------------------------------------------------
def encode_rgb_png(rgb: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes (lossless, 8-bit RGB)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"Expected a uint8 HxWx3 array, got {rgb.dtype} {rgb.shape}.")
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_rgb_png(data: bytes) -> np.ndarray:
    """PNG bytes written by `encode_rgb_png` -> uint8 (H, W, 3)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def encode_mask_png(mask: np.ndarray) -> bytes:
    """bool (H, W) -> 1-bit PNG bytes (lossless; a 1000x1000 mask is typically well under 10 kB).

    >>> int(decode_mask_png(encode_mask_png(np.eye(8, dtype=bool))).sum())
    8
    """
    if mask.dtype != bool or mask.ndim != 2:
        raise ValueError(f"Expected a bool HxW mask, got {mask.dtype} {mask.shape}.")
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG", optimize=False)  # bool arrays become mode "1"
    return buf.getvalue()


def decode_mask_png(data: bytes) -> np.ndarray:
    """PNG bytes -> bool (H, W); any non-zero pixel is True."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        arr = np.asarray(img.convert("L") if img.mode not in ("1", "L") else img)
    return arr.astype(bool) if arr.dtype == bool else arr > 0


def mask_png_for_export(mask: np.ndarray) -> bytes:
    """bool (H, W) -> 8-bit 0/255 PNG, the MVTec-AD ground-truth convention."""
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


# --- atomic files: one implementation, shared with the engine's batch outputs ---------------------
class BlobDir:
    """The folder of image blobs. Paths are derived from validated sha256 digests only."""

    def __init__(self, root: Path, *, create: bool = True):
        self.root = Path(root)
        if create:  # else made by the first write (write_atomic creates the folders it needs)
            self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        sha256 = check_sha(sha256)
        return self.root / sha256[:2] / f"{sha256}.png"

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def write(self, sha256: str, png: bytes) -> Path:
        """Write the blob unless it is already there (blobs are immutable); returns its path."""
        p = self.path(sha256)
        if not p.is_file():
            write_atomic(p, png)
        return p

    def read(self, sha256: str) -> np.ndarray:
        """The blob's pixels, uint8 (H, W, 3); ImageError if the file is missing or unreadable."""
        p = self.path(sha256)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise ImageError(
                f"The image file {p} is missing from the blob folder; restore it from a backup "
                "(python -m storage backup) or remove the image."
            ) from None
        try:
            return decode_rgb_png(data)
        except Exception as exc:  # noqa: BLE001 - any decoder failure means a damaged file
            raise ImageError(f"The image file {p} is damaged ({exc}); restore it from a backup.") from None

    def delete(self, sha256: str) -> bool:
        p = self.path(sha256)
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(p.parent)
        return True

    def iter_files(self):
        """(sha256, path) of every blob file on disk (temp files and strangers are skipped)."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.glob("*.png")):
                sha = f.stem
                if len(sha) == 64 and set(sha) <= _SHA_CHARS and sha[:2] == sub.name:
                    yield sha, f

    def iter_temp_files(self):
        """Leftover `.*.tmp` files of writers that died mid-write."""
        if self.root.is_dir():
            yield from self.root.glob("*/.*.tmp")
