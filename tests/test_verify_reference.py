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


def test_reference_in_batches_equals_one_pass_and_never_serves_a_stale_model():
    from fpgaslim.hw import verify
    from fpgaslim.hw.verify_layers import reference_model

    lin = boundary_layer()
    x = torch.randn(verify.REFERENCE_BATCH * 2 + 7, 128,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = reference_model(lin)(x.double()).numpy()
    got = brevitas_reference(lin, x)
    assert got.shape == whole.shape
    assert abs(got - whole).max() <= 1e-12 * max(1.0, abs(whole).max())
    assert (brevitas_reference(lin, x) == got).all()  # the cached answer, same values
    with torch.no_grad():  # the same module object with other weights: a new reference
        lin.weight[0, 0] = -1.0
    changed = brevitas_reference(lin, x)
    assert abs(changed - got).max() > 0.1
    assert abs(brevitas_reference(lin, x[:5]) - changed[:5]).max() <= 1e-12 * abs(changed).max()


def test_reference_cache_survives_the_first_image_check(monkeypatch):
    """A build asks for its first image's logits, then for all images; the next board's build
    does the same and must not recompute the whole set."""
    from fpgaslim.hw import verify

    built = []
    real = verify.reference_model
    monkeypatch.setattr(verify, "reference_model", lambda m: built.append(1) or real(m))
    lin = boundary_layer()
    x = torch.randn(300, 128, generator=torch.Generator().manual_seed(1))
    for _board in range(2):
        brevitas_reference(lin, x[:1])
        brevitas_reference(lin, x)
    assert len(built) == 2  # once for the first image, once for all; the second board hits


def test_reference_cache_tells_models_apart_that_differ_only_in_bit_widths():
    """Equal weights, equal state dicts, different bit widths: each model gets its own logits
    (the key once held the state dict and images only, and the second model was served the
    first's)."""
    from fpgaslim.hw.verify_layers import reference_model

    torch.manual_seed(0)
    lin8 = QuantLinear(32, 4, bias=False, weight_quant=WeightQuant, weight_bit_width=8).eval()
    lin2 = QuantLinear(32, 4, bias=False, weight_quant=WeightQuant, weight_bit_width=2).eval()
    lin2.load_state_dict(lin8.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(lin8.state_dict().values(),
                                                 lin2.state_dict().values()))
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(3))
    first = brevitas_reference(lin8, x)
    second = brevitas_reference(lin2, x)
    with torch.no_grad():
        own = reference_model(lin2)(x.double()).numpy()
    assert abs(second - own).max() == 0 and abs(second - first).max() > 1e-3
