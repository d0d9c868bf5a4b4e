"""(build child) FINN's DataflowBuildConfig for a BuildJob: the one place it is built.

`FpgaslimBuildConfig` is FINN's config dataclass plus the `fpgaslim_*` fields that
fpgaslim's steps read (hw/build_steps.py): declared fields, so a step never reads an attribute
that nobody set. Estimate and bitfile builds differ only in their step list and the job's
`hardware` options. Imports finn-plus's config module at import time (safe without Vivado);
the steps themselves need `finn_compat.activate()` first (hw/worker.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from finn.builder.build_dataflow_config import DataflowBuildConfig

from . import finn_compat
from .boards import ALVEO
from .build_job import BuildJob

ESTIMATE_OUTPUTS = ["estimate_reports"]


@dataclass
class FpgaslimBuildConfig(DataflowBuildConfig):
    """FINN's build config with what fpgaslim's steps need (see hw/build_steps.py)."""

    fpgaslim_progress: Optional[str] = None  # progress file of the tracked steps
    fpgaslim_weights: str = "onchip"  # step_fpgaslim_place_weights: onchip/external/auto
    fpgaslim_bram_18k: Optional[int] = None  # the board's capacities, for weights "auto"
    fpgaslim_uram: Optional[int] = None
    fpgaslim_folding: Optional[str] = None  # folding-config JSON over the weight placement
    fpgaslim_streamline: str = "fast"  # step_fpgaslim_streamline: fast/stock


def finn_config(job: BuildJob) -> FpgaslimBuildConfig:
    """(child, after finn_compat.activate) The config FINN runs `job` with; its steps are the
    job's names resolved through hw/build_steps' registry (each tracked in the progress
    file), so an estimate build and the estimate part of a bitfile build run the same
    callables on the same settings."""
    from .build_steps import resolve_steps

    fb = finn_compat.builder()
    hw = job.hardware
    extra: dict[str, Any] = {}
    if job.verify_steps:
        extra["verify_steps"] = [fb.VerificationStepType.QONNX_TO_FINN_PYTHON,
                                 fb.VerificationStepType.TIDY_UP_PYTHON,
                                 fb.VerificationStepType.STREAMLINED_PYTHON]
    if job.verify_input_npy and job.verify_expected_npy:
        extra.update(verify_input_npy=job.verify_input_npy,
                     verify_expected_output_npy=job.verify_expected_npy)
    if hw is not None:
        fields = FpgaslimBuildConfig.__dataclass_fields__
        fifo_enum = type(fields["auto_fifo_strategy"].default)  # AutoFIFOSizingMethod
        extra.update(vitis_platform=hw.vitis_platform, auto_fifo_depths=hw.auto_fifo_depths,
                     auto_fifo_strategy=fifo_enum(hw.auto_fifo_strategy))
    outputs = hw.generate_outputs if hw is not None else ESTIMATE_OUTPUTS
    return FpgaslimBuildConfig(
        output_dir=job.finn_dir, synth_clk_period_ns=job.clock_ns, target_fps=job.target_fps,
        mvau_wwidth_max=job.mvau_wwidth_max, board=job.board.finn_board,
        fpga_part=job.fpga_part, shell_flow_type=fb.ShellFlowType(job.board.shell_flow),
        generate_outputs=[fb.DataflowOutputType(o) for o in outputs],
        steps=resolve_steps(job.steps), save_intermediate_models=True,
        start_step=job.start_step, standalone_thresholds=job.prefer_rtl,
        specialize_layers_config_file=job.specialize_config,
        fpgaslim_progress=str(job.progress), fpgaslim_weights=job.weights,
        fpgaslim_bram_18k=job.board.BRAM_18K, fpgaslim_uram=job.board.URAM,
        fpgaslim_folding=job.folding_config, fpgaslim_streamline=job.streamline, **extra)


def describe_finn_config(cfg: DataflowBuildConfig) -> dict[str, Any]:
    """What FINN itself resolves from the config (part, platform, driver, step names)."""
    shell = cfg.shell_flow_type.value
    return {"fpga_part": finn_compat.fpga_part(cfg),
            "vitis_platform": finn_compat.vitis_platform(cfg) if shell == ALVEO
            else None,
            "driver_platform": finn_compat.driver_platform(cfg),
            "shell_flow_type": shell,
            "generate_outputs": [o.value for o in cfg.generate_outputs],
            "steps": [s if isinstance(s, str) else s.__name__ for s in cfg.steps],
            "synth_clk_period_ns": cfg.synth_clk_period_ns,
            "auto_fifo_depths": cfg.auto_fifo_depths,
            "auto_fifo_strategy": cfg.auto_fifo_strategy.value}
