"""(child) Simulate a folded dataflow graph as one stitched design, size its FIFOs, confirm.

`simulate_graph` is the whole recipe on one graph and its input frames:
  1. the expected output of every frame from FINN's Python execution of the same graph
     (hw/fast_exec.py on the graph's generic ops, as `fpgaslim verify` runs it);
  2. the stitched design with every FIFO one frame of its stream deep (no FIFO can limit a
     feed-forward pipeline), compiled once (hw/sim/testbench.py), run on all frames back to
     back: outputs compared bit for bit, cycles, per-FIFO maximum occupancy, stalls;
  3. FIFO sizing: a FIFO upstream of the bottleneck fills to whatever depth it has (backlog,
     not need), so the deep run's maximum occupancy (+ 1, finn-plus's rule) is an upper bound;
     on the same compiled design, through the top's FIFO gates (no recompile), every FIFO is
     tried at finn-plus's floor of 32 words and the ones that were full in front of a blocked
     layer doubled until the deep run's throughput is kept without deadlock
     (`search_capacities`); each FIFO's depth is then that capacity rounded to a depth
     finn-plus's own FIFO sizing would choose (hw/sim/sizing.py);
  4. the design rebuilt with those depths (real FIFOs of that depth, no gates closed) and run
     again: no throughput lost and no deadlock, or the record says so.
`depths` forces depths instead (a FIFO name -> depth, for a run that must not be sized, e.g.
a skip path made too shallow on purpose).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..rtlsim_verilator import pack_words
from . import sizing, stitch, testbench
from .records import Deadlock, FifoDepth, LayerStalls, SimRun


def pack_stream(inst: Any, values: np.ndarray, out: bool) -> list[int]:
    """Frames of a graph input/output tensor (N, ...) as the stream words FINN's hardware
    moves: folded shape's last dimension per word, element 0 in the low bits."""
    shape = inst.get_folded_output_shape() if out else inst.get_folded_input_shape()
    dt = inst.get_output_datatype() if out else inst.get_input_datatype()
    width = inst.get_outstream_width_padded() if out else inst.get_instream_width_padded()
    arr = np.asarray(values).reshape(-1, int(shape[-1]))
    if dt.name == "FLOAT32":  # IEEE-754 bit patterns (e.g. the output scale's product)
        return pack_words(arr.astype(np.float32).view(np.uint32).astype(np.int64), 32, False,
                          width)
    if dt.name == "BIPOLAR":
        arr = (arr + 1) // 2
    return pack_words(np.rint(arr).astype(np.int64), dt.bitwidth(), dt.signed(), width)


def finn_performance(folded: Any) -> dict:
    """FINN's own estimate of the graph: max_cycles (its bottleneck), max_cycles_node_name,
    critical_path_cycles (finn.analysis dataflow_performance after AnnotateCycles)."""
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    return folded.transform(AnnotateCycles()).analysis(dataflow_performance)


def expected_outputs(folded: Any, x: np.ndarray) -> np.ndarray:
    """The graph's output for the partition inputs `x`, from FINN's Python execution."""
    from .. import fast_exec
    from ..finn_compat import to_python_exec

    child = to_python_exec(folded)
    got = fast_exec.run_child(child, x.astype(np.float32), keep=set())
    return got[child.graph.output[0].name]


def simulate_graph(folded: Any, x: np.ndarray, part: str, clock_ns: float, work: Path, *,
                   time_limit_s: float = 600.0, size_fifos: bool = True,
                   depths: dict[str, int] | None = None, ready_permille: int = 1000,
                   synth_family: str | None = None, jobs: int = 1,
                   progress=lambda msg: None) -> dict:
    """Run the recipe above; returns {"runs": [SimRun...], "fifo_depths", "sides",
    "fifo_cost", "layers", "rtl_layers", "perf"}. Raises stitch.StitchError for a graph that
    cannot be stitched (a node without RTL, ...) and FileNotFoundError without Verilator."""
    t_end = time.monotonic() + time_limit_s
    rtl, other = stitch.hw_layers(folded)
    if other:
        raise stitch.StitchError("no RTL for " + ", ".join(
            f"{n.name} ({n.op_type})" for n in folded.graph.node if n.name in other))
    perf = finn_performance(folded)
    frames = int(x.shape[0])
    progress(f"FINN's Python execution of {frames} frames ...")
    y = expected_outputs(folded, x)
    folded_names = {n.name for n in folded.graph.node}
    runs: list[SimRun] = []
    deep = stitch.stitched_graph(folded, part, default_depth="frame")
    if depths:
        deep = _force_depths(deep, depths)
    design = _Design(deep, "forced FIFO depths" if depths else "deep FIFOs", x, y, part,
                     clock_ns, work, perf, ready_permille, t_end, jobs, progress)
    run = design.run("forced FIFO depths" if depths else "deep FIFOs")
    runs.append(run)
    graph = deep
    sides = stitch.fifo_sides(graph, folded_names)
    sized: dict[str, int] = {}
    trials: list[SimRun] = []
    cost = []
    if size_fifos and not depths and run.status == "done":
        caps, trials = search_capacities(design, run, progress)
        sized = {f.name: sizing.allowed_depth(caps[f.name], f.width) for f in run.fifos}
        by_side = {side: d for name, d in sized.items() for side in sides[name]}
        graph2 = stitch.stitched_graph(folded, part, depths=by_side, default_depth=2)
        got = {n.name: _depth(n) for n in graph2.graph.node
               if n.op_type.startswith(stitch.FIFO_OP)}
        if got != sized:
            raise RuntimeError(f"FINN's InsertFIFO did not reproduce the sized depths: {got} "
                               f"!= {sized}")
        confirm = _Design(graph2, "sized FIFOs", x, y, part, clock_ns, work, perf,
                          ready_permille, t_end, jobs, progress)
        runs.append(confirm.run("sized FIFOs"))
        progress("FINN's estimate and Yosys on the sized FIFOs ...")
        cost = sizing.fifo_cost(graph2, part, work / "fifo_synth", synth_family,
                                min(300.0, max(10.0, t_end - time.monotonic() - 10)))
    return {"runs": runs, "trials": trials,
            "fifo_depths": sized or {f.name: f.depth for f in run.fifos},
            "sides": {k: [list(s) for s in v] for k, v in sides.items()},
            "fifo_cost": cost, "layers": len(graph.graph.node), "rtl_layers": sum(
                1 for n in graph.graph.node if n.domain.endswith(".rtl")), "perf": perf,
            "frames": frames}


def _depth(node: Any) -> int:
    from qonnx.custom_op.registry import getCustomOp

    return int(getCustomOp(node).get_nodeattr("depth"))


def _force_depths(model: Any, depths: dict[str, int]) -> Any:
    from qonnx.custom_op.registry import getCustomOp

    names = {n.name for n in model.graph.node if n.op_type.startswith(stitch.FIFO_OP)}
    unknown = sorted(set(depths) - names)
    if unknown:
        raise stitch.StitchError(f"no FIFO {unknown[0]} in the stitched design; its FIFOs: "
                                 + ", ".join(sorted(names)))
    for n in model.graph.node:
        if n.name in depths:
            getCustomOp(n).set_nodeattr("depth", max(2, int(depths[n.name])))
    return model


class _Design:
    """One compiled stitched design and everything a run of it needs."""

    def __init__(self, graph: Any, label: str, x: np.ndarray, y: np.ndarray, part: str,
                 clock_ns: float, work: Path, perf: dict, ready_permille: int, t_end: float,
                 jobs: int, progress) -> None:
        from qonnx.custom_op.registry import getCustomOp

        hdl = work / "hdl"
        progress(f"{label}: FINN's RTL of {len(graph.graph.node)} nodes and the top module ...")
        files, streams, units = stitch.generate(graph, part, clock_ns, hdl)
        first = getCustomOp(graph.find_consumer(graph.graph.input[0].name))
        last = getCustomOp(graph.find_producer(graph.graph.output[0].name))
        self.in_words = pack_stream(first, x, out=False)
        self.exp_words = pack_stream(last, y, out=True)
        self.frames = int(x.shape[0])
        self.data_bits = int(last.get_outstream_width())
        self.s_in = next(s for s in streams if s.producer is None)
        self.s_out = next(s for s in streams if s.consumer is None)
        self.graph, self.streams, self.work, self.t_end = graph, streams, work, t_end
        self.ready_permille, self.progress = ready_permille, progress
        self.fifo_nodes = [n for n in graph.graph.node if n.op_type.startswith(stitch.FIFO_OP)]
        self.node_streams = [([s.index for s in streams if s.consumer == n.name],
                              [s.index for s in streams if s.producer == n.name])
                             for n in graph.graph.node]
        self.fifo_pairs = [(next(s.index for s in streams if s.consumer == n.name),
                            next(s.index for s in streams if s.producer == n.name))
                           for n in self.fifo_nodes]
        est, crit = int(perf["max_cycles"]), int(perf["critical_path_cycles"])
        self.idle = 10 * (crit + est) + 10_000  # no output this long: a deadlock
        self.max_cycles = 50 * (crit + self.frames * est) + 1_000_000
        progress(f"{label}: Verilator compile ...")
        incs = sorted({hdl / u.name for u in units})
        self.built = testbench.build(files, incs, self.s_in.width, self.s_out.width,
                                     len(streams), len(self.fifo_nodes), work / "verilator",
                                     work / "verilator_bin",
                                     max(30.0, t_end - time.monotonic()), jobs=jobs,
                                     data_dir=hdl)

    def run(self, label: str, caps: list[int] | None = None) -> SimRun:
        self.progress(f"{label}: simulating {self.frames} frames ...")
        res = testbench.run(Path(self.built.binary), self.work / "run", self.in_words,
                            self.s_in.width, self.s_out.width, len(self.exp_words),
                            len(self.in_words) // self.frames,
                            len(self.exp_words) // self.frames, self.fifo_pairs,
                            self.node_streams, len(self.streams), self.idle, self.max_cycles,
                            max(5.0, self.t_end - time.monotonic()), self.ready_permille, caps)
        rec = _analyse(res, label, self.frames, self.exp_words, self.data_bits, self.graph,
                       self.streams, self.fifo_nodes, self.fifo_pairs, self.idle, caps)
        rec.compile_s, rec.compiled = self.built.compile_s, not self.built.cached
        return rec


def search_capacities(design: _Design, deep: SimRun, progress, max_rounds: int = 12
                      ) -> tuple[dict[str, int], list[SimRun]]:
    """The smallest FIFO capacities (at least finn-plus's floor of 32 words) that keep the
    deep run's throughput without deadlock, tried on the compiled deep design through its
    FIFO gates: every FIFO starts at min(32, what it held + 1); after a run that loses
    throughput or stops, each FIFO that was full while the layer feeding it was blocked has
    its capacity doubled (at most to what it held with deep FIFOs, + 1). Returns (FIFO ->
    capacity, the trial runs); the deep occupancies + 1 when no round keeps the throughput."""
    names = [f.name for f in deep.fifos]
    top = {f.name: f.max_occupancy + 1 for f in deep.fifos}
    caps = {n: min(32, top[n]) for n in names}
    trials = []
    target = deep.cycles_per_frame or 0.0
    for k in range(max_rounds):
        run = design.run(f"capacity search, round {k + 1}", [caps[n] for n in names])
        trials.append(run)
        if run.status == "done" and run.outputs_exact and run.cycles_per_frame is not None \
                and run.cycles_per_frame <= target * 1.01 + 1:
            return caps, trials
        blocked = {x.name for x in run.layers if x.output_blocked > 0}
        grow = [f.name for f in run.fifos if f.max_occupancy >= caps[f.name] and
                f.producer in blocked and caps[f.name] < top[f.name]]
        if not grow:
            break
        for n in grow:
            caps[n] = min(top[n], 2 * caps[n])
        progress(f"capacity search: {len(grow)} FIFO(s) grown: {', '.join(grow[:6])}")
    return top, trials


def _analyse(res: testbench.RunResult, label: str, frames: int, exp_words: list[int],
             data_bits: int, graph: Any, streams: list, fifo_nodes: list,
             fifo_pairs: list, idle: int, caps: list[int] | None = None) -> SimRun:
    from qonnx.custom_op.registry import getCustomOp

    done = [c for c in res.frame_out_done if c >= 0]
    rec = SimRun(label=label, status=res.status, frames=frames, frames_done=len(done),
                 cycles=res.cycles, words_expected=len(exp_words), words_out=res.words_out,
                 sim_s=res.sim_s, reason=res.reason)
    if res.status == "failed":
        return rec
    mask = (1 << data_bits) - 1
    bad = sum(1 for a, b in zip(res.out_words, exp_words) if (a & mask) != (b & mask))
    rec.mismatched_words = bad + abs(len(exp_words) - len(res.out_words))
    rec.outputs_exact = rec.mismatched_words == 0 and res.status == "done"
    if len(done) >= 2:
        rec.cycles_per_frame = round((done[-1] - done[0]) / (len(done) - 1), 2)
    if done and res.frame_in_start and res.frame_in_start[0] >= 0:
        rec.latency_cycles = done[0] - res.frame_in_start[0]
    win, nwin = _window_counts(res, len(done))
    for f, (n, (a, b)) in enumerate(zip(fifo_nodes, fifo_pairs)):
        inst = getCustomOp(n)
        depth = int(inst.get_nodeattr("depth"))
        rec.fifos.append(FifoDepth(
            name=n.name, producer=streams[a].producer, consumer=streams[b].consumer,
            width=int(inst.get_instream_width_padded()),
            depth=min(depth, caps[f]) if caps and caps[f] > 0 else depth,
            max_occupancy=res.fifo_max[f]))
    for k, n in enumerate(graph.graph.node):
        inst = getCustomOp(n)
        outs = [s.index for s in streams if s.producer == n.name]
        inserted = n.op_type.startswith((stitch.FIFO_OP, stitch.DWC_OP))
        rec.layers.append(LayerStalls(
            name=n.name, op_type=n.op_type, inserted=inserted,
            finn_cycles=None if inserted else int(inst.get_exp_cycles()),
            words_out=sum(win[j].words for j in outs),
            input_starved=nwin[k][0], output_blocked=nwin[k][1]))
    real = [x for x in rec.layers if not x.inserted]
    if real and len(done) >= 2:
        rec.bottleneck = min(real, key=lambda x: (x.input_starved + x.output_blocked,
                                                  -(x.finn_cycles or 0))).name
    if res.status == "deadlock":
        rec.deadlock = _deadlock(res, rec, streams, idle)
    elif res.status != "done":
        rec.reason = rec.reason or {
            "cycle_limit": f"stopped at the cycle limit ({res.cycles:,} cycles) with "
                           f"{res.words_out} of {len(exp_words)} output words",
            "timeout": f"stopped at the time limit after {res.sim_s:g} s and {res.cycles:,} "
                       f"cycles ({res.words_out} of {len(exp_words)} output words)"}.get(
            res.status)
    return rec


def _window_counts(res: testbench.RunResult, n_done: int):
    """Per stream and per node (starved, blocked): the counters between the first and the last
    completed output frame (the steady state), or over the whole run with fewer than two
    frames done."""
    if n_done < 2:
        return res.streams, list(zip(res.node_starved, res.node_blocked))
    a, b = res.snapshots[0], res.snapshots[n_done - 1]
    streams = [testbench.StreamCounts(words=y.words - x.words, blocked=y.blocked - x.blocked,
                                      empty=y.empty - x.empty) for x, y in zip(a, b)]
    na, nb = res.node_snapshots[0], res.node_snapshots[n_done - 1]
    return streams, [(y[0] - x[0], y[1] - x[1]) for x, y in zip(na, nb)]


def _deadlock(res: testbench.RunResult, rec: SimRun, streams: list, idle: int) -> Deadlock:
    full = [f.name for f, now in zip(rec.fifos, res.fifo_now) if now >= f.depth]
    # a node waits on its output when one of its output streams offers a word that is not
    # taken; on its input when it is ready on an input stream that offers nothing
    out_wait = sorted({s.producer for s in streams if s.producer and
                       res.valid_now[s.index] and not res.ready_now[s.index]})
    in_wait = sorted({s.consumer for s in streams if s.consumer and
                      res.ready_now[s.index] and not res.valid_now[s.index]} - set(out_wait))
    sink = next(s for s in streams if s.consumer is None)
    why = ("the output is never taken (backpressure from the sink)"
           if res.valid_now[sink.index] and not res.ready_now[sink.index] else
           "the design stopped producing output")
    msg = (f"deadlock: no output word for {idle:,} cycles (far longer than a frame) at cycle "
           f"{res.cycles:,}, {res.words_out} output words produced; {why}. Full FIFOs: "
           f"{', '.join(full) or 'none'}; layers waiting on their output: "
           f"{', '.join(out_wait) or 'none'}; waiting on their input: "
           f"{', '.join(in_wait) or 'none'}")
    return Deadlock(cycle=res.cycles, idle_cycles=idle, full_fifos=full,
                    waiting_on_output=out_wait, waiting_on_input=in_wait, message=msg)
