"""Residual-free Brevitas CNNs: the CNV family (FINN's classic) and the plain networks that
ResConv-Prune fuses back to. The conv trunk ends at 1x1 spatial size so the classifier needs no
NCHW flatten reordering in FINN."""

from __future__ import annotations

import torch
from brevitas.nn import QuantLinear, TruncAvgPool2d
from torch import nn

from .arch import AvgPoolSpec, BitWidths, ConvSpec, PlainArch, PoolSpec
from .quant import FloorTrunc, WeightQuant, act_relu, input_quant
from .resnet import qconv


class ConvBNAct(nn.Module):
    def __init__(self, cin: int, spec: ConvSpec, w_bits: int, a_bits: int,
                 return_quant_tensor: bool = False) -> None:
        super().__init__()
        self.conv = qconv(cin, spec.out_ch, spec.kernel, spec.stride, w_bits, spec.padding,
                          bias=spec.bias)
        self.bn = nn.BatchNorm2d(spec.out_ch) if spec.bn else nn.Identity()
        self.act = act_relu(a_bits, return_quant_tensor=return_quant_tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class QuantPlainNet(nn.Module):
    def __init__(self, arch: PlainArch) -> None:
        super().__init__()
        self.arch = arch
        bits = arch.bits
        cin = arch.in_shape[0]
        self.input_quant = input_quant()
        layers: list[nn.Module] = []
        first = True
        specs = arch.layers
        for i, spec in enumerate(specs):
            if isinstance(spec, PoolSpec):
                layers.append(nn.MaxPool2d(spec.size))
                continue
            if isinstance(spec, AvgPoolSpec):
                # FLOOR truncation: the only rounding FINN's Trunc conversion accepts (FINN_NOTES)
                pool = TruncAvgPool2d(kernel_size=spec.kernel, stride=spec.stride,
                                      trunc_quant=FloorTrunc)
                if i == 0 or isinstance(specs[i - 1], PoolSpec):
                    # FINN cannot infer the sign of a Trunc input through a MaxPool (nor use the
                    # float input): an unsigned requantization gives the pool a known datatype
                    pool = nn.Sequential(act_relu(bits.act, return_quant_tensor=True), pool)
                layers.append(pool)
                continue
            # a TruncAvgPool2d needs the QuantTensor (scale, bit width) of the activation
            feeds_avg = i + 1 < len(specs) and isinstance(specs[i + 1], AvgPoolSpec)
            layers.append(ConvBNAct(cin, spec, bits.first_weight if first else bits.weight,
                                    bits.act, return_quant_tensor=feeds_avg))
            first, cin = False, spec.out_ch
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = []
        for width in arch.hidden:
            head += [QuantLinear(cin, width, bias=False, weight_quant=WeightQuant,
                                 weight_bit_width=bits.weight),
                     nn.BatchNorm1d(width), act_relu(bits.act)]
            cin = width
        self.hidden = nn.Sequential(*head)
        self.fc = QuantLinear(cin, arch.num_classes, bias=arch.head_bias, weight_quant=WeightQuant,
                              weight_bit_width=bits.last_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input_quant(x * (1.0 / 255.0)))
        return self.fc(self.hidden(torch.flatten(x, 1)))


def cnv_arch(in_shape: tuple[int, int, int], num_classes: int = 10,
             bits: BitWidths | None = None, width: float = 1.0) -> PlainArch:
    """CNV-style: stages of two 3x3 convs and a 2x2 max-pool (64/128/256 x `width`) until the
    map is at most 4x4, then a valid conv to 1x1 and one hidden FC layer."""
    _, h, _ = in_shape
    layers: list[ConvSpec | PoolSpec] = []
    for mult in (1, 2, 4):
        if h <= 4:
            break
        ch = max(1, int(round(64 * width * mult)))
        layers += [ConvSpec(out_ch=ch), ConvSpec(out_ch=ch), PoolSpec(size=2)]
        h //= 2
    last = max(1, int(round(256 * width)))
    layers.append(ConvSpec(out_ch=last, kernel=h, padding=0))
    return PlainArch(name="cnv", in_shape=in_shape, num_classes=num_classes,
                     bits=bits or BitWidths(), layers=tuple(layers),
                     hidden=(max(1, int(round(128 * width))),))
