"""DuplicateStreams_rtl, Pool_rtl and LabelSelect_rtl: FINN's generic ops with fpgaslim's
hand-written cores.

Why hand-written: finn-plus 1.6.1 implements DuplicateStreams, Pool and LabelSelect only in HLS
(finn-hlslib StreamingDup, Pool_batch, LabelSelect_Batch), which needs Vitis HLS to generate
and cannot be simulated or synthesized with open tools; no library ships RTL for them.

Stream formats are FINN's: DuplicateStreams copies each input word (PE elements) to every
output; Pool reads what FINN's depthwise ConvolutionInputGenerator produces, per output pixel
and channel fold the K window elements of PE channels one word each (the layout FINN's Pool
docstring gives: (1, OFMDim, OFMDim, Channels/PE, K, PE)), and writes one word of PE channels
per window; LabelSelect reads Labels/PE words of PE values and writes K indices, one per
word.
"""

from __future__ import annotations

import math

import numpy as np
from finn.custom_op.fpgadataflow.duplicatestreams import DuplicateStreams
from finn.custom_op.fpgadataflow.labelselect import LabelSelect
from finn.custom_op.fpgadataflow.pool import Pool
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

from .base import HandWrittenRTL, lut_per_bit


class DuplicateStreams_rtl(DuplicateStreams, HandWrittenRTL):  # noqa: N801 (FINN's naming)
    """FINN's DuplicateStreams in RTL: hw/rtl/sv/fpgaslim_dup_streams.sv (a skid buffer per
    output, so the outputs drain independently; one word per cycle)."""

    CORE_FILES = ("fpgaslim_skid.sv", "fpgaslim_dup_streams.sv")
    BRIEF = "DuplicateStreams (one input stream copied to NumOutputStreams outputs)"

    def get_nodeattr_types(self):
        attrs = {}
        attrs.update(DuplicateStreams.get_nodeattr_types(self))
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    @staticmethod
    def rtl_not_possible(inst, model) -> str | None:
        """Why this node cannot be DuplicateStreams_rtl (None: it can)."""
        if inst.get_nodeattr("NumOutputStreams") < 1:
            return "NumOutputStreams < 1"
        return None

    def generic_execute(self, context, graph):
        DuplicateStreams.execute_node(self, context, graph)

    def core_instance(self, model):
        s_axis, m_axis = self.stream_intf()
        (iname, w), n = s_axis[0], len(m_axis)
        lines = [f"wire [{n * w}-1:0] od;", f"wire [{n}-1:0] ov;",
                 f"wire [{n}-1:0] ordy = {{{', '.join(f'{m}_TREADY' for m, _ in reversed(m_axis))}}};",
                 f"fpgaslim_dup_streams #(.DATA_WIDTH({w}), .N_OUT({n})) core (",
                 "  .clk(ap_clk), .rst(!ap_rst_n),",
                 f"  .idat({iname}_TDATA), .ivld({iname}_TVALID), .irdy({iname}_TREADY),",
                 "  .odat(od), .ovld(ov), .ordy(ordy));"]
        for i, (m, _) in enumerate(m_axis):
            lines += [f"assign {m}_TDATA = od[{i * w} +: {w}];", f"assign {m}_TVALID = ov[{i}];"]
        return "\n".join(lines)

    def lut_estimation(self, fpgapart):
        """Per output a skid buffer: a 2:1 multiplexer per data bit (Yosys synth_xilinx of the
        core: about one LUT per bit and output, see tests/test_rtl_ops.py)."""
        n = self.get_nodeattr("NumOutputStreams")
        return lut_per_bit(n * self.get_instream_width_padded(), 1.0, fixed=2 * n)


POOL_FUNCTIONS = {"MaxPool": 0, "AccPool": 1, "QuantAvgPool": 2, "AvgPool": 3}


def quant_avg_shift(inst) -> int:
    """The right shift of QuantAvgPool as FINN's Python execution of Pool computes it."""
    k2 = int(np.prod(inst.get_nodeattr("KernelSize")))
    ibits = inst.get_input_datatype().bitwidth()
    obits = inst.get_output_datatype().bitwidth()
    max_bit_width = int((2**ibits - 1) * k2).bit_length()
    return max(0, max_bit_width - obits)


class Pool_rtl(Pool, HandWrittenRTL):  # noqa: N801 (FINN's naming)
    """FINN's Pool in RTL (Function MaxPool, AccPool, QuantAvgPool or AvgPool):
    hw/rtl/sv/fpgaslim_pool.sv, one input word per cycle, one output word per window.

    QuantAvgPool's shift is the one FINN's Python execution computes from the in/out
    datatypes (the bit-exact reference); AvgPool divides by K and truncates toward zero as
    finn-hlslib's `accu/size` does (FINN's Python execution returns the exact mean, a float:
    the two agree where the mean is an integer)."""

    CORE_FILES = ("fpgaslim_skid.sv", "fpgaslim_pool.sv")
    BRIEF = "Pool (MaxPool / AccPool / QuantAvgPool / AvgPool over K-word windows)"

    def get_nodeattr_types(self):
        attrs = {}
        attrs.update(Pool.get_nodeattr_types(self))
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    @staticmethod
    def rtl_not_possible(inst, model) -> str | None:
        fxn = inst.get_nodeattr("Function")
        if fxn not in POOL_FUNCTIONS:
            return f"Function {fxn} has no RTL"
        if not inst.get_input_datatype().is_integer():
            return f"input datatype {inst.get_input_datatype().name} is not an integer"
        if not inst.get_output_datatype().is_integer():
            return f"output datatype {inst.get_output_datatype().name} is not an integer"
        return None

    def generic_execute(self, context, graph):
        Pool.execute_node(self, context, graph)

    def _acc_width(self) -> int:
        k = int(np.prod(self.get_nodeattr("KernelSize")))
        return self.get_input_datatype().bitwidth() + max(1, math.ceil(math.log2(k))) + 1

    def core_instance(self, model):
        (iname, wi), = self.stream_intf()[0]
        (oname, wo), = self.stream_intf()[1]
        idt, odt = self.get_input_datatype(), self.get_output_datatype()
        fxn = self.get_nodeattr("Function")
        k = int(np.prod(self.get_nodeattr("KernelSize")))
        shift = quant_avg_shift(self) if fxn == "QuantAvgPool" else 0
        params = {"PE": self.get_nodeattr("PE"), "K": k, "FUNC": POOL_FUNCTIONS[fxn],
                  "I_WIDTH": idt.bitwidth(), "I_SIGNED": int(idt.signed()),
                  "ACC_WIDTH": self._acc_width(), "O_WIDTH": odt.bitwidth(), "SHIFT": shift,
                  "I_BITS": wi, "O_BITS": wo}
        plist = ", ".join(f".{k}({v})" for k, v in params.items())
        return (f"fpgaslim_pool #({plist}) core (\n"
                "  .clk(ap_clk), .rst(!ap_rst_n),\n"
                f"  .idat({iname}_TDATA), .ivld({iname}_TVALID), .irdy({iname}_TREADY),\n"
                f"  .odat({oname}_TDATA), .ovld({oname}_TVALID), .ordy({oname}_TREADY));")

    def lut_estimation(self, fpgapart):
        """Per lane an accumulator (adder or comparator) of the sum's width and the output
        skid buffer's multiplexer; AvgPool adds a divider by the constant K."""
        pe = self.get_nodeattr("PE")
        acc = self._acc_width()
        per_lane = 2 * acc + self.get_output_datatype().bitwidth()
        if self.get_nodeattr("Function") == "AvgPool":
            per_lane += acc * acc // 2
        return lut_per_bit(pe * per_lane, 1.0, fixed=8)


class LabelSelect_rtl(LabelSelect, HandWrittenRTL):  # noqa: N801 (FINN's naming)
    """FINN's LabelSelect (top-K class indices) in RTL: hw/rtl/sv/fpgaslim_label_select.sv.
    Ties as FINN's Python execution (ONNX TopK): the lower index first. One input word per
    cycle; the K indices of a frame leave while the next frame comes in."""

    CORE_FILES = ("fpgaslim_label_select.sv",)
    BRIEF = "LabelSelect (indices of the K largest of Labels values)"

    def get_nodeattr_types(self):
        attrs = {}
        attrs.update(LabelSelect.get_nodeattr_types(self))
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    @staticmethod
    def rtl_not_possible(inst, model) -> str | None:
        labels, pe, k = (inst.get_nodeattr(a) for a in ("Labels", "PE", "K"))
        if not inst.get_input_datatype().is_integer():
            return f"input datatype {inst.get_input_datatype().name} is not an integer"
        if pe < 1 or labels % pe or not 1 <= k <= labels:
            return f"Labels {labels}, PE {pe}, K {k}: need PE | Labels and 1 <= K <= Labels"
        if (labels - 1).bit_length() > inst.get_output_datatype().bitwidth():
            return f"{inst.get_output_datatype().name} cannot hold index {labels - 1}"
        return None

    def generic_execute(self, context, graph):
        LabelSelect.execute_node(self, context, graph)

    def core_instance(self, model):
        (iname, wi), = self.stream_intf()[0]
        (oname, wo), = self.stream_intf()[1]
        idt = self.get_input_datatype()
        params = {"PE": self.get_nodeattr("PE"), "LABELS": self.get_nodeattr("Labels"),
                  "K": self.get_nodeattr("K"), "I_WIDTH": idt.bitwidth(),
                  "I_SIGNED": int(idt.signed()), "O_WIDTH": wo, "I_BITS": wi}
        plist = ", ".join(f".{k}({v})" for k, v in params.items())
        return (f"fpgaslim_label_select #({plist}) core (\n"
                "  .clk(ap_clk), .rst(!ap_rst_n),\n"
                f"  .idat({iname}_TDATA), .ivld({iname}_TVALID), .irdy({iname}_TREADY),\n"
                f"  .odat({oname}_TDATA), .ovld({oname}_TVALID), .ordy({oname}_TREADY));")

    def lut_estimation(self, fpgapart):
        """Per inserted value K comparators and K entry multiplexers (value and index)."""
        pe, k = self.get_nodeattr("PE"), self.get_nodeattr("K")
        iw = self.get_input_datatype().bitwidth()
        idx = max(1, (self.get_nodeattr("Labels") - 1).bit_length())
        return lut_per_bit(pe * k * (iw + (iw + idx)), 1.0, fixed=2 * k * idx)
