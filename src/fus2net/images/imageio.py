"""The one image decoder of training, `fus2net-data`, external scoring and prediction.

Any file PIL reads (L, RGB, RGBA, P, 16-bit, ...) becomes a uint8 array of 1 or 3 channels, the
same way on every path: its size is checked against the limits before a pixel is decoded (a
decompression bomb, a 1x1 placeholder), it is turned upright by its EXIF orientation, only the
first frame of an animation or multi-page file is used, and the warnings PIL raises on the way
become notices that name the file instead of raw library output.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fus2net.images.resizing import resize_mask
from fus2net.images.warning_capture import captured_warnings

log = logging.getLogger(__name__)

# Every source and prediction accept exactly these (a GIF is read like a multi-frame TIFF).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000  # data.max_image_pixels: 10000 x 10000
DEFAULT_MIN_IMAGE_SIZE = 32  # data.min_image_size: px on the short side


class ImageReadError(ValueError):
    """A file that is not a readable image; the message says why."""


def _pil_hard_limit() -> int | None:
    """Pixels above which PIL's own `Image.open` refuses a file (it is never changed here)."""
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)


@dataclass(frozen=True)
class ImageLimits:
    """What the decoder refuses before decoding any pixel: more than `max_pixels` (a
    decompression bomb, or no ultrasound image at all), or a short side under `min_size` px
    (a thumbnail or placeholder, which would still get a confident-looking probability).
    Built from `data.max_image_pixels` and `data.min_image_size` (a whole float, 1e8 from the
    command line, is taken); a ValueError names the key, its value and what it accepts."""

    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    min_size: int = DEFAULT_MIN_IMAGE_SIZE

    def __post_init__(self) -> None:
        for name, key in (("max_pixels", "max_image_pixels"), ("min_size", "min_image_size")):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                object.__setattr__(self, name, int(value))
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"data.{key}={value!r}: must be a whole number")
        if self.max_pixels < 1:
            raise ValueError(f"data.max_image_pixels={self.max_pixels}: must be >= 1")
        hard = _pil_hard_limit()
        if hard is not None and self.max_pixels > hard:
            raise ValueError(
                f"data.max_image_pixels={self.max_pixels}: above PIL's own decompression-bomb "
                f"limit of {hard} pixels (2 x PIL.Image.MAX_IMAGE_PIXELS), which fus2net leaves "
                f"as it is; use at most {hard}"
            )
        if self.min_size < 1:
            raise ValueError(f"data.min_image_size={self.min_size}: must be >= 1 (1 = no minimum)")

    def check(self, path: Path, size: tuple[int, int]) -> None:
        """Raise ImageReadError when an image of `size` (width, height) is out of the limits."""
        width, height = size
        if width * height > self.max_pixels:
            raise ImageReadError(
                f"{path}: image is {width}x{height} = {width * height:,} pixels, over the limit "
                f"of {self.max_pixels:,} (data.max_image_pixels)"
            )
        if min(width, height) < self.min_size:
            raise ImageReadError(
                f"{path}: image is {width}x{height} px, below the minimum of {self.min_size} px "
                "on its short side (data.min_image_size)"
            )


def pixel_limit_only() -> ImageLimits:
    """The limits of callers that judge an image's size themselves, or decode files a checked
    pass has accepted already (masks, the cache, perceptual hashes, figures)."""
    return ImageLimits(min_size=1)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded file: its first frame, upright, as 'L' or 'RGB' (16-bit rescaled, alpha
    composited onto black); the file's own mode and frame count; notices about it."""

    image: Image.Image
    mode: str
    frames: int = 1
    notices: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as the model sees it, after the EXIF orientation."""
        return self.image.size


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


def load_image(
    path: str | Path, channels: int = 3, limits: ImageLimits | None = None
) -> np.ndarray:
    """Read an image as an (H, W, channels) uint8 array; raise ImageReadError with the reason.

    `limits` default: the pixel limit only (`pixel_limit_only`). Its notices are logged as
    warnings that name the file (the callers that collect them use `open_image`)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    decoded = open_image(path, limits=limits)
    for notice in decoded.notices:
        log.warning("%s: %s", path, notice)
    return image_pixels(decoded.image, channels)


def open_image(
    path: str | Path, data: bytes | None = None, limits: ImageLimits | None = None
) -> DecodedImage:
    """Decode `path` (from `data`, its bytes, when the caller has read them already) within
    `limits` (default: `pixel_limit_only`); raise ImageReadError with the reason."""
    path = Path(path)
    limits = limits or pixel_limit_only()
    try:
        if (len(data) if data is not None else path.stat().st_size) == 0:
            raise ImageReadError(f"{path}: zero-byte file")
        with captured_warnings() as caught:
            image, mode, frames, notices = _decode(path, data, limits)
    except ImageReadError:
        raise
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: file not found") from exc
    except PermissionError as exc:
        raise ImageReadError(f"{path}: cannot be read (permission denied)") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not an image file PIL can identify") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"{path}: image is over the limit of {limits.max_pixels:,} pixels "
            f"(data.max_image_pixels): {exc}"
        ) from exc
    except MemoryError as exc:
        raise ImageReadError(f"{path}: too large to decode in the memory available") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: corrupt or truncated image ({exc})") from exc
    except Exception as exc:  # a malformed file can trip any of PIL's parsers
        raise ImageReadError(
            f"{path}: corrupt or truncated image ({type(exc).__name__}: {exc})"
        ) from exc
    notices += [_warning_notice(w) for w in caught if not _governed_here(w)]
    return DecodedImage(image, mode, frames, tuple(dict.fromkeys(notices)))


def _decode(
    path: Path, data: bytes | None, limits: ImageLimits
) -> tuple[Image.Image, str, int, list[str]]:
    """(the first frame upright as 'L' or 'RGB', the file's mode, its number of frames, notices)."""
    notices: list[str] = []
    with Image.open(io.BytesIO(data) if data is not None else path) as img:
        limits.check(path, img.size)  # from the header: nothing is decoded yet
        frames = int(getattr(img, "n_frames", 1))
        if frames > 1:
            img.seek(0)
            notices.append(f"{frames} frames (an animation or multi-page file): the first is used")
        img.load()
        try:
            ImageOps.exif_transpose(img, in_place=True)
        except Exception as exc:  # the pixels are fine; only the orientation tag is not
            notices.append(f"EXIF orientation unreadable ({exc}): used as stored")
        return _to_uint8_gray_or_rgb(img), img.mode, frames, notices


def _governed_here(caught: warnings.WarningMessage) -> bool:
    """PIL's decompression-bomb warning: `ImageLimits` decides instead (its limit may be higher)."""
    return issubclass(caught.category, Image.DecompressionBombWarning)


def _warning_notice(caught: warnings.WarningMessage) -> str:
    """'PIL warning: <message>': the package that raised it, and what it said."""
    return f"{Path(caught.filename).parent.name or 'decoder'} warning: {caught.message}"


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


def resized_mask(paths: Sequence, size: int, resize: str = "stretch") -> np.ndarray:
    """(size, size) bool union of a record's masks, fitted as its image was (`data.resize`);
    empty when the record has no mask."""
    if not paths:
        return np.zeros((size, size), dtype=bool)
    return resize_mask(load_mask(tuple(paths)), size, resize)
