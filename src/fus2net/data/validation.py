"""Decode every image and mask of a dataset once, so bad files are found before training starts.

Sources only check structure; this is the expensive pass. It reports every unreadable,
corrupt, zero-byte or non-image file and every mask whose size differs from its image, and
records each image's size and PIL mode for the dataset summary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from fus2net.data.imageio import ImageReadError, load_image
from fus2net.data.records import Problem, Record


@dataclass(frozen=True)
class ImageInfo:
    """What decoding one record found: the image's (width, height) and mode, and its problems."""

    size: tuple[int, int] | None
    mode: str | None
    problems: tuple[Problem, ...] = ()


def _problem(path: Path, error: ImageReadError) -> Problem:
    reason = str(error).removeprefix(f"{path}: ")
    return Problem(str(path), reason)


def _original_mode(path: Path) -> str | None:
    """The file's own PIL mode (L, RGB, P, I;16, ...) from its header, before conversion."""
    try:
        with Image.open(path) as img:
            return img.mode
    except (OSError, ValueError):
        return None  # load_image reports why


def inspect_record(record: Record, channels: int = 3) -> ImageInfo:
    """Fully decode one record's image and masks; never raises for bad files."""
    problems: list[Problem] = []
    size = mode = None
    try:
        array = load_image(record.image, channels=channels)
        size = (array.shape[1], array.shape[0])
        mode = _original_mode(record.image)
    except ImageReadError as error:
        problems.append(_problem(record.image, error))
    for mask_path in record.masks:
        try:
            mask = load_image(mask_path, channels=1)
        except ImageReadError as error:
            problems.append(_problem(mask_path, error))
            continue
        mask_size = (mask.shape[1], mask.shape[0])
        if size is not None and mask_size != size:
            reason = f"mask is {mask_size[0]}x{mask_size[1]} but its image is {size[0]}x{size[1]}"
            problems.append(Problem(str(mask_path), reason))
    return ImageInfo(size=size, mode=mode, problems=tuple(problems))


def inspect_records(
    records: Sequence[Record], channels: int = 3, max_workers: int | None = None
) -> list[ImageInfo]:
    """`inspect_record` for every record (same order), on a thread pool: PIL decodes without
    holding the GIL, so threads scale with cores without pickling records to processes."""
    workers = max_workers or min(16, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda record: inspect_record(record, channels), records))


def validate_records(
    records: Sequence[Record], channels: int = 3, max_workers: int | None = None
) -> list[Problem]:
    """Every problem of every image and mask, in record order (empty when all decode)."""
    infos = inspect_records(records, channels=channels, max_workers=max_workers)
    return [problem for info in infos for problem in info.problems]


def drop_bad_records(records: Sequence[Record], problems: Sequence[Problem]) -> list[Record]:
    """The records none of whose files (image or masks) has a problem (data.on_bad_image=skip)."""
    bad = {problem.path for problem in problems}
    return [
        r for r in records if str(r.image) not in bad and not any(str(m) in bad for m in r.masks)
    ]
