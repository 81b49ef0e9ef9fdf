"""The job's lesion segmenter (`model.lesion_crop`): trained once on the training pool's masks,
kept in the project's cache, and handed to every fold's network.

Only the training pool teaches it: never the held-out test images, never an `eval_datasets`
set or a held-out source, so a test or external score stays one of images whose masks nobody
looked at. The cross-validation folds share it (their validation images did teach it, which
flatters the out-of-fold scores a little; one segmenter per fold would cost five). The cache
file is keyed by what decides the weights (the images and their order, the test split, the
segmenter's own settings, the input's size, fit and normalisation, the seed), so a re-run, a
resumed fold or another crop uses the same segmenter, and a leave-one-source-out sibling its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from torch import Tensor

from fus2net.cell.job_data import JobData
from fus2net.data.records import DataError, Problem
from fus2net.data.splits import record_keys
from fus2net.images.imageio import resized_mask
from fus2net.io.files import written_whole
from fus2net.models.lesion_crop import LesionCropSettings
from fus2net.models.pretrained import Normalization
from fus2net.training.lesion_segmenter import train_segmenter

log = logging.getLogger(__name__)


def segmenter_file(
    cache_dir: Path,
    data: JobData,
    settings: LesionCropSettings,
    fit: str,
    normalization: Normalization | None,
    seed: int,
) -> Path:
    """Where the segmenter of this training pool and these settings is kept."""
    pool = data.split.train_pool()
    keys = record_keys([data.records[i] for i in pool])
    facts = {
        "fingerprint": data.fingerprint,
        "pool": keys,
        "settings": settings.training(),
        "image": list(data.cache.images.shape[1:]),
        "fit": fit,
        "normalization": normalization,
        "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / "lesion_segmenters" / f"{digest}.safetensors"


def require_masks(data: JobData, where: str) -> None:
    """Refuse, before any run, a job whose segmenter would have no mask to learn from
    (`where`: the dataset's folder or manifest, for the message)."""
    pool = data.split.train_pool()
    if any(data.records[i].masks for i in pool):
        return
    raise DataError(
        [Problem(where, f"none of the {len(pool)} training images has a lesion mask")],
        fix=(
            "lesion_crop=segmenter (set by experiment=transfer) trains its segmenter on lesion "
            "masks: add them (<image>_mask.png beside each image, as BUSI ships them), or train "
            "on whole images with '~lesion_crop' data.image_size=160"
        ),
        source=str(data.description.get("name", "")),
    )


def job_segmenter(
    data: JobData,
    settings: LesionCropSettings,
    cache_dir: Path,
    fit: str,
    normalization: Normalization | None,
    seed: int,
) -> dict[str, Tensor]:
    """The segmenter's weights: read from the cache, else trained on the pool and stored."""
    from safetensors.torch import load_file, save_file

    path = segmenter_file(cache_dir, data, settings, fit, normalization, seed)
    if path.is_file():
        log.info("lesion segmenter: reusing %s", path)
        return load_file(path)
    pool = data.split.train_pool()
    size = int(data.cache.images.shape[1])
    masks = np.stack([resized_mask(data.records[i].masks, size, fit) for i in pool])
    has_mask = np.array([bool(data.records[i].masks) for i in pool])
    log.info(
        "lesion segmenter: training on the %d of %d training-pool images that have masks",
        int(has_mask.sum()),
        len(pool),
    )
    images = np.asarray(data.cache.images[pool[has_mask]])
    fit_result = train_segmenter(images, masks[has_mask], settings, normalization, seed)
    with written_whole(path) as tmp:
        save_file(
            fit_result.state_dict, str(tmp), metadata={"train_dice": f"{fit_result.train_dice:.4f}"}
        )
    log.info("lesion segmenter: stored %s", path)
    return fit_result.state_dict
