"""Where the model looks: Grad-CAM of test images against their lesion masks.

Grad-CAM runs on at most `evaluation.gradcam.n_images` test images (balanced by class, those
with lesion masks first) with every fold model, averaging their maps: the same ensemble that
scores the test set, at a cost of n_images x folds backward passes (seconds on a CPU).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from fus2net.cell.context import JobContext
from fus2net.clinical.plots import save_overlay_grid
from fus2net.evaluation.localization import (
    cam_energy_in_mask,
    localization_scores,
    pointing_game_hit,
)
from fus2net.images.imageio import resized_mask
from fus2net.inference.loading import LoadedModel

GRID_IMAGES = 16


def pick_images(ctx: JobContext, n: int | None) -> np.ndarray:
    """Up to n test images, classes interleaved, preferring those with lesion masks."""
    data = ctx.data
    test = np.asarray(data.split.test)
    masked = np.array([i for i in test if data.records[i].masks], dtype=int)
    pool = masked if len(masked) else test
    rng = np.random.default_rng(int(ctx.cfg.seed))
    labels = data.cache.labels
    per_class = [rng.permutation(pool[labels[pool] == c]) for c in np.unique(labels[pool])]
    order = [i for group in itertools.zip_longest(*per_class) for i in group if i is not None]
    return np.array(order[:n] if n else order, dtype=int)


def localize(
    ctx: JobContext, model: LoadedModel, test_probs: pd.Series, out: Path
) -> tuple[dict[str, float], list[Path]]:
    """Grad-CAM of the picked test images: mean scores (`localization/<name>`), a per-image
    table and a grid of overlays."""
    data, gradcam = ctx.data, ctx.cfg.evaluation.gradcam
    tolerance = int(gradcam.get("pointing_tolerance", 0))
    picked = pick_images(ctx, gradcam.get("n_images"))
    if len(picked) == 0:
        return {}, []
    images = np.asarray(data.cache.images[picked])
    cams = model.grad_cams(images, str(gradcam.get("target", "predicted")))
    size, fit = model.spec.image_size, model.spec.resize
    masks = [resized_mask(data.records[i].masks, size, fit) for i in picked]
    paths = [str(data.records[i].image) for i in picked]
    scored = [m.any() for m in masks]
    table = pd.DataFrame(
        {
            "path": paths,
            "label": data.cache.labels[picked],
            "prob": [float(test_probs.get(p, np.nan)) for p in paths],
            "cam_energy_in_mask": [
                cam_energy_in_mask(c, m) if s else np.nan
                for c, m, s in zip(cams, masks, scored, strict=True)
            ],
            "pointing_hit": [
                float(pointing_game_hit(c, m, tolerance)) if s else np.nan
                for c, m, s in zip(cams, masks, scored, strict=True)
            ],
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "scores.csv", index=False)
    shown = table.head(GRID_IMAGES)
    titles = [
        f"{data.class_names[r.label]} p={r.prob:.2f}"
        + (
            f"\nE={r.cam_energy_in_mask:.2f} {'hit' if r.pointing_hit else 'miss'}"
            if np.isfinite(r.pointing_hit)
            else ""
        )
        for r in shown.itertuples()
    ]
    grid = save_overlay_grid(
        images[: len(shown)], cams[: len(shown)], titles, out / "gradcam_grid.png", masks
    )
    scores = localization_scores(cams, masks, tolerance)
    return {f"localization/{k}": v for k, v in scores.items()}, [out / "scores.csv", grid]
