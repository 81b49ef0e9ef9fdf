"""What a model package records of its training data, and how a new image compares with it.

A probability means little without knowing what the model learned from: `fus2net_model.json`
keeps, under `source.training_data`, the dataset's name, fingerprint, image count and dates, and
the range of sizes and the file modes of the training images. Prediction prints it in its header
and flags an image that is unlike every training image (another size or mode: another scanner,
a screenshot, a crop), where the model's answer is an extrapolation. Specs written before these
fields existed still load; what they lack reads "not recorded".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KEY = "training_data"  # in ModelSpec.source
NOT_RECORDED = "not recorded"


def _range(value: Any) -> tuple[int, int] | None:
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    return None


@dataclass(frozen=True)
class TrainingData:
    """The training data a model package names; None where the package does not record it."""

    dataset: str | None = None
    fingerprint: str | None = None
    n_images: int | None = None
    trained: str | None = None  # when the package was written (ISO 8601 date)
    newest_file: str | None = None  # modification date of the newest training image file
    width: tuple[int, int] | None = None  # (min, max) px, upright as the decoder sees them
    height: tuple[int, int] | None = None
    modes: tuple[str, ...] | None = None  # the files' PIL modes (L, RGB, P, I;16, ...)

    @classmethod
    def from_source(cls, source: Mapping[str, Any]) -> TrainingData:
        """From a spec's `source`: its `training_data` where written, else the dataset name and
        fingerprint that every spec has recorded."""
        data = source.get(KEY)
        data = data if isinstance(data, Mapping) else {}
        n_images = data.get("n_images")
        modes = data.get("modes")
        return cls(
            dataset=data.get("dataset") or source.get("dataset") or None,
            fingerprint=data.get("fingerprint") or source.get("fingerprint") or None,
            n_images=n_images if isinstance(n_images, int) else None,
            trained=data.get("trained") or None,
            newest_file=data.get("newest_file") or None,
            width=_range(data.get("width")),
            height=_range(data.get("height")),
            modes=tuple(modes) if isinstance(modes, list) and modes else None,
        )

    def describe(self) -> str:
        """One header line: `trained on <dataset>: <n> images (fingerprint ...), ...`."""
        fingerprint = f"{self.fingerprint[:16]}…" if self.fingerprint else NOT_RECORDED
        count = f"{self.n_images} images" if self.n_images is not None else "count not recorded"
        dates = (
            f"trained {self.trained[:10]}, newest image file {(self.newest_file or '?')[:10]}"
            if self.trained
            else f"date {NOT_RECORDED}"
        )
        formats = (
            f"sizes {self._sizes()} px, modes {', '.join(self.modes)}"
            if self.width and self.height and self.modes
            else f"sizes and modes {NOT_RECORDED}"
        )
        return (
            f"trained on {self.dataset or NOT_RECORDED}: {count} (fingerprint {fingerprint}), "
            f"{dates}; {formats}"
        )

    def _sizes(self) -> str:
        assert self.width is not None and self.height is not None
        (w0, w1), (h0, h1) = self.width, self.height
        if (w0, h0) == (w1, h1):
            return f"{w0}x{h0}"
        return f"{w0 if w0 == w1 else f'{w0}-{w1}'} x {h0 if h0 == h1 else f'{h0}-{h1}'}"

    def unlike(self, size: tuple[int, int], mode: str) -> str | None:
        """Why an image of `size` (width, height) and file `mode` is unlike every training
        image, or None (also when the package does not record the training images)."""
        found = []
        width, height = size
        if self.width and self.height:
            (w0, w1), (h0, h1) = self.width, self.height
            if not (w0 <= width <= w1 and h0 <= height <= h1):
                found.append(
                    f"its size {width}x{height} px is outside the training images' {self._sizes()}"
                )
        if self.modes and mode not in self.modes:
            found.append(
                f"its mode {mode} is not among the training images' {', '.join(self.modes)}"
            )
        if not found:
            return None
        return (
            "unlike the training images: "
            + "; ".join(found)
            + " (the model extrapolates here; check the image is an ultrasound frame like them)"
        )


def training_data_problems(source: Mapping[str, Any]) -> list[str]:
    """Problems of `source.training_data` where a spec has it (each naming its field)."""
    data = source.get(KEY)
    if data is None:
        return []
    where = f"source.{KEY}"
    if not isinstance(data, Mapping):
        return [f"{where} is {data!r}; it must be an object"]
    problems = []
    for key in ("width", "height"):
        value = data.get(key)
        if value is not None and (_range(value) is None or value[0] > value[1]):
            problems.append(f"{where}.{key} is {value!r}; it must be [min, max] in pixels")
    modes = data.get("modes")
    if modes is not None and not (
        isinstance(modes, list) and all(isinstance(m, str) for m in modes)
    ):
        problems.append(f"{where}.modes is {modes!r}; it must list PIL mode names")
    n_images = data.get("n_images")
    if n_images is not None and not (isinstance(n_images, int) and n_images >= 0):
        problems.append(f"{where}.n_images is {n_images!r}; it must be a count of images")
    return problems
