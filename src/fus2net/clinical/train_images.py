"""What a model package records of the images it was trained on (`source.training_data`).

Read from the files' headers (size, mode, EXIF orientation) and their modification times, not
decoded again: a second for a thousand images, after a training run of minutes. Prediction
compares a new image's size and mode with these (`fus2net.inference.data_record`).
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from fus2net.cell.context import JobContext
from fus2net.inference.data_record import KEY

# EXIF orientations that turn an image by 90 degrees: the decoder swaps its width and height.
TURNED = (5, 6, 7, 8)
EXIF_ORIENTATION = 0x0112


def header_format(path: Path) -> tuple[int, int, str]:
    """(width, height, mode) of an image file as the decoder sees it (upright), from its header."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the decoder already reported these during training
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(EXIF_ORIENTATION) in TURNED:
                width, height = height, width
            return width, height, img.mode


def _date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def training_data(ctx: JobContext) -> dict[str, Any]:
    """`source.training_data` of the cell's package: the training pool (what the fold models
    and a refit learned from), its size and file formats, and the dates."""
    data = ctx.data
    pool = [data.records[i] for i in data.split.train_pool()]
    widths, heights, modes, times = [], [], set(), []
    for record in pool:
        try:
            width, height, mode = header_format(Path(record.image))
            times.append(Path(record.image).stat().st_mtime)
        except (OSError, ValueError, SyntaxError):  # read at training, gone or changed since
            continue
        widths.append(width)
        heights.append(height)
        modes.add(mode)
    per_class = {name: 0 for name in data.class_names}
    for record in pool:
        per_class[data.class_names[record.label]] += 1
    return {
        KEY: {
            "dataset": str(data.description.get("name") or ""),
            "fingerprint": data.fingerprint,
            "n_images": len(pool),
            "per_class": per_class,
            "trained": datetime.now(UTC).isoformat(timespec="seconds"),
            "newest_file": _date(max(times)) if times else None,
            "width": [min(widths), max(widths)] if widths else None,
            "height": [min(heights), max(heights)] if heights else None,
            "modes": sorted(modes) or None,
        }
    }
