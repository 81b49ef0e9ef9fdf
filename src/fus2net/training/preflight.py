"""Checks run before any training, so a bad config fails in a second with a clear message."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from omegaconf import DictConfig

from fus2net.models import create_model, list_models


class ConfigError(ValueError):
    """An invalid configuration; the message names every offending key and the fix."""


@functools.cache
def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 (AVX512-BF16 or AMX), so bf16 autocast is fast."""
    try:
        cpu = torch._C._cpu  # type: ignore[attr-defined]
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        return "avx512_bf16" in flags or "amx_bf16" in flags


def effective_precision(trainer_cfg: DictConfig) -> str:
    """The configured precision, or fp32 where bf16 would be emulated (slow) on this CPU."""
    precision = str(trainer_cfg.precision)
    if (
        trainer_cfg.accelerator == "cpu"
        and precision.startswith("bf16")
        and not cpu_supports_bf16()
    ):
        return "32-true"
    return precision


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of the resolved config (all at once)."""
    errors: list[str] = []
    data, cv = cfg.data, cfg.cv
    if data.channels not in (1, 3):
        errors.append(f"data.channels={data.channels}: must be 1 or 3")
    if int(data.batch_size) < 1:
        errors.append(f"data.batch_size={data.batch_size}: must be >= 1")
    if data.cache not in ("memory", "disk", "none"):
        errors.append(f"data.cache={data.cache}: must be memory, disk or none")
    test = data.test
    if (test.fraction is None) == (test.per_class is None):
        errors.append(
            "data.test: set exactly one of data.test.fraction (e.g. 0.2) and "
            "data.test.per_class (e.g. [50,50]); set the other to null"
        )
    elif test.fraction is not None and not 0 < float(test.fraction) < 1:
        errors.append(f"data.test.fraction={test.fraction}: must be between 0 and 1")
    if int(cv.folds) < 2:
        errors.append(f"cv.folds={cv.folds}: cross-validation needs at least 2 folds")
    if cv.fold is not None and not 0 <= int(cv.fold) < int(cv.folds):
        errors.append(f"cv.fold={cv.fold}: must be in 0..{int(cv.folds) - 1} (0-based), or null")
    if cv.test_scoring not in ("ensemble", "refit"):
        errors.append(f"cv.test_scoring={cv.test_scoring}: must be ensemble or refit")
    if cv.checkpoint not in ("last", "best"):
        errors.append(f"cv.checkpoint={cv.checkpoint}: must be last or best")
    if int(cfg.trainer.max_epochs) < 1:
        errors.append(f"trainer.max_epochs={cfg.trainer.max_epochs}: must be >= 1")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        errors.append("trainer=gpu but no CUDA GPU is visible: use trainer=cpu")
    if cfg.balance.mode not in ("flip", "none", "weighted"):
        errors.append(f"balance.mode={cfg.balance.mode}: must be flip, none or weighted")
    reg = cfg.regularization
    if not 0 <= float(reg.dropout) < 1:
        errors.append(f"regularization.dropout={reg.dropout}: must be in [0, 1)")
    if float(reg.l2) < 0:
        errors.append(f"regularization.l2={reg.l2}: must be >= 0")
    name = cfg.model.get("name")
    if name not in list_models():
        errors.append(f"model.name={name}: unknown; available: {', '.join(list_models())}")
    elif data.channels in (1, 3):
        model = create_model(**cfg.model, in_chans=int(data.channels), num_classes=2)
        minimum = int(getattr(model, "min_input_size", 1))
        if int(data.image_size) < minimum:
            errors.append(
                f"data.image_size={data.image_size}: {name} needs at least "
                f"{minimum} px; set data.image_size>={minimum}"
            )
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
