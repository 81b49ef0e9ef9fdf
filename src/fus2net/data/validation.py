"""Read and decode every image and mask of a dataset once, before training starts.

Sources only check structure; this is the expensive pass, and the only one that reads the
images: it reports every unreadable, corrupt, zero-byte or non-image file, every image out of
the size limits (`data.max_image_pixels`, `data.min_image_size`) and every mask whose size
differs from its image, collects the notices of the decoder (first frame of several used, PIL's
warnings) by file, records each image's size and PIL mode for the dataset summary,
and computes from the same read what the job needs of each file (its content hash for the
dataset fingerprint, its perceptual hash for near-duplicates, its resized pixels for the cache).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fus2net.data.records import Notice, Problem, Record
from fus2net.images.duplicates import phash_of
from fus2net.images.imageio import ImageLimits, ImageReadError, image_pixels, open_image
from fus2net.images.resizing import resize_image


@dataclass(frozen=True)
class ImageInfo:
    """What reading one record found: the image's (width, height) and mode, its problems and
    notices, and (when asked for) its content hash, perceptual hash and resized pixels."""

    size: tuple[int, int] | None
    mode: str | None
    problems: tuple[Problem, ...] = ()
    sha256: str | None = None
    phash: int | None = None
    pixels: np.ndarray | None = None  # (S, S, C) uint8 at the requested image size
    notices: tuple[Notice, ...] = ()


def _problem(path: Path, error: ImageReadError) -> Problem:
    reason = str(error).removeprefix(f"{path}: ")
    return Problem(str(path), reason)


def inspect_record(
    record: Record,
    channels: int = 3,
    image_size: int | None = None,
    phash: bool = False,
    limits: ImageLimits | None = None,
    resize: str = "stretch",
) -> ImageInfo:
    """Read one record's image once and decode it, and its masks; never raises for bad files.

    `limits` (default: `ImageLimits()`, the `data.*` defaults) apply to the image; a mask is
    held to the pixel limit and to its image's size. `pixels` are fitted to `image_size` as
    `resize` says (`data.resize`)."""
    limits = limits or ImageLimits()
    problems: list[Problem] = []
    notices: list[Notice] = []
    size = mode = digest = perceptual = pixels = None
    try:
        data = record.image.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        decoded = open_image(record.image, data, limits)
        size, mode = decoded.size, decoded.mode
        notices += [Notice(str(record.image), text) for text in decoded.notices]
        array = image_pixels(decoded.image, channels)
        if image_size is not None:
            pixels = resize_image(array, image_size, channels, resize)
        if phash:
            perceptual = phash_of(array if channels == 1 else image_pixels(decoded.image, 1))
    except FileNotFoundError:
        problems.append(Problem(str(record.image), "file not found"))
    except ImageReadError as error:
        problems.append(_problem(record.image, error))
    except OSError as error:  # read_bytes: a folder, no permission, an I/O error
        problems.append(Problem(str(record.image), f"cannot be read ({error.strerror or error})"))
    mask_limits = replace(limits, min_size=1)
    for mask_path in record.masks:
        try:
            mask = open_image(mask_path, limits=mask_limits)
        except ImageReadError as error:
            problems.append(_problem(mask_path, error))
            continue
        notices += [Notice(str(mask_path), text) for text in mask.notices]
        if size is not None and mask.size != size:
            reason = f"mask is {mask.size[0]}x{mask.size[1]} but its image is {size[0]}x{size[1]}"
            problems.append(Problem(str(mask_path), reason))
    return ImageInfo(size, mode, tuple(problems), digest, perceptual, pixels, tuple(notices))


def inspect_records(
    records: Sequence[Record],
    channels: int = 3,
    max_workers: int | None = None,
    *,
    image_size: int | None = None,
    phash: bool = False,
    progress: bool = False,
    limits: ImageLimits | None = None,
    resize: str = "stretch",
) -> list[ImageInfo]:
    """`inspect_record` for every record (same order), on a thread pool: PIL decodes without
    holding the GIL, so threads scale with cores without pickling records to processes."""
    workers = max_workers or min(16, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(
            lambda r: inspect_record(r, channels, image_size, phash, limits, resize), records
        )
        return list(tqdm(jobs, total=len(records), desc="read images", disable=not progress))


def validate_records(
    records: Sequence[Record],
    channels: int = 3,
    max_workers: int | None = None,
    limits: ImageLimits | None = None,
) -> list[Problem]:
    """Every problem of every image and mask, in record order (empty when all decode)."""
    infos = inspect_records(records, channels=channels, max_workers=max_workers, limits=limits)
    return [problem for info in infos for problem in info.problems]


def drop_bad_records(records: Sequence[Record], problems: Sequence[Problem]) -> list[Record]:
    """The records none of whose files (image or masks) has a problem (data.on_bad_image=skip)."""
    bad = {problem.path for problem in problems}
    return [
        r for r in records if str(r.image) not in bad and not any(str(m) in bad for m in r.masks)
    ]
