"""ElementwiseAdd_rtl / ElementwiseSub_rtl / ElementwiseMul_rtl with integer operands, and the
output ElementwiseMul of an integer stream by a float32 constant.

Why hand-written: finn-plus 1.6.1's elementwise RTL (finn-rtllib eltwise, DSP58 floating
point) is for Versal parts and float operands only (`_elementwise_rtl_possible`); integer adds
(the residual adds of a ResNet) and the output scaling stay HLS on Zynq-7000 / UltraScale+.
finn-plus names those RTL ops ElementwiseAdd_rtl etc. and SpecializeLayers can only make a node
`<op>_rtl`, so the classes here subclass finn-plus's own (its Versal float path is kept: a node
fpgaslim's cores do not cover goes to finn-plus's code unchanged) and take over the nodes
`fpgaslim_covers` accepts:
  * lhs an integer stream; rhs an integer stream of the same shape, or an integer constant
    broadcast to the output shape (Add, Sub, Mul): hw/rtl/sv/fpgaslim_eltwise_int.sv;
  * Mul of an integer stream by a FLOAT32 constant (FINN's output scale, a scalar or per
    channel): hw/rtl/sv/fpgaslim_mul_fp32.sv, bit-exact with FINN's Python execution
    (float64 product, one rounding to float32) where no result can be subnormal or
    infinite and the input has at most 29 bits (checked here from the datatype's range).
Constants are embedded in the generated wrapper (the shortest period of their broadcast in
stream order), so these nodes have mem_mode internal_embedded and one input stream.
"""

from __future__ import annotations

import numpy as np
from finn.custom_op.fpgadataflow.rtl import elementwise_binary_rtl as finn_eltwise
from qonnx.core.datatype import DataType
from qonnx.util.basic import get_by_name

from .base import HandWrittenRTL, hex_param, lut_per_bit, periodic_words

_OPS = {"ElementwiseAdd": "ADD", "ElementwiseSub": "SUB", "ElementwiseMul": "MUL"}
_FINN = finn_eltwise.ElementwiseBinary_rtl  # finn-plus's (Versal float) implementation
MAX_CONST_WORDS = 4096  # constant tables beyond this stay HLS (they belong in a memory)
MAX_FP_INPUT_BITS = 29  # float64 holds the exact product of 29 + 24 bits


def _raw_dtype(node, attr: str) -> DataType | None:
    a = get_by_name(node.attribute, attr)
    return DataType[a.s.decode()] if a is not None and a.s else None


def _covered_kind(node) -> str | None:
    """"int" | "fp32" | None from the node's attributes alone (cheap; no model)."""
    lhs, rhs = _raw_dtype(node, "lhs_dtype"), _raw_dtype(node, "rhs_dtype")
    if lhs is None or rhs is None or not lhs.is_integer():
        return None
    if rhs.is_integer():
        return "int"
    style = get_by_name(node.attribute, "rhs_style")
    if node.op_type.startswith("ElementwiseMul") and rhs == DataType["FLOAT32"] and \
            style is not None and style.s.decode() == "const":
        return "fp32"
    return None


def fp32_parts(c: np.float32) -> tuple[int, int, int]:
    """(sign, M, E) with |c| = M * 2^E exactly, M < 2^24 (M = 0 for a zero)."""
    sign = int(np.signbit(c))
    if c == 0:
        return sign, 0, 0
    m, e = np.frexp(abs(float(c)))
    return sign, int(m * 2**24), int(e) - 24


def _broadcast_rhs(inst, model) -> np.ndarray:
    """The rhs constant in output stream order: (words, PE)."""
    rhs = model.get_initializer(inst.onnx_node.input[1])
    full = np.broadcast_to(np.asarray(rhs), inst.get_normal_output_shape())
    return full.reshape(-1, inst.get_nodeattr("PE"))


def fpgaslim_not_covered(inst, model) -> str | None:
    """Why fpgaslim's cores cannot implement this elementwise node (None: they can)."""
    node = inst.onnx_node
    kind = _covered_kind(node)
    if kind is None:
        return "operands are not integer (or integer x float32 constant for Mul)"
    if inst.get_nodeattr("lhs_style") != "input":
        return "the left-hand side is a constant"
    if list(inst.get_nodeattr("lhs_shape")) != list(inst.get_nodeattr("out_shape")):
        return "the left-hand side is broadcast"
    if inst.get_nodeattr("rhs_style") == "input":
        if list(inst.get_nodeattr("rhs_shape")) != list(inst.get_nodeattr("out_shape")):
            return "the right-hand side stream is broadcast"
        return None
    if model is None or model.get_initializer(node.input[1]) is None:
        return "the constant right-hand side has no initializer"
    words = periodic_words(_broadcast_rhs(inst, model))
    if words.shape[0] > MAX_CONST_WORDS:
        return f"the constant repeats only every {words.shape[0]} words"
    if kind == "fp32":
        lhs = inst.get_input_datatype(0)
        if lhs.bitwidth() > MAX_FP_INPUT_BITS:
            return f"{lhs.name} input is wider than {MAX_FP_INPUT_BITS} bits"
        amax = max(abs(int(lhs.min())), abs(int(lhs.max())))
        for c in np.unique(words.astype(np.float32)):
            _, m, e = fp32_parts(c)
            if m == 0:
                continue
            lo = m.bit_length() - 1 + e + 127  # smallest |a| (1): the exponent of |c|
            hi = (amax * m).bit_length() - 1 + e + 127 + 1  # largest, plus a rounding carry
            if lo < 1 or hi > 254:
                return f"the product with {c!r} can be subnormal or infinite"
    return None


class _FpgaslimElementwise(HandWrittenRTL):
    """The fpgaslim path of the three classes below (the Versal float path is finn-plus's)."""

    def _ours(self) -> bool:
        return _covered_kind(self.onnx_node) is not None

    def get_nodeattr_types(self):
        attrs = super().get_nodeattr_types()
        if _covered_kind(self.onnx_node) is not None:
            # constants are embedded in the wrapper, not streamed from a memstream
            attrs["mem_mode"] = ("s", False, "internal_embedded",
                                 {"internal_embedded", "internal_decoupled"})
        return attrs

    @staticmethod
    def rtl_not_possible(inst, model) -> str | None:
        return fpgaslim_not_covered(inst, model)

    def get_verilog_top_module_intf_names(self):
        if not self._ours():
            return _FINN.get_verilog_top_module_intf_names(self)
        intf = {"clk": ["ap_clk"], "rst": ["ap_rst_n"], "aximm": [], "axilite": [],
                "ap_none": [], "s_axis": [("in0_V", self.get_instream_width_padded(0))],
                "m_axis": [("out0_V", self.get_outstream_width_padded(0))]}
        if self.get_nodeattr("rhs_style") == "input":
            intf["s_axis"].append(("in1_V", self.get_instream_width_padded(1)))
        return intf

    @property
    def CORE_FILES(self):  # noqa: N802 (HandWrittenRTL's attribute)
        core = "fpgaslim_mul_fp32.sv" if _covered_kind(self.onnx_node) == "fp32" \
            else "fpgaslim_eltwise_int.sv"
        return ("fpgaslim_skid.sv", core)

    @property
    def BRIEF(self):  # noqa: N802
        return f"{self.onnx_node.op_type.rsplit('_', 1)[0]} ({_covered_kind(self.onnx_node)})"

    def generate_hdl(self, model, fpgapart, clk):
        if not self._ours():
            return _FINN.generate_hdl(self, model, fpgapart, clk)
        why = fpgaslim_not_covered(self, model)
        if why is not None:
            raise ValueError(f"{self.onnx_node.name}: fpgaslim's RTL cannot implement it: {why}")
        return HandWrittenRTL.generate_hdl(self, model, fpgapart, clk)

    def get_rtl_file_list(self, abspath=False):
        if not self._ours():
            return _FINN.get_rtl_file_list(self, abspath)
        return HandWrittenRTL.get_rtl_file_list(self, abspath)

    def code_generation_ipi(self):
        if not self._ours():
            return _FINN.code_generation_ipi(self)
        return HandWrittenRTL.code_generation_ipi(self)

    def execute_node(self, context, graph):
        if not self._ours() or self.get_nodeattr("exec_mode") == "rtlsim":
            return _FINN.execute_node(self, context, graph)
        self.generic_execute(context, graph)

    def generic_execute(self, context, graph):
        finn_eltwise.ElementwiseBinaryOperation.execute_node(self, context, graph)

    def core_instance(self, model):
        s_axis, m_axis = self.stream_intf()
        a_name, a_bits = s_axis[0]
        o_name, o_bits = m_axis[0]
        pe = self.get_nodeattr("PE")
        lhs, rhs, out = (self.get_input_datatype(0), self.get_input_datatype(1),
                         self.get_output_datatype())
        ports = ["  .clk(ap_clk), .rst(!ap_rst_n),",
                 f"  .adat({a_name}_TDATA), .avld({a_name}_TVALID), .ardy({a_name}_TREADY),"]
        if _covered_kind(self.onnx_node) == "fp32":
            words = periodic_words(_broadcast_rhs(self, model).astype(np.float32))
            parts = [fp32_parts(c) for c in words.reshape(-1)]
            params = {"PE": pe, "A_WIDTH": lhs.bitwidth(), "A_SIGNED": int(lhs.signed()),
                      "C_WORDS": words.shape[0],
                      "C_SIGN": hex_param([s for s, _, _ in parts], 1),
                      "C_MANT": hex_param([m for _, m, _ in parts], 24),
                      "C_EXP": hex_param([e + 127 + 1024 for _, _, e in parts], 11),
                      "A_BITS": a_bits}
            core = "fpgaslim_mul_fp32"
        else:
            params = {"OP": f'"{_OPS[self.onnx_node.op_type.rsplit("_", 1)[0]]}"', "PE": pe,
                      "A_WIDTH": lhs.bitwidth(), "A_SIGNED": int(lhs.signed()),
                      "B_WIDTH": rhs.bitwidth(), "B_SIGNED": int(rhs.signed()),
                      "O_WIDTH": out.bitwidth(), "A_BITS": a_bits, "O_BITS": o_bits}
            if self.get_nodeattr("rhs_style") == "input":
                b_name, b_bits = s_axis[1]
                params["B_BITS"] = b_bits
                ports.append(f"  .bdat({b_name}_TDATA), .bvld({b_name}_TVALID), "
                             f".brdy({b_name}_TREADY),")
            else:
                words = periodic_words(_broadcast_rhs(self, model).astype(np.int64))
                params.update({"B_CONST": 1, "B_WORDS": words.shape[0],
                               "B_INIT": hex_param([int(v) for v in words.reshape(-1)],
                                                   rhs.bitwidth())})
                ports.append("  .bdat({%d{1'b0}}), .bvld(1'b0), .brdy()," % (pe * rhs.bitwidth()))
            core = "fpgaslim_eltwise_int"
        ports.append(f"  .odat({o_name}_TDATA), .ovld({o_name}_TVALID), .ordy({o_name}_TREADY));")
        plist = ", ".join(f".{k}({v})" for k, v in params.items())
        return f"{core} #({plist}) core (\n" + "\n".join(ports)

    def lut_estimation(self, fpgapart):
        if not self._ours():
            return super().lut_estimation(fpgapart)
        pe = self.get_nodeattr("PE")
        if _covered_kind(self.onnx_node) == "fp32":
            # leading-one detector, normalizing shifter and rounding of a (w+24)-bit product
            w = self.get_input_datatype(0).bitwidth() + 24
            return lut_per_bit(pe * w, 6.0, fixed=32 * pe)
        ow = self.get_output_datatype().bitwidth()
        per = 2.0 if self.onnx_node.op_type.startswith(("ElementwiseAdd", "ElementwiseSub")) \
            else 0.5 * ow + 1.0
        return lut_per_bit(pe * ow, per)

    def dsp_estimation(self, fpgapart):
        if not self._ours():
            return super().dsp_estimation(fpgapart)
        pe = self.get_nodeattr("PE")
        if _covered_kind(self.onnx_node) == "fp32":
            return pe * (1 if self.get_input_datatype(0).bitwidth() <= 18 else 2)
        return 0

    def bram_estimation(self, fpgapart):
        return super().bram_estimation(fpgapart) if not self._ours() else 0

    def uram_estimation(self, fpgapart):
        return super().uram_estimation(fpgapart) if not self._ours() else 0


class ElementwiseAdd_rtl(_FpgaslimElementwise, finn_eltwise.ElementwiseAdd_rtl):  # noqa: N801
    """finn-plus's ElementwiseAdd_rtl (Versal float) plus fpgaslim's integer path."""


class ElementwiseSub_rtl(_FpgaslimElementwise, finn_eltwise.ElementwiseSub_rtl):  # noqa: N801
    """finn-plus's ElementwiseSub_rtl (Versal float) plus fpgaslim's integer path."""


class ElementwiseMul_rtl(_FpgaslimElementwise, finn_eltwise.ElementwiseMul_rtl):  # noqa: N801
    """finn-plus's ElementwiseMul_rtl (Versal float) plus fpgaslim's integer and
    integer x float32-constant paths."""
