"""One child protocol for estimate and bitfile builds (hw/build_job.py, hw/worker.py), FINN
steps registered by name with presets as lists (hw/build_steps.py), and what a failing build
reports: the step that failed and its message. The bitfile build runs with the real finn-plus
as far as it goes without Vivado: the estimate steps, then FINN's first hardware step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from fpgaslim.core.errors import (ConfigError, FpgaslimError, ToolMissingError,
                                  UnknownNameError, UnsupportedLayerError)
from fpgaslim.hw import build_steps, finn_compat
from fpgaslim.hw.bitfile import bitfile_config, bitfile_job, run_full_flow
from fpgaslim.hw.boards import get_board
from fpgaslim.hw.build_job import BuildJob, failure, run_job

NO_TOOLS = {"PATH": "/usr/bin:/bin"}


def _old_estimate_list(finn_steps: list[str]) -> list[str]:
    """How the estimate step list was derived from FINN's preset before it was a list."""
    names = ["step_fpgaslim_prepare"]
    for s in finn_steps:
        if s == "step_streamline":
            names.append("step_fpgaslim_streamline")
            continue
        if s == "step_apply_folding_config":
            names.append("step_fpgaslim_place_weights")
        names.append(s)
        if s == "step_convert_to_hw":
            names.append("step_fpgaslim_check_mapped")
    return names + ["step_fpgaslim_layer_table"]


def test_presets_are_lists_of_registered_names():
    est = build_steps.preset("estimate")
    assert est == _old_estimate_list(list(finn_compat.FINN_ESTIMATE_STEPS))
    assert build_steps.preset("bitfile") == est + build_steps.HARDWARE
    assert build_steps.HARDWARE == list(finn_compat.HARDWARE_STEPS)
    rtl = build_steps.preset("estimate", prefer_rtl=True)
    assert rtl[rtl.index("step_fpgaslim_prefer_rtl") + 1] == "step_specialize_layers"
    assert [s for s in rtl if s != "step_fpgaslim_prefer_rtl"] == est
    fpgaslim_steps = {s for s in est if s.startswith("step_fpgaslim_")}
    assert fpgaslim_steps <= set(build_steps.STEPS)  # registered by name, FINN-style
    assert build_steps.STEPS["step_qonnx_to_finn"].__name__ == "step_exact_qonnx_to_finn"
    with pytest.raises(UnknownNameError, match="estimate"):
        build_steps.preset("estimates")


def test_job_is_strict_and_round_trips(tmp_path: Path):
    cfg = bitfile_config("u250", tmp_path / "b", target_fps=5000, prefer_rtl=True)
    job = bitfile_job(cfg, tmp_path / "m.onnx")
    assert job.steps == build_steps.preset("bitfile", prefer_rtl=True)
    assert job.board == get_board("u250") and job.hardware.vitis_platform is None
    assert BuildJob.model_validate_json(job.model_dump_json()) == job
    with pytest.raises(ValidationError, match="weight"):
        BuildJob.model_validate({**job.model_dump(), "weight": "onchip"})


def test_narrow_widening_trunc_is_a_transformation():
    """A Trunc to more bits than its input becomes one to the input's bits and scale."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.base import Transformation

    assert issubclass(build_steps.NarrowWideningTrunc, Transformation)
    names = ["x", "scale", "zeropt", "in_bits", "out_scale", "out_bits"]
    node = helper.make_node("Trunc", names, ["y"], domain="qonnx.custom_op.general")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = ModelWrapper(helper.make_model(graph))
    for name, v in zip(names[1:], (0.25, 0.0, 4.0, 1.0, 8.0)):
        model.set_initializer(name, np.array(v, dtype=np.float32))
    new = model.transform(build_steps.NarrowWideningTrunc())
    assert float(new.get_initializer("out_bits")) == 4.0
    assert float(new.get_initializer("out_scale")) == 0.25
    assert float(model.get_initializer("out_bits")) == 8.0  # the input model is unchanged


def _progress(path: Path, step: str, type_: str, message: str) -> Path:
    lines = [{"event": "start", "step": step, "t": 0.0},
             {"event": "error", "step": step, "type": type_, "message": message, "t": 1.0}]
    path.write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    return path


def test_failure_names_the_step_and_keeps_user_error_types(tmp_path: Path):
    log = tmp_path / "child.log"
    err = failure(_progress(tmp_path / "p1", "step_generate_hardware", "FINNUserError",
                            "XILINX_VIVADO was not set"), log, 1, "the zynq-bitfile build")
    assert type(err) is FpgaslimError
    assert str(err).startswith("the zynq-bitfile build failed in step_generate_hardware: "
                               "FINNUserError: XILINX_VIVADO was not set")
    err = failure(_progress(tmp_path / "p2", "step_convert_to_hw", "KeyError", "x"), log, 1)
    assert isinstance(err, UnsupportedLayerError) and "step_convert_to_hw" in str(err)
    err = failure(_progress(tmp_path / "p3", "step_fpgaslim_place_weights", "ConfigError",
                            "folding config f.json: not JSON"), log, 1)
    assert isinstance(err, ConfigError) and "step_fpgaslim_place_weights" in str(err)


@pytest.mark.slow
def test_unknown_step_name_is_reported_by_the_child(tmp_path: Path):
    cfg = bitfile_config("pynq-z1", tmp_path / "b", target_fps=1000)
    job = bitfile_job(cfg, tmp_path / "unused.onnx")
    job = job.model_copy(update={"steps": [*job.steps, "step_synthesise_bitfile"]})
    env = finn_compat.child_environment(tmp_path / "env")
    with pytest.raises(ConfigError, match=r"failed in fpgaslim_finn_config: unknown build "
                                          r"steps \['step_synthesise_bitfile'\]"):
        run_job(job, env, 300, what="the zynq-bitfile build")


@pytest.mark.slow
def test_bitfile_build_without_vivado_fails_in_its_real_step(tmp_path: Path):
    """The tools check skipped: the estimate steps run (the same ones an estimate build
    runs), then FINN's hardware step fails for want of Vivado, and that is what is said."""
    import torch

    from fpgaslim.compress.models import create_model
    from fpgaslim.hw.qonnx_export import export_qonnx

    torch.manual_seed(0)
    onnx = export_qonnx(create_model("cnv", (1, 8, 8), 10, None, 0.25).eval(),
                        tmp_path / "cnv.onnx")
    cfg = bitfile_config("pynq-z1", tmp_path / "bitfile", target_fps=1000)
    with pytest.raises(FpgaslimError) as exc:
        run_full_flow(cfg, onnx, timeout_s=600, env=NO_TOOLS, check_tools=False)
    assert not isinstance(exc.value, (ToolMissingError, UnsupportedLayerError))
    assert str(exc.value).startswith("the zynq-bitfile build failed in step_generate_hardware:")
    assert "XILINX_VIVADO" in str(exc.value)
    done = [json.loads(line) for line in (tmp_path / "bitfile" / "progress.jsonl").open()]
    ended = [e["step"] for e in done if e["event"] == "end"]
    assert ended[1:] == build_steps.preset("estimate") + ["step_assign_ddr_weight_offsets"]
    assert (tmp_path / "bitfile" / "report" / "fpgaslim_layers.json").is_file()


@pytest.mark.slow
def test_bitfile_build_of_a_variant_estimates_then_names_the_failing_step(cnv_run, digits):
    """`fpgaslim build --bitfile` without the tools check: the variant's estimate build and
    report come first (builds/<board>), then the full flow on the same exported QONNX in
    builds/<board>/bitfile, through the same child, failing in FINN's first Vivado step."""
    from fpgaslim.hw.api import BuildSettings, build_dir_for
    from fpgaslim.hw.bitfile import build_bitfile

    settings = BuildSettings(board="pynq-z1", verify_steps=False)
    with pytest.raises(FpgaslimError, match=r"^the zynq-bitfile build failed in "
                                            r"step_generate_hardware: .*XILINX_VIVADO"):
        build_bitfile(cnv_run, "baseline", settings, env=NO_TOOLS, data=digits,
                      timeout_s=600, check_tools=False)
    bdir = build_dir_for(cnv_run, "baseline", settings)
    assert (bdir / "report.json").is_file()  # the estimate build finished first
    job = BuildJob.model_validate_json((bdir / "bitfile" / "job.json").read_text())
    assert job.preset == "bitfile" and job.board == get_board("pynq-z1")
    assert job.onnx == str((cnv_run.variant_dir("baseline")
                            / cnv_run.record("baseline").qonnx).resolve())
    estimate = BuildJob.model_validate_json((bdir / "work" / "job.json").read_text())
    assert job.steps[:len(estimate.steps)] == estimate.steps  # the same estimate steps
