"""The default dataset: synthetic breast ultrasound written to disk in the BUSI layout.

A fresh clone must train and test end to end offline, so the project generates its own data:
speckled B-mode images of layered breast tissue with one lesion each, whose look follows the
BI-RADS descriptors that separate benign from malignant, with deliberate class overlap (see
``synthetic_lesion``). Files go through the same loader as real BUSI:
``root/<class>/<class> (<i>).png`` and ``root/<class>/<class> (<i>)_mask.png``.

Each image is drawn from its own ``SeedSequence(seed, spawn_key=(class, i))``, so the dataset
does not depend on the number of worker processes, and ``benign (7).png`` is the same picture
whatever ``n_images`` is. ``root/synthetic.json`` records the parameters: a second call with the
same ones reuses the folder, a call with other ones refuses to mix them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fus2net.data.synthetic_render import render_case

#: Bump whenever a change to the generator changes any output pixel.
GENERATOR_VERSION = 1
MANIFEST = "synthetic.json"
CLASSES = ("benign", "malignant")
DEFAULT_OVERLAP = 0.3
#: Below this many images a process pool costs more than it saves.
MIN_IMAGES_FOR_POOL = 64


class SyntheticDatasetMismatch(ValueError):
    """``root`` holds something other than the synthetic dataset that was asked for."""


def class_counts(n_images: int, malignant_fraction: float) -> dict[str, int]:
    """Images per class: round(n * fraction) malignant, the rest benign."""
    n_malignant = round(n_images * malignant_fraction)
    return {"benign": n_images - n_malignant, "malignant": n_malignant}


def expected_files(counts: dict[str, int]) -> list[str]:
    """Every image and mask path (relative to root) the dataset consists of, in BUSI naming."""
    names = []
    for name in CLASSES:
        for i in range(1, counts[name] + 1):
            names += [f"{name}/{name} ({i}).png", f"{name}/{name} ({i})_mask.png"]
    return names


def _manifest(params: dict) -> dict:
    counts = class_counts(params["n_images"], params["malignant_fraction"])
    return {
        "generator": "fus2net.data.synthetic",
        "version": GENERATOR_VERSION,
        "params": params,
        "counts": counts,
    }


def _is_complete(root: Path, manifest: dict) -> bool:
    return all((root / name).is_file() for name in expected_files(manifest["counts"]))


def _check_existing(root: Path, wanted: dict) -> bool:
    """True when ``root`` already holds exactly the wanted dataset; raise when it holds another."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return False
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise SyntheticDatasetMismatch(
            f"{root} exists and is not a synthetic dataset (no {MANIFEST}). "
            "Fix: choose another root for the synthetic data, or delete that folder."
        )
    try:
        found = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SyntheticDatasetMismatch(
            f"{manifest_path}: unreadable ({exc}). Fix: delete {root} and generate again."
        ) from exc
    found_key = {"version": found.get("version"), "params": found.get("params")}
    wanted_key = {"version": wanted["version"], "params": wanted["params"]}
    if found_key != wanted_key:
        raise SyntheticDatasetMismatch(
            f"{root} holds a synthetic dataset made with other settings:\n"
            f"  on disk: {found_key}\n  wanted:  {wanted_key}\n"
            "Fix: delete that folder to regenerate it, or choose another root "
            "(datasets are never mixed)."
        )
    return _is_complete(root, wanted)


def _render_and_write(job: tuple[Path, str, int, int, int, float]) -> None:
    folder, name, index, seed, size, overlap = job
    label = CLASSES.index(name)
    image, mask = render_case(
        np.random.SeedSequence(seed, spawn_key=(label, index)), bool(label), size, overlap
    )
    Image.fromarray(image, mode="L").save(folder / name / f"{name} ({index}).png")
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(
        folder / name / f"{name} ({index})_mask.png"
    )


def _jobs(folder: Path, counts: dict[str, int], seed: int, size: int, overlap: float) -> list:
    return [
        (folder, name, i, seed, size, overlap)
        for name in CLASSES
        for i in range(1, counts[name] + 1)
    ]


def _run(jobs: list) -> Iterator[None]:
    workers = min(os.cpu_count() or 1, 8)
    if workers > 1 and len(jobs) >= MIN_IMAGES_FOR_POOL:
        with ProcessPoolExecutor(workers) as pool:
            yield from pool.map(_render_and_write, jobs, chunksize=8)
    else:
        for job in jobs:
            yield _render_and_write(job)


def generate_dataset(
    root: str | Path,
    n_images: int = 500,
    image_size: int = 299,
    malignant_fraction: float = 1 / 3,
    seed: int = 0,
    overlap: float = DEFAULT_OVERLAP,
    progress: bool = True,
) -> Path:
    """Write (or reuse) a synthetic BUSI-layout dataset under ``root`` and return ``root``.

    ``overlap`` in (0, 1] is the share of the two classes' latent suspicion distributions that
    coincides: 0.3 gives a task a good CNN solves at AUC ~0.9, 1.0 makes the classes identical.
    """
    if n_images < 2:
        raise ValueError(f"n_images must be at least 2, got {n_images}")
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 px, got {image_size}")
    if not 0.0 < malignant_fraction < 1.0:
        raise ValueError(f"malignant_fraction must be in (0, 1), got {malignant_fraction}")
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap must be in (0, 1], got {overlap}")
    root = Path(root)
    params = {
        "n_images": int(n_images),
        "image_size": int(image_size),
        "malignant_fraction": float(malignant_fraction),
        "seed": int(seed),
        "overlap": float(overlap),
    }
    manifest = _manifest(params)
    if _check_existing(root, manifest):
        return root

    # Build beside root, then rename: an interrupted run never leaves a half dataset at root.
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        for name in CLASSES:
            (staging / name).mkdir()
        jobs = _jobs(staging, manifest["counts"], seed, image_size, overlap)
        bar = tqdm(
            total=len(jobs),
            desc=f"synthetic data -> {root}",
            unit="img",
            file=sys.stderr,
            disable=not progress,
        )
        with bar:
            for _ in _run(jobs):
                bar.update()
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(staging, root, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _publish(staging: Path, root: Path, manifest: dict) -> None:
    """Move the finished dataset to ``root``, replacing only an empty or incomplete copy of it."""
    if root.exists():
        if any(root.iterdir()) and _check_existing(root, manifest):
            return  # another process finished the same dataset first
        shutil.rmtree(root)  # empty, or our own manifest with files missing
    try:
        staging.rename(root)
    except OSError:
        if not (root.exists() and _check_existing(root, manifest)):
            raise
