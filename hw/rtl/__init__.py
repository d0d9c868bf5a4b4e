"""fpgaslim's hand-written RTL for the FINN layers finn-plus 1.6.1 implements only in HLS on
Zynq-7000 and UltraScale+ parts: DuplicateStreams, integer ElementwiseAdd/Sub/Mul (and Mul by
a float32 constant, the output scale), Pool (max, sum, quantized and plain average) and
LabelSelect (top-K class indices).

Why hand-written: finn-plus's own elementwise RTL is Versal- and float-only, and no library
ships integer RTL for these layers on other parts; with them a ResNet built with prefer_rtl is
RTL in every layer (w2+ weights), so it can be simulated in Verilator and synthesized with
Yosys without Vitis HLS.

Importing this package registers the ops with finn-plus (hw/rtl/register.py; the one place
that touches finn-plus internals for them). The SystemVerilog cores are in hw/rtl/sv/
(package data), the ops in hw/rtl/streams.py and hw/rtl/eltwise.py, and which layers of a
graph keep HLS (and why: e.g. 1-bit XNOR-popcount MVAUs) in hw/rtl/coverage.py.
"""

from __future__ import annotations

from .register import OPS, install, problems

install()

__all__ = ["OPS", "install", "problems"]
