"""Fitting an image of any shape into the network's square input (`data.resize`).

`stretch` (the paper's, 775x580 -> 299x299) scales each axis on its own, so a lesion's
height-to-width ratio, a BI-RADS sign of malignancy ("taller than wide"), changes with the
scanner's frame shape: BUSI's frames are wider than tall, other hospitals' often taller. `pad`
keeps the aspect ratio (the longer side to the input size) and fills the rest with black,
centred, as a sector probe's frame already has. Every path (training, external scoring,
prediction, Grad-CAM masks and overlays) fits through this module, so they agree.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RESIZE_MODES: tuple[str, ...] = ("stretch", "pad")


def _check(resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise ValueError(f"data.resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")


def content_box(height: int, width: int, size: int, resize: str) -> tuple[int, int, int, int]:
    """(top, left, rows, cols) of a height x width image inside the size x size input."""
    _check(resize)
    if resize == "stretch":
        return 0, 0, size, size
    scale = size / max(height, width)
    rows, cols = max(1, round(height * scale)), max(1, round(width * scale))
    return (size - rows) // 2, (size - cols) // 2, rows, cols


def _fit(pil: Image.Image, size: int, resize: str, resample: Image.Resampling) -> np.ndarray:
    """(size, size[, C]) array of `pil` fitted as `resize` says, black around it for `pad`."""
    top, left, rows, cols = content_box(pil.height, pil.width, size, resize)
    resized = np.asarray(pil.resize((cols, rows), resample))
    if (rows, cols) == (size, size):
        return resized
    out = np.zeros((size, size, *resized.shape[2:]), dtype=resized.dtype)
    out[top : top + rows, left : left + cols] = resized
    return out


def resize_image(
    image: np.ndarray, image_size: int, channels: int, resize: str = "stretch"
) -> np.ndarray:
    """(S, S, C) uint8 of an (H, W, 1|3) uint8 image: to `channels` (RGB -> L as PIL converts),
    then bilinear resize (as Keras' load_img), fitted as `resize` says."""
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    pil = pil.convert("L" if channels == 1 else "RGB")
    fitted = _fit(pil, image_size, resize, Image.Resampling.BILINEAR)
    return fitted.reshape(image_size, image_size, channels)


def resize_mask(mask: np.ndarray, size: int, resize: str = "stretch") -> np.ndarray:
    """(size, size) bool of an (H, W) bool mask, fitted as its image is; nearest-neighbour keeps
    it binary, and the padding is outside the lesion."""
    pil = Image.fromarray(mask.astype(np.uint8) * 255)
    return _fit(pil, size, resize, Image.Resampling.NEAREST) > 127


def unfit(square: np.ndarray, height: int, width: int, resize: str = "stretch") -> np.ndarray:
    """The part of a (S, S) map (a Grad-CAM) that covers a height x width image, to draw it
    over the original: the padding cut off; the caller resizes it to the image."""
    top, left, rows, cols = content_box(height, width, square.shape[0], resize)
    return square[top : top + rows, left : left + cols]
