"""The smallest residual network fpgaslim builds: a stem conv and one basic block at 8x8 (an
identity skip: DuplicateStreams -> skip FIFO -> ElementwiseAdd in FINN's graph), average pool,
classifier; the zoo's QuantResNet with one block of 4 channels. Used by tests/test_simulate.py
(a skip-path FIFO made too shallow on purpose must deadlock) as a `file.py:factory` model."""

from __future__ import annotations

from torch import nn

from fpgaslim.compress.models.arch import BlockSpec, ResNetArch
from fpgaslim.compress.models.resnet import QuantResNet


def tiny_resnet(in_shape, num_classes: int = 10) -> nn.Module:
    arch = ResNetArch(name="tiny_resnet", in_shape=tuple(in_shape), num_classes=num_classes,
                      stem=4, blocks=(BlockSpec(in_ch=4, mid=4, out_ch=4),), stage_of=(0,))
    return QuantResNet(arch)
