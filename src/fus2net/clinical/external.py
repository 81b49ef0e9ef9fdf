"""External validation: score a trained model on another dataset (another hospital, scanner).

Each entry of `eval_datasets` is a dataset config like those of the `dataset` group. It is
scored after training with the test-set protocol (the same ensemble, calibration and operating
points, all fixed on the training data), and, where the source gives patient ids, per patient
too: a patient's probability is the mean over their images, their label the worst (any
malignant image makes a malignant patient), so one patient's many images count once.

An external image the training pool holds too (the same file, the same bytes, or a
near-duplicate by the pool's own perceptual-hash rule) is named, counted (`n_overlap`) and, by
default (`evaluation.external_overlap=drop`), left out of the scores: a model scored on images
it trained on does not measure generalisation.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fus2net.cell.context import JobContext
from fus2net.cell.job_data import ExternalSet
from fus2net.cell.roc_plot import save_roc
from fus2net.evaluation.calibration import expected_calibration_error
from fus2net.evaluation.localization import lesion_finding_scores
from fus2net.evaluation.metrics import binary_metrics
from fus2net.evaluation.operating_points import OperatingPoint
from fus2net.images.duplicates import nearest_distances, phash_of
from fus2net.images.imageio import (
    ImageLimits,
    ImageReadError,
    image_pixels,
    open_image,
    resized_mask,
)
from fus2net.images.resizing import resize_image
from fus2net.inference.loading import LoadedModel
from fus2net.tracking import schema

log = logging.getLogger(__name__)


@dataclass
class ExternalResult:
    """Metrics (without the `external/<name>/` prefix) and files to log."""

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def patient_level(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per group id: mean probability, malignant if any image is."""
    grouped = frame.dropna(subset=["group"]).groupby("group", sort=True)
    return grouped.agg(label=("label", "max"), prob=("prob", "mean")).reset_index()


@dataclass(frozen=True)
class TrainingPool:
    """What finding an external image in the training pool needs of each pool record: its
    path, content hash and perceptual hash (None: not computed), and the pool's own
    near-duplicate distance (`data.duplicate_distance`)."""

    paths: Sequence[Path] = ()
    sha256: Sequence[str] = ()
    phashes: np.ndarray | None = None
    duplicate_distance: int = 4


@dataclass(frozen=True)
class _Read:
    pixels: np.ndarray
    sha256: str
    phash: int


def _read_external(path: Path, size: int, channels: int, limits: ImageLimits, resize: str) -> _Read:
    """Decode once: the model's input, and the hashes that find the image in the training
    pool; ImageReadError for a file that cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"{path}: cannot be read ({err.strerror or err})") from None
    decoded = open_image(path, data, limits)
    for notice in decoded.notices:
        log.warning("%s: %s", path, notice)
    array = image_pixels(decoded.image, channels)
    gray = array if channels == 1 else image_pixels(decoded.image, 1)
    return _Read(
        resize_image(array, size, channels, resize),
        hashlib.sha256(data).hexdigest(),
        phash_of(gray),
    )


def pool_matches(
    paths: Sequence[Path], sha256: Sequence[str], phashes: np.ndarray, pool: TrainingPool
) -> list[tuple[str, str] | None]:
    """Per external image, (how it matches, the training image) when the pool holds it: the
    same file, the same bytes, or a near-duplicate (pHash distance <= the pool's); else None."""
    real = {Path(p).resolve(): str(p) for p in pool.paths}
    by_content = {digest: str(p) for p, digest in zip(pool.paths, pool.sha256, strict=False)}
    distances, nearest = (None, None)
    if pool.phashes is not None and len(pool.phashes):
        distances, nearest = nearest_distances(phashes, pool.phashes)
    found: list[tuple[str, str] | None] = []
    for i, (path, digest) in enumerate(zip(paths, sha256, strict=True)):
        if Path(path).resolve() in real:
            found.append(("same file", real[Path(path).resolve()]))
        elif digest in by_content:
            found.append(("same content", by_content[digest]))
        elif distances is not None and distances[i] <= pool.duplicate_distance:
            match = f"near-duplicate (pHash distance {int(distances[i])})"
            found.append((match, str(pool.paths[int(nearest[i])])))
        else:
            found.append(None)
    return found


def evaluate_external(
    external: ExternalSet,
    model: LoadedModel,
    points: list[OperatingPoint],
    out_dir: Path,
    n_bins: int = 15,
    limits: ImageLimits | None = None,
    adabn: bool = False,
    pool: TrainingPool | None = None,
    overlap: str = "drop",
) -> ExternalResult:
    """Load, check and score one external dataset; unreadable images are skipped and counted.

    Images the training `pool` holds too are listed in `overlap.csv`, counted (`n_overlap`)
    and left out of the scores (`overlap="drop"`) or scored with the others (`"keep"`).
    The ensemble is also scored with its batch-norm statistics re-estimated on the set's own
    images (AdaBN, no labels used): those scores are the primary ones with `adabn`, else
    logged beside them under `adabn/` (`without_adabn/` the other way round)."""
    if overlap not in ("drop", "keep"):
        raise ValueError(f"evaluation.external_overlap must be drop or keep, got {overlap!r}")
    name, source, records = external.name, external.source, external.records
    if list(source.class_names) != list(model.spec.class_names):
        raise ValueError(
            f"eval_datasets.{name}: classes {list(source.class_names)} differ from the model's "
            f"{model.spec.class_names} (index = label); set eval_datasets.{name}.classes"
        )
    size, channels = model.spec.image_size, model.spec.in_chans
    readable, reads, bad = [], [], []
    limits = limits or ImageLimits()
    for record in records:  # decoded once; an unreadable image is skipped, not fatal
        try:
            reads.append(_read_external(record.image, size, channels, limits, model.spec.resize))
            readable.append(record)
        except ImageReadError as err:
            bad.append(str(err))
    matches = pool_matches(
        [r.image for r in readable],
        [read.sha256 for read in reads],
        np.array([read.phash for read in reads], dtype=np.uint64),
        pool or TrainingPool(),
    )
    shared = [(r, m) for r, m in zip(readable, matches, strict=True) if m is not None]
    if shared:
        what = "scored without them" if overlap == "drop" else "scored with the others"
        log.warning(
            "eval_datasets.%s: %d images are in the training pool too, %s "
            "(evaluation.external_overlap=%s): %s",
            name,
            len(shared),
            what,
            overlap,
            "; ".join(f"{r.image} = {m[1]} ({m[0]})" for r, m in shared[:5]),
        )
    scored = [
        (record, read)
        for record, read, match in zip(readable, reads, matches, strict=True)
        if match is None or overlap == "keep"
    ]
    if readable and not scored:
        raise ValueError(
            f"eval_datasets.{name}: every readable image ({len(readable)}) is in the training "
            "pool too; score another set, or set evaluation.external_overlap=keep"
        )
    kept = [record for record, _ in scored]
    images = [read.pixels for _, read in scored]
    if bad:
        log.warning(
            "eval_datasets.%s: skipping %d unreadable images: %s",
            name,
            len(bad),
            "; ".join(bad[:5]),
        )
    if not kept:
        raise ValueError(f"eval_datasets.{name}: no readable images in {source!r}")
    stack = np.stack(images)
    plain = model.member_probabilities(stack)
    adapted_model = model.adapted_to(stack)
    adapted = adapted_model.member_probabilities(stack)
    members, other = (adapted, plain) if adabn else (plain, adapted)
    other_name = "without_adabn" if adabn else "adabn"
    probs = members.mean(axis=0)
    frame = pd.DataFrame(
        {
            "path": [str(r.image) for r in kept],
            "label": [r.label for r in kept],
            "prob": probs,
            "prob_calibrated": model.spec.calibrated(members),
            "group": [r.group for r in kept],
        }
    )
    result = ExternalResult(name)
    result.metrics.update(binary_metrics(frame.label, frame.prob))
    result.metrics["ece"] = expected_calibration_error(frame.label, frame.prob, n_bins)
    result.metrics["ece_calibrated"] = expected_calibration_error(
        frame.label, frame.prob_calibrated, n_bins
    )
    for point in points:
        at = binary_metrics(frame.label, frame.prob, point.threshold)
        for metric in ("sensitivity", "specificity"):
            result.metrics[f"{point.name}_{metric}"] = at[metric]
    labels, other_probs = frame.label.to_numpy(), other.mean(axis=0)
    result.metrics[f"{other_name}/auc"] = binary_metrics(labels, other_probs)["auc"]
    for point in points:
        at = binary_metrics(labels, other_probs, point.threshold)
        for metric in ("sensitivity", "specificity"):
            result.metrics[f"{other_name}/{point.name}_{metric}"] = at[metric]
    if any(r.masks for r in kept):  # a lesion-crop model: does its crop find the lesion?
        found = (adapted_model if adabn else model).lesion_maps(stack)
        if found is not None:
            masks = [resized_mask(r.masks, size, model.spec.resize) for r in kept]
            scores = lesion_finding_scores(found[0], found[1], masks)
            result.metrics.update({f"lesion_crop/{k}": v for k, v in scores.items()})
    result.metrics["n_images"] = float(len(kept))
    result.metrics["n_skipped"] = float(len(bad))
    result.metrics["n_overlap"] = float(len(shared))
    curves = {f"{name} images (n={len(frame)})": (frame.label.to_numpy(), frame.prob.to_numpy())}
    patients = patient_level(frame)
    if len(patients):
        patient = binary_metrics(patients.label, patients.prob)
        result.metrics.update({f"patient_{k}": v for k, v in patient.items()})
        result.metrics["n_patients"] = float(len(patients))
        curves[f"{name} patients (n={len(patients)})"] = (
            patients.label.to_numpy(),
            patients.prob.to_numpy(),
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_dir / "predictions.csv", index=False)
    result.files = [
        out_dir / "predictions.csv",
        save_roc(curves, out_dir / "roc.png", f"External validation: {name}"),
    ]
    if shared:
        overlap_file = out_dir / "overlap.csv"
        pd.DataFrame(
            {
                "path": [str(r.image) for r, _ in shared],
                "training_image": [m[1] for _, m in shared],
                "match": [m[0] for _, m in shared],
                "scored": overlap == "keep",
            }
        ).to_csv(overlap_file, index=False)
        result.files.append(overlap_file)
    result.metrics = {k: float(v) for k, v in result.metrics.items() if np.isfinite(v)}
    return result


def score_external_datasets(
    ctx: JobContext, cell_run: str, model: LoadedModel, points: list[OperatingPoint], work: Path
) -> dict[str, dict[str, float]]:
    """Score every `eval_datasets` entry and log its files; one that fails is logged and
    tagged, not fatal: a bad extra dataset must not lose the trained cell."""
    external = {}
    n_bins = int(ctx.cfg.evaluation.calibration_bins)
    pool = TrainingPool(
        [r.image for r in ctx.data.records],
        ctx.data.sha256,
        ctx.data.phashes,
        int(ctx.cfg.data.duplicate_distance),
    )
    for name, external_set in ctx.data.external.items():
        try:
            result = evaluate_external(
                external_set,
                model,
                points,
                work / "external" / name,
                n_bins,
                ctx.data.limits,  # the training images' limits
                adabn=bool(ctx.cfg.evaluation.adabn),
                pool=pool,
                overlap=str(ctx.cfg.evaluation.external_overlap),
            )
        except Exception as err:
            log.error("eval_datasets.%s could not be scored: %s", name, err)
            ctx.tracker.set_tags(cell_run, {schema.external_error(name): str(err)})
            continue
        external[name] = result.metrics
        ctx.tracker.log_artifacts(cell_run, result.files, schema.external_dir(name))
    return external
