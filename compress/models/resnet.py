"""CIFAR-style Brevitas ResNet (depth 6n+2) built so FINN can map it: downsampling by stride-2
convs (no MaxPool in front of a residual fork), one shared quantizer at every Add, FLOOR-rounded
TruncAvgPool2d and a bias-free QuantLinear (all measured in FINN_NOTES)."""

from __future__ import annotations

import torch
from brevitas.nn import QuantConv2d, QuantLinear, TruncAvgPool2d
from torch import nn

from fpgaslim.core.errors import ConfigError

from .arch import BitWidths, BlockSpec, ResNetArch
from .quant import FloorTrunc, act_relu, input_quant, residual_quant, weight_quant


def qconv(cin: int, cout: int, k: int, stride: int, bits: int, padding: int | None = None,
          bias: bool = False) -> QuantConv2d:
    return QuantConv2d(cin, cout, k, stride=stride, padding=k // 2 if padding is None else padding,
                       bias=bias, weight_quant=weight_quant(bits), weight_bit_width=bits)


class BasicBlock(nn.Module):
    """relu(q(omega * bn2(conv2(relu(bn1(conv1 x))))) + q(shortcut x)), q one shared quantizer."""

    residual_end = "bn2"  # the residual-block protocol (models/blocks.py): F(x) ends here

    def __init__(self, spec: BlockSpec, bits: BitWidths) -> None:
        super().__init__()
        self.conv1 = qconv(spec.in_ch, spec.mid, 3, spec.stride, bits.weight)
        self.bn1 = nn.BatchNorm2d(spec.mid)
        self.relu1 = act_relu(bits.act)
        self.conv2 = qconv(spec.mid, spec.out_ch, 3, 1, bits.weight)
        self.bn2 = nn.BatchNorm2d(spec.out_ch)
        self.omega = nn.Parameter(torch.ones(())) if spec.omega else None
        if spec.stride != 1 or spec.in_ch != spec.out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                qconv(spec.in_ch, spec.out_ch, 1, spec.stride, bits.weight, padding=0),
                nn.BatchNorm2d(spec.out_ch))
        else:
            self.shortcut = nn.Identity()
        self.add_quant = residual_quant(bits.act)
        self.relu_out = act_relu(bits.act, return_quant_tensor=True)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return out * self.omega if self.omega is not None else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_out(self.add_quant(self.residual(x)) + self.add_quant(self.shortcut(x)))


class QuantResNet(nn.Module):
    def __init__(self, arch: ResNetArch) -> None:
        super().__init__()
        self.arch = arch
        bits = arch.bits
        c, h, w = arch.in_shape
        self.input_quant = input_quant()
        self.stem = qconv(c, arch.stem, 3, 1, bits.first_weight)
        self.stem_bn = nn.BatchNorm2d(arch.stem)
        self.stem_relu = act_relu(bits.act, return_quant_tensor=True)
        self.blocks = nn.ModuleList(
            nn.Identity() if b.removed else BasicBlock(b, bits) for b in arch.blocks)
        for b in arch.blocks:
            if b.stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
        self.pool = TruncAvgPool2d(kernel_size=(h, w), stride=(h, w), trunc_quant=FloorTrunc)
        last = arch.blocks[-1].out_ch if arch.blocks else arch.stem
        self.fc = QuantLinear(last, arch.num_classes, bias=False,
                              weight_quant=weight_quant(bits.last_weight),
                              weight_bit_width=bits.last_weight)

    def residual_blocks(self) -> list[str]:
        """The residual-block protocol (models/blocks.py): removed blocks keep their names."""
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_relu(self.stem_bn(self.stem(self.input_quant(x * (1.0 / 255.0)))))
        for block in self.blocks:
            x = block(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_arch(depth: int, in_shape: tuple[int, int, int], num_classes: int = 10,
                bits: BitWidths | None = None, width: float = 1.0) -> ResNetArch:
    """The 6n+2 CIFAR ResNet: 3 stages of n basic blocks at widths 16/32/64 x `width`."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"ResNet depth must be 6n+2 (8, 14, 20, 32, 56, 110), got {depth}")
    if bits is not None and bits.act == 1:
        raise ConfigError("a ResNet cannot have 1-bit activations (a bipolar sign has no ReLU to "
                          "average-pool or add in FINN); use a1 with cnv/tfc/sfc/lfc, or a2+")
    n = (depth - 2) // 6
    widths = [max(1, int(round(16 * width * m))) for m in (1, 2, 4)]
    blocks, stage_of, cin = [], [], widths[0]
    for s, cw in enumerate(widths):
        for i in range(n):
            stride = 2 if (s > 0 and i == 0) else 1
            blocks.append(BlockSpec(in_ch=cin, mid=cw, out_ch=cw, stride=stride))
            stage_of.append(s)
            cin = cw
    return ResNetArch(name=f"resnet{depth}", in_shape=in_shape, num_classes=num_classes,
                      bits=bits or BitWidths(), stem=widths[0], blocks=tuple(blocks),
                      stage_of=tuple(stage_of))
