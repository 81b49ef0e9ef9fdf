"""Predict image files: malignant probability, class at an operating point, Grad-CAM overlay.

Images go through the training preprocessing (`load_image`, `resize_image`: any PIL mode and
size, bilinear resize, per-image standardisation). A file that cannot be read becomes a row with
its error, and the others are still predicted.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fus2net.data.sources.base import is_image_file
from fus2net.images.imageio import IMAGE_SUFFIXES, ImageLimits, image_pixels, open_image
from fus2net.images.resizing import resize_image, unfit
from fus2net.inference.cam_panel import save_cam_panel
from fus2net.inference.data_record import TrainingData
from fus2net.inference.gradcam import CamTarget
from fus2net.inference.loading import LoadedModel

log = logging.getLogger(__name__)

COLUMNS = [
    "path",
    "prob_malignant",
    "prob_calibrated",
    "operating_point",
    "threshold",
    "predicted_class",
    "overlay",
    "error",
    "notice",  # an image unlike every training image (size, mode): the model extrapolates
]
# A model whose weights hold NaN, or that overflows on an image, gives no class: never "benign".
NOT_FINITE = (
    "the model gave no usable probability (prob_malignant {prob}, prob_calibrated {cal}): no "
    "class is given; check the model's weights (NaN or inf in them) and this image"
)
# Folders are searched recursively; BUSI-style lesion masks beside the images are not inputs.
MASK_MARKER = "_mask"
READ_ERRORS = (ValueError, OSError, Image.DecompressionBombError)
# The model package does not record its training's data.min_image_size, so prediction refuses
# by default only images with a 1-px side (a line or a dot: resized and standardised they are
# flat, and the model's answer is its bias) and those over the default pixel limit.
PREDICT_MIN_IMAGE_SIZE = 2


def collect_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files of `inputs` (files as given; folders recursively, masks skipped, sorted),
    and (input, reason) for each input that gives nothing."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if is_image_file(p) and MASK_MARKER not in p.stem.lower()
            )
            files += found
            if not found:
                problems.append((str(path), f"folder has no {'/'.join(IMAGE_SUFFIXES)} images"))
        else:
            problems.append((str(path), "no such file or folder"))
    return files, problems


def _unique_name(stem: str, used: set[str]) -> str:
    name, n = f"{stem}_gradcam.png", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}_gradcam.png"
    used.add(name)
    return name


def predict_files(
    model: LoadedModel,
    inputs: Sequence[str | Path],
    out_dir: Path,
    operating_point: str | float | None = None,
    gradcam: bool = True,
    cam_target: CamTarget = "predicted",
    batch_size: int = 16,
    limits: ImageLimits | None = None,
) -> pd.DataFrame:
    """Predict every image of `inputs` (decoded within `limits`; default: the pixel limit and
    PREDICT_MIN_IMAGE_SIZE); write predictions.csv, predictions.json and
    overlays/<name>_gradcam.png (the original image, upright by its EXIF orientation, beside
    its Grad-CAM, with a colour bar and a caption of the decision) under `out_dir`."""
    limits = limits or ImageLimits(min_size=PREDICT_MIN_IMAGE_SIZE)
    spec = model.spec
    point, threshold = spec.threshold(operating_point)
    training = TrainingData.from_source(spec.source)
    files, problems = collect_images(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    overlay_dir = out_dir / "overlays"
    rows = [_row(path, error=reason) for path, reason in problems]
    results: dict[Path, dict[str, object]] = {}  # by file, so rows keep the input order
    used: set[str] = set()
    for start in range(0, len(files), batch_size):
        batch, resized, originals, unlike = [], [], [], []
        for path in files[start : start + batch_size]:
            try:
                decoded = open_image(path, limits=limits)
                for notice in decoded.notices:
                    log.warning("%s: %s", path, notice)
                original = image_pixels(decoded.image, 3 if gradcam else spec.in_chans)
                resized.append(resize_image(original, spec.image_size, spec.in_chans, spec.resize))
                originals.append(original if gradcam else None)  # overlays are drawn on it
                unlike.append(training.unlike(decoded.size, decoded.mode) or "")
                batch.append(path)
            except READ_ERRORS as err:
                log.warning("skipping %s", err)
                results[path] = _row(path, error=str(err).removeprefix(f"{path}: "))
        if not batch:
            continue
        images = np.stack(resized)
        members = model.member_probabilities(images)
        probs = members.mean(axis=0)
        calibrated = spec.calibrated(members)
        cams = model.grad_cams(images, cam_target) if gradcam else [None] * len(batch)
        for path, prob, cal, cam, original, notice in zip(
            batch, probs, calibrated, cams, originals, unlike, strict=True
        ):
            if not (math.isfinite(prob) and math.isfinite(cal)):
                results[path] = _row(path, error=NOT_FINITE.format(prob=prob, cal=cal))
                continue
            predicted = spec.class_names[int(prob >= threshold)]
            overlay_path = ""
            if cam is not None:
                overlay_dir.mkdir(parents=True, exist_ok=True)
                target = overlay_dir / _unique_name(path.stem, used)
                height, width = original.shape[:2]
                cam = unfit(cam, height, width, spec.resize)
                caption = _caption(model, prob, cal, predicted, point, threshold, cam_target)
                caption += f" Note: {notice}." if notice else ""
                save_cam_panel(original, cam, target, path.name, caption)
                overlay_path = str(target)
            results[path] = _row(
                path,
                prob_malignant=float(prob),
                prob_calibrated=float(cal),
                operating_point=point,
                threshold=threshold,
                predicted_class=predicted,
                overlay=overlay_path,
                notice=notice,
            )
    rows += [results[path] for path in files]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.to_csv(out_dir / "predictions.csv", index=False)
    _write_json(frame, model, point, threshold, out_dir / "predictions.json")
    return frame


def _caption(
    model: LoadedModel,
    prob: float,
    cal: float,
    predicted: str,
    point: str,
    threshold: float,
    cam_target: CamTarget,
) -> str:
    """The decision under an overlay: probabilities, class, operating point, what the map is."""
    names = model.spec.class_names
    explained = (
        f"the {names[1]} class"
        if cam_target == "malignant"
        else "the class each fold model predicts (at 0.5)"
    )
    return (
        f"{names[1]} probability {prob:.3f} (calibrated {cal:.3f}): {predicted} at operating "
        f"point {point} ({names[1]} when the probability >= {threshold:.4g}). "
        f"The map shows the evidence for {explained}. Research model, not a medical device."
    )


def _row(path: str | Path, **values: object) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(COLUMNS, None)
    row.update({"path": str(path), "error": "", "notice": "", **values})
    return row


def _write_json(
    frame: pd.DataFrame, model: LoadedModel, point: str, threshold: float, path: Path
) -> None:
    records = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]
    data = {
        "model": model.origin,
        "operating_point": point,
        "threshold": threshold,
        "calibration": {
            "method": model.spec.calibration_method,
            "temperature": model.spec.temperature,
            "bias": model.spec.calibration_bias,
        },
        "class_names": model.spec.class_names,
        "preprocessing": model.spec.preprocessing,
        "training_data": asdict(TrainingData.from_source(model.spec.source)),
        "predictions": records,
    }
    path.write_text(json.dumps(data, indent=2, default=str))
