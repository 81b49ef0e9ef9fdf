"""fus2net-grid: a picture of synthetic (and optionally real) benign and malignant examples.

Rows are classes (and sources), columns examples; each lesion's mask is outlined, so the
BI-RADS descriptors the generator draws can be checked by eye against real BUSI images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fus2net.images.imageio import load_image, load_mask
from fus2net.synthetic.generator import CLASSES, MANIFEST, generate_dataset

OUTLINE = {"benign": "lime", "malignant": "red"}


def _examples(root: Path, name: str, n: int, rng: np.random.Generator) -> list[tuple[Path, list]]:
    """``n`` random (image, masks) pairs of one class from a BUSI-layout folder."""
    folder = root / name
    images = sorted(p for p in folder.glob(f"{name} (*).png") if "_mask" not in p.name)
    if not images:
        raise SystemExit(f"error: no '{name} (i).png' images in {folder}; expected BUSI layout")
    picked = rng.choice(len(images), size=min(n, len(images)), replace=False)
    return [(images[i], sorted(folder.glob(f"{images[i].stem}_mask*.png"))) for i in picked]


def _ensure_synthetic(root: Path, n: int, seed: int) -> Path:
    """Use the synthetic dataset at ``root``, generating a small one there when it is missing."""
    if (root / MANIFEST).is_file():
        return root
    return generate_dataset(root, n_images=max(3 * n, 12), seed=seed, progress=True)


def draw_grid(rows: list[tuple[str, str, list[tuple[Path, list]]]], out: Path, tile: float) -> None:
    """One row per (label, class, examples); mask contours drawn in the class colour."""
    cols = max(len(examples) for _, _, examples in rows)
    fig = Figure(figsize=(tile * cols, tile * len(rows)))  # no pyplot: no GUI backend needed
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (label, name, examples) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_axis_off()
            if c >= len(examples):
                continue
            image_path, mask_paths = examples[c]
            image = load_image(image_path, channels=1)[:, :, 0]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
            if mask_paths:
                mask = load_mask(mask_paths)
                ax.contour(mask.astype(float), levels=[0.5], colors=OUTLINE[name], linewidths=0.8)
            if c == 0:
                ax.text(
                    -0.04,
                    0.5,
                    label,
                    transform=ax.transAxes,
                    rotation=90,
                    ha="right",
                    va="center",
                    fontsize=9,
                )
    fig.subplots_adjust(left=0.03, right=0.995, top=0.995, bottom=0.005, wspace=0.03, hspace=0.03)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fus2net-grid",
        description="Write a PNG grid of synthetic benign/malignant examples with mask outlines.",
    )
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument(
        "--synthetic-root",
        type=Path,
        default=Path("data/synthetic-grid"),
        help="synthetic dataset to show; generated there when missing",
    )
    parser.add_argument("--n", type=int, default=8, help="examples per class (columns)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed and example choice")
    parser.add_argument(
        "--real",
        type=Path,
        default=None,
        help="a BUSI-layout folder: add rows of real examples for comparison",
    )
    parser.add_argument("--tile", type=float, default=1.6, help="tile size in inches")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.n < 1:
        raise SystemExit("error: --n must be at least 1")
    rng = np.random.default_rng(args.seed)
    synthetic = _ensure_synthetic(args.synthetic_root, args.n, args.seed)
    rows = [
        (f"synthetic {name}", name, _examples(synthetic, name, args.n, rng)) for name in CLASSES
    ]
    if args.real is not None:
        if not args.real.is_dir():
            raise SystemExit(f"error: --real {args.real} is not a folder")
        rows += [
            (f"real {name}", name, _examples(args.real, name, args.n, rng)) for name in CLASSES
        ]
    draw_grid(rows, args.out, args.tile)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
