"""A second opinion on FINN's estimates for the RTL layers of a finished estimate build.

For every `*_rtl` node of the folded dataflow graph FINN generates its RTL (`generate_hdl`, no
Vivado needed); `--synth yosys` synthesizes it out of context with Yosys synth_xilinx for the
board's family (hw/synth_yosys.py), `--sim verilator` simulates it on its real input stream
(the node's input tensor from FINN's Python execution of the folded graph on the build's
verification image) and compares its output bit for bit (hw/rtlsim_verilator.py). An MVAU/VVAU
in mem_mode internal_decoupled is joined with the weight streamer FINN generated for it (its
memstream, initialised from FINN's memblock.dat), wired as FINN's stitching wires them, so it
is synthesized with its weight memory and simulated with one input stream. HLS layers stay
FINN estimates and say so.

The estimate graph has no data-width converters or FIFOs (FINN inserts them when it stitches
the design, after the estimate steps), so the child inserts them into a copy of the folded
graph the way FINN's stitching flow does (`_with_stitching_nodes`: InsertDWC, InsertFIFO with
every FIFO at its minimal depth, SpecializeLayers) and gives them a second opinion too, FINN's
estimate beside them from the node's own estimation functions. A FIFO's real depth comes from
FINN's FIFO sizing, which needs a simulation of the whole design; the record says which depth
was synthesized.

Layers whose RTL is the same module with the same parameters (FINN names every module and file
after the node; a ResNet repeats its blocks) are synthesized once, and compiled for Verilator
once where only their run-time parameter files (thresholds, weights) differ; each layer still
runs its own input stream. The record says whose synthesis or simulator a layer shares.

It runs in a child process (`python -m fpgaslim.hw.second_opinion job.json`, finn-plus's
process-wide state stays out of the caller) after the estimate build. Each layer has its own
time limit (enforced on every Yosys/Verilator process), the child has an overall one, and
nothing here fails a build: a layer that cannot be synthesized or simulated says why. Results
are cached in the build folder (`<build work>/second_opinion/`: synthesis per configuration,
simulation per layer), keyed by the generated RTL, the tool versions, the settings and this
recipe's code, so a rerun does not synthesize again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from .child import kill_group
from .rtlsim_verilator import SimResult
from .synth_yosys import SOURCE as SYNTH_SOURCE, SynthResult

# part of every cache key, and stored in the record: a saved second opinion of an older
# recipe is redone (3: the width converters and FIFOs of FINN's stitching are covered)
CACHE_VERSION = "fpgaslim-second-opinion/3"
_LOCK = threading.RLock()
HLS_NOTE = "FINN estimate only (HLS layer; needs Vitis HLS)"
MVAU_SCOPE = "compute core only (weights arrive as a stream; the weight memory is not included)"
MVAU_LAYER_SCOPE = ("whole layer: compute core and FINN's weight streamer (memstream, "
                    "initialised from FINN's memblock.dat)")


class LayerOpinion(BaseModel):
    """One HW layer: Yosys's counts and Verilator's run beside FINN's figures."""

    model_config = ConfigDict(extra="forbid")
    name: str
    op_type: str
    finn_LUT: float | None = None
    finn_BRAM_18K: float | None = None
    finn_DSP: float | None = None
    finn_exp_cycles: int | None = None
    synth: SynthResult | None = None
    sim: SimResult | None = None
    note: str | None = None  # e.g. the HLS note, or why the layer was not simulated
    cached: bool = False
    # layers with the same RTL module and parameters (names aside) are synthesized once: the
    # layer whose Yosys result this one shares; and compiled once for Verilator (parameter
    # files such as thresholds and weights are read at run time): whose simulator it ran
    synth_from: str | None = None
    simulator_from: str | None = None
    # a data-width converter or FIFO that FINN's stitching inserts (not in the estimate graph):
    # what inserted it and, for a FIFO, the depth synthesized
    inserted: str | None = None


class SecondOpinion(BaseModel):
    """Per-layer Yosys / Verilator figures of one build, with provenance."""

    model_config = ConfigDict(extra="forbid")
    recipe: str | None = None  # CACHE_VERSION of the code that made it (None: before /3)
    synth: str | None = None  # "yosys" when requested
    sim: str | None = None  # "verilator" when requested
    family: str | None = None
    synth_source: str = SYNTH_SOURCE
    sim_source: str | None = None
    tools: dict[str, str | None] = Field(default_factory=dict)
    layer_timeout_s: float
    layers: list[LayerOpinion]
    rtl_layers: int = 0
    inserted_layers: int = 0  # of rtl_layers: DWCs and FIFOs FINN's stitching inserts
    synthesized: int = 0
    simulated_bit_exact: int = 0
    seconds: float = 0.0
    note: str | None = None


def wanted(settings) -> bool:
    return settings.synth != "none" or settings.sim != "none"


def needs_second_opinion(report, settings) -> bool:
    """A saved report lacks (part of) the second opinion the settings ask for, or has one
    of an older recipe (its syntheses and simulations stay cached where still valid)."""
    if not wanted(settings):
        return False
    so = report.second_opinion
    return so is None or so.recipe != CACHE_VERSION or (
        settings.synth != "none" and so.synth is None) or (
        settings.sim != "none" and so.sim is None)


# ------------------------------------------------------------------------------ parent side
def run_second_opinion(work: Path, settings, part: str,
                       progress: Callable[[str], None] | None = None) -> SecondOpinion:
    """Run the child on a finished build folder `work` (hw/build.py's out_dir). Never raises
    for a tool or layer problem; the returned record says what happened."""
    from . import finn_compat
    from .synth_yosys import family_for_part

    work = Path(work)
    so_dir = work / "second_opinion"
    so_dir.mkdir(parents=True, exist_ok=True)
    result_path = so_dir / "second_opinion.json"
    result_path.unlink(missing_ok=True)
    try:
        family = family_for_part(part)
    except ValueError as exc:
        family, fam_err = None, str(exc)
    else:
        fam_err = None
    job = {"work": str(work), "synth": settings.synth, "sim": settings.sim, "family": family,
           "family_error": fam_err, "part": part, "clock_ns": settings.clock_ns,
           "layer_timeout_s": settings.layer_timeout_s}
    job_path = so_dir / "job.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    n_layers = len(json.loads((work / "finn" / "report" / "fpgaslim_layers.json")
                              .read_text(encoding="utf-8"))["layers"])
    # FINN's stitching adds a FIFO on every stream and some width converters (at most about
    # twice as many nodes again), each under the same per-layer limit
    limit = 120 + 3 * n_layers * settings.layer_timeout_s * (1 + (settings.sim != "none"))
    env = finn_compat.child_environment(so_dir)
    t0 = time.perf_counter()
    seen = 0
    prog = so_dir / "progress.jsonl"
    prog.unlink(missing_ok=True)
    with open(so_dir / "child.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fpgaslim.hw.second_opinion",
                                 str(job_path)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        killed = False
        while proc.poll() is None:
            time.sleep(0.5)
            seen = _report_progress(prog, seen, progress)
            if time.perf_counter() - t0 > limit:
                kill_group(proc)
                killed = True
        _report_progress(prog, seen, progress)
    if result_path.is_file():
        return SecondOpinion.model_validate_json(result_path.read_text(encoding="utf-8"))
    tail = (so_dir / "child.log").read_text(encoding="utf-8", errors="replace")[-600:]
    why = (f"the second-opinion child ran past its overall limit of {limit:g} s"
           if killed else f"the second-opinion child stopped (code {proc.returncode}): {tail}")
    return SecondOpinion(synth=settings.synth if settings.synth != "none" else None,
                         sim=settings.sim if settings.sim != "none" else None, family=family,
                         layer_timeout_s=settings.layer_timeout_s,
                         layers=_partial(so_dir, time.time() - (time.perf_counter() - t0)),
                         seconds=round(time.perf_counter() - t0, 2), note=why)


def _report_progress(prog: Path, seen: int, progress: Callable[[str], None] | None) -> int:
    if not prog.is_file():
        return seen
    lines = prog.read_text(encoding="utf-8").splitlines()
    for line in lines[seen:]:
        if progress is not None and line.strip():
            try:
                progress(json.loads(line)["message"])
            except (json.JSONDecodeError, KeyError):
                pass
    return len(lines)


def _partial(so_dir: Path, since: float) -> list[LayerOpinion]:
    """The layers the child finished before it was stopped (written since `since`)."""
    out = []
    for f in sorted(so_dir.glob("*/opinion.json")):
        if f.stat().st_mtime < since:
            continue
        try:
            out.append(LayerOpinion.model_validate_json(f.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return out


# ------------------------------------------------------------------------------- child side
# the recipe is part of every cache key: how the tools are run and which sources are adapted
_RECIPE = [Path(__file__).with_name(f) for f in ("synth_yosys.py", "rtlsim_verilator.py",
                                                 "rtl_sources.py")]


def _hash_files(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256((CACHE_VERSION + extra).encode())
    for p in _RECIPE:
        h.update(p.read_bytes())
    for p in sorted(set(paths)):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:24]


def _node_inputs(work: Path, model, py_model) -> dict:
    """Every tensor of the dataflow partition for the build's verification image, from
    FINN's Python execution (generic base ops) of the folded graph."""
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    finn_out = work / "finn"
    parent = ModelWrapper(str(finn_out / "intermediate_models" / "dataflow_parent.onnx"))
    sdp = parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]
    x = np.load(work / "verify_input.npy").astype(np.float32)
    # run the parent up to the partition: its input is the partition's input
    ctx = execute_onnx(parent, {parent.graph.input[0].name: x}, True)
    return execute_onnx(py_model, {py_model.graph.input[0].name: ctx[sdp.input[0]]}, True)


def _with_stitching_nodes(model, part: str):
    """(graph, inserted): a copy of the folded graph `model` with the data-width converters
    and FIFOs that FINN's stitching inserts, as its build flow inserts them before stitching
    (step_set_fifo_depths with the force_minimal_fifos strategy: InsertDWC, then
    InsertFIFO(create_shallow_fifos=True), every FIFO at the depth its neighbours' in/out FIFO
    depth attributes give, then SpecializeLayers to FINN's default RTL/HLS variant); FINN's
    own transformations, not a re-implementation. `inserted`: name -> what inserted it (and a
    FIFO's depth). The other nodes keep their names; the new ones are named after their op
    type where FINN left them unnamed."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp

    before = {n.name for n in model.graph.node}
    m = model.transform(InsertDWC()).transform(  # transform() works on a copy
        InsertFIFO(create_shallow_fifos=True)).transform(SpecializeLayers(part))
    taken, count, inserted = set(before), {}, {}
    for n in m.graph.node:
        if n.name in before:
            continue
        while not n.name or n.name in taken:
            count[n.op_type] = count.get(n.op_type, -1) + 1
            n.name = f"{n.op_type}_{count[n.op_type]}"
        taken.add(n.name)
        inserted[n.name] = (
            f"inserted by FINN's InsertFIFO at depth {getCustomOp(n).get_nodeattr('depth')} "
            "(the minimal depth; FINN's FIFO sizing sets the real one)"
            if n.op_type.startswith("StreamingFIFO") else "inserted by FINN's InsertDWC")
    return m, inserted


def _pass_through(ctx: dict, inserted_nodes: list) -> None:
    """Give `ctx` (the folded graph's tensors) the tensors of the inserted converters and
    FIFOs: each passes its input through unchanged (only the stream's word width changes),
    so both its tensors hold the same values. One of them is the folded graph's (a FIFO at the
    graph's output takes over the output's name, and the last layer writes a new tensor), so
    values are copied either way until every inserted node's tensors are known."""
    todo = list(inserted_nodes)
    while todo:
        left = []
        for n in todo:
            a, b = n.input[0], n.output[0]
            if a in ctx or b in ctx:
                ctx[b if a in ctx else a] = ctx[a if a in ctx else b]
            else:
                left.append(n)
        if len(left) == len(todo):
            raise KeyError(f"no values for the stream of {left[0].name}")
        todo = left


def _stream_words(inst, values, out: bool, ind: int = 0) -> tuple[list[int], int]:
    """Stream `ind` of a layer (an output with `out`, else an input) as its words, FINN's
    packing (element 0 in the low bits; FLOAT32 elements as their IEEE bits), in the order
    the hardware streams it. Returns (words, elements per word)."""
    import numpy as np

    from .rtlsim_verilator import pack_words

    shape = inst.get_folded_output_shape(ind) if out else inst.get_folded_input_shape(ind)
    dt = inst.get_output_datatype(ind) if out else inst.get_input_datatype(ind)
    width = inst.get_outstream_width_padded(ind) if out else inst.get_instream_width_padded(ind)
    per_word = int(shape[-1])
    op = inst.onnx_node.op_type
    if (out and op.startswith("ConvolutionInputGenerator") and inst.get_nodeattr("depthwise")) \
            or (not out and op.startswith("Pool")):
        # the depthwise SWG interleaves channels in SIMD groups (as FINN's own cppsim of
        # ConvolutionInputGenerator_rtl does), and Pool reads them so: (k, C/SIMD, SIMD) ->
        # (C/SIMD, k, SIMD)
        if op.startswith("Pool"):
            simd, k = inst.get_nodeattr("PE"), int(np.prod(inst.get_nodeattr("KernelSize")))
            ch = inst.get_nodeattr("Channels")
        else:
            simd, (kh, kw) = inst.get_nodeattr("SIMD"), inst.get_nodeattr("ConvKernelDim")
            ch, k = inst.get_nodeattr("IFMChannels"), kh * kw
        lead = values.shape[:-1]
        values = values.reshape(*lead, k, ch // simd, simd).swapaxes(-3, -2)
    arr = values.reshape(-1, per_word)
    if dt.name == "BIPOLAR":
        arr = (arr + 1) // 2
    if dt.name == "FLOAT32":
        arr = np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32).astype(np.int64)
    return pack_words(arr, dt.bitwidth(), dt.signed(), width), per_word


_LAYER_TOP = """// fpgaslim: {node} as FINN stitches it in mem_mode internal_decoupled (generated):
// FINN's weight streamer {node}_memstream_wrapper (memstream, initialised from memblock.dat)
// feeding the MVU's weight stream in1_V, its AXI-lite and set-select inputs tied off
module {top} (
  input ap_clk, input ap_clk2x, input ap_rst_n,
  input [{wi}-1:0] in0_V_TDATA, input in0_V_TVALID, output in0_V_TREADY,
  output [{wo}-1:0] out0_V_TDATA, output out0_V_TVALID, input out0_V_TREADY);
  wire [{ww}-1:0] w_tdata;
  wire w_tvalid, w_tready;
  {node}_memstream_wrapper #(.INIT_FILE("memblock.dat")) wstrm (
    .ap_clk(ap_clk), .ap_clk2x({mem_clk2x}), .ap_rst_n(ap_rst_n),
    .s_axilite_AWVALID(1'b0), .s_axilite_AWPROT(3'b0), .s_axilite_AWADDR('0),
    .s_axilite_WVALID(1'b0), .s_axilite_WDATA(32'b0), .s_axilite_WSTRB(4'b0),
    .s_axilite_BREADY(1'b0), .s_axilite_ARVALID(1'b0), .s_axilite_ARPROT(3'b0),
    .s_axilite_ARADDR('0), .s_axilite_RREADY(1'b0),
    .s_axis_0_tvalid(1'b0), .s_axis_0_tdata('0),
    .m_axis_0_tready(w_tready), .m_axis_0_tvalid(w_tvalid), .m_axis_0_tdata(w_tdata));
  {node} core (
    .ap_clk(ap_clk), .ap_clk2x({core_clk2x}), .ap_rst_n(ap_rst_n),
    .in1_V_TDATA(w_tdata), .in1_V_TVALID(w_tvalid), .in1_V_TREADY(w_tready),
    .in0_V_TDATA(in0_V_TDATA), .in0_V_TVALID(in0_V_TVALID), .in0_V_TREADY(in0_V_TREADY),
    .out0_V_TDATA(out0_V_TDATA), .out0_V_TVALID(out0_V_TVALID),
    .out0_V_TREADY(out0_V_TREADY));
endmodule
"""


def _with_weight_streamer(node, inst, hdl: Path, files: list[str]):
    """(files, top, intf) of a top module that joins an MVAU/VVAU_rtl in mem_mode
    internal_decoupled with the weight streamer FINN generated for it, connected the way
    FINN's stitching connects them (the streamer's m_axis_0 to the layer's in1_V; ap_clk2x
    to the 2x clock only where that side is double-pumped), so the layer is synthesized with
    its weight memory and simulated with one input stream. None for other mem_modes (weights
    from outside the layer) or when FINN's streamer wrapper is not there."""
    from finn.util.settings import get_settings

    if inst.get_nodeattr("mem_mode") != "internal_decoupled":
        return None
    name = inst.get_verilog_top_module_name()
    wrapper = hdl / f"{name}_memstream_wrapper.v"
    if not wrapper.is_file() or not (hdl / "memblock.dat").is_file():
        return None
    top = f"{name}_fpgaslim_layer"
    attr = {a.name for a in node.attribute}
    pumped = {k: int(inst.get_nodeattr(k)) if k in attr else 0
              for k in ("pumpedMemory", "pumpedCompute")}
    wi, wo = inst.get_instream_width_padded(0), inst.get_outstream_width_padded()
    (hdl / f"{top}.v").write_text(_LAYER_TOP.format(
        node=name, top=top, wi=wi, wo=wo, ww=inst.get_instream_width_padded(1),
        mem_clk2x="ap_clk2x" if pumped["pumpedMemory"] else "ap_clk",
        core_clk2x="ap_clk2x" if pumped["pumpedCompute"] else "ap_clk"), encoding="utf-8")
    lib = Path(get_settings().finn_rtllib)
    files = [*files, str(wrapper), str(lib / "axi" / "hdl" / "axilite.sv"),
             str(lib / "memstream" / "hdl" / "memstream_axi.sv"),
             str(lib / "memstream" / "hdl" / "memstream.sv"), str(hdl / f"{top}.v")]
    intf = {"clk": ["ap_clk"], "rst": ["ap_rst_n"], "s_axis": [("in0_V", wi)],
            "m_axis": [("out0_V", wo)]}
    return list(dict.fromkeys(files)), top, intf


def _progress(so_dir: Path, message: str) -> None:
    with open(so_dir / "progress.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"t": time.time(), "message": message}) + "\n")


_HDL_SUFFIXES = (".v", ".sv", ".vh", ".svh")
_ONCE: dict[str, Future] = {}


def _config_key(paths: list[Path], name: str, extra: str, data: bool = True) -> str:
    """A digest of a layer's RTL with its own name taken out (FINN names every module and
    parameter file after the node), so layers with the same module and parameters share it.
    `data`: include the content of parameter files (thresholds, weights); without it, only
    their names count (a compiled simulator reads them at run time)."""
    own = re.compile(re.escape(name.encode()) + rb"(?![0-9])")
    h = hashlib.sha256((CACHE_VERSION + extra).encode())
    for p in _RECIPE:
        h.update(p.read_bytes())
    for p in sorted(set(paths), key=lambda q: own.sub(b"@", q.name.encode())):
        h.update(own.sub(b"@", p.name.encode()))
        if data or p.suffix in _HDL_SUFFIXES:
            h.update(own.sub(b"@", p.read_bytes()))
    return h.hexdigest()[:24]


def _once(key: str, compute: Callable[[], object]) -> tuple[object, bool]:
    """compute() once per key in this child, whichever layer asks first; the others wait for
    it. (result, True when this call computed it)."""
    with _LOCK:
        fut = _ONCE.get(key)
        mine = fut is None
        if mine:
            fut = _ONCE[key] = Future()
    if not mine:
        return fut.result(), False
    try:
        fut.set_result(compute())
    except BaseException as exc:  # noqa: BLE001  (handed to the waiting layers too)
        fut.set_exception(exc)
    return fut.result(), True


def _layer(node, model, inst, job: dict, so_dir: Path, tensors: Callable[[], dict | None],
           finn_res: dict, tools: dict) -> LayerOpinion:
    from .rtlsim_verilator import build, missing_tools, run_streams
    from .synth_yosys import synthesize

    est = finn_res.get(node.name, {})
    op = LayerOpinion(name=node.name, op_type=node.op_type, finn_LUT=est.get("LUT"),
                      finn_BRAM_18K=est.get("BRAM_18K"), finn_DSP=est.get("DSP"),
                      finn_exp_cycles=int(inst.get_exp_cycles()))
    if not node.domain.endswith(".rtl"):
        op.note = HLS_NOTE
        return op
    d = so_dir / node.name
    hdl = d / "hdl"
    shutil.rmtree(hdl, ignore_errors=True)  # the cache key hashes exactly what FINN generates
    hdl.mkdir(parents=True)
    with _LOCK:  # FINN's code generation touches the shared graph: one layer at a time
        inst.set_nodeattr("code_gen_dir_ipgen", str(hdl))
        inst.generate_hdl(model, job["part"], job["clock_ns"])
        files = [str(f) for f in inst.get_rtl_file_list(abspath=True)]
        incs = [str(p) for p in inst.get_verilog_paths()]
        top = inst.get_verilog_top_module_name()
        intf = inst.get_verilog_top_module_intf_names()
    is_mvau = node.op_type.startswith(("MVAU", "VVAU"))
    streamed = _with_weight_streamer(node, inst, hdl, files) if is_mvau else None
    if streamed is not None:
        files, top, intf = streamed
    scope = (MVAU_LAYER_SCOPE if streamed else MVAU_SCOPE) if is_mvau else "whole layer"
    sources = [Path(f) for f in files] + [p for p in hdl.iterdir() if p.is_file()]
    limit = float(job["layer_timeout_s"])
    if job["synth"] == "yosys":
        key = _config_key(sources, node.name, json.dumps(["synth", job["family"], limit,
                                                          tools["yosys"]]))
        path = so_dir / "synth_cache" / f"{key}.json"

        def synth_once():
            hit = _cached(path, key, SynthResult)
            if hit is not None:
                return hit, json.loads(path.read_text(encoding="utf-8")).get("_layer"), True
            if job["family"] is None:
                return SynthResult(status="unavailable", reason=job["family_error"]), None, False
            _progress(so_dir, f"Yosys synth_xilinx {node.name} ...")
            res = synthesize(files, top, job["family"], hdl, limit, incs,
                             blackbox_primitives=is_mvau, scope=scope)
            _store(path, key, res, layer=node.name)
            return res, node.name, False
        (op.synth, owner, hit), _ = _once(f"synth {key}", synth_once)
        op.cached = hit
        if owner not in (None, node.name):
            op.synth_from = owner
    if job["sim"] == "verilator":
        if is_mvau and not streamed:
            op.note = ("not simulated: its weights come from outside the layer (mem_mode "
                       f"{inst.get_nodeattr('mem_mode')}); the testbench drives one input "
                       "stream")
            return op
        missing = missing_tools()
        if missing:  # checked before the cache: the record says what this machine lacks
            op.sim = SimResult(status="unavailable", reason="cannot run Verilator: missing " +
                               ", ".join(missing))
            return op
        with _LOCK:
            ctx = tensors()
            if ctx is not None:
                in_words, exp_words = stream_io(node, inst, intf, ctx)
        if ctx is None:
            op.sim = SimResult(status="failed", reason="FINN's Python execution of the graph "
                               "failed, so there is no input stream to simulate")
            return op
        key = _hash_files(sources, json.dumps([limit, tools["verilator"], in_words, exp_words]))
        op.sim = _cached(d / "sim.json", key, SimResult)
        if op.sim is not None:
            op.cached = True
            return op
        bkey = _config_key(sources, node.name, json.dumps(["sim", tools["verilator"]]),
                           data=False)
        bin_dir = so_dir / "verilator_bin" / bkey

        def build_once():
            if (bin_dir / "sim").is_file() and (bin_dir / "layer").is_file():
                return bin_dir / "sim", None, (bin_dir / "layer").read_text(encoding="utf-8")
            _progress(so_dir, f"Verilator {node.name} ...")
            t0 = time.perf_counter()
            binary, failed = build(files, top, intf, hdl, limit, incs,
                                   runtime_cache=so_dir / "verilator_runtime")
            if failed is not None:
                return None, failed, node.name
            bin_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(binary, bin_dir / "sim")
            (bin_dir / "layer").write_text(node.name, encoding="utf-8")
            shutil.rmtree(hdl / "obj", ignore_errors=True)  # objects: ~3 MB a layer, not needed
            return bin_dir / "sim", round(time.perf_counter() - t0, 2), node.name
        (binary, built, owner), _ = _once(f"sim {bkey}", build_once)
        if isinstance(built, SimResult):  # the build failed (for every layer of this RTL)
            op.sim = built
        else:
            if owner != node.name:
                op.simulator_from = owner
                _alias_parameter_files(hdl, node.name, owner)
            # FINN expects no cycle count for some layers (FIFOs, width converters: 0)
            op.sim = run_streams(binary, intf, hdl, in_words, exp_words, limit,
                                 max_cycles=20 * max(1, op.finn_exp_cycles,
                                                     *map(len, in_words + exp_words)) + 100_000,
                                 compare_bits=[int(inst.get_outstream_width(k))
                                               for k in range(len(exp_words))])
            if isinstance(built, float) and owner == node.name:
                op.sim.build_s = built
        _store(d / "sim.json", key, op.sim)
    return op


def stream_io(node, inst, intf: dict, ctx: dict) -> tuple[list[list[int]], list[list[int]]]:
    """The words of every input and output stream of a layer (its `intf` s_axis / m_axis,
    FINN's names `in<i>_V` / `out<i>_V`: node input / output i) for the tensors in `ctx`."""
    def index(name: str) -> int:
        m = re.fullmatch(r"(?:in|out)(\d+)_V", name)
        if m is None:
            raise ValueError(f"{node.name}: stream {name} is not named as FINN names them")
        return int(m.group(1))
    ins = [_stream_words(inst, ctx[node.input[index(n)]], out=False, ind=index(n))[0]
           for n, _ in intf["s_axis"]]
    outs = [_stream_words(inst, ctx[node.output[index(n)]], out=True, ind=index(n))[0]
            for n, _ in intf["m_axis"]]
    return ins, outs


def _alias_parameter_files(hdl: Path, name: str, owner: str) -> None:
    """A simulator compiled for layer `owner` reads its parameter files ($readmemh) under
    `owner`'s names: give it this layer's own files under those names."""
    own = re.compile(re.escape(name) + r"(?![0-9])")
    for p in list(hdl.iterdir()):
        if p.is_file() and p.suffix not in _HDL_SUFFIXES and own.search(p.name):
            shutil.copyfile(p, hdl / own.sub(owner, p.name))


def _cached(path: Path, key: str, cls):
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("_layer", None)
        if data.pop("_key", None) == key:
            return cls.model_validate(data)
    return None


def _store(path: Path, key: str, result, layer: str | None = None) -> None:
    if result.status in ("timeout", "unavailable"):  # may work next time
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".part{threading.get_ident()}")
    tmp.write_text(json.dumps({**result.model_dump(mode="json"), "_key": key, "_layer": layer}),
                   encoding="utf-8")
    os.replace(tmp, path)


def run_child(job: dict) -> int:
    from . import finn_compat
    from .rtlsim_verilator import SOURCE as SIM_SOURCE, verilator_version
    from .synth_yosys import yosys_version

    t0 = time.time()
    work = Path(job["work"])
    so_dir = work / "second_opinion"
    finn_compat.activate()
    from qonnx.core.modelwrapper import ModelWrapper

    getHWCustomOp = finn_compat.builder().getHWCustomOp
    folded = ModelWrapper(str(work / "finn" / "intermediate_models" /
                              "step_fpgaslim_layer_table.onnx"))
    res = json.loads((work / "finn" / "report" / "estimate_layer_resources.json")
                     .read_text(encoding="utf-8"))
    finn_res = {k: {r: float(v.get(r, 0)) for r in ("LUT", "BRAM_18K", "DSP")}
                for k, v in res.items() if isinstance(v, dict)}
    stitch_note = None
    try:
        model, inserted = _with_stitching_nodes(folded, job["part"])
    except Exception as exc:  # noqa: BLE001  (a second opinion never fails a build)
        model, inserted = folded, {}
        stitch_note = (f"FINN's InsertDWC/InsertFIFO failed on this graph, so its width "
                       f"converters and FIFOs have no second opinion: {exc}"[:300])
    for node in model.graph.node:  # FINN's estimate of the inserted nodes, by FINN's functions
        if node.name in inserted:
            est = getHWCustomOp(node).node_res_estimation(job["part"])
            finn_res[node.name] = {r: float(est.get(r, 0)) for r in ("LUT", "BRAM_18K", "DSP")}
    tools = {"yosys": yosys_version() if job["synth"] == "yosys" else None,
             "verilator": verilator_version() if job["sim"] == "verilator" else None}
    memo: dict = {}

    def tensors() -> dict | None:
        """The graph's tensors on the verification image, computed once and only when a
        layer that is not cached needs its input stream."""
        if "ctx" not in memo:
            memo["ctx"] = None
            try:
                ctx = _node_inputs(work, folded, finn_compat.to_python_exec(folded))
                _pass_through(ctx, [n for n in model.graph.node if n.name in inserted])
            except Exception as exc:  # noqa: BLE001  (a second opinion never fails a build)
                memo["note"] = f"FINN's Python execution for the input streams failed: {exc}"
            else:
                memo["ctx"] = ctx
        return memo["ctx"]
    nodes = list(model.graph.node)
    done = [0]

    def one(node) -> LayerOpinion:
        inst = getHWCustomOp(node)
        try:
            op = _layer(node, model, inst, job, so_dir, tensors, finn_res, tools)
        except Exception as exc:  # noqa: BLE001  (FINN's code generation for one layer)
            op = LayerOpinion(name=node.name, op_type=node.op_type,
                              note=f"FINN could not generate this layer's RTL: "
                                   f"{type(exc).__name__}: {exc}"[:400])
        op.inserted = inserted.get(node.name)
        with _LOCK:
            done[0] += 1
            _progress(so_dir, f"[{done[0]}/{len(nodes)}] {_summary(op)}")
            if (so_dir / node.name).is_dir():  # for a child stopped at its overall limit
                (so_dir / node.name / "opinion.json").write_text(op.model_dump_json(),
                                                                  encoding="utf-8")
        return op

    # the work is in Yosys / Verilator child processes: run as many layers at once as there
    # are cores (at most 2 by default: the machines this targets are shared 2-core boxes)
    jobs = int(os.environ.get("FPGASLIM_SECOND_OPINION_JOBS", min(2, os.cpu_count() or 1)))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        layers = list(pool.map(one, nodes))
    rec = SecondOpinion(
        recipe=CACHE_VERSION, synth=job["synth"] if job["synth"] != "none" else None,
        sim=job["sim"] if job["sim"] != "none" else None, family=job["family"],
        sim_source=SIM_SOURCE if job["sim"] != "none" else None, tools=tools,
        layer_timeout_s=job["layer_timeout_s"], layers=layers,
        rtl_layers=sum(1 for n in nodes if n.domain.endswith(".rtl")),
        inserted_layers=sum(1 for n in nodes if n.domain.endswith(".rtl") and n.name in inserted),
        synthesized=sum(1 for x in layers if x.synth and x.synth.status == "ok"),
        simulated_bit_exact=sum(1 for x in layers if x.sim and x.sim.bit_exact),
        seconds=round(time.time() - t0, 2),
        note="; ".join(n for n in (stitch_note, memo.get("note")) if n) or None)
    tmp = so_dir / "second_opinion.json.part"
    tmp.write_text(rec.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, so_dir / "second_opinion.json")
    return 0


def _summary(op: LayerOpinion) -> str:
    parts = [op.name]
    if op.synth is not None:
        parts.append(f"{op.synth.LUT} LUT (Yosys)" if op.synth.status == "ok"
                     else f"synth {op.synth.status}")
    if op.sim is not None:
        parts.append(f"{op.sim.cycles} cycles, bit-exact" if op.sim.bit_exact
                     else f"sim {op.sim.status}")
    if op.note and op.synth is None and op.sim is None:
        parts.append(op.note)
    return (": ".join([parts[0], ", ".join(parts[1:])]) + (" (cached)" if op.cached else "")
            + (f" (synthesis of {op.synth_from})" if op.synth_from else "")
            + (f" (simulator of {op.simulator_from})" if op.simulator_from else ""))


def main() -> int:
    return run_child(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))


if __name__ == "__main__":
    sys.exit(main())


def render_second_opinion(so: SecondOpinion):
    """A rich table: per layer FINN's estimate beside Yosys's counts and Verilator's cycles."""
    from rich.table import Table

    caption = (f"Yosys: {so.synth_source} ({so.tools.get('yosys')}, -family {so.family}); "
               f"Verilator: {so.sim_source} ({so.tools.get('verilator')}); FINN: estimates and "
               "get_exp_cycles()" + (f". {so.note}" if so.note else ""))
    stitched = (f", {so.inserted_layers} of them width converters and FIFOs of FINN's "
                "stitching" if so.inserted_layers else "")
    t = Table(title=f"Second opinion on {so.rtl_layers} RTL layers{stitched} "
              f"({so.synthesized} synthesized, {so.simulated_bit_exact} simulated bit-exact)",
              caption=caption)
    for col in ("layer", "FINN LUT (est.)", "Yosys LUT", "FF", "BRAM_18K Yosys (FINN est.)",
                "DSP Yosys (FINN est.)", "FINN cycles (exp.)", "Verilator cycles", "bit-exact",
                "note"):
        t.add_column(col, overflow="fold")
    for x in so.layers:
        s, m = x.synth, x.sim
        ok = s is not None and s.status == "ok"
        notes = [n for n in (x.note, None if s is None or ok else s.reason,
                             None if m is None or m.bit_exact else m.reason) if n]
        if ok and s.scope != "whole layer":
            notes.append(s.scope)
        if x.synth_from:
            notes.append(f"same RTL as {x.synth_from}: synthesized once")
        if x.inserted:
            notes.insert(0, x.inserted)
        t.add_row(x.name, "" if x.finn_LUT is None else f"{x.finn_LUT:,.0f}",
                  f"{s.LUT:,}" if ok else "", f"{s.FF:,}" if ok else "",
                  _beside(s.BRAM_18K if ok else None, x.finn_BRAM_18K),
                  _beside(s.DSP if ok else None, x.finn_DSP),
                  "" if x.finn_exp_cycles is None else f"{x.finn_exp_cycles:,}",
                  f"{m.cycles:,}" if m is not None and m.cycles is not None else "",
                  "" if m is None or m.bit_exact is None else ("yes" if m.bit_exact else "NO"),
                  "; ".join(notes)[:160])
    return t


def _beside(yosys: int | None, finn: float | None) -> str:
    """'2 (1)': Yosys's count, FINN's estimate in brackets."""
    est = "" if finn is None else f"({finn:,.0f})"
    return " ".join(x for x in ("" if yosys is None else f"{yosys:,}", est) if x)


def tool_status(env=None) -> dict[str, str | None]:
    """What `--synth yosys` / `--sim verilator` find here: tool -> version and/or path, None
    when missing (`fpgaslim doctor` lists these)."""
    import shutil as _sh

    from .rtlsim_verilator import verilator_root, verilator_version
    from .synth_yosys import yosys_command, yosys_version

    path = (env or os.environ).get("PATH", "")
    ycmd = yosys_command()
    vroot = verilator_root()
    out: dict[str, str | None] = {
        "yosys": f"{yosys_version()} ({ycmd[0]})" if ycmd else None,
        "verilator": f"{verilator_version()} ({vroot})" if vroot else None}
    for tool in ("perl", "g++", "make"):
        out[tool] = _sh.which(tool, path=path)
    return out
