"""The full-flow (bitfile / xclbin) build: its FINN configuration for a Zynq and an Alveo board,
resolved by finn-plus itself, and the refusal to start without Vivado."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fpgaslim.core.errors import ToolMissingError, UnknownNameError
from fpgaslim.hw import finn_compat
from fpgaslim.hw.build import BuildSettings
from fpgaslim.hw.bitfile import (HARDWARE_STEPS, bitfile_config, bitfile_job, build_bitfile,
                                 require_tools, resolve_board)
from fpgaslim.hw.postsynth import parse_wns, read_post_synth
from fpgaslim.hw.toolchain import Flow

NO_TOOLS = {"PATH": "/usr/bin:/bin"}


def test_board_names() -> None:
    assert resolve_board("pynq-z1") == ("Pynq-Z1", "vivado_zynq")
    assert resolve_board("PYNQ_Z2") == ("Pynq-Z2", "vivado_zynq")
    assert resolve_board("Alveo U250") == ("U250", "vitis_alveo")
    assert resolve_board({"finn_board": "ZCU104", "shell_flow": "vivado_zynq"})[0] == "ZCU104"
    with pytest.raises(UnknownNameError, match="pynq-z1"):
        resolve_board("pynq-z9")


def test_config_records(tmp_path: Path) -> None:
    z = bitfile_config("pynq-z1", tmp_path / "z", target_fps=5000, clock_ns=8.0)
    assert (z.shell_flow, z.flow) == ("vivado_zynq", Flow.ZYNQ_BITFILE)
    assert z.hardware_steps == HARDWARE_STEPS
    hw = z.hardware_steps
    assert hw.index("step_generate_hardware") < hw.index("step_create_stitched_ip") < hw.index(
        "step_synthesize_bitfile") < hw.index("step_make_driver") < hw.index(
        "step_deployment_package")
    assert {"stitched_ip", "bitfile", "pynq_driver", "deployment_package"} <= set(
        z.generate_outputs)
    assert z.auto_fifo_depths and z.synth_clk_period_ns == 8.0
    assert z.expected_files["hwh"] == "bitfile/finn-accel.hwh"
    a = bitfile_config("U250", tmp_path / "a", target_fps=5000)
    assert (a.shell_flow, a.flow) == ("vitis_alveo", Flow.ALVEO_XCLBIN)
    assert a.expected_files["xclbin"].endswith(".xclbin")
    assert json.loads(a.model_dump_json())["hardware_steps"] == HARDWARE_STEPS  # plain JSON


def test_finn_resolves_both_configs(tmp_path: Path) -> None:
    """finn-plus builds its DataflowBuildConfig from ours (dry run in a build child): the
    Zynq shell and part for Pynq-Z1, the Vitis platform and Alveo driver for U250; the steps
    are the estimate build's own (FINN's estimate preset plus fpgaslim's steps, in FINN's
    order) followed by FINN's hardware steps."""
    jobs = []
    for board in ("pynq-z1", "u250"):
        cfg = bitfile_config(board, tmp_path / board, target_fps=5000)
        job = tmp_path / f"{board}.json"
        job.write_text(bitfile_job(cfg, "unused").model_dump_json())  # the build child's job
        jobs.append(str(job))
    env = finn_compat.child_environment(tmp_path / "finn_env")
    proc = subprocess.run([sys.executable, "-m", "fpgaslim.hw.worker", "--dry-run", *jobs],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    z = json.loads((tmp_path / "pynq-z1" / "bitfile_config_resolved.json").read_text())
    a = json.loads((tmp_path / "u250" / "bitfile_config_resolved.json").read_text())
    assert z["shell_flow_type"] == "vivado_zynq" and z["fpga_part"] == "xc7z020clg400-1"
    assert z["driver_platform"] == "zynq-iodma" and z["vitis_platform"] is None
    finn_estimate = ["step_qonnx_to_finn", "step_tidy_up", "step_convert_to_hw",
                     "step_create_dataflow_partition", "step_specialize_layers",
                     "step_target_fps_parallelization", "step_apply_folding_config",
                     "step_minimize_bit_width", "step_generate_estimate_reports"]
    for steps in (z["steps"], a["steps"]):
        assert steps[-len(HARDWARE_STEPS):] == HARDWARE_STEPS
        est = steps[:-len(HARDWARE_STEPS)]
        assert [s for s in est if s in finn_estimate] == finn_estimate
        assert all(s in finn_estimate or s.startswith("step_fpgaslim_") or
                   s == "step_minimize_bit_width_initial" for s in est), est
    assert "bitfile" in z["generate_outputs"] and z["auto_fifo_depths"]
    assert a["shell_flow_type"] == "vitis_alveo" and a["driver_platform"] == "alveo"
    assert a["fpga_part"].startswith("xcu250") and a["vitis_platform"].startswith("xilinx_u250")
    assert not (tmp_path / "pynq-z1" / "intermediate_models").exists()  # nothing was built


def test_no_vivado_raises_before_any_work(tmp_path: Path) -> None:
    run = tmp_path / "run"  # no such run, no such variant: the tool check comes first
    for board, words in (("pynq-z1", "cannot build a bitfile for pynq-z1"),
                         ("u250", "cannot build a xclbin for u250")):
        settings = BuildSettings(board=board, target_fps=1000)
        with pytest.raises(ToolMissingError) as exc:
            build_bitfile(run, "baseline", settings, env=NO_TOOLS)
        msg = str(exc.value)
        assert words in msg and "Vivado not found" in msg and "Vitis HLS not found" in msg
        assert "fpgaslim doctor" in msg
    assert "XRT not found" in msg  # the Alveo message names the Alveo tools too
    assert not run.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ToolMissingError, match="XILINX_VIVADO"):
        require_tools(bitfile_config("pynq-z1", tmp_path / "x", target_fps=1), env=NO_TOOLS)


TIMING_RPT = """\
------------------------------------------------------------------------------------------------
| Design Timing Summary
| ---------------------
------------------------------------------------------------------------------------------------

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)
    -------      -------  ---------------------  -------------------      -------      -------
      1.234        0.000                      0                27183        0.021        0.000

All user specified timing constraints are met.
"""


def test_post_synthesis_reports(tmp_path: Path) -> None:
    """FINN's post-synthesis JSON ({instance: resources}, '(top)' = whole design) and Vivado's
    timing summary become one labelled record; none when synthesis did not run."""
    assert read_post_synth(tmp_path, 10.0) is None
    rep = tmp_path / "report"
    rep.mkdir()
    (rep / "post_synth_resources.json").write_text(json.dumps({
        "(top)": {"LUT": 21000, "SRL": 400, "FF": 30000, "BRAM_36K": 20, "BRAM_18K": 5,
                  "DSP": 3},
        "top_axi_interconnect_0_0": {"LUT": 900, "FF": 1200, "BRAM_36K": 0, "BRAM_18K": 0,
                                     "DSP": 0},
        "MVAU_hls_0": {"LUT": 5000, "FF": 6000, "BRAM_36K": 2, "BRAM_18K": 1, "DSP": 0}}))
    (rep / "post_route_timing.rpt").write_text(TIMING_RPT)
    post = read_post_synth(tmp_path, 10.0)
    assert post.total["LUT"] == 21000 and post.bram_18k_equivalent == 45
    assert set(post.layers) == {"MVAU_hls_0"}
    assert post.timing.wns_ns == pytest.approx(1.234) and post.timing.met
    assert post.timing.fmax_mhz == pytest.approx(1000 / (10 - 1.234))
    assert "Vivado post-synthesis" in post.source and "post-route" in post.timing.source
    assert parse_wns(TIMING_RPT.replace("1.234", "-0.512")) == pytest.approx(-0.512)
    assert parse_wns("no table here") is None


def test_cli_bitfile_without_vivado(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fpgaslim build RUN --bitfile`: exit code of ToolMissingError and the doctor's words."""
    from click.testing import CliRunner

    from fpgaslim.cli import main

    for var in ("XILINX_VIVADO", "XILINX_HLS", "XILINX_VITIS", "XILINX_XRT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    res = CliRunner().invoke(main, ["build", str(tmp_path), "--board", "pynq-z1", "--bitfile"])
    assert res.exit_code == ToolMissingError.exit_code, res.output
    assert "Vivado not found" in res.output and "fpgaslim doctor" in res.output
    assert list(tmp_path.iterdir()) == []
