"""Decode and resize every image once per job (or once ever, on disk), never once per epoch.

PNG decoding plus a 775x580 -> 299x299 resize costs far more than a training step's data work on
a 2-core CPU, so the whole dataset is held as one uint8 array: 174 MB for BUSI's 647 benign and
malignant images at 299 px RGB.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from fus2net.data.records import Record
from fus2net.data.splits import record_keys, records_fingerprint
from fus2net.images.imageio import ImageLimits, load_image
from fus2net.images.resizing import resize_image
from fus2net.io.files import written_whole

log = logging.getLogger(__name__)

CacheMode = Literal["memory", "disk", "none"]

# 'memory' keeps the last few decoded datasets for the life of the process, so the folds and
# sweep jobs run in one process (Hydra's basic launcher) decode once.
_PROCESS_CACHE: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_PROCESS_CACHE_SIZE = 2


def load_resized(
    path: Path,
    image_size: int,
    channels: int,
    limits: ImageLimits | None = None,
    resize: str = "stretch",
) -> np.ndarray:
    """(S, S, C) uint8: decode (within `limits`, see `load_image`), then fit to the input
    (`fus2net.images.resizing.resize_image`)."""
    return resize_image(load_image(path, channels, limits), image_size, channels, resize)


def decode_all(
    paths: Sequence[Path],
    image_size: int,
    channels: int,
    progress: bool = True,
    resize: str = "stretch",
) -> np.ndarray:
    """(N, S, S, C) uint8 of every image, decoded in a thread pool with a progress bar."""
    images = np.empty((len(paths), image_size, image_size, channels), dtype=np.uint8)

    def fill(i: int) -> None:
        images[i] = load_resized(paths[i], image_size, channels, resize=resize)

    workers = min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(fill, range(len(paths)))
        for _ in tqdm(jobs, total=len(paths), desc="decode images", disable=not progress):
            pass
    return images


def _decoded(
    pixels: np.ndarray | None,
    paths: Sequence[Path],
    image_size: int,
    channels: int,
    progress: bool,
    resize: str,
) -> np.ndarray:
    """`pixels` when the caller decoded the images already (checked), else decode them."""
    if pixels is None:
        return decode_all(paths, image_size, channels, progress, resize)
    expected = (len(paths), image_size, image_size, channels)
    if pixels.shape != expected or pixels.dtype != np.uint8:
        raise ValueError(
            f"pixels have shape {pixels.shape} {pixels.dtype}, expected {expected} uint8"
        )
    return pixels


@dataclass
class ImageCache:
    """Every record's resized image (images[i] belongs to records[i]) and its label."""

    images: np.ndarray  # (N, S, S, C) uint8, possibly a read-only memory map
    labels: np.ndarray  # (N,) int64
    path: Path | None = None  # the .npy file, in 'disk' mode

    @classmethod
    def build(
        cls,
        records: Sequence[Record],
        image_size: int,
        channels: int,
        mode: CacheMode = "memory",
        cache_dir: Path | None = None,
        progress: bool = True,
        fingerprint: str | None = None,
        pixels: np.ndarray | None = None,
        resize: str = "stretch",
    ) -> ImageCache:
        """Decode (or reuse) the images of `records`.

        mode: 'memory' decodes into RAM and keeps the array for later calls in this process;
        'disk' also stores `cache_dir/images/<fingerprint>-s<size>-c<channels>.npy` and
        memory-maps it on reuse (across processes and jobs); 'none' decodes into RAM for this
        call only. Pass `fingerprint` (records_fingerprint) and `pixels` (the resized images,
        (N, S, S, C) uint8 in record order) when already computed: nothing is decoded again.
        `resize` is how each image was fitted to S x S (`data.resize`), a part of the keys.
        """
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {channels}")
        if image_size < 1:
            raise ValueError(f"data.image_size must be positive, got {image_size}")
        if mode not in ("memory", "disk", "none"):
            raise ValueError(f"data.cache must be memory, disk or none, got {mode!r}")
        labels = np.array([r.label for r in records], dtype=np.int64)
        paths = [r.image for r in records]
        if mode == "none":
            return cls(_decoded(pixels, paths, image_size, channels, progress, resize), labels)

        fingerprint = fingerprint or records_fingerprint(records)
        if mode == "memory":
            # The fingerprint ignores record order; the key must not, since images follow it.
            key = (fingerprint, tuple(map(str, paths)), image_size, channels, resize)
            if key not in _PROCESS_CACHE:
                images = _decoded(pixels, paths, image_size, channels, progress, resize)
                images.setflags(write=False)  # shared by every fold and job of this process
                _PROCESS_CACHE[key] = (images, labels)
                while len(_PROCESS_CACHE) > _PROCESS_CACHE_SIZE:
                    _PROCESS_CACHE.popitem(last=False)
            _PROCESS_CACHE.move_to_end(key)
            images, labels = _PROCESS_CACHE[key]
            return cls(images, labels)

        if cache_dir is None:
            raise ValueError("data.cache=disk needs a cache directory (paths.cache_dir)")
        path = _disk_path(Path(cache_dir), fingerprint, records, image_size, channels, resize)
        expected = (len(records), image_size, image_size, channels)
        images = _stored_images(path, expected)
        if images is not None:
            log.info("reusing image cache %s", path)
            return cls(images, labels, path)
        images = _decoded(pixels, paths, image_size, channels, progress, resize)
        with written_whole(path, images.nbytes + 128) as tmp:
            np.save(tmp, images)
        log.info("saved image cache %s (%.0f MB)", path, images.nbytes / 1e6)
        return cls(np.load(path, mmap_mode="r"), labels, path)


def _stored_images(path: Path, expected: tuple[int, ...]) -> np.ndarray | None:
    """The memory map of the cache file at `path` when it is whole and of `expected` shape;
    a torn or foreign file (truncated, a bad header, other images) is reported and removed,
    so that it is rebuilt instead of failing every later run."""
    if not path.is_file():
        return None
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
        if not isinstance(images, np.memmap):
            raise ValueError("not a single .npy array")
        size, written = path.stat().st_size, images.offset + images.nbytes
        if written != size:  # the map is shorter than the file: bytes after the array
            raise ValueError(f"{size} bytes on disk, its header says {written}")
        if images.shape != expected or images.dtype != np.uint8:
            raise ValueError(f"shape {images.shape} {images.dtype}, expected {expected} uint8")
    except (ValueError, OSError, EOFError) as exc:
        log.warning("image cache %s is unusable (%s): rebuilding it", path, exc)
        path.unlink(missing_ok=True)
        return None
    return images


def _disk_path(
    cache_dir: Path,
    fingerprint: str,
    records: Sequence[Record],
    image_size: int,
    channels: int,
    resize: str,
) -> Path:
    """Key the file by content fingerprint and, since rows follow it, by the record order; a
    fit other than `stretch` (which files from before `data.resize` hold) is in the name."""
    order = hashlib.sha256("\n".join(record_keys(records)).encode()).hexdigest()[:8]
    fit = "" if resize == "stretch" else f"-{resize}"
    return cache_dir / "images" / f"{fingerprint[:16]}-{order}-s{image_size}-c{channels}{fit}.npy"
