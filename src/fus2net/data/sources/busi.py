"""The BUSI layout (`<class>/<name>.png` + `<name>_mask[_n].png`) and its synthetic stand-in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fus2net.data.records import Record
from fus2net.data.sources.base import resolve_path
from fus2net.data.sources.folders import FolderSource


class BusiSource(FolderSource):
    """BUSI (Al-Dhabyani et al. 2020): flat class folders, masks beside their image.

    Only the configured classes are read, so the `normal` folder is ignored unless listed
    (`dataset.classes=[normal,benign,malignant]`).
    """

    root_fix = (
        "Point dataset.root (or the FUS2NET_BUSI_ROOT environment variable) at "
        "Dataset_BUSI_with_GT, the folder that holds benign/ and malignant/."
    )

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str] = ("benign", "malignant"),
        name: str = "busi",
        allow_outside_root: bool = False,
    ) -> None:
        super().__init__(
            root,
            classes=classes,
            recursive=False,
            mask_suffix="_mask",
            name=name,
            allow_outside_root=allow_outside_root,
        )

    def options(self) -> dict[str, Any]:
        return {"layout": "busi", **super().options()}


class SyntheticSource(BusiSource):
    """Generated BUSI-like images (the default dataset): runs anywhere, no download needed.

    `load()` (re)uses the dataset that `fus2net.synthetic.generator.generate_dataset` writes under
    `root`, then reads it exactly as BUSI.
    """

    root_fix = "Set dataset.root to a writable folder for the generated dataset."

    def __init__(
        self,
        root: str | Path,
        n_images: int = 500,
        image_size: int = 299,
        malignant_fraction: float = 0.333,
        seed: int = 0,
        name: str = "synthetic",
        progress: bool = True,
    ) -> None:
        super().__init__(root, classes=("benign", "malignant"), name=name)
        self.n_images = n_images
        self.image_size = image_size
        self.malignant_fraction = malignant_fraction
        self.seed = seed
        self.progress = progress

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "n_images": self.n_images,
            "image_size": self.image_size,
            "malignant_fraction": self.malignant_fraction,
            "seed": self.seed,
        }

    def load(self) -> list[Record]:
        from fus2net.synthetic.generator import generate_dataset  # heavy: only when used

        written = generate_dataset(
            self.root,
            n_images=self.n_images,
            image_size=self.image_size,
            malignant_fraction=self.malignant_fraction,
            seed=self.seed,
            progress=self.progress,
        )
        self.root = resolve_path(written)
        return super().load()
