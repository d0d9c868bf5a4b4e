"""FINN's QONNX -> FINN conversion must compute what the exported QONNX model computes, also on
rounding ties: activations placed exactly on (and a few float32 ulps around) every boundary
k + 1/2, at 2, 4 and 8 bits, signed and unsigned, per-tensor and per-channel scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from fpgaslim.hw import exact_thresholds as et

pytest.importorskip("finn")


def quant_graph(bits: int, signed: bool, relu: bool, scale: np.ndarray, shape: tuple):
    """x -> [Relu] -> Quant(scale, 0, bits) -> y, a QONNX model as Brevitas exports it."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    nodes, src = [], "x"
    if relu:
        nodes.append(helper.make_node("Relu", ["x"], ["r"]))
        src = "r"
    nodes.append(helper.make_node(
        "Quant", [src, "s", "z", "b"], ["y"], domain="qonnx.custom_op.general",
        signed=int(signed), narrow=0, rounding_mode="ROUND"))
    graph = helper.make_graph(
        nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = ModelWrapper(helper.make_model(graph, producer_name="test"))
    model.set_initializer("s", scale.astype(np.float32))
    model.set_initializer("z", np.array(0.0, dtype=np.float32))
    model.set_initializer("b", np.array(float(bits), dtype=np.float32))
    return cleanup_model(model)


def tie_inputs(bits: int, signed: bool, scale: np.ndarray, channels: int, ulps: int = 3):
    """Every boundary (k + 1/2) * s as float32, and `ulps` float32 neighbours on each side,
    for each channel: shape (1, C, 1, W)."""
    lo = -(2 ** (bits - 1)) if signed else 0
    hi = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    k = np.arange(lo, hi + 1, dtype=np.float64) - 0.5
    s = np.broadcast_to(np.abs(scale).reshape(-1), (channels,)).astype(np.float64)
    base = (k[None, :] * s[:, None]).astype(np.float32)
    cols = [base]
    up, down = base.copy(), base.copy()
    for _ in range(ulps):
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(-np.inf))
        cols += [up, down]
    # also x / s computed the other way round: fl32(k) * fl32(s), a realistic near-tie
    cols.append((k[None, :].astype(np.float32) * s[:, None].astype(np.float32)))
    x = np.concatenate(cols, axis=1).astype(np.float32)
    return x[None, :, None, :]


def convert(model, exact: bool):
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN

    quants = et.activation_quants(model)
    out = model.transform(ConvertQONNXtoFINN())
    if exact:
        out = out.transform(et.make_transformation(quants))
    return out


def run(model, x):
    from qonnx.core.onnx_exec import execute_onnx

    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    return execute_onnx(model, {iname: x})[oname]


CASES = [  # bits, signed, relu, scale
    (2, False, True, np.array(0.4, dtype=np.float32)),
    (4, False, True, np.array(6.0 / 15, dtype=np.float32)),
    (4, True, False, np.array(0.1234567, dtype=np.float32)),
    (8, False, True, np.array(1.0 / 255, dtype=np.float32)),
    (8, True, False, np.array(0.0078125 * 3, dtype=np.float32)),
    (4, False, True, np.array([0.1, 0.37, 1.0 / 3, 2.0 / 255], dtype=np.float32)),
    (2, True, False, np.array([0.5, 0.3, 1.7, 0.011], dtype=np.float32)),
]


def _case(bits, signed, relu, scale):
    channels = 4
    sc = scale.reshape(1, -1, 1, 1) if scale.ndim else scale
    x = tie_inputs(bits, signed, scale, channels)
    model = quant_graph(bits, signed, relu, sc, x.shape)
    return model, x


def test_stock_conversion_differs_on_ties():
    """The precondition: without the fix FINN's MultiThreshold disagrees with the Quant."""
    differs = 0
    for case in CASES:
        model, x = _case(*case)
        differs += int((run(convert(model, exact=False), x) != run(model, x)).sum())
    assert differs > 0


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}b-{'s' if c[1] else 'u'}"
                         f"-{'relu' if c[2] else 'id'}-{np.asarray(c[3]).size}ch")
def test_exact_conversion_equals_qonnx(case):
    model, x = _case(*case)
    ref = run(model, x)
    got = run(convert(model, exact=True), x)
    scale = np.asarray(case[3]).reshape(1, -1, 1, 1) if np.asarray(case[3]).ndim else case[3]
    assert np.array_equal(np.round(got / scale), np.round(ref / scale))
    assert np.array_equal(got, ref)


def test_ties_round_half_to_even():
    """An exact tie (x / s == k + 1/2 in float32) goes to the even level, as in Brevitas."""
    p = et.QuantParams(scale=np.array(0.5, dtype=np.float32), zeropt=0.0, bitwidth=4,
                       signed=False, narrow=False, rounding_mode="ROUND")
    th = et.exact_thresholds(np.arange(15, dtype=np.float32)[None] * 0.5 + 0.25, p)
    x = np.array([0.25, 0.75, 1.25, 1.75], dtype=np.float32)  # x / s = 0.5, 1.5, 2.5, 3.5
    levels = (x[:, None] >= th).sum(axis=1)
    assert levels.tolist() == [0, 2, 2, 4]


def test_quant_level_mirrors_qonnx_int_quant():
    from qonnx.custom_op.general.intquant import int_quant

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(10_000) * 3).astype(np.float32)
    s = np.array(0.37, dtype=np.float32)
    p = et.QuantParams(scale=s, zeropt=0.0, bitwidth=4, signed=True, narrow=False,
                       rounding_mode="ROUND")
    ref = int_quant(x, s, np.float32(0), np.float32(4), True, False, "ROUND")
    assert np.array_equal(et.quant_level(x, s, p) * s, ref)


def bn_graph(bits: int, gamma, beta, mean, var, scale: float, shape: tuple):
    """x -> BatchNormalization -> Relu -> Quant: a conv's BN and QuantReLU as exported."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    c = shape[1]
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "be", "m", "v"], ["bn"],
                              epsilon=1e-5),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Quant", ["r", "s", "z", "b"], ["y"],
                              domain="qonnx.custom_op.general", signed=0, narrow=0,
                              rounding_mode="ROUND")]
    graph = helper.make_graph(
        nodes, "bnq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = ModelWrapper(helper.make_model(graph, producer_name="test"))
    for name, val in (("g", gamma), ("be", beta), ("m", mean), ("v", var)):
        model.set_initializer(name, np.asarray(val, dtype=np.float32).reshape(c))
    model.set_initializer("s", np.array(scale, dtype=np.float32))
    model.set_initializer("z", np.array(0.0, dtype=np.float32))
    model.set_initializer("b", np.array(float(bits), dtype=np.float32))
    return cleanup_model(model)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_batchnorm_absorbed_in_float64_matches_the_float64_reference(bits):
    """Inputs on (and a few float32 ulps around) every level boundary of a BatchNorm +
    QuantReLU with accumulator-sized inputs (~1e5, as a 27-tap 8-bit stem): the converted
    graph gives the float64 reference's levels; FINN's float32 BatchNorm does not always."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN

    rng = np.random.default_rng(bits)
    c = 6
    s_acc = (1 / 255) * 0.0017936988  # input scale x weight scale, as a stem
    gamma = rng.uniform(0.5, 2.0, c)
    beta = rng.uniform(-0.5, 0.5, c)
    mean = rng.uniform(-0.2, 0.2, c)
    var = rng.uniform(0.05, 0.5, c)
    scale = 6.0 / (2 ** bits - 1)
    g32, b32, m32, v32 = (np.float32(a).astype(np.float64) for a in (gamma, beta, mean, var))
    s32 = float(np.float32(scale))
    levels = np.arange(1, 2 ** bits, dtype=np.float64)
    xb = (((levels[None] - 0.5) * s32 - b32[:, None]) / g32[:, None]
          * np.sqrt(v32[:, None] + np.float32(1e-5).astype(np.float64)) + m32[:, None])
    # accumulator-sized: integers times s_acc, the integer nearest each boundary and +-2
    acc = np.round(xb / s_acc)[..., None] + np.arange(-2, 3)[None, None, :]
    x = (acc * s_acc).reshape(c, -1).astype(np.float32)[None, :, None, :]
    model = bn_graph(bits, gamma, beta, mean, var, scale, x.shape)
    x64 = x.astype(np.float64)
    y = ((x64 - m32[None, :, None, None]) / np.sqrt(v32[None, :, None, None] + np.float64(
        np.float32(1e-5))) * g32[None, :, None, None] + b32[None, :, None, None])
    ref = np.clip(np.round(np.maximum(y, 0) / s32), 0, 2 ** bits - 1)
    quants = et.activation_quants(model)
    stock = model.transform(ConvertQONNXtoFINN())
    exact = stock.transform(et.make_transformation(quants))
    absorb = et.make_bn_absorption(quants)
    exact = exact.transform(absorb)
    assert absorb.absorbed and not exact.get_nodes_by_op_type("BatchNormalization")
    got = np.round(run(exact, x) / s32)
    assert np.array_equal(got, ref)
    if bits == 8:  # many boundaries: float32 BatchNorm puts some on the wrong side
        assert (np.round(run(stock, x) / s32) != ref).any()


class ScaleNet(torch.nn.Module):
    """x (pixels) -> x / 255 -> UINT8 input quantizer (scale 1/255) -> 3x3 conv 1->2, 8-bit
    weights of scale c / 127 -> 8-bit ReLU of scale m / 255: float32 scales whose products
    are not float32 numbers."""

    def __init__(self, c: float, m: float, bias: bool = False) -> None:
        import types

        from brevitas.core.scaling import ScalingImplType
        from brevitas.nn import QuantConv2d, QuantReLU
        from brevitas.quant import Int8WeightPerTensorFloat

        from fpgaslim.compress.models.quant import input_quant

        super().__init__()
        self.input_quant = input_quant()
        self.conv = QuantConv2d(1, 2, 3, padding=1, bias=bias,
                                weight_quant=Int8WeightPerTensorFloat, weight_bit_width=8,
                                weight_scaling_impl_type=ScalingImplType.CONST,
                                weight_scaling_const=c)
        self.relu = QuantReLU(bit_width=8, scaling_impl_type=ScalingImplType.CONST, max_val=m)
        self.arch = types.SimpleNamespace(in_shape=(1, 4, 4))
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randint(-127, 128, self.conv.weight.shape,
                                                 generator=gen) * c / 127)
            if bias:  # a float bias, as a fused BatchNorm leaves (ResConv-Prune)
                self.conv.bias.copy_(torch.tensor([0.3141, -0.2718]))

    def forward(self, x):
        return self.relu(self.conv(self.input_quant(x * (1.0 / 255.0))))


@pytest.mark.parametrize("bias", [False, True])
def test_streamlined_integer_thresholds_are_exact(tmp_path, bias):
    """After FINN's streamlining, every integer threshold of the conv's ReLU is the exact
    ceil(((L - 1/2) s_relu - b) / (s_in s_w)) (rational arithmetic on the exported float32
    scales and bias). Stock FINN is not: it collapses s_in and s_w into one float32 Mul and
    divides float32 thresholds by it (AbsorbScalesExactly's docstring): some come out a step
    off."""
    import math
    from fractions import Fraction

    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    from fpgaslim.hw.qonnx_export import export_qonnx

    net = ScaleNet(0.5311, 9.13, bias).eval()
    qonnx = ModelWrapper(str(export_qonnx(net, tmp_path / "m.onnx")))
    quants = et.activation_quants(qonnx)
    s_in, s_relu = (float(p.scale) for p in quants.values())
    wq = next(n for n in qonnx.graph.node
              if n.op_type == "Quant" and qonnx.get_initializer(n.input[0]) is not None)
    s_w = float(qonnx.get_initializer(wq.input[1]))
    prod = Fraction(s_in) * Fraction(s_w)
    assert Fraction(float(np.float32(s_in) * np.float32(s_w))) != prod  # the precondition
    b = net.conv.bias.detach().numpy().astype(np.float32) if bias else np.zeros(2, np.float32)
    want = np.array([[math.ceil(((Fraction(k) - Fraction(1, 2)) * Fraction(s_relu)
                                 - Fraction(float(bc))) / prod) for k in range(1, 256)]
                     for bc in b])  # no exact tie among these: plain ceilings

    def streamlined(exact: bool) -> np.ndarray:
        model = qonnx.transform(ConvertQONNXtoFINN())
        if exact:
            model = et.exact_conversion(model, quants)
        for t in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(),
                  GiveReadableTensorNames(), InferDataTypes(), Streamline(), InferDataTypes(),
                  RoundAndClipThresholds()):
            model = model.transform(t)
        mts = model.get_nodes_by_op_type("MultiThreshold")
        assert len(mts) == 2 and model.find_producer(mts[1].input[0]).op_type == "Conv"
        return np.broadcast_to(model.get_initializer(mts[1].input[1]), (2, 255))

    assert (streamlined(exact=False) != want).sum() >= 1  # stock FINN: a step off
    assert np.array_equal(streamlined(exact=True), want)
