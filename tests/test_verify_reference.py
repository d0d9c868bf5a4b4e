"""The bit-exact reference must compute what the export exports: float64 accumulation, but
the integer weights that float32 quantization (the export's) gives."""

from __future__ import annotations

import copy

import torch
from brevitas.nn import QuantLinear

from fpgaslim.compress.models.quant import WeightQuant
from fpgaslim.hw.verify import brevitas_reference


def boundary_layer() -> QuantLinear:
    """An 8-bit layer whose weights sit on float32 rounding boundaries: w = (k + 0.5) * s in
    float32, with the abs-max scale s = 1/127. In float64 about half of them round the other
    way (the situation a trained, pruned ResNet-14 ran into)."""
    lin = QuantLinear(128, 1, bias=False, weight_quant=WeightQuant, weight_bit_width=8)
    scale = torch.tensor(1.0) / 127
    with torch.no_grad():
        lin.weight[0, 0] = 1.0
        lin.weight[0, 1:] = (torch.arange(127, dtype=torch.float32) + 0.5) * scale
    return lin.eval()


def test_precondition_float64_requantizes_differently():
    lin = boundary_layer()
    as32 = lin.quant_weight().int()
    as64 = copy.deepcopy(lin).double().quant_weight().int()
    assert (as32 != as64).any()


def test_reference_uses_the_float32_integer_weights():
    lin = boundary_layer()
    qt = lin.quant_weight()
    x = torch.ones(1, 128)
    expected = float(qt.int().double().sum() * qt.scale.double())
    got = brevitas_reference(lin, x)
    assert abs(float(got[0, 0]) - expected) < 1e-9
    # and the model given in is left as it was (float32, its own quant_weight)
    assert lin.weight.dtype == torch.float32 and "quant_weight" not in vars(lin)
