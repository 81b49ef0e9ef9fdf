"""Decode any image file (L, RGB, RGBA, P, 16-bit, ...) into uint8 arrays of 1 or 3 channels."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """A file that is not a readable image; the message says why."""


def _to_uint8_gray_or_rgb(img: Image.Image) -> Image.Image:
    """Normalise PIL modes to 'L' or 'RGB' without losing the dynamic range of 16-bit images."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if mode.startswith("I;16") or (mode == "I" and hi > 255):
            scale = 65535.0 if hi > 255 or mode.startswith("I;16") else 255.0
            arr = arr / scale * 255.0
        elif mode == "F":
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    if mode == "1":
        return img.convert("L")
    if mode in ("L", "RGB"):
        return img
    if mode == "LA":
        return img.convert("L")
    if mode == "P":
        has_alpha = "transparency" in img.info
        return img.convert("RGBA" if has_alpha else "RGB").convert("RGB")
    # RGBA, CMYK, YCbCr, LAB, HSV, ...: composite alpha onto black (ultrasound background).
    if "A" in mode:
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Read an image as an (H, W, channels) uint8 array; raise ImageReadError with the reason."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return image_pixels(open_image(path), channels)


def open_image(path: str | Path, data: bytes | None = None) -> Image.Image:
    """The decoded PIL image of `path` (from `data`, its bytes, when the caller has read them
    already), in its own mode; raise ImageReadError with the reason."""
    path = Path(path)
    try:
        if (len(data) if data is not None else path.stat().st_size) == 0:
            raise ImageReadError(f"{path}: zero-byte file")
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            img.load()
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: file not found") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not an image file PIL can identify") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(f"{path}: corrupt or truncated image ({exc})") from exc
    return img


def image_pixels(img: Image.Image, channels: int = 3) -> np.ndarray:
    """(H, W, channels) uint8 of a PIL image of any mode: what `load_image` makes of a file,
    for images that arrive as arrays (alpha composited onto black, 16-bit rescaled)."""
    img = _to_uint8_gray_or_rgb(img)
    if channels == 1:
        return np.ascontiguousarray(np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None])
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def load_mask(
    paths: tuple[Path, ...] | list[Path], shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Union of a record's lesion masks as an (H, W) bool array (BUSI has several per image)."""
    out: np.ndarray | None = None
    for p in paths:
        m = load_image(p, channels=1)[:, :, 0] > 127
        if out is None:
            out = m
        elif m.shape == out.shape:
            out |= m
        else:
            raise ImageReadError(f"{p}: mask size {m.shape} differs from {out.shape}")
    if out is None:
        if shape is None:
            raise ValueError("no mask paths and no shape given")
        out = np.zeros(shape, dtype=bool)
    return out


def resized_mask(paths: Sequence, size: int) -> np.ndarray:
    """(size, size) bool union of a record's masks, resized as its image was (aspect not kept).

    Nearest-neighbour keeps the mask binary; empty when the record has no mask.
    """
    if not paths:
        return np.zeros((size, size), dtype=bool)
    mask = load_mask(tuple(paths))
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((size, size), Image.Resampling.NEAREST)) > 127
