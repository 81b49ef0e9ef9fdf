"""Render one synthetic B-mode breast ultrasound image and its lesion mask.

The image is built the way a scanner shows it: an echogenicity map of skin, subcutaneous fat,
fibroglandular tissue and pectoral muscle; the lesion composited in; attenuation accumulated
along each beam (depth), which gives posterior enhancement or shadowing; multiplicative speckle
from a band-limited complex scatterer field; then display gain and 8-bit quantisation.
All operations are whole-array numpy / scipy.ndimage calls.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import expit

from fus2net.synthetic.lesion import LesionSpec, lesion_distance, sample_lesion
from fus2net.synthetic.marks import draw_marks


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]
) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian random field with correlation lengths ``sigma`` (px).

    Long correlations are filtered on a coarser grid and upsampled (bilinear): the field is
    just as smooth and the filter costs a fraction of a full-resolution one.
    """
    factor = [max(1, int(sg // 3)) for sg in sigma]
    coarse = [-(-n // f) + 2 for n, f in zip(shape, factor, strict=True)]
    field = rng.standard_normal(coarse, dtype=np.float32)
    field = ndimage.gaussian_filter(field, [sg / f for sg, f in zip(sigma, factor, strict=True)])
    if factor != [1, 1]:
        field = ndimage.zoom(field, factor, order=1)
    field = field[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-6)


def _profile(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smooth 1-D unit-sd curve across the image width: wavy layer boundaries."""
    curve = ndimage.gaussian_filter1d(rng.standard_normal(size), sigma, mode="wrap")
    return curve / (curve.std() + 1e-6)


def _step(y: np.ndarray, edge: np.ndarray, soft: float) -> np.ndarray:
    """0 above ``edge``, 1 below it, with a soft transition of ``soft`` px."""
    return expit((y - edge) / soft)


def _curves(
    rng: np.random.Generator, size: int, sigma: tuple[float, float], width: float
) -> np.ndarray:
    """Bright curvilinear echoes (Cooper ligaments, fascia): level lines of a smooth field."""
    field = _smooth_noise(rng, (size, size), sigma)
    return np.exp(-((field / width) ** 2))


def tissue_echogenicity(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """Layered breast tissue in display units (0 black, ~1 bright); returns it and the fat level."""
    y = np.arange(size, dtype=np.float32)[:, None]
    s = size / 299.0
    slope = rng.normal(0, 0.06) * (np.arange(size) - size / 2)
    skin = (rng.uniform(0.0, 0.03) * size + 1.5 * s * _profile(rng, size, 60 * s))[None, :]
    fat_end = skin + rng.uniform(0.08, 0.3) * size + 10 * s * _profile(rng, size, 30 * s) + slope
    gland_end = fat_end + rng.uniform(0.35, 0.6) * size + 12 * s * _profile(rng, size, 25 * s)
    gland_end = gland_end + slope

    fat_level = rng.uniform(0.3, 0.42)
    lobules = _smooth_noise(rng, (size, size), (7 * s, 12 * s))
    fat = fat_level * (1 + 0.15 * lobules) + 0.4 * _curves(rng, size, (12 * s, 22 * s), 0.1)

    gland_level = rng.uniform(0.55, 0.8)
    streaks = _smooth_noise(rng, (size, size), (2 * s, 14 * s))
    islands = _smooth_noise(rng, (size, size), (7 * s, 12 * s))
    gland = gland_level * (1 + 0.2 * streaks) - 0.15 * np.clip(islands - 0.8, 0, None)
    gland += 0.45 * _curves(rng, size, (5 * s, 25 * s), 0.12)
    gland += 0.3 * _curves(rng, size, (3 * s, 12 * s), 0.08)

    muscle = rng.uniform(0.3, 0.5) * (1 + 0.3 * _smooth_noise(rng, (size, size), (1 * s, 20 * s)))
    muscle += 0.25 * _curves(rng, size, (4 * s, 40 * s), 0.08)

    in_fat, in_gland, in_muscle = _step(y, skin, 1.5), _step(y, fat_end, 4), _step(y, gland_end, 8)
    echo = 0.08 + (fat - 0.08) * in_fat
    echo = echo + (gland - echo) * in_gland
    echo = echo + (muscle - echo) * in_muscle
    echo += 0.5 * np.exp(-(((y - skin - 2 * s) / (1.6 * s)) ** 2))  # skin line
    echo += 0.25 * np.exp(-(((y - gland_end) / (1.8 * s)) ** 2))  # pectoral fascia
    return np.clip(echo, 0.0, 1.3).astype(np.float32), fat_level


def _composite_lesion(
    echo: np.ndarray, dist: np.ndarray, spec: LesionSpec, fat_level: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blend the lesion into the tissue; returns the new echogenicity and the lesion opacity."""
    size = echo.shape[0]
    s = size / 299.0
    inside = expit((1.0 - dist) / spec.edge_width)
    texture = _smooth_noise(rng, echo.shape, (4 * s, 5 * s))
    level = spec.echo * fat_level * (1 + 0.9 * spec.heterogeneity * texture)
    lesion = np.clip(level, 0.0, None)
    if spec.calcifications:
        ys, xs = np.nonzero(dist < 0.85)
        if len(ys):
            pick = rng.integers(0, len(ys), spec.calcifications)
            dots = np.zeros_like(echo)
            dots[ys[pick], xs[pick]] = 1.0
            lesion += 8.0 * ndimage.gaussian_filter(dots, 0.7 * s)
    out = echo * (1 - inside) + lesion * inside
    outside = dist - 1.0
    halo_ring = np.exp(-(((outside - 0.18) / 0.14) ** 2)) * (outside > -0.05)
    out += 0.45 * spec.halo * halo_ring * (1 + 0.4 * texture)
    out += 0.5 * spec.capsule * np.exp(-((outside / 0.04) ** 2))
    return out.astype(np.float32), inside.astype(np.float32)


def beam_gain(inside: np.ndarray, spec: LesionSpec | None, rng: np.random.Generator) -> np.ndarray:
    """Depth gain with imperfect TGC, plus the lesion's posterior enhancement or shadowing."""
    size = inside.shape[0]
    s = size / 299.0
    depth = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    gain = np.exp(-rng.uniform(0.3, 1.0) * depth**1.5) * (
        1 + 0.06 * np.sin(6 * depth + rng.uniform(0, 9))
    )
    if spec is not None and spec.posterior != 0:
        beams = 1 + 0.3 * np.abs(spec.posterior) * _profile(rng, size, 4 * s)[None, :]
        path = np.cumsum(inside, axis=0) / size  # lesion thickness crossed so far, per beam
        contrast = spec.posterior * np.minimum(4.0 * path, 1.0) * np.clip(beams, 0.2, None)
        gain = gain * np.exp(-0.9 * contrast)
        gain = ndimage.gaussian_filter1d(gain, 3.0 * s, axis=1)
    return gain.astype(np.float32)


def speckle(rng: np.random.Generator, size: int) -> np.ndarray:
    """Unit-mean speckle: envelope of a complex scatterer field through an anisotropic PSF."""
    s = size / 299.0
    psf = (rng.uniform(0.9, 1.3) * s, rng.uniform(1.8, 2.8) * s)  # axial finer than lateral
    real = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), psf)
    imag = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), psf)
    envelope = np.hypot(real, imag) ** rng.uniform(0.25, 0.45)  # log-like compression
    return envelope / envelope.mean()


def render_case(
    seed: np.random.SeedSequence, malignant: bool, size: int, overlap: float
) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 (H, W), mask bool (H, W)) pair, fully determined by ``seed``."""
    lesion_seed, tissue_seed, marks_seed = seed.spawn(3)
    rng = np.random.default_rng(lesion_seed)
    spec = sample_lesion(rng, malignant, overlap)
    dist = lesion_distance(spec, rng, size)

    tissue_rng = np.random.default_rng(tissue_seed)
    echo, fat_level = tissue_echogenicity(tissue_rng, size)
    echo, inside = _composite_lesion(echo, dist, spec, fat_level, tissue_rng)
    bmode = echo * beam_gain(inside, spec, tissue_rng) * speckle(tissue_rng, size)
    bmode = ndimage.gaussian_filter(bmode, 0.8 * size / 299.0) * tissue_rng.uniform(0.75, 1.15)
    image = np.clip(bmode * 215.0 + tissue_rng.uniform(0, 6), 0, 255).astype(np.uint8)
    mask = dist < 1.0
    image = draw_marks(image, mask, np.random.default_rng(marks_seed))
    return image, mask
