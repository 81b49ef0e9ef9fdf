"""Building blocks shared by the models: the conv-BN-ReLU unit and the input-size guard."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

Padding = Literal["valid", "same"]

# Keras' BatchNormalization epsilon, which the paper's Keras model trained with (PyTorch: 1e-5).
BN_EPS = 1e-3


class ConvNormAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> ReLU: the paper puts BN + ReLU after every convolution.

    Like torchvision's ``Conv2dNormActivation``, but with named children (``conv``, ``bn``,
    ``act``) so that checkpoint keys read like the architecture, and with Keras' padding names
    (``"valid"`` = none, ``"same"`` = keep the size, stride 1 only) because Table 4 is written in
    them. The conv has no bias: the BN shift that follows makes one redundant.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: Padding = "valid",
    ) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=padding, bias=False),
                bn=nn.BatchNorm2d(out_chs, eps=BN_EPS),
                act=nn.ReLU(inplace=True),
            )
        )


def check_input_size(x: Tensor, min_size: int, what: str) -> None:
    """Raise a ValueError naming the fix when ``x`` is smaller than ``min_size`` on either side.

    Without it a too-small image fails deep inside a conv or in the head's Linear with a
    shape error that says nothing about ``data.image_size``.
    """
    height, width = x.shape[-2:]
    if height < min_size or width < min_size:
        raise ValueError(
            f"input {height}x{width} is smaller than the minimum {min_size}x{min_size} for "
            f"{what}; set data.image_size >= {min_size}"
        )


@dataclass(frozen=True)
class InputSizeGuard:
    """`check_input_size` as a forward pre-hook (`register_forward_pre_hook(..., with_kwargs=
    True)`), for a library's network whose forward is its own; a plain object, so the model
    still pickles and copies."""

    min_size: int
    what: str

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else next(iter(kwargs.values()))
        check_input_size(x, self.min_size, self.what)
