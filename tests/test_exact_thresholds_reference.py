"""The float64 reference (hw/verify_layers.reference_model) computes the exported model's function:
the float32 parameters and scales that the QONNX export (and so FINN's thresholds) holds, with
float64 arithmetic around them. Recomputing an activation scale in float64 (1/255 for the input
quantizer, a learned threshold / (2**bits - 1) for a ReLU) gives a different number, by up to
6e-8 relative: on the test suite's digits ResNet-8 that put one stem element of image 38 at
x / scale = 9.49999963825 (level 9) while the hardware, exact on the exported scales, gave 10.

Fast (no FINN build, no training): a tiny input quantizer -> 1x1 conv -> 4-bit ReLU whose
scales are chosen so that one pixel's accumulator lies just at or above a rounding boundary of
the exported model and below it with float64-recomputed scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

SW = 2.0 ** -7  # weight scale: a power of two, the same in float32 and float64


class StemNet(nn.Module):
    """x (pixels 0..255) -> x / 255 -> UINT8 input quantizer (scale 1/255, as the zoo's) ->
    1x1 conv (one weight, 127 * SW) -> 4-bit ReLU with the constant threshold `max_val`."""

    def __init__(self, max_val: float) -> None:
        from brevitas.core.scaling import ScalingImplType
        from brevitas.nn import QuantConv2d, QuantReLU
        from brevitas.quant import Int8WeightPerTensorFloat

        from fpgaslim.compress.models.quant import input_quant

        super().__init__()
        self.input_quant = input_quant()
        self.conv = QuantConv2d(1, 1, 1, bias=False, weight_quant=Int8WeightPerTensorFloat,
                                weight_bit_width=8, weight_scaling_impl_type=ScalingImplType.CONST,
                                weight_scaling_const=127 * SW)
        self.relu = QuantReLU(bit_width=4, scaling_impl_type=ScalingImplType.CONST,
                              max_val=max_val, return_quant_tensor=False)
        with torch.no_grad():
            self.conv.weight.fill_(127 * SW)

    def forward(self, x):
        return self.relu(self.conv(self.input_quant(x * (1.0 / 255.0))))


def _near_boundary_case() -> tuple[int, int, float]:
    """(pixel, boundary level k, ReLU max_val) such that, with the float32 scales the model
    exports, pixel * 127 * s_in * SW / s_relu lies in [k + 1/2, k + 1/2 + 1e-7 relative)
    (the hardware's threshold on the integer accumulator 127 * pixel is reached: level k + 1)
    while with both scales recomputed in float64 it lies below k + 1/2 (level k)."""
    s_in = float(np.float32(1.0 / 255.0))
    for pixel in range(255, 0, -1):
        for k in range(14, 4, -1):
            y = pixel * 127 * s_in * SW  # exact in float64: products of float32 values
            m = np.float32(15 * y / (k + 0.5))
            for _ in range(8):  # float32 thresholds around it, from below the boundary up
                s_relu = float(np.float32(m / np.float32(15)))
                v32 = y / s_relu
                v64 = pixel * 127 * (1.0 / 255.0) * SW / (float(m) / 15.0)
                if k + 0.5 <= v32 < (k + 0.5) * (1 + 1e-7) and v64 < (k + 0.5) * (1 - 1e-9):
                    return pixel, k, float(m)
                m = np.nextafter(m, np.float32(0))
    raise AssertionError("no near-boundary case found")


def test_reference_uses_the_exported_float32_activation_scales():
    from fpgaslim.hw.verify_layers import reference_model, run_reference

    pixel, k, max_val = _near_boundary_case()
    model = StemNet(max_val).eval()
    x = torch.full((1, 1, 2, 2), float(pixel))
    with torch.no_grad():  # the float32 model's scales: what the export writes
        s_in = model.input_quant.act_quant(x * (1.0 / 255.0)).scale.double().item()
        s_relu = model.relu.act_quant(torch.zeros(1, 1, 1, 1)).scale.double().item()
    assert s_in == float(np.float32(1.0 / 255.0)) != 1.0 / 255.0  # the precondition
    events, _ = run_reference(reference_model(model), x)
    assert [e["name"] for e in events] == ["input_quant#0", "relu#0"]
    stem = events[1]
    exact = pixel * 127 * s_in * SW / s_relu  # the exported function, in float64
    assert k + 0.5 <= exact
    # the reference's x / scale is the exported model's (within float64 error, not 1e-8) and
    # its level is the hardware's: the accumulator 127 * pixel reaches the threshold of k + 1
    assert (stem["levels"] == k + 1).all(), (stem["v"].ravel()[0], k + 0.5)
    assert np.allclose(stem["v"], exact, rtol=1e-12, atol=0)
    assert (events[0]["levels"] == pixel).all()


def test_reference_scales_are_the_float32_models_on_a_zoo_resnet():
    """Every activation quantizer of an (untrained) zoo ResNet-8: the reference's scale is the
    float32 model's, bit for bit."""
    from fpgaslim.compress.models import create_model
    from fpgaslim.hw.verify_layers import _act_proxies, reference_model

    torch.manual_seed(0)
    model = create_model("resnet8", (1, 8, 8), 10, width=0.25)
    x = torch.randint(0, 256, (8, 1, 8, 8)).float()
    with torch.no_grad():  # training-mode passes: the ReLU scales from activation statistics
        for _ in range(3):
            model(x)
    model.eval()

    def scales(m, inp):
        got: dict[str, torch.Tensor] = {}

        def keep(name):
            def hook(module, args, out):
                got.setdefault(name, out.scale.detach().clone())
            return hook

        handles = [p.register_forward_hook(keep(n)) for n, p in _act_proxies(m)]
        with torch.no_grad():
            m(inp)
        for h in handles:
            h.remove()
        return got

    s32 = scales(model, x)
    s64 = scales(reference_model(model), x.double())
    assert len(s32) >= 8 and s32.keys() == s64.keys()
    for name in s32:
        assert s64[name].dtype == torch.float64
        assert torch.equal(s64[name], s32[name].double()), name


def test_a_near_tie_is_within_float64_error_only():
    """A difference is a near-tie only within relative 1e-9 of a rounding boundary (float64
    error), not within the float32 band: the old image-38 distance (3.8e-8) is an error."""
    from fpgaslim.hw.verify_layers import FLOAT32_REL, TIE_REL, _check

    assert TIE_REL == 1e-9 and FLOAT32_REL > 3.8e-8
    b = 9.5
    v = np.array([[b * (1 - 3.8e-8), b * (1 - 5e-10), b * (1 + 2e-9), b * (1 - 1e-12)]])
    ref = np.floor(v + 0.5)  # the reference's levels: 9, 9, 10, 9
    hw = ref + np.array([[1.0, 1.0, -1.0, 0.0]])  # the other side of the boundary, but the last
    c = _check("L", "q#0", hw, {"levels": ref, "v": v, "bipolar": False}, ref)
    assert (c.errors, c.near_ties) == (2, 1)
    assert c.errors_in_float32_band == 2
    assert c.min_tie_distance == pytest.approx(5e-10, rel=1e-3)
