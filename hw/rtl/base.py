"""What fpgaslim's hand-written RTL ops share: the wrapper FINN instantiates, the file list,
the Vivado IP-integrator commands and the execution modes.

Each op (hw/rtl/streams.py, hw/rtl/eltwise.py) subclasses FINN's generic op and
`HandWrittenRTL`, as finn-plus's own `*_rtl` ops subclass the generic op and `RTLBackend`.
`generate_hdl` writes one Verilog-2001 wrapper `<node name>.v` into the node's
code_gen_dir_ipgen: a module named after the node, with FINN's port names (`ap_clk`,
`ap_rst_n`, `in<i>_V_TDATA/TVALID/TREADY`, `out<i>_V_...`, widths padded to bytes as
`get_instream_width_padded` says), which instantiates a core from hw/rtl/sv/ with the
node's parameters (constants, when the op has any, are parameters of that instance: no
parameter files). `get_rtl_file_list(abspath=True)` lists the cores in the installed package
and the wrapper; `code_generation_ipi` adds them to a Vivado block design as a module
reference, as FINN's FMPadding_rtl does, so FINN's own CreateStitchedIP takes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

SV_DIR = Path(__file__).resolve().parent / "sv"


def sv_file(name: str) -> Path:
    """A core of hw/rtl/sv/ (shipped as package data)."""
    return SV_DIR / name


def hex_param(words: list[int], bits: int) -> str:
    """A packed Verilog constant of `len(words)` fields of `bits` each, field 0 in the least
    significant bits: `N'h...` (N >= 1)."""
    total = max(1, len(words) * bits)
    value = 0
    for i, w in enumerate(words):
        value |= (int(w) & ((1 << bits) - 1)) << (i * bits)
    return f"{total}'h{value:x}"


def periodic_words(values: np.ndarray) -> np.ndarray:
    """The shortest prefix (along axis 0) whose repetition gives `values` (words x lanes):
    a constant broadcast along the stream repeats with a short period (a scalar: 1 word,
    per channel: C/PE words)."""
    n = values.shape[0]
    for p in range(1, n + 1):
        if n % p == 0 and np.array_equal(np.tile(values[:p], (n // p, 1)), values):
            return values[:p]
    return values


def wrapper_text(top: str, s_axis: list[tuple[str, int]], m_axis: list[tuple[str, int]],
                 body: str, brief: str) -> str:
    """A Verilog-2001 module `top` with FINN's clock, reset and AXI-stream ports and `body`
    inside (which sees `ap_clk`, `ap_rst_n` and the ports)."""
    busif = ":".join(n for n, _ in s_axis + m_axis)
    ports = [f'(* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF {busif}, ASSOCIATED_RESET '
             'ap_rst_n" *)',
             '(* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 ap_clk CLK" *)',
             "input  ap_clk,",
             '(* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)',
             "input  ap_rst_n,"]
    for name, width in s_axis:
        ports += [f"input  [{width}-1:0] {name}_TDATA,", f"input  {name}_TVALID,",
                  f"output {name}_TREADY,"]
    for name, width in m_axis:
        ports += [f"output [{width}-1:0] {name}_TDATA,", f"output {name}_TVALID,",
                  f"input  {name}_TREADY,"]
    ports[-1] = ports[-1].rstrip(",")
    return (f"// fpgaslim (generated): {brief}\n"
            f"// hand-written core in fpgaslim/hw/rtl/sv; ports as FINN's *_rtl layers name them\n"
            f"module {top} (\n" + "\n".join(ports) + "\n);\n" + body + "\nendmodule\n")


class HandWrittenRTL(RTLBackend):
    """The RTLBackend part of fpgaslim's RTL ops. A subclass sets `CORE_FILES` (file names
    in hw/rtl/sv/) and implements `core_instance(model) -> str` (the wrapper's body) and
    `BRIEF` (one line for the wrapper's header)."""

    CORE_FILES: tuple[str, ...] = ()
    BRIEF = ""

    def core_instance(self, model: Any) -> str:  # pragma: no cover (abstract)
        raise NotImplementedError

    def stream_intf(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        intf = self.get_verilog_top_module_intf_names()
        return list(intf["s_axis"]), list(intf["m_axis"])

    def generate_hdl(self, model, fpgapart, clk):
        """Write `<node name>.v` (the wrapper) into code_gen_dir_ipgen."""
        code_gen_dir = Path(self.get_nodeattr("code_gen_dir_ipgen"))
        top = self.get_verilog_top_module_name()
        # saved so that the files are found after a rename (as FINN's own RTL ops do)
        self.set_nodeattr("gen_top_module", top)
        s_axis, m_axis = self.stream_intf()
        text = wrapper_text(top, s_axis, m_axis, self.core_instance(model), self.BRIEF)
        (code_gen_dir / f"{top}.v").write_text(text, encoding="utf-8")
        self.set_nodeattr("ipgen_path", str(code_gen_dir))
        self.set_nodeattr("ip_path", str(code_gen_dir))

    def get_rtl_file_list(self, abspath=False):
        top = self.get_nodeattr("gen_top_module") or self.get_verilog_top_module_name()
        if abspath:
            code_gen_dir = self.get_nodeattr("code_gen_dir_ipgen")
            return [str(sv_file(f)) for f in self.CORE_FILES] + [f"{code_gen_dir}/{top}.v"]
        return list(self.CORE_FILES) + [f"{top}.v"]

    def code_generation_ipi(self):
        """Vivado IPI: add the files, instantiate the wrapper as a module reference."""
        cmd = [f"add_files -norecurse {f}" for f in self.get_rtl_file_list(abspath=True)]
        cmd.append("create_bd_cell -type module -reference %s %s"
                   % (self.get_nodeattr("gen_top_module"), self.onnx_node.name))
        return cmd

    def execute_node(self, context, graph):
        """"rtlsim": FINN's xsim path (RTLBackend, needs Vivado); otherwise the generic op's
        Python execution (as FMPadding_rtl does for "cppsim")."""
        if self.get_nodeattr("exec_mode") == "rtlsim":
            return RTLBackend.execute_node(self, context, graph)
        return self.generic_execute(context, graph)

    def generic_execute(self, context, graph):  # pragma: no cover (each op sets it)
        raise NotImplementedError


def lut_per_bit(bits: int, per_bit: float, fixed: int = 0) -> int:
    """A LUT estimate linear in a datapath width (the ops' estimates: hand-fitted to Yosys
    synth_xilinx counts of the cores, see each op's lut_estimation)."""
    return int(round(fixed + per_bit * bits))
