"""Which numeric precision a CPU run can use at full speed."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.cache
def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 (AVX512-BF16 or AMX), so bf16 autocast is fast."""
    try:
        cpu = torch._C._cpu  # type: ignore[attr-defined]
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        return "avx512_bf16" in flags or "amx_bf16" in flags


def effective_precision(precision: str, accelerator: str) -> str:
    """`precision` (`trainer.precision`), or fp32 where bf16 would be emulated (slow) on this
    CPU (`accelerator` cpu)."""
    if accelerator == "cpu" and precision.startswith("bf16") and not cpu_supports_bf16():
        return "32-true"
    return precision
