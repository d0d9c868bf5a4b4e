"""Which layers of a specialized FINN graph are RTL, and why the others keep HLS.

An all-RTL design can be simulated and synthesized with open tools (Verilator, Yosys); an
HLS layer needs Vitis HLS to exist at all. `hls_layers` names every HLS layer with the
reason it is not RTL (the 1-bit XNOR-popcount MVAUs of binarized networks among them:
finn-plus's RTL MVU needs signed weights of at least 2 bits, and fpgaslim has no RTL for
them), and `require_rtl` turns that into one clear error for whatever needs an all-RTL graph.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from fpgaslim.core.errors import UnsupportedLayerError

_HW = "finn.custom_op.fpgadataflow"


class HLSLayer(BaseModel):
    """One layer that stays HLS, and why."""

    model_config = ConfigDict(extra="forbid")
    name: str
    op_type: str
    reason: str


class RTLCoverage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: int  # HW layers of the graph
    rtl: int
    by_op: dict[str, int]
    hls: list[HLSLayer]

    @property
    def percent(self) -> float:
        return 100.0 * self.rtl / self.layers if self.layers else 100.0


def _mvau_reason(inst: Any) -> str:
    if inst.get_nodeattr("binaryXnorMode") == 1:
        return ("1-bit (XNOR-popcount, BIPOLAR) MVAU: finn-plus's RTL MVU has no binary mode "
                "and fpgaslim has no RTL for it")
    if inst.get_nodeattr("noActivation") == 0:
        return ("thresholds embedded in the MVAU: build with prefer_rtl (standalone "
                "thresholds) for the RTL MVU")
    wdt = inst.get_input_datatype(1)
    if not wdt.signed():
        return f"unsigned weights ({wdt.name}): finn-plus's RTL MVU needs signed weights"
    if inst.get_input_datatype(0).bitwidth() < 2 or wdt.bitwidth() < 2:
        return "1-bit inputs or weights: finn-plus's RTL MVU needs at least 2 bits"
    return ("finn-plus's RTL MVU does not fit (widths beyond the DSP datapath, or full-range "
            "weights on a DSP48E1 part)")


def _reason(node: Any, inst: Any, model: Any) -> str:
    from .register import OPS, op_classes

    base = node.op_type.rsplit("_", 1)[0]
    if base == "MVAU":
        return _mvau_reason(inst)
    if base in OPS:
        why = op_classes()[base].rtl_not_possible(inst, model)
        return f"fpgaslim's RTL {base} cannot: {why}" if why else \
            "RTL possible, but not asked for (build with prefer_rtl)"
    return f"no RTL variant of {base} in finn-plus or fpgaslim"


def hls_layers(model: Any) -> list[HLSLayer]:
    """Every `*_hls` layer of the specialized graph `model`, with the reason it is not RTL."""
    from qonnx.custom_op.registry import getCustomOp

    out = []
    for node in model.graph.node:
        if node.domain == f"{_HW}.hls":
            out.append(HLSLayer(name=node.name, op_type=node.op_type,
                                reason=_reason(node, getCustomOp(node), model)))
    return out


def rtl_coverage(model: Any) -> RTLCoverage:
    """How many HW layers of `model` are RTL, per op type, and the HLS ones with reasons."""
    hw = [n for n in model.graph.node if n.domain.startswith(f"{_HW}.")]
    by_op: dict[str, int] = {}
    for n in hw:
        by_op[n.op_type] = by_op.get(n.op_type, 0) + 1
    return RTLCoverage(layers=len(hw), rtl=sum(1 for n in hw if n.domain == f"{_HW}.rtl"),
                       by_op=dict(sorted(by_op.items())), hls=hls_layers(model))


def require_rtl(model: Any, what: str = "simulated") -> None:
    """An UnsupportedLayerError naming every layer that keeps HLS (and so cannot be
    `what`), or nothing when the graph is all RTL."""
    hls = hls_layers(model)
    if hls:
        listed = "; ".join(f"{x.name} ({x.reason})" for x in hls)
        raise UnsupportedLayerError(
            f"{len(hls)} layer(s) keep HLS and therefore cannot be {what}: {listed}")
