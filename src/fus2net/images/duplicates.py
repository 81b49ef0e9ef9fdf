"""Find exact and near-duplicate images by perceptual hash, so they can be kept in one fold.

BUSI holds several scans of the same lesion (and a few byte-identical files); if one copy lands in
training and another in validation or test, the scores are inflated. A 64-bit pHash changes little
under resizing, re-encoding and mild noise, so a small Hamming distance marks a near-duplicate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from fus2net.images.imageio import load_image

HASH_BITS = 64
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


def perceptual_hash(path: str | Path) -> int:
    """64-bit DCT perceptual hash (imagehash.phash) of the grayscale image, as an unsigned int."""
    return phash_of(load_image(path, channels=1))


def phash_of(gray: np.ndarray) -> int:
    """`perceptual_hash` of an (H, W, 1) uint8 image already decoded (`load_image(..., 1)`)."""
    bits = imagehash.phash(Image.fromarray(gray[:, :, 0], mode="L"), hash_size=8).hash.ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hash_images(paths: Sequence[str | Path], max_workers: int | None = None) -> np.ndarray:
    """Hash every image in a thread pool (PIL decoding releases the GIL); returns uint64 (N,)."""
    workers = max_workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = list(pool.map(perceptual_hash, paths))
    return np.array(hashes, dtype=np.uint64)


def near_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 1024) -> np.ndarray:
    """(P, 2) index pairs i < j with Hamming distance <= max_distance between 64-bit hashes.

    Vectorised: XOR the hashes viewed as 8 bytes, count bits with a 256-entry table; rows are
    processed in chunks so memory stays O(chunk * N) for large datasets.
    """
    if not 0 <= max_distance <= HASH_BITS:
        raise ValueError(f"max_distance must be in [0, {HASH_BITS}], got {max_distance}")
    as_bytes = hashes.astype(">u8").view(np.uint8).reshape(-1, 8)
    found = []
    for start in range(0, len(hashes), chunk):
        xor = as_bytes[start : start + chunk, None, :] ^ as_bytes[None, :, :]
        distance = _POPCOUNT[xor].sum(axis=-1, dtype=np.int16)
        rows, cols = np.nonzero(distance <= max_distance)
        rows += start
        keep = rows < cols
        found.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def nearest_distances(
    queries: np.ndarray, pool: np.ndarray, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the Hamming distance to its nearest hash of `pool` and that hash's
    index (an external set against the training pool); distance 65 and index -1 when the pool
    is empty."""
    queries = np.asarray(queries, dtype=np.uint64)
    best = np.full(len(queries), HASH_BITS + 1, dtype=np.int16)
    where = np.full(len(queries), -1, dtype=np.int64)
    if len(pool) == 0:
        return best, where
    pool_bytes = np.asarray(pool, dtype=np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8)
    query_bytes = queries.astype(">u8").view(np.uint8).reshape(-1, 8)
    for start in range(0, len(queries), chunk):
        xor = query_bytes[start : start + chunk, None, :] ^ pool_bytes[None, :, :]
        distance = _POPCOUNT[xor].sum(axis=-1, dtype=np.int16)
        where[start : start + chunk] = distance.argmin(axis=1)
        best[start : start + chunk] = distance.min(axis=1)
    return best, where


def connected_groups(n: int, pairs: Sequence[tuple[int, int]] | np.ndarray) -> list[list[int]]:
    """Connected components (union-find) of n items under the given pairs; only sizes >= 2."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    components: dict[int, list[int]] = {}
    for i in range(n):
        components.setdefault(find(i), []).append(i)
    return sorted((c for c in components.values() if len(c) > 1), key=lambda c: c[0])


def find_duplicate_groups(paths: list[Path], max_distance: int = 4) -> list[list[int]]:
    """Groups (size >= 2, sorted indices) of images whose pHashes differ in <= max_distance bits.

    Grouping is transitive (connected components): if a~b and b~c, then {a, b, c} is one group,
    which is what fold assignment needs even when a and c are further apart.
    """
    if not 0 <= max_distance <= HASH_BITS:
        raise ValueError(f"max_distance must be in [0, {HASH_BITS}], got {max_distance}")
    if len(paths) < 2:
        return []
    return connected_groups(len(paths), near_pairs(hash_images(paths), max_distance))
