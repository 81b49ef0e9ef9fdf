"""Fus2Net (Ma et al. 2021, Table 4): Inception-v4 stem, one Inception-ResNet-A block, dense head.

Submodules follow the table so each row can be checked on its own: ``stem.conv1..conv3``,
``block1.module1..module3``, ``block2``, ``head`` (``head.pool`` gives the 4x4x384 grid).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import BN_EPS, ConvNormAct, check_input_size
from .registry import register_model

PoolMode = Literal["auto", "avg8", "adaptive"]

FEATURE_CHANNELS = 384  # Block 1 module 3 and Block 2 output channels


class PoolConvReduction(nn.Module):
    """Block 1 modules 1 and 3: a 3x3/2 pool beside a 3x3/2 valid conv, concatenated.

    Module 1 max-pools (Inception-v4's Mixed_3a); module 3 average-pools, the paper's change to
    Inception-v4's Mixed_5a. The pool comes first in the concatenation, as Table 4 lists it.
    """

    def __init__(self, in_chs: int, conv_chs: int, pool: Literal["max", "avg"]) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, stride=2) if pool == "max" else nn.AvgPool2d(3, stride=2)
        self.conv = ConvNormAct(in_chs, conv_chs, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.pool(x), self.conv(x)], dim=1)


class FactorizedBranches(nn.Module):
    """Block 1 module 2 (Inception-v4's Mixed_4a): a plain and a 7x1/1x7-factorised 3x3 branch.

    The 7x1 and 1x7 convs keep the size ("same"); only the closing 3x3 convs are valid, which is
    what takes 73x73 to Table 4's 71x71.
    """

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch_a = nn.Sequential(ConvNormAct(in_chs, 64, 1), ConvNormAct(64, 96, 3))
        self.branch_b = nn.Sequential(
            ConvNormAct(in_chs, 64, 1),
            ConvNormAct(64, 64, (7, 1), padding="same"),
            ConvNormAct(64, 64, (1, 7), padding="same"),
            ConvNormAct(64, 96, 3),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)


class InceptionResNetA(nn.Module):
    """Block 2: ``ReLU(BN(x + scale * project(concat(branches))))``, sizes kept ("same").

    ``project`` is Inception-ResNet's linear 1x1 up-projection (bias, no BN or ReLU), so that the
    residual can take either sign; the paper adds BN + ReLU after the addition instead.
    """

    def __init__(self, chs: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch_0 = ConvNormAct(chs, 32, 1)
        self.branch_1 = nn.Sequential(
            ConvNormAct(chs, 32, 1), ConvNormAct(32, 32, 3, padding="same")
        )
        self.branch_2 = nn.Sequential(
            ConvNormAct(chs, 32, 1),
            ConvNormAct(32, 48, 3, padding="same"),
            ConvNormAct(48, 64, 3, padding="same"),
        )
        self.project = nn.Conv2d(32 + 32 + 64, chs, 1)
        self.bn = nn.BatchNorm2d(chs, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        branches = torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x)], dim=1)
        return self.act(self.bn(x + self.scale * self.project(branches)))


class GridAvgPool(nn.Module):
    """Average-pools the feature map to the head's 4x4 grid.

    Table 4 goes from 35x35 to 4x4 with a stride "(1,1)" that cannot produce it; an 8x8 window
    with stride 8 does (dropping the last 3 rows and columns, as Keras' valid pooling would).

    - ``"avg8"``: exactly that; needs a 32..39 px map, i.e. inputs of 275..338 px.
    - ``"adaptive"``: ``adaptive_avg_pool2d`` to 4x4 at any size. At 35x35 its windows are
      9-10 px and overlap, so it is not the paper's pooling there.
    - ``"auto"`` (default): ``"avg8"`` where it gives 4x4 (the paper's 299 px geometry),
      ``"adaptive"`` otherwise, so the fast small-image runs (96-160 px) use the same model.
    """

    grid = 4
    window = 8

    def __init__(self, mode: PoolMode = "auto") -> None:
        super().__init__()
        if mode not in get_args(PoolMode):
            raise ValueError(
                f"model.pool={mode!r} is not one of {get_args(PoolMode)} (see GridAvgPool)"
            )
        self.mode = mode

    @property
    def min_map_size(self) -> int:
        """Smallest feature map this mode accepts (adaptive: one pixel per grid cell)."""
        return self.grid * self.window if self.mode == "avg8" else self.grid

    def forward(self, x: Tensor) -> Tensor:
        window_fits = all(
            self.grid * self.window <= side < (self.grid + 1) * self.window for side in x.shape[-2:]
        )
        if self.mode == "adaptive" or (self.mode == "auto" and not window_fits):
            return F.adaptive_avg_pool2d(x, self.grid)
        if not window_fits:
            raise ValueError(
                f"model.pool='avg8' needs a 32..39 px feature map (inputs 275..338 px), got "
                f"{x.shape[-2]}x{x.shape[-1]}; use model.pool=auto or adaptive for other sizes"
            )
        return F.avg_pool2d(x, self.window, stride=self.window)


class Fus2NetHead(nn.Module):
    """Pool to 4x4 -> flatten -> dense + ReLU -> dropout -> dense to logits (no softmax)."""

    def __init__(
        self, in_chs: int, hidden_dim: int, num_classes: int, drop_rate: float, pool: PoolMode
    ) -> None:
        super().__init__()
        self.pool = GridAvgPool(pool)
        self.flatten = nn.Flatten(1)
        self.hidden = nn.Linear(in_chs * GridAvgPool.grid**2, hidden_dim)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden_dim, num_classes)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(self.act(self.hidden(self.flatten(self.pool(x)))))
        return x if pre_logits else self.fc(x)


def feature_map_size(input_size: int) -> int:
    """Side of Block 2's output for a square input: the arithmetic of Table 4's valid layers."""
    size = (input_size - 3) // 2 + 1  # stem conv1: 3x3 stride 2 valid
    size -= 2  # stem conv2: 3x3 valid (conv3 is "same")
    size = (size - 3) // 2 + 1  # block 1 module 1: 3x3 stride 2 valid
    size -= 2  # block 1 module 2: closing 3x3 valid
    return (size - 3) // 2 + 1  # block 1 module 3: 3x3 stride 2 valid (block 2 is "same")


class Fus2Net(nn.Module):
    """Fus2Net as in Table 4 of the paper; returns logits (the loss applies the softmax).

    Args:
        in_chans: image channels (paper Table 1: 1 or 3).
        num_classes: output classes (2: benign, malignant).
        residual_scale: Block 2's residual scale; the paper is silent, 0.17 is Inception-ResNet-A's.
        hidden_dim: width of the first dense layer; the paper is silent. 256 because the flattened
            4x4x384 grid has 6144 features: 256 units already make a 1.6M-weight layer, twice the
            0.74M-parameter convolutional trunk; wider (1024: 6.3M) would let the head dominate a
            model trained on ~1000 images, and narrower squeezes 6144 features through a
            bottleneck before the only dropout. The paper's L2 and dropout act on this layer.
        drop_rate: dropout after the first dense layer (paper: 0.5).
        pool: how the feature map becomes 4x4; see :class:`GridAvgPool` (default ``"auto"``:
            the paper's 8x8/8 window at 299 px, adaptive pooling at other sizes).

    Weights start as in Keras, which the paper used: Glorot-uniform kernels, zero biases.
    """

    first_conv_name = "stem.conv1.conv"
    classifier_name = "head"

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 2,
        residual_scale: float = 0.17,
        hidden_dim: int = 256,
        drop_rate: float = 0.5,
        pool: PoolMode = "auto",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = FEATURE_CHANNELS
        self.stem = nn.Sequential(
            OrderedDict(
                conv1=ConvNormAct(in_chans, 32, 3, stride=2),
                conv2=ConvNormAct(32, 32, 3),
                conv3=ConvNormAct(32, 64, 3, padding="same"),
            )
        )
        self.block1 = nn.Sequential(
            OrderedDict(
                module1=PoolConvReduction(64, 96, pool="max"),
                module2=FactorizedBranches(64 + 96),
                module3=PoolConvReduction(96 + 96, 192, pool="avg"),
            )
        )
        self.block2 = InceptionResNetA(FEATURE_CHANNELS, scale=residual_scale)
        self.head = Fus2NetHead(FEATURE_CHANNELS, hidden_dim, num_classes, drop_rate, pool)
        need = self.head.pool.min_map_size
        # Smallest square input whose feature map the head's pooling accepts (51 px; avg8: 275).
        # A plain attribute, not a functools.cached_property: that one takes an RLock on every
        # read in Python 3.11, which torch.compile cannot trace (a graph break per step).
        self.min_input_size: int = next(
            n for n in itertools.count(1) if feature_map_size(n) >= need
        )
        self.apply(_init_keras_style)

    @property
    def regularized_weight(self) -> nn.Parameter:
        """Kernel of the first dense layer: the paper's L2 (0.05 * sum(w^2)) applies to it."""
        return self.head.hidden.weight

    def forward_features(self, x: Tensor) -> Tensor:
        check_input_size(x, self.min_input_size, "fus2net's valid convolutions")
        return self.block2(self.block1(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _init_keras_style(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@register_model
def fus2net(**kwargs) -> Fus2Net:
    """Fus2Net with the paper's defaults; kwargs as :class:`Fus2Net`."""
    return Fus2Net(**kwargs)
