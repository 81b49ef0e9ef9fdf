"""Input normalisation (the paper's per-image standardisation, or the per-channel mean and std
a pretrained network expects) and augmentation pipelines.

Augmentations are albumentations pipelines described in `conf/augmentation/*.yaml` and built by
`hydra.utils.instantiate`; this module adds what albumentations lacks: an ultrasound effect
(depth attenuation), and scanner marks drawn at random (a shortcut taken away).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import albumentations as A
import hydra
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema
from PIL import Image
from pydantic import Field, field_validator

from fus2net.models.pretrained import Normalization
from fus2net.synthetic.marks import draw_marks


def standardize(x: np.ndarray, eps: float | None = None) -> np.ndarray:
    """float32 (x - mean) / max(std, eps) over the whole image (all pixels and channels).

    eps defaults to 1 / sqrt(x.size), as in tf.image.per_image_standardization (the paper used
    Keras/TensorFlow): a flat image maps to zeros instead of dividing by zero. Computed in place
    with a BLAS dot for the variance: ~5x faster than x.std(), which matters on a 2-core CPU.
    """
    out = np.array(x, dtype=np.float32)  # always a copy: the input may be a read-only cache row
    if out.size == 0:
        return out
    out -= np.float32(out.mean(dtype=np.float64))
    flat = out.reshape(-1)
    std = math.sqrt(float(np.dot(flat, flat)) / flat.size)
    floor = eps if eps is not None else 1.0 / math.sqrt(flat.size)
    out /= np.float32(max(std, floor))
    return out


def normalize(x: np.ndarray, normalization: Normalization | None = None) -> np.ndarray:
    """float32 model input of an (H, W, C) uint8 image: per-image standardisation (None, the
    paper's), or ((x / 255) - mean) / std per channel, as pretrained weights were trained."""
    if normalization is None:
        return standardize(x)
    mean, std = (np.asarray(v, dtype=np.float32) for v in normalization)
    out = np.array(x, dtype=np.float32)
    out *= np.float32(1 / 255)
    out -= mean
    out /= std
    return out


class DepthAttenuation(A.ImageOnlyTransform):
    """Ultrasound depth attenuation: brightness falls off exponentially from top to bottom.

    Echoes from deep tissue come back weaker and the scanner's time-gain compensation (TGC)
    only partly corrects it, so the depth profile of gain varies between scans and operators.
    `attenuation` is the range of the fraction of brightness lost at the bottom row
    (gain(depth) = (1 - a) ** depth, depth 0 at the top, 1 at the bottom); a negative value
    brightens with depth (over-compensated TGC).
    """

    class InitSchema(BaseTransformInitSchema):
        attenuation: tuple[float, float]

        @field_validator("attenuation")
        @classmethod
        def _check_range(cls, value: tuple[float, float]) -> tuple[float, float]:
            low, high = value
            if not -1.0 <= low <= high < 1.0:
                raise ValueError(f"attenuation must satisfy -1 <= low <= high < 1, got {value}")
            return value

    def __init__(self, attenuation: tuple[float, float] = (0.0, 0.5), p: float = 0.5):
        super().__init__(p=p)
        self.attenuation = attenuation

    def get_params(self) -> dict[str, Any]:
        return {"loss": self.py_random.uniform(*self.attenuation)}

    def apply(self, img: np.ndarray, loss: float, **params: Any) -> np.ndarray:
        depth = np.linspace(0.0, 1.0, img.shape[0], dtype=np.float32)
        gain = np.power(np.float32(1.0 - loss), depth).reshape((-1,) + (1,) * (img.ndim - 1))
        out = img.astype(np.float32) * gain
        if img.dtype == np.uint8:
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out.astype(img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("attenuation",)


class ScannerMarks(A.ImageOnlyTransform):
    """Scanner and sonographer annotations (text labels, caliper crosses with a dotted line,
    depth ticks, a probe marker, a box) burned in at random, whatever the image's class.

    Many BUSI images carry such marks, in both classes but not equally often, and other
    hospitals' exports may have none (BrEaST's have none): a network that takes them for a
    sign of a class fails there. Drawn at random they say nothing about the class. They are
    the synthetic dataset's marks (`fus2net.synthetic.marks`), drawn on a `frame_size`
    canvas (a scanner frame's size, so that text and crosses are as large as on a real frame
    after resizing), scaled to the image and laid over it as bright pixels; the calipers
    measure a random box, as a sonographer measures a lesion.
    """

    class InitSchema(BaseTransformInitSchema):
        frame_size: int = Field(ge=32)

    def __init__(self, frame_size: int = 320, p: float = 0.5):
        super().__init__(p=p)
        self.frame_size = frame_size

    def get_params(self) -> dict[str, Any]:
        return {"seed": self.py_random.randrange(2**32)}

    def apply(self, img: np.ndarray, seed: int, **params: Any) -> np.ndarray:
        rng = np.random.default_rng(seed)
        size = self.frame_size
        box = np.zeros((size, size), dtype=bool)  # the "lesion" the calipers measure
        (height, width), (top, left) = rng.uniform(0.15, 0.45, 2), rng.uniform(0.2, 0.5, 2)
        box[
            int(top * size) : int((top + height) * size),
            int(left * size) : int((left + width) * size),
        ] = True
        marks = draw_marks(np.zeros((size, size), dtype=np.uint8), box, rng)
        layer = np.asarray(
            Image.fromarray(marks).resize((img.shape[1], img.shape[0]), Image.Resampling.BILINEAR)
        )
        layer = layer.reshape(layer.shape + (1,) * (img.ndim - 2))
        if img.dtype != np.uint8:
            return np.maximum(img, (layer / 255.0).astype(img.dtype))
        return np.maximum(img, layer)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("frame_size",)


def build_augmentation(
    augmentation: A.BaseCompose | Mapping[str, Any] | None,
) -> A.BaseCompose | None:
    """The training augmentation: a built albumentations pipeline as it is, or one instantiated
    from a plain mapping of the `augmentation` group (`_target_` and its arguments); None or an
    empty mapping (group `none`) means no augmentation.

    Lists in the mapping become tuples/lists (`_convert_=all`), which albumentations' argument
    validation expects instead of OmegaConf containers.
    """
    if augmentation is None or isinstance(augmentation, A.BaseCompose):
        return augmentation
    if len(augmentation) == 0:
        return None
    if "_target_" not in augmentation:
        raise ValueError(
            "augmentation config has no _target_: use one of conf/augmentation/*.yaml "
            "(e.g. _target_: albumentations.Compose with a transforms list) or augmentation=none"
        )
    pipeline = hydra.utils.instantiate(augmentation, _convert_="all")
    if not isinstance(pipeline, A.BaseCompose):
        raise TypeError(f"augmentation must build an albumentations Compose, got {type(pipeline)}")
    return pipeline
