"""A plain (residual-free) CNN whose whole hardware graph is RTL in finn-plus 1.6.1.

Strided convs with signed narrow-range 4-bit weights (RTL MVAUs, standalone Thresholding_rtl
with --prefer-rtl). Its classifier's input activation (scale 15/15 = 1) and weights (4-bit
narrow range, max 7 -> scale 1) have constant unit scales, so the logits are the last MVAU's
integer accumulators and FINN needs no output Mul (which it would map to ElementwiseMul_hls,
HLS-only in finn-plus 1.6.1). Used by tests/test_simulate.py as a `file.py:factory` model.
"""

from __future__ import annotations

import torch
from brevitas.core.scaling import ScalingImplType
from brevitas.nn import QuantConv2d, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from torch import nn

from fpgaslim.compress.models.quant import WeightQuant, input_quant


class UnitAct(Uint8ActPerTensorFloat):
    scaling_impl_type = ScalingImplType.CONST
    max_val = 15.0
    bit_width = 4


class UnitWeight(Int8WeightPerTensorFloat):
    scaling_impl_type = ScalingImplType.CONST
    scaling_const = 7.0
    bit_width = 4
    narrow_range = True


class UnitScaleCNN(nn.Module):
    def __init__(self, in_shape=(1, 8, 8), num_classes: int = 10, channels: int = 8) -> None:
        super().__init__()
        self.input_quant = input_quant()
        self.c1 = QuantConv2d(in_shape[0], channels, 3, stride=2, padding=1, bias=False,
                              weight_quant=WeightQuant, weight_bit_width=4)
        self.b1 = nn.BatchNorm2d(channels)
        self.a1 = QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4)
        k = (in_shape[1] + 1) // 2  # the first conv's output size: the second reduces it to 1x1
        self.c2 = QuantConv2d(channels, channels, k, stride=1, padding=0, bias=False,
                              weight_quant=WeightQuant, weight_bit_width=4)
        self.b2 = nn.BatchNorm2d(channels)
        self.a2 = QuantReLU(act_quant=UnitAct)
        self.fc = QuantLinear(channels, num_classes, bias=False, weight_quant=UnitWeight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x * (1.0 / 255.0))
        x = self.a1(self.b1(self.c1(x)))
        x = self.a2(self.b2(self.c2(x)))
        return self.fc(torch.flatten(x, 1))


def unit_scale_cnn(in_shape, num_classes: int = 10) -> nn.Module:
    return UnitScaleCNN(in_shape, num_classes)
