"""The data every fold of a job shares: loaded, checked, split and decoded once, before training.

A bad file stops the job here, before any run exists, with every bad file listed
(`data.on_bad_image=error`), or is left out and counted (`skip`); so does a configured class
left without images, and an `eval_datasets` entry that could not be scored after training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from fus2net.config.preflight import ConfigError, check_free_space
from fus2net.data.cache import ImageCache
from fus2net.data.records import (
    DataError,
    Notice,
    Problem,
    Record,
    empty_class_problems,
    raise_if_problems,
    scoped_keys,
)
from fus2net.data.splits import Split, make_split, records_fingerprint
from fus2net.data.validation import ImageInfo, drop_bad_records, inspect_records
from fus2net.images.imageio import ImageLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalSet:
    """An `eval_datasets` entry, instantiated and listed once per job: checked before training,
    listed as a cell input, scored after training."""

    name: str
    source: Any  # a fus2net.data.sources DataSource
    records: list[Record]


def load_external(name: str, dataset_cfg: Any) -> ExternalSet:
    """Instantiate and list `eval_datasets.<name>` (a missing folder is named as such)."""
    source = instantiate(dataset_cfg)
    return ExternalSet(name, source, source.load())


@dataclass
class JobData:
    """Everything about the data that every fold of the job shares."""

    records: list[Record]
    class_names: list[str]
    split: Split
    cache: ImageCache
    fingerprint: str
    description: dict[str, Any]
    skipped: list[Problem] = field(default_factory=list)  # bad files left out (on_bad_image=skip)
    # Per record, for finding an external set's images in the training pool: the content hash,
    # and the perceptual hash (None when not computed: data.dedupe off and no eval_datasets).
    sha256: list[str] = field(default_factory=list)
    phashes: np.ndarray | None = None
    external: dict[str, ExternalSet] = field(default_factory=dict)  # eval_datasets, listed once
    limits: ImageLimits = field(default_factory=ImageLimits)  # the job's (data.*), built once


def image_limits(cfg: DictConfig) -> ImageLimits:
    """`data.max_image_pixels` and `data.min_image_size` (ImageLimits' defaults, the schema's,
    where unset), checked before any image is read."""
    keys = {"max_pixels": "max_image_pixels", "min_size": "min_image_size"}
    try:
        return ImageLimits(**{arg: cfg.data[key] for arg, key in keys.items() if key in cfg.data})
    except ValueError as err:
        raise ConfigError(f"invalid configuration:\n  - {err}") from None


def _log_notices(notices: list[Notice], limit: int = 20) -> None:
    """The decoder's notices by file (first frame of several used, PIL's warnings), once."""
    for notice in notices[:limit]:
        log.warning("%s: %s", notice.path, notice.text)
    if len(notices) > limit:
        log.warning("... and %d more notices", len(notices) - limit)


def _read_images(
    cfg: DictConfig, source: Any, records: list[Record], limits: ImageLimits
) -> tuple[list[Record], list[ImageInfo], list[Problem]]:
    """The one pass that reads the images (checks, content and perceptual hashes, pixels);
    bad files stop the job, or are left out with `data.on_bad_image=skip`."""
    size, channels = int(cfg.data.image_size), int(cfg.data.channels)
    infos = inspect_records(
        records,
        channels,
        image_size=size,
        phash=bool(cfg.data.dedupe) or bool(cfg.get("eval_datasets")),
        progress=True,
        limits=limits,
        resize=str(cfg.data.resize),
    )
    _log_notices([n for info in infos for n in info.notices])
    problems = [problem for info in infos for problem in info.problems]
    if problems and cfg.data.on_bad_image == "skip":
        kept = drop_bad_records(records, problems)
        by_image = {r.image: info for r, info in zip(records, infos, strict=True)}
        log.warning(
            "data.on_bad_image=skip: leaving out %d of %d images (%d unreadable files)",
            len(records) - len(kept),
            len(records),
            len(problems),
        )
        return kept, [by_image[r.image] for r in kept], problems
    raise_if_problems(
        problems,
        fix="remove or replace the files listed (fus2net-data shows the full summary), or set "
        "data.on_bad_image=skip to train without them",
        source=source.name,
    )
    return records, infos, []


def prepare_data(cfg: DictConfig) -> JobData:
    """Load, validate, split and decode the dataset once for all folds (errors before training).

    Unreadable images stop the job with every bad file listed (`data.on_bad_image=error`), or
    are left out and listed (`skip`): in `JobData.skipped` and the description's counts.
    """
    limits = image_limits(cfg)  # a bad limit stops the job before the dataset is even listed
    try:
        source = instantiate(cfg.dataset)
    except InstantiationException as err:  # the source's own ValueError, not Hydra's wrapper
        raise ConfigError(f"invalid dataset config: {err.__cause__ or err}") from None
    size, channels = int(cfg.data.image_size), int(cfg.data.channels)
    records, infos, skipped = _read_images(cfg, source, source.load(), limits)
    why = "left after data.on_bad_image=skip" if skipped else "found by the source"
    raise_if_problems(
        empty_class_problems(records, source.class_names, why),
        fix="every configured class needs images to train and score on: add or repair its "
        "images, or drop the class from dataset.classes (fus2net-data shows the counts)",
        source=source.name,
    )
    external, problems = load_external_datasets(cfg.get("eval_datasets"), list(source.class_names))
    raise_if_problems(
        problems,
        fix="fix the eval_datasets entries listed, or drop them (e.g. ~eval_datasets.NAME)",
        source="eval_datasets",
    )
    if cfg.data.cache == "disk":
        check_free_space(
            Path(cfg.paths.cache_dir),
            len(records) * size * size * channels,
            what=f"the image cache of {len(records)} images (data.cache=disk)",
            fix="free some space, point paths.cache_dir elsewhere, or use data.cache=memory",
        )
    sha256 = [str(info.sha256) for info in infos]
    fingerprint = records_fingerprint(records, sha256)
    hashed = bool(infos) and all(info.phash is not None for info in infos)
    phashes = np.array([info.phash or 0 for info in infos], dtype=np.uint64)
    split = make_split(
        records,
        folds=int(cfg.cv.folds),
        seed=int(cfg.seed),
        test_fraction=cfg.data.test.fraction,
        test_per_class=cfg.data.test.per_class,
        dedupe=bool(cfg.data.dedupe),
        duplicate_distance=int(cfg.data.duplicate_distance),
        cache_dir=Path(cfg.paths.cache_dir),
        fingerprint=fingerprint,
        phashes=phashes,
    )
    cache = ImageCache.build(
        records,
        image_size=size,
        channels=channels,
        mode=str(cfg.data.cache),
        fingerprint=fingerprint,
        cache_dir=Path(cfg.paths.cache_dir),
        pixels=np.stack([info.pixels for info in infos]) if records else None,
        resize=str(cfg.data.resize),
    )
    counts = np.bincount([r.label for r in records], minlength=len(source.class_names))
    description = {
        **source.describe(),
        "fingerprint": fingerprint,
        "n_images": len(records),
        "per_class": dict(zip(source.class_names, counts.tolist(), strict=True)),
        "n_test": len(split.test),
        "duplicate_groups": len(split.duplicate_groups),
        "skipped_bad_files": len(skipped),
    }
    return JobData(
        records,
        list(source.class_names),
        split,
        cache,
        fingerprint,
        description,
        skipped,
        sha256,
        phashes if hashed else None,
        external,
        limits,
    )


def load_external_datasets(
    entries: Any, class_names: list[str]
) -> tuple[dict[str, ExternalSet], list[Problem]]:
    """Every `eval_datasets` entry listed once, and what would stop any from being scored,
    found before training: a config that does not instantiate, other class names, no images
    or a missing folder. Unreadable single images are not looked at here; scoring skips and
    counts them."""
    loaded, problems = {}, []
    for name, dataset_cfg in (entries or {}).items():
        where = f"eval_datasets.{name}"
        try:
            external = load_external(name, dataset_cfg)
            source, records = external.source, external.records
            if list(source.class_names) != list(class_names):
                problems.append(
                    Problem(
                        where,
                        f"classes {list(source.class_names)} differ from the training data's "
                        f"{list(class_names)} (index = label); set {where}.classes",
                    )
                )
            elif not records:
                problems.append(Problem(where, f"no images found by {source!r}"))
            else:
                loaded[name] = external
        except DataError as err:  # the source's own problems, its keys pointed at this entry
            fix = scoped_keys(err.fix, where)
            problems += [
                Problem(f"{where}: {p.path}", f"{scoped_keys(p.reason, where)}; {fix}")
                for p in err.problems
            ]
        except Exception as err:  # any reason it cannot be read: report them all at once
            problems.append(Problem(where, str(err).replace("\n", " ")))
    return loaded, problems
