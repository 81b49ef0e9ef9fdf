"""Test-time augmentation: the malignant probability averaged over an image and its mirror.

Why: a lesion is no more or less malignant mirrored left to right (both augmentation presets
flip so in training), so averaging the two views takes out part of a prediction's dependence on
which way the probe happened to face, for twice the scoring cost. The one function is used by
validation, the out-of-fold, test and external scores, and a saved or registered model, so all
of them score an image the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TTA_MODES = ("none", "hflip")  # evaluation.tta: the config schema takes these (config_groups)


def malignant_probability(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tta: str = "none",
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """P(malignant) of a (N, C, H, W) batch under `tta` (`none` or `hflip`); `logits`, when
    given, are `forward(x)` already computed (the validation step has them for its loss)."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r}: use one of {', '.join(TTA_MODES)}")
    if logits is None:
        logits = forward(x)
    prob = torch.softmax(logits.float(), dim=1)[:, 1]
    if tta == "hflip":
        mirrored = torch.softmax(forward(x.flip(-1)).float(), dim=1)[:, 1]
        prob = (prob + mirrored) / 2
    return prob
