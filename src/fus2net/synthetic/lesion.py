"""Synthetic lesions: BI-RADS descriptors drawn per class, and the lesion shape they imply.

Every lesion has a latent *suspicion* z, drawn from N(-d/2, 1) for benign and N(+d/2, 1) for
malignant, where d is set by ``overlap`` (the overlapping coefficient of the two normals). Each
descriptor then reads its own noisy copy of z, so a benign lesion can show one or two suspicious
features (and vice versa) while the classes stay separable on average: the best possible AUC is
bounded by the overlap of z, which keeps the task learnable but not trivial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

#: Independent noise of each descriptor around the shared suspicion (in units of z's sd).
DESCRIPTOR_NOISE = 0.7
#: Angular resolution of the outline table (finer than any spicule).
ANGLE_SAMPLES = 2048


def separation(overlap: float) -> float:
    """Class-mean distance d of z such that two unit normals share ``overlap`` of their mass."""
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap must be in (0, 1], got {overlap}")
    return float(-2.0 * ndtri(overlap / 2.0))


@dataclass(frozen=True)
class LesionSpec:
    """Geometry and echo descriptors of one lesion, in image-relative units (image side = 1)."""

    center: tuple[float, float]  # (y, x)
    width: float  # full width before margin perturbation
    aspect: float  # height / width; > 1 is "taller than wide"
    tilt: float  # radians; benign lesions lie parallel to the skin
    lobulation: float  # 0..1 gentle macrolobulation (both classes)
    irregularity: float  # 0..1 microlobulated / irregular margin
    angularity: float  # 0..1 polygonal outline with sharp corners
    spicules: int
    spicule_length: float  # relative to the lesion radius
    edge_width: float  # margin blur in units of the radius: circumscribed << indistinct
    halo: float  # 0..1 thick echogenic rim (malignant)
    capsule: float  # 0..1 thin bright pseudo-capsule (benign)
    echo: float  # lesion echogenicity relative to fat: ~0 anechoic cyst, ~0.6 hypoechoic solid
    heterogeneity: float  # 0..1 internal texture contrast
    calcifications: int  # bright echogenic foci inside
    posterior: float  # < 0 enhancement, > 0 shadowing (attenuation contrast)


def sample_lesion(rng: np.random.Generator, malignant: bool, overlap: float) -> LesionSpec:
    """Draw one lesion's descriptors from its class's (overlapping) distributions."""
    half = separation(overlap) / 2.0
    z = rng.normal(half if malignant else -half, 1.0)
    scale = np.sqrt(1.0 + DESCRIPTOR_NOISE**2)

    def descriptor() -> float:
        """This descriptor's suspicion in [0, 1]: a noisy reading of z, ~uniform overall."""
        return float(ndtr((z + DESCRIPTOR_NOISE * rng.normal()) / scale))

    t_aspect, t_irr, t_ang, t_spic, t_edge, t_halo, t_het, t_post, t_echo, t_size = (
        descriptor() for _ in range(10)
    )
    width = float(np.exp(np.log(0.24) + 1.0 * (t_size - 0.5) + 0.3 * rng.normal()))
    aspect = float(np.exp(np.log(0.5) + t_aspect * np.log(2.6) + 0.08 * rng.normal()))
    half_height = width * aspect / 2
    cy = rng.uniform(0.12, 0.55) + half_height * 0.5
    cx = rng.uniform(0.25, 0.75)
    n_spicules = int(max(0.0, t_spic - 0.6) * 20 * rng.uniform(0.3, 1.0))
    return LesionSpec(
        center=(float(cy), float(cx)),
        width=width,
        aspect=aspect,
        tilt=float(np.deg2rad(rng.normal(0.0, 4.0 + 25.0 * t_aspect**2))),
        lobulation=float(rng.uniform(0.0, 1.0)),
        irregularity=t_irr**2,
        angularity=max(0.0, (t_ang - 0.35) / 0.65) ** 1.5,
        spicules=n_spicules,
        spicule_length=float(rng.uniform(0.15, 0.45)),
        edge_width=0.03 + 0.22 * t_edge**2,
        halo=max(0.0, (t_halo - 0.45) / 0.55),
        capsule=max(0.0, (0.5 - t_halo) / 0.5) * rng.uniform(0.3, 1.0),
        echo=0.02 + 0.55 * t_echo**1.3,
        heterogeneity=t_het**1.5,
        calcifications=int(rng.poisson(6.0 * max(0.0, t_het - 0.6))),
        posterior=float(np.clip(2.4 * (t_post - 0.5) + 0.25 * rng.normal(), -1.0, 1.0)),
    )


def _wrapped(delta: np.ndarray) -> np.ndarray:
    return (delta + np.pi) % (2 * np.pi) - np.pi


def boundary_radius(spec: LesionSpec, rng: np.random.Generator, phi: np.ndarray) -> np.ndarray:
    """The outline as a radius function R(phi) around the ellipse (1 = the plain ellipse)."""
    radius = np.ones_like(phi)
    for k in range(2, 5):  # macrolobulation: gentle, seen in fibroadenomas too
        amp = 0.07 * spec.lobulation / k
        radius += amp * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    for k in range(3, 15):  # irregular, microlobulated margin
        amp = 0.22 * spec.irregularity / k**0.8 * rng.uniform(0.2, 1.0)
        radius += amp * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    if spec.angularity > 0:  # polygon with random corner radii: straight edges, sharp corners
        n = int(rng.integers(5, 10))
        corners = np.sort(rng.uniform(0, 2 * np.pi, n))
        corner_r = rng.uniform(0.75, 1.3, n)
        polygon = np.interp(phi % (2 * np.pi), corners, corner_r, period=2 * np.pi)
        radius = (1 - spec.angularity) * radius + spec.angularity * polygon * radius
    for _ in range(spec.spicules):
        angle = rng.uniform(0, 2 * np.pi)
        width = rng.uniform(0.02, 0.045)
        length = spec.spicule_length * rng.uniform(0.4, 1.0)
        radius += length * np.exp(-((_wrapped(phi - angle) / width) ** 2))
    return np.maximum(radius, 0.3)


def lesion_distance(spec: LesionSpec, rng: np.random.Generator, size: int) -> np.ndarray:
    """Normalised distance field d(y, x): < 1 inside the lesion, 1 on its margin, > 1 outside."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    dy = coords[:, None] - spec.center[0]
    dx = coords[None, :] - spec.center[1]
    cos_t, sin_t = np.cos(spec.tilt), np.sin(spec.tilt)
    u = (cos_t * dx + sin_t * dy) / (spec.width / 2)
    v = (-sin_t * dx + cos_t * dy) / (spec.width * spec.aspect / 2)
    r = np.hypot(u, v)
    phi = np.arctan2(v, u)
    table = np.linspace(-np.pi, np.pi, ANGLE_SAMPLES, endpoint=False)
    radius = np.interp(phi, table, boundary_radius(spec, rng, table), period=2 * np.pi)
    return (r / radius).astype(np.float32)
