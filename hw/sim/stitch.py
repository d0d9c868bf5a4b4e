"""(child) The stitched design of a folded dataflow graph: FINN's own graph steps, every node's
RTL, and one top-level SystemVerilog module that wires the AXI streams as FINN stitches them.

`stitched_graph` prepares a copy of the folded estimate graph the way FINN's flow does before
CreateStitchedIP (step_set_fifo_depths, strategy force_minimal_fifos: InsertDWC, InsertFIFO
with create_shallow_fifos, SpecializeLayers, GiveUniqueNodeNames, GiveReadableTensorNames),
with each FIFO's depth chosen here: FINN's InsertFIFO takes max(producer's outFIFODepths,
consumer's inFIFODepths), so the depths are set on those attributes (or, for a FIFO next to an
inserted width converter, on its one folded-graph neighbour) - the same attributes a folding
config carries to a bitfile build.

`generate` runs each node's own `generate_hdl` (any `*_rtl` op with FINN's standard stream
ports: s_axis[i] is node input i, m_axis[j] node output j), FINN's ReplaceVerilogRelPaths (as
CreateStitchedIP does, so parameter files are found wherever the simulator runs), and writes
`fpgaslim_stitched.sv`: each node instantiated by its top module, node output j wired to its
consumer's s_axis port for that tensor (FINN: out_V -> next in0_V, a second input in1_V), an
op in mem_mode internal_decoupled joined with the weight streamer FINN generated for it
(`<node>_memstream_wrapper`, finn-rtllib memstream, its weights from memblock.dat) on in1_V,
as FINN's code_generation_ipi hierarchy does; unused inputs (AXI-lite, set selects) tied to 0.
The top also brings out every stream's TVALID/TREADY as two monitor vectors, so the testbench
observes each node's ports (hw/sim/testbench.py), and takes one gate bit per FIFO, ANDed into
the handshake at the FIFO's input: open (the testbench's default) it is FINN's design as is;
the testbench closes it while the FIFO holds a given number of words, which makes the FIFO
behave as one of that capacity without compiling again (the FIFO-sizing search).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOP = "fpgaslim_stitched"
FIFO_OP = "StreamingFIFO"
DWC_OP = "StreamingDataWidthConverter"


class StitchError(Exception):
    """The graph cannot be stitched here; the message names the node and why."""


@dataclass
class Stream:
    """One AXI stream of the design: a graph input or a node output."""

    index: int
    tensor: str
    width: int  # padded TDATA width
    producer: str | None  # node name, None: the testbench drives it
    consumer: str | None  # node name, None: the testbench takes it


@dataclass
class Unit:
    """One node as the top instantiates it."""

    name: str
    op_type: str
    module: str
    ports: dict[str, str]  # port name -> "input" | "output"
    inputs: list[tuple[str, int]] = field(default_factory=list)  # (s_axis port, stream index)
    outputs: list[tuple[str, int]] = field(default_factory=list)  # (m_axis port, stream index)
    streamer: str | None = None  # weight streamer module on in1_V
    streamer_width: int = 0


def hw_layers(model: Any) -> tuple[list[str], list[str]]:
    """(RTL nodes, nodes without RTL: HLS or not specialized) of a dataflow graph."""
    rtl, other = [], []
    for n in model.graph.node:
        (rtl if n.domain.endswith(".rtl") else other).append(n.name)
    return rtl, other


def frame_words(inst: Any, out: bool, i: int = 0) -> int:
    """Stream words of one frame on a node's input/output `i` (its folded shape)."""
    import numpy as np

    shape = inst.get_folded_output_shape(i) if out else inst.get_folded_input_shape(i)
    return int(np.prod(shape[:-1]))


def _streamed_inputs(model: Any, node: Any) -> list[int]:
    """Indices of a node's inputs that are streams (not initializers)."""
    return [i for i, t in enumerate(node.input) if model.get_initializer(t) is None]


def stitched_graph(folded: Any, part: str, depths: dict[tuple[str, str, int], int] | None = None,
                   default_depth: str | int = "frame") -> Any:
    """A copy of `folded` with FINN's width converters and FIFOs, specialized and named as
    FINN's flow names them. A FIFO's depth: `depths[(side, node, index)]` where side is "in"
    (the FIFO before input `index` of folded-graph node `node`) or "out" (after its output
    `index`); otherwise `default_depth`: "frame" = one frame of that stream (deep enough that
    no FIFO limits a feed-forward pipeline: the sizing run), or a number."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames

    depths = depths or {}
    m = folded.transform(_Identity())  # a copy
    for node in m.graph.node:
        inst = getCustomOp(node)
        # indexed like FINN's InsertFIFO: by the node's input index (initializers included)
        streamed = _streamed_inputs(m, node)
        in_d = [2] * (max(streamed) + 1 if streamed else 1)
        for i in streamed:
            d = depths.get(("in", node.name, i))
            in_d[i] = int(d if d is not None else _default(default_depth, inst, False, i))
        out_d = []
        for j in range(len(node.output)):
            d = depths.get(("out", node.name, j))
            out_d.append(int(d if d is not None else _default(default_depth, inst, True, j)))
        inst.set_nodeattr("inFIFODepths", in_d)
        inst.set_nodeattr("outFIFODepths", out_d)
    m = m.transform(InsertDWC()).transform(InsertFIFO(create_shallow_fifos=True))
    m = m.transform(SpecializeLayers(part)).transform(GiveUniqueNodeNames())
    return m.transform(GiveReadableTensorNames())


def _default(default_depth: str | int, inst: Any, out: bool, i: int) -> int:
    if default_depth == "frame":
        return max(2, frame_words(inst, out, i))
    return max(2, int(default_depth))


class _Identity:
    """A do-nothing transformation: ModelWrapper.transform returns a deep copy."""

    def apply(self, model):  # noqa: D102
        return model, False


def fifo_sides(model: Any, folded_names: set[str]) -> dict[str, list[tuple[str, str, int]]]:
    """FIFO node -> the folded-graph attributes that set its depth in FINN's InsertFIFO:
    ("out", producer, output index) and/or ("in", consumer, input index), for the neighbours
    that are folded-graph nodes (not inserted width converters)."""
    out: dict[str, list[tuple[str, str, int]]] = {}
    for n in model.graph.node:
        if not n.op_type.startswith(FIFO_OP):
            continue
        sides = []
        prod, cons = model.find_producer(n.input[0]), model.find_consumer(n.output[0])
        if prod is not None and prod.name in folded_names:
            sides.append(("out", prod.name, list(prod.output).index(n.input[0])))
        if cons is not None and cons.name in folded_names:
            sides.append(("in", cons.name, list(cons.input).index(n.output[0])))
        out[n.name] = sides
    return out


# ------------------------------------------------------------------------------- the RTL
def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


_PORT = re.compile(r"\b(input|output|inout)\b\s+(?:(?:wire|logic|reg|var|signed|unsigned)\s+)*"
                   r"(?:\[[^\]]*\]\s*)*([A-Za-z_]\w*)")


def module_ports(files: list[Path], module: str) -> dict[str, str]:
    """Port name -> direction of `module`'s ANSI header, read from the first of `files` that
    declares it."""
    for f in files:
        if f.suffix not in (".v", ".sv"):
            continue
        text = _strip_comments(f.read_text(encoding="utf-8", errors="replace"))
        m = re.search(rf"\bmodule\s+{re.escape(module)}\b", text)
        if m is None:
            continue
        depth, i = 0, m.end()
        while i < len(text):
            c = text[i]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif c == ";" and depth == 0:
                break
            i += 1
        return {name: d for d, name in _PORT.findall(text[m.end():i])}
    raise StitchError(f"module {module} is declared in none of its files")


def generate(model: Any, part: str, clock_ns: float, hdl: Path
             ) -> tuple[list[Path], list[Stream], list[Unit]]:
    """Every node's RTL under `hdl`/<node>, FINN's absolute parameter paths, and the top
    module `hdl`/fpgaslim_stitched.sv. Returns (the source files in compile order, the streams,
    the units)."""
    from finn.transformation.fpgadataflow.replace_verilog_relpaths import (
        ReplaceVerilogRelPaths)
    from finn.util.settings import get_settings
    from qonnx.custom_op.registry import getCustomOp

    hdl.mkdir(parents=True, exist_ok=True)
    lib = Path(get_settings().finn_rtllib)
    files: dict[str, Path] = {}
    units: list[Unit] = []
    for node in model.graph.node:
        if not node.domain.endswith(".rtl"):
            raise StitchError(f"{node.name} ({node.op_type}) has no RTL")
        inst = getCustomOp(node)
        d = hdl / node.name
        d.mkdir(exist_ok=True)
        for old in d.iterdir():
            if old.is_file():
                old.unlink()
        inst.set_nodeattr("code_gen_dir_ipgen", str(d.resolve()))
        _check_clocks(node, inst)
        try:
            inst.generate_hdl(model, part, clock_ns)
        except Exception as exc:  # noqa: BLE001  (FINN's code generation of one node)
            raise StitchError(f"FINN could not generate the RTL of {node.name} "
                              f"({node.op_type}): {type(exc).__name__}: {exc}") from exc
    model = model.transform(ReplaceVerilogRelPaths())
    for node in model.graph.node:
        inst = getCustomOp(node)
        d = hdl / node.name
        node_files = [Path(f) for f in inst.get_rtl_file_list(abspath=True)]
        module = inst.get_verilog_top_module_name()
        unit = Unit(name=node.name, op_type=node.op_type, module=module,
                    ports=module_ports(node_files, module))
        wrapper = d / f"{module}_memstream_wrapper.v"
        if _attr(inst, "mem_mode") == "internal_decoupled" and wrapper.is_file() and \
                "in1_V_TDATA" in unit.ports:
            unit.streamer = f"{module}_memstream_wrapper"
            unit.streamer_width = int(inst.get_instream_width_padded(1))
            node_files += [wrapper, lib / "axi" / "hdl" / "axilite.sv",
                           lib / "memstream" / "hdl" / "memstream_axi.sv",
                           lib / "memstream" / "hdl" / "memstream.sv"]
        for f in node_files:
            files.setdefault(f.name if _is_library(f, lib) else str(f), f)
        units.append(unit)
    streams = _streams(model, units)
    top = hdl / f"{TOP}.sv"
    top.write_text(_top_module(model, streams, units), encoding="utf-8")
    ordered = sorted(files.values(), key=lambda p: (not p.name.endswith("_pkg.sv"), str(p)))
    return [*ordered, top], streams, units


def _is_library(f: Path, lib: Path) -> bool:
    try:
        f.resolve().relative_to(lib.resolve())
        return True
    except ValueError:
        return False


def _attr(inst: Any, name: str) -> Any:
    try:
        return inst.get_nodeattr(name)
    except (AttributeError, KeyError, Exception):  # noqa: BLE001  (not an attribute of this op)
        return None


def _check_clocks(node: Any, inst: Any) -> None:
    for a in ("pumpedCompute", "pumpedMemory"):
        if _attr(inst, a):
            raise StitchError(f"{node.name} is double-pumped ({a}=1): the stitched simulation "
                              "runs one clock; build without clock pumping")


def _streams(model: Any, units: list[Unit]) -> list[Stream]:
    from qonnx.custom_op.registry import getCustomOp

    by_name = {u.name: u for u in units}
    streams: list[Stream] = []
    index: dict[str, int] = {}
    graph_outputs = {o.name for o in model.graph.output}
    for gi in model.graph.input:
        cons = model.find_consumers(gi.name)
        if len(cons) != 1:
            raise StitchError(f"graph input {gi.name} feeds {len(cons)} nodes; FINN stitches "
                              "one consumer per stream")
        c = cons[0]
        k = list(c.input).index(gi.name)
        width = getCustomOp(c).get_verilog_top_module_intf_names()["s_axis"][k][1]
        index[gi.name] = len(streams)
        streams.append(Stream(len(streams), gi.name, int(width), None, c.name))
    for node in model.graph.node:
        intf = getCustomOp(node).get_verilog_top_module_intf_names()
        for j, t in enumerate(node.output):
            cons = model.find_consumers(t)
            if len(cons) > 1:
                raise StitchError(f"{node.name} output {t} feeds {len(cons)} nodes; FINN "
                                  "stitches one consumer per stream (a DuplicateStreams node "
                                  "makes the copies)")
            name, width = intf["m_axis"][j]
            index[t] = len(streams)
            streams.append(Stream(len(streams), t, int(width), node.name,
                                  cons[0].name if cons else None))
            by_name[node.name].outputs.append((name, index[t]))
            if not cons and t not in graph_outputs:
                raise StitchError(f"{node.name} output {t} goes nowhere")
    for node in model.graph.node:
        intf = getCustomOp(node).get_verilog_top_module_intf_names()
        for i, t in enumerate(node.input):
            if t not in index:
                continue  # an initializer (weights, thresholds): inside the node
            name, width = intf["s_axis"][i]
            if int(width) != streams[index[t]].width:
                raise StitchError(f"stream {t}: {streams[index[t]].producer or 'input'} sends "
                                  f"{streams[index[t]].width} bits, {node.name} takes {width}")
            by_name[node.name].inputs.append((name, index[t]))
    return streams


def _top_module(model: Any, streams: list[Stream], units: list[Unit]) -> str:
    ins = [s for s in streams if s.producer is None]
    outs = [s for s in streams if s.consumer is None]
    if len(ins) != 1 or len(outs) != 1:
        raise StitchError(f"the design has {len(ins)} input and {len(outs)} output streams; "
                          "the testbench drives one of each")
    n = len(streams)
    fifos = [u for u in units if u.op_type.startswith(FIFO_OP)]
    gate = {u.name: f for f, u in enumerate(fifos)}
    lines = [f"// fpgaslim: the stitched design of {len(units)} FINN nodes (generated by "
             "hw/sim/stitch.py):",
             "// every AXI stream as FINN's CreateStitchedIP connects it, TVALID/TREADY of each "
             "brought out for the testbench;",
             "// fifo_gate[f] (all ones: FINN's design unchanged) lets the testbench hold a "
             "FIFO's input, to try a smaller capacity",
             f"module {TOP} (",
             "  input ap_clk, input ap_rst_n,",
             f"  input [{max(1, len(fifos))}-1:0] fifo_gate,",
             f"  input [{ins[0].width}-1:0] s_axis_0_tdata, input s_axis_0_tvalid, "
             "output s_axis_0_tready,",
             f"  output [{outs[0].width}-1:0] m_axis_0_tdata, output m_axis_0_tvalid, "
             "input m_axis_0_tready,",
             f"  output [{n}-1:0] mon_valid, output [{n}-1:0] mon_ready);"]
    for s in streams:
        lines.append(f"  wire [{s.width}-1:0] s{s.index}_tdata; wire s{s.index}_tvalid, "
                     f"s{s.index}_tready;  // {s.tensor}: {s.producer or 'input'} -> "
                     f"{s.consumer or 'output'}")
        lines.append(f"  assign mon_valid[{s.index}] = s{s.index}_tvalid; "
                     f"assign mon_ready[{s.index}] = s{s.index}_tready;")
    i, o = ins[0].index, outs[0].index
    lines += [f"  assign s{i}_tdata = s_axis_0_tdata; assign s{i}_tvalid = s_axis_0_tvalid; "
              f"assign s_axis_0_tready = s{i}_tready;",
              f"  assign m_axis_0_tdata = s{o}_tdata; assign m_axis_0_tvalid = s{o}_tvalid; "
              f"assign s{o}_tready = m_axis_0_tready;"]
    for u in units:
        conns: dict[str, str] = {}
        for port, k in u.inputs:
            conns.update({f"{port}_TDATA": f"s{k}_tdata", f"{port}_TVALID": f"s{k}_tvalid",
                          f"{port}_TREADY": f"s{k}_tready"})
            if u.name in gate:  # the producer sees the FIFO's ready only while the gate is open
                g = gate[u.name]
                lines.append(f"  wire s{k}_fifo_ready; assign s{k}_tready = s{k}_fifo_ready & "
                             f"fifo_gate[{g}];")
                conns.update({f"{port}_TVALID": f"s{k}_tvalid & fifo_gate[{g}]",
                              f"{port}_TREADY": f"s{k}_fifo_ready"})
        for port, k in u.outputs:
            conns.update({f"{port}_TDATA": f"s{k}_tdata", f"{port}_TVALID": f"s{k}_tvalid",
                          f"{port}_TREADY": f"s{k}_tready"})
        if u.streamer:
            w = f"{u.name}_w"
            lines.append(f"  wire [{u.streamer_width}-1:0] {w}_tdata; wire {w}_tvalid, "
                         f"{w}_tready;  // {u.name}'s weight stream")
            lines.append(f"  {u.streamer} {u.name}_wstrm (.ap_clk(ap_clk), .ap_clk2x(ap_clk), "
                         f".ap_rst_n(ap_rst_n), .m_axis_0_tready({w}_tready), "
                         f".m_axis_0_tvalid({w}_tvalid), .m_axis_0_tdata({w}_tdata), "
                         ".s_axilite_AWVALID(1'b0), .s_axilite_AWPROT('0), "
                         ".s_axilite_AWADDR('0), .s_axilite_WVALID(1'b0), "
                         ".s_axilite_WDATA('0), .s_axilite_WSTRB('0), .s_axilite_BREADY(1'b0), "
                         ".s_axilite_ARVALID(1'b0), .s_axilite_ARPROT('0), "
                         ".s_axilite_ARADDR('0), .s_axilite_RREADY(1'b0), "
                         ".s_axis_0_tvalid(1'b0), .s_axis_0_tdata('0));")
            conns.update({"in1_V_TDATA": f"{w}_tdata", "in1_V_TVALID": f"{w}_tvalid",
                          "in1_V_TREADY": f"{w}_tready"})
        for port, direction in u.ports.items():
            if port in conns:
                continue
            if port == "ap_clk" or port == "ap_clk2x":
                conns[port] = "ap_clk"
            elif port == "ap_rst_n":
                conns[port] = "ap_rst_n"
            elif direction == "input":
                conns[port] = "'0"  # AXI-lite, set selects, ...: idle
        missing = [p for p in conns if p not in u.ports]
        if missing:
            raise StitchError(f"{u.name}: its module {u.module} has no port {missing[0]} "
                              "(not FINN's standard stream ports)")
        body = ", ".join(f".{p}({v})" for p, v in conns.items())
        lines.append(f"  {u.module} {u.name}_i ({body});")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"
