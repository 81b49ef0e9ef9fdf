"""Burned-in scanner annotations: text labels, calipers, depth ticks, a probe marker.

Real BUSI images carry these; a model must not use them as a shortcut, so every mark is drawn
with the same probability in both classes (this module never sees the label).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABELS = (
    "RIGHT BREAST",
    "LEFT BREAST",
    "RT 10:00 3CM FN",
    "LT 2:00 4CM FN",
    "RT AXILLA",
    "LT UOQ",
    "RT 1",
    "LT 3",
    "RT5",
    "TRANS",
    "SAG",
)

P_TEXT, P_CALIPERS, P_TICKS, P_MARKER, P_BOX = 0.5, 0.45, 0.35, 0.5, 0.08


def _font() -> ImageFont.ImageFont:
    """Pillow's built-in bitmap font: identical pixels on every machine (no FreeType needed)."""
    loader = getattr(ImageFont, "load_default_imagefont", None)
    return loader() if loader is not None else ImageFont.load_default()


def _cross(draw: ImageDraw.ImageDraw, y: int, x: int, arm: int, value: int) -> None:
    draw.line([(x - arm, y), (x + arm, y)], fill=value)
    draw.line([(x, y - arm), (x, y + arm)], fill=value)


def _calipers(draw: ImageDraw.ImageDraw, mask: np.ndarray, rng: np.random.Generator) -> None:
    """'+' markers at the lesion's extremes, with a dotted measurement line, as sonographers do."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    size = mask.shape[0]
    arm = max(2, round(size / 90))
    value = int(rng.integers(200, 256))
    jitter = max(1, size // 100)
    left, right = np.argmin(xs), np.argmax(xs)
    top, bottom = np.argmin(ys), np.argmax(ys)
    pairs = [(left, right)] + ([(top, bottom)] if rng.random() < 0.6 else [])
    for a, b in pairs:
        ends = [
            (
                int(ys[i] + rng.integers(-jitter, jitter + 1)),
                int(xs[i]) + int(rng.integers(-jitter, jitter + 1)),
            )
            for i in (a, b)
        ]
        for y, x in ends:
            _cross(draw, y, x, arm, value)
        if rng.random() < 0.7:
            (y0, x0), (y1, x1) = ends
            n = max(2, int(np.hypot(y1 - y0, x1 - x0) / 4))
            for t in np.linspace(0.1, 0.9, n):
                draw.point((round(x0 + t * (x1 - x0)), round(y0 + t * (y1 - y0))), fill=value)


def draw_marks(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return ``image`` (H, W uint8) with randomly chosen annotations burned in."""
    size = image.shape[0]
    canvas = Image.fromarray(image, mode="L")
    draw = ImageDraw.Draw(canvas)
    if rng.random() < P_TEXT:
        label = str(LABELS[rng.integers(len(LABELS))])
        y = int(rng.uniform(0.6, 0.92) * size)
        x = int(rng.uniform(0.02, 0.45) * size)
        draw.text((x, y), label, fill=int(rng.integers(210, 256)), font=_font())
    if rng.random() < P_CALIPERS:
        _calipers(draw, mask, rng)
    if rng.random() < P_TICKS:  # depth scale: dots every "centimetre" down the right edge
        x = size - 1 - int(rng.integers(2, 6))
        step = int(rng.integers(size // 8, size // 5))
        for y in range(step, size, step):
            draw.rectangle([x - 1, y - 1, x, y], fill=230)
    if rng.random() < P_MARKER:  # probe orientation marker in a top corner
        x = int(rng.integers(2, 8)) if rng.random() < 0.8 else size - 10
        draw.ellipse([x, 2, x + 5, 7], outline=235)
    if rng.random() < P_BOX:  # region-of-interest box (e.g. left from Doppler mode)
        y0, x0 = (int(v) for v in rng.integers(0, size // 3, 2))
        draw.rectangle([x0, y0, x0 + size // 2, y0 + size // 3], outline=190)
    return np.asarray(canvas)
