"""A prediction's figure: the original image beside its Grad-CAM, a colour bar and a caption.

A heat map painted over the whole frame hides the image it explains and says nothing about the
decision: here the original stays visible on the left, the map on the right is drawn only where
it is strong (its opacity follows its value), the colour bar says what the colours mean, and the
caption gives the probability, the class and the operating point it was decided at.
Matplotlib `Figure` without pyplot: no GUI backend and no global state.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

CMAP = "jet"
MAX_OPACITY = 0.6  # of the strongest map value; weak values fade to the image beneath
DPI = 110


def _gray_or_rgb(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """The image as imshow takes it: (H, W) with a grey colour map, or (H, W, 3)."""
    if image.ndim == 3 and image.shape[2] == 3:
        return image, None
    return image.reshape(image.shape[0], image.shape[1]), "gray"


def save_cam_panel(
    image: np.ndarray, cam: np.ndarray, path: Path, title: str, caption: str
) -> Path:
    """Write `path`: `image` (H, W[, 1|3] uint8) and its Grad-CAM `cam` ((H, W) in [0, 1], at
    the image's size) side by side, a colour bar of the map, `title` above, `caption` below."""
    pixels, cmap = _gray_or_rgb(image)
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    height, width = pixels.shape[:2]
    side = 4.2  # inches of the longer side of each image
    scale = side / max(height, width)
    fig = Figure(figsize=(2 * width * scale + 1.4, height * scale + 1.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, name in ((left, "original"), (right, "Grad-CAM")):
        ax.imshow(pixels, cmap=cmap, vmin=0, vmax=255)
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    right.imshow(cam, cmap=CMAP, vmin=0.0, vmax=1.0, alpha=MAX_OPACITY * cam)
    # the bar in full colour (the map's own opacity varies with its value)
    scale_bar = ScalarMappable(Normalize(0.0, 1.0), cmap=CMAP)
    bar = fig.colorbar(scale_bar, ax=right, fraction=0.046, pad=0.02)
    bar.set_label("Grad-CAM: relative evidence (0 = none, 1 = strongest in this image)", fontsize=8)
    bar.ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=10)
    wrapped = "\n".join(textwrap.wrap(caption, 110))
    fig.supxlabel(wrapped, fontsize=9)
    fig.savefig(path, dpi=DPI)
    return path
