"""Stress test of bit-exactness on rounding ties: small Brevitas nets whose accumulators land
exactly on k + 1/2 of the next activation quantizer on purpose, FINN-built and verified.

Every scale is a power of two (input 1, weights 2^-3, activations twice the product of the
scales in front), so a pre-activation divided by its scale is the accumulator / 2: every odd
accumulator is an exact tie, in float32 and float64 alike. Brevitas rounds ties to even; a
plain `x >= (k + 1/2) s` threshold rounds them up, so a conversion that does not resolve
ties the same way differs from the model on the odd levels. At 2, 4 and 8 bits, with and
without a BatchNorm (eps 0, power-of-two gamma) in front of the activation (the BatchNorm is
absorbed into float64 thresholds by hw/exact_thresholds.py, the other quantizers' thresholds
by its float32-exact conversion): zero errors and zero near-ties, every layer identical.
Before the BatchNorm absorption resolved ties to even, the BatchNorm cases gave 118 (2-bit)
and 40 (8-bit) differing elements at the first activation."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.slow
SW = 2.0 ** -3  # weight scale
INPUT_HIGH = {2: 2, 4: 4, 8: 64}  # pixels 0..high-1: accumulators around the levels


def _weight_quant(bits: int) -> dict:
    from brevitas.core.scaling import ScalingImplType
    from brevitas.quant import Int8WeightPerTensorFloat

    # narrow range: scale = const / (2^(b-1) - 1) = SW exactly
    return dict(weight_quant=Int8WeightPerTensorFloat, weight_bit_width=bits,
                weight_scaling_impl_type=ScalingImplType.CONST,
                weight_scaling_const=(2 ** (bits - 1) - 1) * SW)


def _act(bits: int, scale: float, **kw) -> nn.Module:
    from brevitas.core.scaling import ScalingImplType
    from brevitas.nn import QuantReLU

    return QuantReLU(bit_width=bits, scaling_impl_type=ScalingImplType.CONST,
                     max_val=(2 ** bits - 1) * scale, return_quant_tensor=True, **kw)


class TieNet(nn.Module):
    """input (8-bit, scale 1) -> conv 1->4 [-> BN] -> ReLU quant -> conv 4->4 -> ReLU quant
    -> linear 256->10, weights seeded random levels times SW."""

    def __init__(self, bits: int, bn: bool) -> None:
        from brevitas.core.scaling import ScalingImplType
        from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
        from brevitas.quant import Uint8ActPerTensorFloat

        super().__init__()
        gamma = 2.0 if bn else 1.0
        s1 = 2 * gamma * SW  # conv1 output / s1 = accumulator / 2
        self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=8,
                                 scaling_impl_type=ScalingImplType.CONST, max_val=255.0,
                                 return_quant_tensor=True)
        self.c1 = QuantConv2d(1, 4, 3, padding=1, bias=False, **_weight_quant(bits))
        self.bn = nn.BatchNorm2d(4, eps=0.0) if bn else None
        self.a1 = _act(bits, s1)
        self.c2 = QuantConv2d(4, 4, 3, padding=1, bias=False, **_weight_quant(bits))
        self.a2 = _act(bits, 2 * s1 * SW)  # conv2 output / its scale = accumulator / 2
        self.fc = QuantLinear(4 * 8 * 8, 10, bias=False, **_weight_quant(bits))
        self.arch = types.SimpleNamespace(in_shape=(1, 8, 8))
        top = 2 ** (bits - 1) - 1
        gen = torch.Generator().manual_seed(bits)
        with torch.no_grad():
            for m in (self.c1, self.c2, self.fc):
                m.weight.copy_(torch.randint(-top, top + 1, m.weight.shape, generator=gen) * SW)
            if bn:  # y = 2 x - s1: one level lower, still on the ties
                self.bn.weight.fill_(gamma)
                self.bn.bias.fill_(-s1)
                self.bn.running_mean.zero_()
                self.bn.running_var.fill_(1.0)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 (and BN) output divided by the first activation's scale."""
        y = self.c1(self.inp(x))
        y = y.value if hasattr(y, "value") else y
        if self.bn is not None:
            y = self.bn(y)
        return torch.relu(y) / self.a1(y).scale

    def forward(self, x):
        y = self.c1(self.inp(x))
        if self.bn is not None:
            y = self.bn(y.value if hasattr(y, "value") else y)
        y = self.a2(self.c2(self.a1(y)))
        return self.fc(y.value.flatten(1))


@pytest.mark.parametrize("bits,bn", [(2, True), (4, False), (8, True)])
def test_accumulators_on_rounding_ties_verify_with_zero_differences(bits, bn, tmp_path):
    from fpgaslim.hw.build import BuildSettings, build_estimate
    from fpgaslim.hw.qonnx_export import export_qonnx

    model = TieNet(bits, bn).eval()
    x = torch.randint(0, INPUT_HIGH[bits], (12, 1, 8, 8),
                      generator=torch.Generator().manual_seed(1)).float()
    with torch.no_grad():
        v = model.pre_activation(x).double().numpy()
    ties = (v % 1 == 0.5) & (v < 2 ** bits - 1)
    odd = ties & (np.floor(v) % 2 == 0)  # k + 1/2 with k even: half-even rounds down
    assert ties.sum() >= 50 and odd.sum() >= 20  # the precondition: ties a `>=` would miss
    report = build_estimate(export_qonnx(model, tmp_path / "m.onnx"), tmp_path / "work",
                            BuildSettings(board="pynq-z1", strict=False), model=model,
                            images=x, labels=torch.zeros(len(x), dtype=torch.long),
                            variant=f"ties-w{bits}a{bits}{'-bn' if bn else ''}")
    ver = report.verification
    lv = ver.layers
    assert lv is not None and len(lv.layers) >= 4 and not lv.unmapped
    assert ver.integer_exact and ver.verified and ver.max_abs_int_diff == 0, ver.summary()
    assert lv.errors == 0 and lv.near_ties == 0, [c.first_difference for c in lv.layers]
    assert all(c.end_to_end_diffs == 0 for c in lv.layers)
