"""External validation: score a trained model on another dataset (another hospital, scanner).

Each entry of `eval_datasets` is a dataset config like those of the `dataset` group. It is
scored after training with the test-set protocol (the same ensemble, calibration and operating
points, all fixed on the training data), and, where the source gives patient ids, per patient
too: a patient's probability is the mean over their images, their label the worst (any
malignant image makes a malignant patient), so one patient's many images count once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate

from fus2net.data.cache import load_resized
from fus2net.data.imageio import ImageLimits, ImageReadError
from fus2net.evaluation.calibration import expected_calibration_error
from fus2net.evaluation.metrics import binary_metrics
from fus2net.evaluation.operating_points import OperatingPoint
from fus2net.experiment.context import JobContext
from fus2net.experiment.figures import save_roc
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


def evaluate_external(
    name: str,
    dataset_cfg: Any,
    model: LoadedModel,
    points: list[OperatingPoint],
    out_dir: Path,
    n_bins: int = 15,
    limits: ImageLimits | None = None,
    adabn: bool = False,
) -> ExternalResult:
    """Load, check and score one external dataset; unreadable images are skipped and counted.

    The ensemble is also scored with its batch-norm statistics re-estimated on the set's own
    images (AdaBN, no labels used): those scores are the primary ones with `adabn`, else
    logged beside them under `adabn/` (`without_adabn/` the other way round)."""
    source = instantiate(dataset_cfg)
    if list(source.class_names) != list(model.spec.class_names):
        raise ValueError(
            f"eval_datasets.{name}: classes {list(source.class_names)} differ from the model's "
            f"{model.spec.class_names} (index = label); set eval_datasets.{name}.classes"
        )
    records = source.load()
    size, channels = model.spec.image_size, model.spec.in_chans
    kept, images, bad = [], [], []
    limits = limits or ImageLimits()
    for record in records:  # decoded once; an unreadable image is skipped, not fatal
        try:
            images.append(load_resized(record.image, size, channels, limits, model.spec.resize))
            kept.append(record)
        except ImageReadError as err:
            bad.append(str(err))
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
    adapted = model.adapted_to(stack).member_probabilities(stack)
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
    result.metrics["n_images"] = float(len(kept))
    result.metrics["n_skipped"] = float(len(records) - len(kept))
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
    result.metrics = {k: float(v) for k, v in result.metrics.items() if np.isfinite(v)}
    return result


def score_external_datasets(
    ctx: JobContext, cell_run: str, model: LoadedModel, points: list[OperatingPoint], work: Path
) -> dict[str, dict[str, float]]:
    """Score every `eval_datasets` entry and log its files; one that fails is logged and
    tagged, not fatal: a bad extra dataset must not lose the trained cell."""
    external = {}
    n_bins = int(ctx.cfg.evaluation.calibration_bins)
    for name, dataset_cfg in (ctx.cfg.get("eval_datasets") or {}).items():
        try:
            limits = ImageLimits.from_config(ctx.cfg.data)  # the training images' limits
            result = evaluate_external(
                name,
                dataset_cfg,
                model,
                points,
                work / "external" / name,
                n_bins,
                limits,
                adabn=bool(ctx.cfg.evaluation.get("adabn", False)),
            )
        except Exception as err:
            log.error("eval_datasets.%s could not be scored: %s", name, err)
            ctx.tracker.set_tags(cell_run, {schema.external_error(name): str(err)})
            continue
        external[name] = result.metrics
        ctx.tracker.log_artifacts(cell_run, result.files, schema.external_dir(name))
    return external
