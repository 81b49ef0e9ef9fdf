"""torch.compile for training: inductor fuses what surrounds the convolutions.

On a 2-core AMX Xeon a bf16 Fus2Net step spends about 60 % of its time outside the
convolutions (batch norm, ReLU, pooling, concatenation, gradient sums); inductor fuses those
into a few C++ loops (benchmarks/README.md). Two things decide whether that wins, both measured
there: inductor lowers max-pool's backward to a scatter that is 3x slower than ATen's kernel, so
max pools run ATen's kernels as one opaque op; and fast math makes its C++ loops about 6 %
faster per step (no NaN/inf or signed-zero guarantees inside the fused loops; the loss and the
metrics are computed outside them, and the bf16 and fp32 AUCs stay equal).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# Inductor options of the CPU fast path (torch._inductor.config names).
CPU_INDUCTOR_OPTIONS: dict[str, Any] = {
    "cpp.enable_unsafe_math_opt_flag": True,
    "cpp.enable_floating_point_contract_flag": "fast",
}


@functools.cache
def _max_pool_op() -> Any:
    """`fus2net::max_pool2d`: ATen's max pool and its backward, opaque to inductor.

    Registered on first use, not at import (registration changes torch's global dispatcher).
    """

    @torch.library.custom_op("fus2net::max_pool2d", mutates_args=())
    def max_pool2d(
        x: Tensor, kernel: list[int], stride: list[int], padding: list[int], ceil_mode: bool
    ) -> tuple[Tensor, Tensor]:
        return torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, padding, [1, 1], ceil_mode)

    @max_pool2d.register_fake
    def _(x, kernel, stride, padding, ceil_mode):
        return torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, padding, [1, 1], ceil_mode)

    @torch.library.custom_op("fus2net::max_pool2d_backward", mutates_args=())
    def max_pool2d_backward(
        grad: Tensor,
        x: Tensor,
        indices: Tensor,
        kernel: list[int],
        stride: list[int],
        padding: list[int],
        ceil_mode: bool,
    ) -> Tensor:
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, kernel, stride, padding, [1, 1], ceil_mode, indices
        )

    @max_pool2d_backward.register_fake
    def _(grad, x, indices, kernel, stride, padding, ceil_mode):
        return torch.empty_like(x)

    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, ctx.kernel, ctx.stride, ctx.padding, ctx.ceil_mode = inputs
        ctx.save_for_backward(x, output[1])

    def backward(ctx: Any, grad: Tensor, _indices_grad: Tensor) -> tuple:
        x, indices = ctx.saved_tensors
        grad_x = max_pool2d_backward(
            grad, x, indices, ctx.kernel, ctx.stride, ctx.padding, ctx.ceil_mode
        )
        return grad_x, None, None, None, None

    max_pool2d.register_autograd(backward, setup_context=setup_context)
    return max_pool2d


def _pair(value: int | tuple[int, ...]) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


class AtenMaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d` whose forward and backward stay ATen's kernels under torch.compile."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _max_pool_op()  # registered before forward, which calls it through torch.ops

    def forward(self, x: Tensor) -> Tensor:
        if self.dilation not in (1, (1, 1)) or self.return_indices:
            return super().forward(x)
        stride = self.stride if self.stride is not None else self.kernel_size
        op = torch.ops.fus2net.max_pool2d
        return op(x, _pair(self.kernel_size), _pair(stride), _pair(self.padding), self.ceil_mode)[0]


def use_aten_max_pools(net: nn.Module) -> int:
    """Swap every plain `nn.MaxPool2d` of `net` for `AtenMaxPool2d` (no weights, same maths);
    returns how many were swapped."""
    swapped = 0
    for parent in net.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.MaxPool2d:
                pool = AtenMaxPool2d(
                    child.kernel_size, child.stride, child.padding, child.dilation,
                    child.return_indices, child.ceil_mode,
                )  # fmt: skip
                setattr(parent, name, pool)
                swapped += 1
    return swapped


def cpp_compiler() -> str | None:
    """The C++ compiler inductor will call on the CPU (`CXX`, else c++/g++/clang++), or None."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def compile_network(net: nn.Module, accelerator: str) -> bool:
    """Compile `net` in place (`nn.Module.compile`: its state_dict keys stay as they are).

    Returns False, leaving `net` eager with a warning, where a CPU run has no C++ compiler
    for inductor's kernels.
    """
    options: dict[str, Any] | None = None
    if accelerator == "cpu":
        if cpp_compiler() is None:
            log.warning(
                "trainer.compile=true but no C++ compiler (c++, g++ or clang++; or set CXX) is "
                "on PATH for torch.compile's CPU kernels: training eagerly instead"
            )
            return False
        options = CPU_INDUCTOR_OPTIONS
        use_aten_max_pools(net)  # measured on the CPU only
    net.compile(options=options)
    return True
