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

import ctypes
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import numpy as np
from PIL import Image
from tqdm import tqdm

from fus2net.synthetic.render import render_case

#: Bump whenever a change to the generator changes any output pixel.
GENERATOR_VERSION = 1
MANIFEST = "synthetic.json"
CLASSES = ("benign", "malignant")
DEFAULT_OVERLAP = 0.3
#: Below this many images a process pool costs more than it saves.
MIN_IMAGES_FOR_POOL = 64
PR_SET_PDEATHSIG = 1  # linux/prctl.h

log = logging.getLogger(__name__)


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
        "generator": "fus2net.synthetic.generator",
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


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: end with the parent (SIGKILL of the parent must not leave
    workers rendering into a folder nobody publishes), and leave Ctrl+C to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's: Pool.terminate's ends it
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:  # no parent-death signal: poll for the parent instead
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _run(jobs: list, done: Callable[[], None]) -> None:
    """Render every job (in a process pool when it pays), calling `done` after each; on any
    error or signal the pool is terminated at once, not left to finish its queue."""
    workers = min(os.cpu_count() or 1, 8)
    if workers > 1 and len(jobs) >= MIN_IMAGES_FOR_POOL:
        with multiprocessing.Pool(workers, _die_with_parent, (os.getpid(),)) as pool:
            for _ in pool.imap_unordered(_render_and_write, jobs, chunksize=8):
                done()
    else:
        for job in jobs:
            _render_and_write(job)
            done()


class _Terminated(BaseException):
    """SIGTERM during generation, where nobody else handles it: clean up, then die of it."""


@contextmanager
def _cleanup_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into `_Terminated` while generating, when it would kill the process
    outright (the default handler): the partial folder is removed first, then the process
    ends by the signal as it would have. A job's own handler (experiment.interrupts) stays."""
    mine = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    if not mine:
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _remove_abandoned(root: Path) -> None:
    """Remove partial folders of `root` whose process is gone (SIGKILL, a lost power supply):
    they would otherwise pile up beside the dataset, never read."""
    for partial in root.parent.glob(f".{root.name}.partial-*"):
        pid = partial.name.removeprefix(f".{root.name}.partial-").split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        log.warning("removing %s: left by process %s, which ended before finishing", partial, pid)
        shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    # Build beside root, then rename: an interrupted run never leaves a half dataset at root,
    # and removes its partial folder on the way out (an exception, SIGINT or SIGTERM).
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    prefix = f".{root.name}.partial-{os.getpid()}-"
    with _cleanup_on_sigterm():
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=root.parent))
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
                _run(jobs, bar.update)
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
