"""Learning-rate schedules the torch schedulers do not offer as one partial-able callable."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, *, max_epochs: int, warmup_epochs: int = 2, min_lr_ratio: float = 0.01
) -> LambdaLR:
    """Linear warmup over `warmup_epochs`, then cosine decay to `min_lr_ratio` x the base rate
    at the last epoch; stepped once per epoch. A fresh network at full rate from the first step
    swings from epoch to epoch; the decay lets the last epoch's weights settle."""
    if max_epochs < 1 or not 0 <= warmup_epochs < max_epochs:
        raise ValueError(
            f"warmup_cosine: need 0 <= warmup_epochs ({warmup_epochs}) < max_epochs ({max_epochs})"
        )

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        span = max(1, max_epochs - 1 - warmup_epochs)
        progress = min(1.0, (epoch - warmup_epochs) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
