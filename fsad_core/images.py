"""Image and mask input: decode, validate and normalise to uint8 RGB.

Torch-free on purpose (numpy + Pillow only) so that `storage` can share the exact same rules:
an image the engine accepts is an image the store accepts, and vice versa.

Every public function raises `ImageError` (a `ValueError`) with a message that says what was wrong
and what to do, never a bare Pillow traceback.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .names import display

MIN_SIDE = 8  # below this no patch grid makes sense (a 1x1 "image" is a mistake, not a product)
MAX_PIXELS = 64_000_000  # 64 MP: larger is a decompression bomb or a whole-wafer scan to tile first

ImageInput = Union[Image.Image, np.ndarray, bytes, bytearray, str, os.PathLike]


class ImageError(ValueError):
    """A user-facing error about an image or a mask."""


def _open(data: ImageInput) -> Image.Image:
    """Open bytes, a path or a PIL image as a fully loaded PIL image (decoded, bomb-checked)."""
    if isinstance(data, Image.Image):
        img = data
    else:
        if isinstance(data, (bytes, bytearray)):
            if len(data) == 0:
                raise ImageError("The image file is empty (0 bytes).")
            fp = io.BytesIO(bytes(data))
            name = "the uploaded data"
        elif isinstance(data, (str, os.PathLike)):
            path = Path(data)
            # the whole path as given, escaped: MVTec has a 000.png in every folder, and a name may
            # hold bytes that are not UTF-8 or control characters (never printed raw)
            name = f"'{display(str(path))}'"
            if not path.is_file():
                raise ImageError(f"No image file at {name}.")
            if path.stat().st_size == 0:
                raise ImageError(f"The image file {name} is empty (0 bytes).")
            fp = io.BytesIO(path.read_bytes())
        else:
            raise ImageError(
                f"Expected a PIL image, a uint8 HxWx3 array, bytes or a file path, got {type(data).__name__}."
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fp)
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(
                        f"{name} is {w}x{h} = {w * h / 1e6:.0f} MP, over the {MAX_PIXELS / 1e6:.0f} MP limit; "
                        "downscale or tile it first."
                    )
                img.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow refuses (or warns about) the size read from the header, before decoding anything
            m = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(m.group(1)) / 1e6:.0f} MP, " if m else ""
            raise ImageError(f"{name} is {size}over the {MAX_PIXELS / 1e6:.0f} MP limit (a decompression bomb, or "
                             "a scan to downscale or tile first); it was not decoded.") from None
        except UnidentifiedImageError as exc:
            raise ImageError(f"{name} is not a readable image ({exc.__class__.__name__}).") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name} is truncated or corrupt: {exc}.") from None
    return img


def _check_size(w: int, h: int) -> None:
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ImageError(f"Image is {w}x{h} px; both sides must be at least {MIN_SIDE} px.")
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"Image is {w}x{h} = {w * h / 1e6:.0f} MP, over the {MAX_PIXELS / 1e6:.0f} MP limit; downscale or tile it first."
        )


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """uint8/uint16/float/bool arrays, HxW, HxWx1, HxWx3 or HxWx4 -> uint8 HxWx3."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"Expected an HxW, HxWx3 or HxWx4 array, got shape {arr.shape}.")
    h, w = arr.shape[:2]
    _check_size(w, h)
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == bool:
        out = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:  # scaled and rounded exactly as 16-bit files are (same pixels, same sha256)
        out = (arr.astype(np.float64) / 65535 * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("The image array contains NaN or infinite values.")
        hi = 1.0 if arr.max() <= 1.0 else 255.0
        out = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        out = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"Unsupported image dtype {arr.dtype}.")
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    elif out.shape[2] == 4:
        out = _flatten_alpha(out[..., :3], out[..., 3])
    return np.ascontiguousarray(out)


def _flatten_alpha(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite onto white: transparent product photos are shown on white in every viewer."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    return (rgb.astype(np.float32) * a + 255.0 * (1 - a) + 0.5).astype(np.uint8)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img)  # phone photos: honour the EXIF orientation
    _check_size(*img.size)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.int64)
        hi = 65535 if arr.max() > 255 or mode.startswith("I;16") else 255
        arr = (arr.astype(np.float64) / hi * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode == "F":
        return _array_to_rgb(np.asarray(img, dtype=np.float32))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"))
        return _flatten_alpha(rgba[..., :3], rgba[..., 3])
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """Any supported image input -> uint8 array (H, W, 3), C-contiguous.

    Grayscale, palette, alpha (composited on white), 16-bit and CMYK are converted; EXIF orientation
    is applied. Raises `ImageError` for corrupt, truncated, empty, tiny (< 8 px) or huge (> 64 MP) input.

    >>> to_rgb_array(np.zeros((8, 9), np.uint8)).shape
    (8, 9, 3)
    """
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    return _pil_to_rgb(_open(image))


def to_mask_array(mask, size_hw: tuple[int, int] | None = None, *, what: str = "mask") -> np.ndarray:
    """A mask (array, PIL image, bytes or path) -> bool (H, W).

    Arrays must be binary: bool, or integer/float arrays whose values are only 0 and 1, or only 0
    and 255 (an HxWx1 array is squeezed). Anything else (a float map, negative values, an RGB array)
    is refused rather than guessed at: thresholding a probability map or a colour image silently
    would save a mask the user never drew. Mask *files* (PNG, MVTec's ground truth) are thresholded
    at > 0, as MVTec and anomalib read them. With `size_hw` the mask must have exactly that size.

    >>> to_mask_array(np.array([[0, 255], [255, 0]], np.uint8)).tolist()
    [[False, True], [True, False]]
    >>> to_mask_array(np.full((2, 2), 0.5))
    Traceback (most recent call last):
    ...
    fsad_core.images.ImageError: The mask must be binary (bool, or only 0/1 or 0/255 values); got float64 values from 0.5 to 0.5.
    """
    if isinstance(mask, np.ndarray):
        arr = mask[..., 0] if mask.ndim == 3 and mask.shape[2] == 1 else mask
        if arr.ndim != 2:
            raise ImageError(f"The {what} must be a 2-D HxW array (True = defect), got shape {mask.shape}.")
        if arr.dtype == bool:
            out = arr.copy()
        elif np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating):
            values = np.unique(arr)
            if not (np.isin(values, (0, 1)).all() or np.isin(values, (0, 255)).all()):
                lo, hi = (values[0], values[-1]) if values.size else (0, 0)
                raise ImageError(f"The {what} must be binary (bool, or only 0/1 or 0/255 values); "
                                 f"got {arr.dtype} values from {lo:g} to {hi:g}.")
            out = arr > 0
        else:
            raise ImageError(f"The {what} has unsupported dtype {arr.dtype}; use a bool HxW array.")
    else:
        img = _open(mask)
        arr = np.asarray(img.convert("L") if img.mode not in ("1", "L", "I;16", "I", "F") else img)
        out = arr > 0
    if size_hw is not None and tuple(out.shape) != tuple(size_hw):
        raise ImageError(
            f"The {what} is {out.shape[1]}x{out.shape[0]} px but its image is {size_hw[1]}x{size_hw[0]} px; "
            "masks must match their image's size."
        )
    return out


def sha256_of_array(rgb: np.ndarray) -> str:
    """Content hash of decoded pixels (shape included): the same picture hashes the same
    whether it came as PNG, as an array or through a re-encode."""
    import hashlib

    h = hashlib.sha256()
    h.update(f"{rgb.shape}|{rgb.dtype}".encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()
