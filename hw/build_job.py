"""One protocol between a build's parent and its child process, for estimate and bitfile builds.

The parent writes a `BuildJob` (pydantic, extra="forbid") to `job.json` in the job's folder
and runs `python -m fpgaslim.hw.worker job.json` through hw/child.run_logged: its own session,
output to a log, and at the time limit the whole process group killed. The child builds FINN's
config from the job (hw/finn_config.py, the one place), runs the job's named steps
(hw/build_steps.py) and appends every step's start, end or failure to `progress.jsonl`. A
failure is then reported by the parent as the step that failed and its message, read from that
file: the same words for an estimate build and for a bitfile build.

This module is the parent's side plus the job record; it does not import finn-plus.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from fpgaslim.core.atomic import atomic_write_json
from fpgaslim.core.errors import (BuildTimeoutError, CheckpointError, ConfigError,
                                  FpgaslimError, ToolMissingError, UnsupportedLayerError)

from .boards import Board
from .child import run_logged

JOB_FILE, PROGRESS_FILE, RESULT_FILE = "job.json", "progress.jsonl", "child_result.json"
# Steps up to here turn the graph into HW layers: a failure there means FINN cannot map it.
MAPPING_STEPS = ("step_qonnx_to_finn", "step_tidy_up", "step_fpgaslim_streamline",
                 "step_convert_to_hw", "step_fpgaslim_check_mapped",
                 "step_minimize_bit_width_initial", "step_create_dataflow_partition",
                 "step_specialize_layers")

# fpgaslim errors a step raises that keep their type (and exit code) in the parent
_SAME_TYPE = {"ToolMissingError": ToolMissingError, "ConfigError": ConfigError,
              "UnknownNameError": ConfigError, "CheckpointError": CheckpointError}


class HardwareOptions(BaseModel):
    """FINN settings only the hardware steps (after the estimate steps) use."""

    model_config = ConfigDict(extra="forbid")
    generate_outputs: list[str]  # FINN's DataflowOutputType values
    auto_fifo_depths: bool = True
    auto_fifo_strategy: Literal["distributed_sim", "live_fifo", "force_minimal_fifos"] = \
        "distributed_sim"
    vitis_platform: str | None = None  # Alveo only; None: FINN's default for the board


class BuildJob(BaseModel):
    """Everything the child needs to run one build: the steps by name and their settings."""

    model_config = ConfigDict(extra="forbid")
    preset: str  # the preset `steps` came from ("estimate", "bitfile"), for the record
    steps: list[str]  # hw/build_steps.py's or FINN's step names, in order
    onnx: str
    out_dir: str  # the job's own files: job.json, progress.jsonl, child_result.json
    finn_dir: str  # FINN's output_dir
    board: Board
    fpga_part: str | None = None  # None: FINN's part for board.finn_board
    clock_ns: float = Field(10.0, gt=0)
    target_fps: int | None = Field(None, gt=0)
    mvau_wwidth_max: int = Field(36, gt=0)
    weights: Literal["auto", "onchip", "external"] = "onchip"
    folding_config: str | None = None  # laid over the weight placement's folding config
    # FINN's specialize_layers_config_file: per node preferred_impl_style (hls/rtl), applied
    # in step_specialize_layers over prefer_rtl's (the folding optimizer's per-layer mix)
    specialize_config: str | None = None
    streamline: Literal["fast", "stock"] = "fast"
    prefer_rtl: bool = False  # FINN's standalone (RTL) thresholds; the step is in `steps`
    verify_steps: bool = False  # FINN's QONNX_TO_FINN / TIDY_UP / STREAMLINED python checks
    verify_input_npy: str | None = None
    verify_expected_npy: str | None = None
    exec_input_npy: str | None = None  # images to execute on the folded graph afterwards
    start_step: str | None = None  # resume from FINN's saved checkpoint of the step before
    hardware: HardwareOptions | None = None  # the bitfile's settings

    @property
    def progress(self) -> Path:
        return Path(self.out_dir) / PROGRESS_FILE


def read_progress(progress: Path) -> tuple[str | None, dict | None]:
    """(step running at the end, the error entry if a step failed) from a progress file."""
    running, error = None, None
    if progress.is_file():
        for line in progress.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if e["event"] == "start":
                running = e["step"]
            elif e["event"] == "end" and running == e["step"]:
                running = None
            elif e["event"] == "error":
                error = e
    return running, error


def step_times(progress: Path) -> dict[str, float]:
    """Wall seconds per build step, from the child's progress file."""
    starts: dict[str, float] = {}
    times: dict[str, float] = {}
    for line in progress.read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        if e["event"] == "start":
            starts[e["step"]] = e["t"]
        elif e["event"] == "end" and e["step"] in starts:
            times[f"{e['step']}_s"] = round(e["t"] - starts[e["step"]], 3)
    return times


def run_job(job: BuildJob, env: Mapping[str, str], timeout_s: float, *, what: str = "FINN build",
            log_name: str = "child.log") -> dict[str, Any]:
    """Write `job` to out_dir/job.json, run it in a build child under `timeout_s` and return
    the child's result (child_result.json). A failure raises the error of the step that
    failed (UnsupportedLayerError for the mapping steps), a time-out BuildTimeoutError naming
    the step it was in; `what` names the build in the messages."""
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (PROGRESS_FILE, RESULT_FILE):
        (out / stale).unlink(missing_ok=True)
    job_path = atomic_write_json(out / JOB_FILE, job.model_dump(mode="json"))
    log = out / log_name
    try:
        rc = run_logged([sys.executable, "-m", "fpgaslim.hw.worker", str(job_path)], log,
                        timeout_s, env=env, tie_to_parent=True)
    except subprocess.TimeoutExpired:
        step, _ = read_progress(job.progress)
        raise BuildTimeoutError(
            f"{what} ran past its {timeout_s:g} s limit in step "
            f"{step or 'before the first step'}; killed. Raise timeout_s, or if "
            "it is a streamlining step, check the model (nn.AvgPool2d makes streamlining "
            f"loop forever; use TruncAvgPool2d). Log: {log}") from None
    if rc != 0:
        raise failure(job.progress, log, rc, what)
    return json.loads((out / RESULT_FILE).read_text(encoding="utf-8"))


def failure(progress: Path, log: Path, rc: int, what: str = "FINN build") -> FpgaslimError:
    """The error a failed build child stands for: the failed step and its message from the
    progress file, else the log's last lines."""
    step, error = read_progress(progress)
    if error is None:
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:] if log.is_file() else ""
        return FpgaslimError(f"{what} child exited with code {rc} before/after its steps "
                             f"(running: {step}); log {log}:\n{tail}")
    msg = f"{error['type']}: {error['message']}"
    if error["type"] == "UnsupportedLayerError":
        return UnsupportedLayerError(error["message"])
    if error["type"] in _SAME_TYPE:  # e.g. a folding file that is not JSON: the user's to fix
        return _SAME_TYPE[error["type"]](f"{what} failed in {error['step']}: {error['message']}")
    if error["step"] in MAPPING_STEPS:
        return UnsupportedLayerError(
            f"FINN could not map the model in {error['step']}: {msg}. Check that every layer "
            f"is a FINN-supported quantized layer (log: {log})")
    return FpgaslimError(f"{what} failed in {error['step']}: {msg} (log: {log})")


__all__ = ["BuildJob", "HardwareOptions", "MAPPING_STEPS", "failure", "read_progress",
           "run_job", "step_times"]
