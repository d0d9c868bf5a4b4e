"""A second opinion on FINN's estimates for the RTL layers of a finished estimate build.

For every `*_rtl` node of the folded dataflow graph FINN generates its RTL (`generate_hdl`, no
Vivado needed); `--synth yosys` synthesizes it out of context with Yosys synth_xilinx for the
board's family (hw/synth_yosys.py), `--sim verilator` simulates it on its real input stream
(the node's input tensor from FINN's Python execution of the folded graph on the build's
verification image) and compares its output bit for bit (hw/rtlsim_verilator.py). HLS layers
stay FINN estimates and say so.

It runs in a child process (`python -m fpgaslim.hw.second_opinion job.json`, finn-plus's
process-wide state stays out of the caller) after the estimate build. Each layer has its own
time limit (enforced on every Yosys/Verilator process), the child has an overall one, and
nothing here fails a build: a layer that cannot be synthesized or simulated says why. Results
are cached per layer under `<build work>/second_opinion/<node>/`, keyed by the generated RTL,
the tool versions and the settings, so a rerun does not synthesize again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from .child import kill_group
from .rtlsim_verilator import SimResult
from .synth_yosys import SOURCE as SYNTH_SOURCE, SynthResult

CACHE_VERSION = "fpgaslim-second-opinion/1"
_LOCK = threading.RLock()
HLS_NOTE = "FINN estimate only (HLS layer; needs Vitis HLS)"
MVAU_SCOPE = "compute core only (weights arrive as a stream; the weight memory is not included)"


class LayerOpinion(BaseModel):
    """One HW layer: Yosys's counts and Verilator's run beside FINN's figures."""

    model_config = ConfigDict(extra="forbid")
    name: str
    op_type: str
    finn_LUT: float | None = None
    finn_exp_cycles: int | None = None
    synth: SynthResult | None = None
    sim: SimResult | None = None
    note: str | None = None  # e.g. the HLS note, or why the layer was not simulated
    cached: bool = False


class SecondOpinion(BaseModel):
    """Per-layer Yosys / Verilator figures of one build, with provenance."""

    model_config = ConfigDict(extra="forbid")
    synth: str | None = None  # "yosys" when requested
    sim: str | None = None  # "verilator" when requested
    family: str | None = None
    synth_source: str = SYNTH_SOURCE
    sim_source: str | None = None
    tools: dict[str, str | None] = Field(default_factory=dict)
    layer_timeout_s: float
    layers: list[LayerOpinion]
    rtl_layers: int = 0
    synthesized: int = 0
    simulated_bit_exact: int = 0
    seconds: float = 0.0
    note: str | None = None


def wanted(settings) -> bool:
    return settings.synth != "none" or settings.sim != "none"


def needs_second_opinion(report, settings) -> bool:
    """A saved report lacks (part of) the second opinion the settings ask for."""
    if not wanted(settings):
        return False
    so = report.second_opinion
    return so is None or (settings.synth != "none" and so.synth is None) or (
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
    limit = 120 + n_layers * settings.layer_timeout_s * (1 + (settings.sim != "none"))
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
def _hash_files(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256((CACHE_VERSION + extra).encode())
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


def _stream_words(inst, values, out: bool) -> tuple[list[int], int]:
    from .rtlsim_verilator import pack_words

    shape = inst.get_folded_output_shape() if out else inst.get_folded_input_shape()
    dt = inst.get_output_datatype() if out else inst.get_input_datatype()
    width = inst.get_outstream_width_padded() if out else inst.get_instream_width_padded()
    per_word = int(shape[-1])
    if out and inst.onnx_node.op_type.startswith("ConvolutionInputGenerator") and \
            inst.get_nodeattr("depthwise"):
        # the depthwise SWG interleaves channels in SIMD groups (as FINN's own cppsim of
        # ConvolutionInputGenerator_rtl does): (k, C/SIMD, SIMD) -> (C/SIMD, k, SIMD)
        simd, (kh, kw) = inst.get_nodeattr("SIMD"), inst.get_nodeattr("ConvKernelDim")
        ch = inst.get_nodeattr("IFMChannels")
        lead = values.shape[:-1]
        values = values.reshape(*lead, kh * kw, ch // simd, simd).swapaxes(-3, -2)
    arr = values.reshape(-1, per_word)
    if dt.name == "BIPOLAR":
        arr = (arr + 1) // 2
    return pack_words(arr, dt.bitwidth(), dt.signed(), width), per_word


def _progress(so_dir: Path, message: str) -> None:
    with open(so_dir / "progress.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"t": time.time(), "message": message}) + "\n")


def _layer(node, model, inst, job: dict, so_dir: Path, tensors: Callable[[], dict | None],
           finn_lut: dict, tools: dict) -> LayerOpinion:
    from .rtlsim_verilator import missing_tools, simulate
    from .synth_yosys import synthesize

    op = LayerOpinion(name=node.name, op_type=node.op_type,
                      finn_LUT=finn_lut.get(node.name), finn_exp_cycles=int(inst.get_exp_cycles()))
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
    sources = [Path(f) for f in files] + [p for p in hdl.iterdir() if p.is_file()]
    limit = float(job["layer_timeout_s"])
    is_mvau = node.op_type.startswith(("MVAU", "VVAU"))
    if job["synth"] == "yosys":
        key = _hash_files(sources, json.dumps([job["family"], limit, tools["yosys"]]))
        op.synth = _cached(d / "synth.json", key, SynthResult)
        if op.synth is not None:
            op.cached = True
        elif job["family"] is None:
            op.synth = SynthResult(status="unavailable", reason=job["family_error"])
        else:
            _progress(so_dir, f"Yosys synth_xilinx {node.name} ...")
            op.synth = synthesize(files, top, job["family"], hdl, limit, incs,
                                  blackbox_primitives=is_mvau,
                                  scope=MVAU_SCOPE if is_mvau else "whole layer")
            _store(d / "synth.json", key, op.synth)
    if job["sim"] == "verilator":
        if len(intf["s_axis"]) != 1 or len(intf["m_axis"]) != 1 or is_mvau:
            op.note = ("not simulated: the testbench drives one input stream; this layer also "
                       "takes its weights as a stream" if is_mvau else
                       "not simulated: the testbench drives exactly one input and one output "
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
                in_words, _ = _stream_words(inst, ctx[node.input[0]], out=False)
                exp_words, _ = _stream_words(inst, ctx[node.output[0]], out=True)
        if ctx is None:
            op.sim = SimResult(status="failed", reason="FINN's Python execution of the graph "
                               "failed, so there is no input stream to simulate")
            return op
        key = _hash_files(sources, json.dumps([limit, tools["verilator"], in_words, exp_words]))
        op.sim = _cached(d / "sim.json", key, SimResult)
        if op.sim is not None:
            op.cached = True
        else:
            _progress(so_dir, f"Verilator {node.name} ...")
            # FINN's RTL reads parameter files relative to the working folder: simulate there
            op.sim = simulate(files, top, intf, hdl, in_words, exp_words, limit, incs,
                              max_cycles=20 * max(1, op.finn_exp_cycles) + 100_000,
                              runtime_cache=so_dir / "verilator_runtime")
            _store(d / "sim.json", key, op.sim)
    return op


def _cached(path: Path, key: str, cls):
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("_key", None) == key:
            return cls.model_validate(data)
    return None


def _store(path: Path, key: str, result) -> None:
    if result.status in ("timeout", "unavailable"):  # may work next time
        return
    path.write_text(json.dumps({**result.model_dump(mode="json"), "_key": key}),
                    encoding="utf-8")


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
    model = ModelWrapper(str(work / "finn" / "intermediate_models" /
                             "step_fpgaslim_layer_table.onnx"))
    res = json.loads((work / "finn" / "report" / "estimate_layer_resources.json")
                     .read_text(encoding="utf-8"))
    finn_lut = {k: float(v.get("LUT", 0)) for k, v in res.items() if isinstance(v, dict)}
    tools = {"yosys": yosys_version() if job["synth"] == "yosys" else None,
             "verilator": verilator_version() if job["sim"] == "verilator" else None}
    memo: dict = {}

    def tensors() -> dict | None:
        """The graph's tensors on the verification image, computed once and only when a
        layer that is not cached needs its input stream."""
        if "ctx" not in memo:
            memo["ctx"] = None
            try:
                memo["ctx"] = _node_inputs(work, model, finn_compat.to_python_exec(model))
            except Exception as exc:  # noqa: BLE001  (a second opinion never fails a build)
                memo["note"] = f"FINN's Python execution for the input streams failed: {exc}"
        return memo["ctx"]
    nodes = list(model.graph.node)
    done = [0]

    def one(node) -> LayerOpinion:
        inst = getHWCustomOp(node)
        try:
            op = _layer(node, model, inst, job, so_dir, tensors, finn_lut, tools)
        except Exception as exc:  # noqa: BLE001  (FINN's code generation for one layer)
            op = LayerOpinion(name=node.name, op_type=node.op_type,
                              note=f"FINN could not generate this layer's RTL: "
                                   f"{type(exc).__name__}: {exc}"[:400])
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
        synth=job["synth"] if job["synth"] != "none" else None,
        sim=job["sim"] if job["sim"] != "none" else None, family=job["family"],
        sim_source=SIM_SOURCE if job["sim"] != "none" else None, tools=tools,
        layer_timeout_s=job["layer_timeout_s"], layers=layers,
        rtl_layers=sum(1 for n in nodes if n.domain.endswith(".rtl")),
        synthesized=sum(1 for x in layers if x.synth and x.synth.status == "ok"),
        simulated_bit_exact=sum(1 for x in layers if x.sim and x.sim.bit_exact),
        seconds=round(time.time() - t0, 2), note=memo.get("note"))
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
    return ": ".join([parts[0], ", ".join(parts[1:])]) + (" (cached)" if op.cached else "")


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
    t = Table(title=f"Second opinion on {so.rtl_layers} RTL layers ({so.synthesized} "
              f"synthesized, {so.simulated_bit_exact} simulated bit-exact)", caption=caption)
    for col in ("layer", "FINN LUT (est.)", "Yosys LUT", "FF", "BRAM_18K", "DSP",
                "FINN cycles (exp.)", "Verilator cycles", "bit-exact", "note"):
        t.add_column(col, overflow="fold")
    for x in so.layers:
        s, m = x.synth, x.sim
        ok = s is not None and s.status == "ok"
        notes = [n for n in (x.note, None if s is None or ok else s.reason,
                             None if m is None or m.bit_exact else m.reason) if n]
        if ok and s.scope != "whole layer":
            notes.append(s.scope)
        t.add_row(x.name, "" if x.finn_LUT is None else f"{x.finn_LUT:,.0f}",
                  f"{s.LUT:,}" if ok else "", f"{s.FF:,}" if ok else "",
                  f"{s.BRAM_18K}" if ok else "", f"{s.DSP}" if ok else "",
                  "" if x.finn_exp_cycles is None else f"{x.finn_exp_cycles:,}",
                  f"{m.cycles:,}" if m is not None and m.cycles is not None else "",
                  "" if m is None or m.bit_exact is None else ("yes" if m.bit_exact else "NO"),
                  "; ".join(notes)[:160])
    return t


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
