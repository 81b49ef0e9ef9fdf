"""Adaptive batch normalisation (AdaBN, Li et al. 2016): a trained network's batch-norm
statistics re-estimated on a new site's own images, without their labels.

Why: a scanner changes the intensity statistics every batch-norm layer was fitted to; AdaBN
moves them to the new site and keeps every learnt weight. Its gain is not universal (0.78 → 0.97
between two liver-ultrasound hospitals in one report, a small loss on BrEaST in another), so the
project measures it on every external set (`external/<name>/adabn/*`) and uses it as the
primary score only when `evaluation.adabn=true`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def adapt_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """A copy of `model` whose batch-norm running statistics are the plain average over
    `batches` (the new site's images, normalised as in training); everything else unchanged,
    in eval mode. `model` itself is left as it was."""
    adapted = copy.deepcopy(model).eval()
    norms = [m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch, not an EMA
        norm.train()
    for x in batches:
        adapted(x)
    return adapted.eval()
