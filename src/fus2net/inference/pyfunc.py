"""The MLflow pyfunc face of a packaged model (`loader_module` flavour; no mlflow import here).

`mlflow.pyfunc.load_model("models:/<name>/<version>").predict(frame)` takes a DataFrame whose
`image` column holds image files' bytes (PNG, JPEG, ...; over HTTP, base64 strings in a
`dataframe_split` column, which MLflow decodes for the signature's `binary` column), decodes them
with the project's one decoder (`fus2net.images.imageio`), applies the training preprocessing and
returns one row per image: the probability, the calibrated probability, the class at the
model's operating point (or the `operating_point` param), and an `error` that is empty unless
the image could not be read (then no probability and no class: never a failed request). Called
directly (`PyfuncModel.predict`), a uint8 array of images (N, H, W, C) works too. The registered
model holds the package folder (`fus2net_model.json` + weights).
"""

from __future__ import annotations

import base64
import binascii
import io
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fus2net.images.imageio import ImageLimits, image_pixels, open_image
from fus2net.images.resizing import resize_image
from fus2net.inference.loading import LoadedModel, load_package
from fus2net.inference.predictor import PREDICT_MIN_IMAGE_SIZE
from fus2net.inference.spec import SPEC_FILE

LOADER_MODULE = __name__
# What a serving environment needs; fus2net itself is installed from the repository.
_REQUIREMENTS = ("torch", "torchvision", "numpy", "pandas", "pillow", "grad-cam", "scipy")


def pip_requirements() -> list[str]:
    """Pinned requirements of the serving environment (listed, so MLflow does not infer them
    by loading the model in a subprocess, which takes minutes)."""
    pins = []
    for name in ("fus2net", *_REQUIREMENTS):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


IMAGE_COLUMN = "image"  # the input column of image file bytes (base64 strings over HTTP)
OUTPUT_COLUMNS = (
    "prob_malignant",
    "prob_calibrated",
    "predicted_class",
    "threshold",
    "operating_point",
    "error",
)


class PyfuncModel:
    """What `_load_pyfunc` returns: `predict(frame or images) -> DataFrame`."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per image; an image that cannot be read is a row with its `error`."""
        spec = self.model.spec
        point, threshold = spec.threshold((params or {}).get("operating_point") or None)
        if isinstance(model_input, pd.DataFrame):
            pixels, errors = _decode_column(model_input, spec.in_chans)
        else:
            pixels, errors = _array_images(model_input, spec.in_chans), None
        errors = errors or [""] * len(pixels)
        ok = [i for i, e in enumerate(errors) if not e]
        probs = np.full(len(pixels), np.nan)
        calibrated = np.full(len(pixels), np.nan)
        if ok:
            resized = np.stack(
                [resize_image(pixels[i], spec.image_size, spec.in_chans, spec.resize) for i in ok]
            )
            members = self.model.member_probabilities(resized)
            probs[ok] = members.mean(axis=0)
            calibrated[ok] = spec.calibrated(members)
        classes = [  # none for an error or a NaN or inf probability, never "benign"
            spec.class_names[int(p >= threshold)] if np.isfinite(p) else None for p in probs
        ]
        for i, p in enumerate(probs):
            if not errors[i] and not np.isfinite(p):
                errors[i] = "the model gave no usable probability: no class is given"
        frame = pd.DataFrame(
            {
                "prob_malignant": probs,
                "prob_calibrated": calibrated,
                "predicted_class": pd.Series(classes, dtype=object),  # None stays None
                "threshold": threshold,
                "operating_point": point,
                "error": errors,
            },
            columns=list(OUTPUT_COLUMNS),
        )
        if any(errors):  # null, not NaN, in JSON: a NaN is not valid JSON for an HTTP client
            for column in ("prob_malignant", "prob_calibrated"):
                frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        return frame


def _array_images(model_input: Any, channels: int) -> list[np.ndarray]:
    """Each image of a uint8 array (N, H, W[, C]) as the decoder would give it."""
    images = np.asarray(model_input)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"expected a DataFrame with an {IMAGE_COLUMN!r} column of image file bytes, or "
            f"images as a uint8 array (N, H, W, C) with C in 1, 3, 4; got shape {images.shape}"
        )
    return [_pixels(im, channels) for im in images]


def _decode_column(frame: pd.DataFrame, channels: int) -> tuple[list[np.ndarray], list[str]]:
    """Each row's image file, decoded by the project's one decoder (limits as prediction's);
    an unreadable one gets an empty array and its reason."""
    if IMAGE_COLUMN not in frame.columns:
        raise ValueError(
            f"the input has columns {list(frame.columns)}; it needs an {IMAGE_COLUMN!r} column "
            "of image file bytes (base64 strings in a dataframe_split over HTTP)"
        )
    limits = ImageLimits(min_size=PREDICT_MIN_IMAGE_SIZE)
    pixels, errors = [], []
    for i, value in enumerate(frame[IMAGE_COLUMN]):
        where = f"row {i}"
        try:
            data = _file_bytes(value, where)
            decoded = open_image(where, data=data, limits=limits)
            pixels.append(image_pixels(decoded.image, channels))
            errors.append("")
        except (ValueError, OSError) as err:
            pixels.append(np.zeros((0, 0, channels), np.uint8))
            errors.append(str(err))
    return pixels, errors


def _file_bytes(value: Any, where: str) -> bytes:
    """An image file's bytes: as given, or from a base64 string (a caller that did not declare
    the column binary)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"{where}: not base64-encoded image bytes ({err})") from err
    raise ValueError(f"{where}: expected image file bytes, got {type(value).__name__}")


def _pixels(image: np.ndarray, channels: int) -> np.ndarray:
    """An (H, W, 1|3|4) array as the decoder gives a file of it (L, RGB or RGBA)."""
    image = np.clip(image, 0, 255).astype(np.uint8)
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    return image_pixels(pil, channels)


def example_image(size: int) -> bytes:
    """A mid-grey PNG of `size` px: the input example (never a patient's image; the registry is
    often shared more widely than the data)."""
    buffer = io.BytesIO()
    Image.new("L", (size, size), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def _load_pyfunc(data_path: str) -> PyfuncModel:
    """MLflow's entry point: `data_path` is the package folder copied into the model."""
    found = sorted(Path(data_path).rglob(SPEC_FILE))
    if not found:
        raise ValueError(f"{data_path}: no {SPEC_FILE} in this MLflow model's data")
    return PyfuncModel(load_package(found[0].parent))
