"""Residual-free Brevitas CNNs: the CNV family (FINN's classic), the TFC/SFC/LFC MLPs (no conv
layers, see mlp.py) and the plain networks that ResConv-Prune fuses back to. The conv trunk ends
at 1x1 spatial size so the classifier needs no NCHW flatten reordering in FINN."""

from __future__ import annotations

import torch
from brevitas.nn import QuantLinear, TruncAvgPool2d
from torch import nn

from fpgaslim.core.errors import ConfigError

from .arch import AvgPoolSpec, BitWidths, ConvSpec, PlainArch, PoolSpec
from .quant import FloorTrunc, act_layer, act_relu, input_quant, weight_quant
from .resnet import qconv


class ConvBNAct(nn.Module):
    def __init__(self, cin: int, spec: ConvSpec, w_bits: int, a_bits: int,
                 return_quant_tensor: bool = False) -> None:
        super().__init__()
        self.conv = qconv(cin, spec.out_ch, spec.kernel, spec.stride, w_bits, spec.padding,
                          bias=spec.bias)
        self.bn = nn.BatchNorm2d(spec.out_ch) if spec.bn else nn.Identity()
        self.act = act_layer(a_bits, return_quant_tensor=return_quant_tensor)

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
        if first:  # no conv layer (an MLP): the classifier sees the flattened image
            cin = arch.in_shape[0] * arch.in_shape[1] * arch.in_shape[2]
        head: list[nn.Module] = []
        for width in arch.hidden:
            w_bits = bits.first_weight if first else bits.weight
            head += [QuantLinear(cin, width, bias=False, weight_quant=weight_quant(w_bits),
                                 weight_bit_width=w_bits),
                     nn.BatchNorm1d(width), act_layer(bits.act)]
            first, cin = False, width
        self.hidden = nn.Sequential(*head)
        self.fc = QuantLinear(cin, arch.num_classes, bias=arch.head_bias,
                              weight_quant=weight_quant(bits.last_weight),
                              weight_bit_width=bits.last_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input_quant(x * (1.0 / 255.0)))
        return self.fc(self.hidden(torch.flatten(x, 1)))


CLASSIC_MIN_SIZE = 28


def _classic_trunk(h: int, bipolar: bool) -> tuple[tuple[int, ...], int] | None:
    """Paddings (0 or 1) of CNV's six 3x3 convs (max-pools after the 2nd and 4th) and the last
    conv's kernel, ending at a 1x1 map: the most unpadded convs (BNN-PYNQ pads none at 32x32),
    ties to later padding. With bipolar activations only the first conv (on UINT8 pixels) may
    pad: a zero pad is no bipolar value, and FINN's XNOR layers would read it as -1 (measured:
    FINN's streamlined verification failed on a padded w1a1 CNV); the last kernel may then
    shrink to the map it sees."""
    best: tuple[int, tuple[int, ...], int] | None = None
    for code in range(64):
        pads = tuple((code >> (5 - i)) & 1 for i in range(6))
        if bipolar and any(pads[1:]):
            continue
        size, ok = h, True
        for i, p in enumerate(pads[:5]):
            size = size + 2 * p - 2
            if i in (1, 3):
                size //= 2
            ok = ok and size >= 1
        kernel = 3 if not bipolar else min(3, size)
        final = size + 2 * pads[5] - kernel + 1
        if ok and final == 1 and (best is None or pads.count(0) > best[0]):
            best = (pads.count(0), pads, kernel)
    return (best[1], best[2]) if best else None


def cnv_arch(in_shape: tuple[int, int, int], num_classes: int = 10,
             bits: BitWidths | None = None, width: float = 1.0) -> PlainArch:
    """CNV, BNN-PYNQ's topology for inputs of 28 px and more: 64-64-pool-128-128-pool-256-256
    3x3 convs (unpadded at 32x32; at other sizes as few padded as reach a 1x1 map), FC 512-512,
    classifier; widths x `width`. Smaller inputs (8x8 digits cannot take six 3x3 convs and two
    pools) keep the compact CNV: stages of two 3x3 convs and a 2x2 max-pool until the map
    is at most 4x4, then a valid conv to 1x1 and one hidden FC layer of 128 x `width`. With
    1-bit (bipolar) activations only the first conv is padded (see _classic_trunk)."""
    bits = bits or BitWidths()
    bipolar = bits.act == 1
    _, h, w = in_shape
    trunk = _classic_trunk(h, bipolar) if h == w and h >= CLASSIC_MIN_SIZE else None
    if trunk is not None:
        pads, last_kernel = trunk
        classic: list[ConvSpec | PoolSpec] = []
        for i, mult in enumerate((1, 1, 2, 2, 4, 4)):
            classic.append(ConvSpec(out_ch=max(1, int(round(64 * width * mult))),
                                    padding=pads[i], kernel=last_kernel if i == 5 else 3))
            if i in (1, 3):
                classic.append(PoolSpec(size=2))
        fc = max(1, int(round(512 * width)))
        return PlainArch(name="cnv", in_shape=in_shape, num_classes=num_classes,
                         bits=bits, layers=tuple(classic), hidden=(fc, fc))
    layers: list[ConvSpec | PoolSpec] = []
    first = True
    for mult in (1, 2, 4):
        if h <= 4:
            break
        ch = max(1, int(round(64 * width * mult)))
        for _ in range(2):
            pad = 1 if first or not bipolar else 0
            layers.append(ConvSpec(out_ch=ch, padding=pad))
            h, first = h + 2 * pad - 2, False
        layers.append(PoolSpec(size=2))
        h //= 2
    if h < 1:
        raise ConfigError(f"cnv: a {in_shape[1]}x{in_shape[2]} input is too small for 1-bit "
                          "activations (unpadded convs); use a2 or more")
    last = max(1, int(round(256 * width)))
    layers.append(ConvSpec(out_ch=last, kernel=h, padding=0))
    return PlainArch(name="cnv", in_shape=in_shape, num_classes=num_classes,
                     bits=bits, layers=tuple(layers),
                     hidden=(max(1, int(round(128 * width))),))
