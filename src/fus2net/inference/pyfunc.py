"""The MLflow pyfunc face of a packaged model (`loader_module` flavour; no mlflow import here).

`mlflow.pyfunc.load_model("models:/<name>/<version>").predict(images)` takes a uint8 array of
images (N, H, W, C) of any size, applies the training preprocessing and returns one row per
image. The registered model holds the package folder (`fus2net_model.json` + weights).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fus2net.data.imageio import image_pixels
from fus2net.data.resizing import resize_image
from fus2net.inference.loading import LoadedModel, load_package
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


class PyfuncModel:
    """What `_load_pyfunc` returns: `predict(images) -> DataFrame`."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        spec = self.model.spec
        images = np.asarray(model_input)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"expected images as a uint8 array (N, H, W, C) with C in 1, 3, 4; got "
                f"shape {images.shape}"
            )
        resized = np.stack(
            [_resize(im, spec.image_size, spec.in_chans, spec.resize) for im in images]
        )
        members = self.model.member_probabilities(resized)
        probs = members.mean(axis=0)
        _, threshold = spec.threshold((params or {}).get("operating_point"))
        return pd.DataFrame(
            {
                "prob_malignant": probs,
                "prob_calibrated": spec.calibrated(members),
                "predicted_class": [  # none for a NaN or inf probability, never "benign"
                    spec.class_names[int(p >= threshold)] if np.isfinite(p) else None for p in probs
                ],
                "threshold": threshold,
            }
        )


def _resize(image: np.ndarray, size: int, channels: int, resize: str) -> np.ndarray:
    """As `fus2net.data.cache.load_resized` does to a file, to an (H, W, 1|3|4) array."""
    image = np.clip(image, 0, 255).astype(np.uint8)
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)  # L, RGB or RGBA
    return resize_image(image_pixels(pil, channels), size, channels, resize)


def _load_pyfunc(data_path: str) -> PyfuncModel:
    """MLflow's entry point: `data_path` is the package folder copied into the model."""
    found = sorted(Path(data_path).rglob(SPEC_FILE))
    if not found:
        raise ValueError(f"{data_path}: no {SPEC_FILE} in this MLflow model's data")
    return PyfuncModel(load_package(found[0].parent))
