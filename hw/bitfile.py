"""The full FINN flow to a bitfile (Zynq, vivado_zynq shell) or an xclbin (Alveo, vitis_alveo).

`bitfile_config()` describes the build as a plain record: fpgaslim's estimate steps (the same
list `fpgaslim build` runs, so the folded graph is the one that was estimated and verified)
followed by FINN's hardware steps: HLS/RTL code and IP generation with FIFO sizing, stitched
IP, synthesis + place and route in the board's shell, the PYNQ driver and the deployment
package. The record is JSON, so it is saved next to the build and can be inspected or re-run.

`build_bitfile()` refuses to start (ToolMissingError with the doctor's message) unless Vivado
and Vitis HLS (and for Alveo Vitis + XRT) are present; it checks before exporting or creating
anything. The build itself runs in a child process (`python -m fpgaslim.hw.bitfile job.json`)
like the estimate build, with a time limit.

Post-synthesis figures are read by `hw/postsynth.py` (`read_post_synth`) after the flow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from fpgaslim.core.errors import BuildTimeoutError, ConfigError, ToolMissingError

from .postsynth import PostSynthesis, read_post_synth
from .toolchain import Flow, FlowStatus, find_toolchain, flow_status

ZYNQ, ALVEO = "vivado_zynq", "vitis_alveo"
# FINN's hardware steps after the estimate steps, in finn-plus 1.6.1's default order.
HARDWARE_STEPS = ["step_assign_ddr_weight_offsets", "step_generate_hardware",
                  "step_create_stitched_ip", "step_prepare_synthesis",
                  "step_synthesize_bitfile", "step_make_driver", "step_deployment_package"]
OUTPUTS = ["estimate_reports", "stitched_ip", "bitfile", "pynq_driver", "deployment_package"]


class BitfileConfig(BaseModel):
    """Everything FINN's DataflowBuildConfig needs for the full flow, as JSON-able data."""

    model_config = ConfigDict(extra="forbid")
    board: str  # as the user wrote it
    finn_board: str
    shell_flow: Literal["vivado_zynq", "vitis_alveo"]
    flow: Flow
    output_dir: str
    # the estimate build's own step list (hw/build_steps.estimate_steps, resolved in the build
    # child, so a bitfile is made from exactly the graph that was estimated), then these:
    hardware_steps: list[str] = Field(default_factory=lambda: list(HARDWARE_STEPS))
    generate_outputs: list[str] = Field(default_factory=lambda: list(OUTPUTS))
    synth_clk_period_ns: float = 10.0
    target_fps: int | None = None
    folding_config_file: str | None = None
    mvau_wwidth_max: int = 36
    auto_fifo_depths: bool = True
    auto_fifo_strategy: Literal["distributed_sim", "live_fifo", "force_minimal_fifos"] = \
        "distributed_sim"
    fpga_part: str | None = None  # None: FINN's part for finn_board
    vitis_platform: str | None = None  # Alveo only; None: FINN's default for finn_board
    weights: Literal["auto", "onchip", "external"] = "onchip"
    board_info: dict[str, Any] = Field(default_factory=dict)  # catalogue entry (capacities)

    @property
    def expected_files(self) -> dict[str, str]:
        """Where FINN leaves the products (relative to output_dir)."""
        if self.shell_flow == ZYNQ:
            return {"bitfile": "bitfile/finn-accel.bit", "hwh": "bitfile/finn-accel.hwh",
                    "driver_settings": "driver/settings.json",
                    "post_synth": "report/post_synth_resources.json",
                    "timing": "report/post_route_timing.rpt"}
        return {"xclbin": "bitfile/finn-accel-0.xclbin", "driver_settings": "driver/settings.json",
                "post_synth": "report/post_synth_resources_0.json"}


def resolve_board(board: str | Mapping[str, Any]) -> tuple[str, str]:
    """(FINN board name, shell flow) for a catalogue board name (hw/boards.toml: "pynq-z1",
    "U250", ...) or a catalogue entry given as a mapping."""
    if isinstance(board, Mapping):
        return str(board["finn_board"]), str(board["shell_flow"])
    from .boards import get_board

    entry = get_board(board)
    return entry.finn_board, entry.shell_flow


def bitfile_config(board: str | Mapping[str, Any], output_dir: str | Path, *,
                   clock_ns: float = 10.0, target_fps: int | None = None,
                   folding_config_file: str | Path | None = None, mvau_wwidth_max: int = 36,
                   weights: str = "onchip", fifo_strategy: str = "distributed_sim",
                   vitis_platform: str | None = None) -> BitfileConfig:
    """The full-flow configuration for `board` (Zynq: vivado_zynq; Alveo: vitis_alveo)."""
    finn_board, shell = resolve_board(board)
    if isinstance(board, Mapping):
        info = dict(board)
    else:
        from .boards import get_board

        info = get_board(board).model_dump(mode="json")
    if target_fps is None and folding_config_file is None:
        raise ConfigError("bitfile build: set target_fps or folding_config_file (FINN needs "
                          "one of them to fold the network)")
    return BitfileConfig(
        board=board if isinstance(board, str) else str(board.get("name", finn_board)),
        finn_board=finn_board, shell_flow=shell,
        flow=Flow.ZYNQ_BITFILE if shell == ZYNQ else Flow.ALVEO_XCLBIN,
        output_dir=str(output_dir),
        synth_clk_period_ns=clock_ns, target_fps=int(target_fps) if target_fps else None,
        folding_config_file=str(folding_config_file) if folding_config_file else None,
        mvau_wwidth_max=mvau_wwidth_max, weights=weights, auto_fifo_strategy=fifo_strategy,
        vitis_platform=vitis_platform, board_info=info)


def require_tools(cfg: BitfileConfig, env: Mapping[str, str] | None = None) -> FlowStatus:
    """Raise ToolMissingError with the doctor's words unless this flow can run here."""
    status = flow_status(find_toolchain(env), cfg.flow, platform=cfg.vitis_platform)
    if not status.can_run:
        raise ToolMissingError(_missing_message(cfg.board, cfg.shell_flow, status))
    return status


def finn_config(cfg: BitfileConfig, progress: Path | None = None) -> Any:
    """(child, after finn_compat.activate) FINN's DataflowBuildConfig for `cfg`.

    The estimate part of the step list is hw/build_steps' own (the same tracked callables the
    estimate build runs), so a bitfile is built from exactly the graph that was estimated;
    the hardware steps follow by name."""
    from . import finn_compat
    from .build_steps import estimate_steps

    fb = finn_compat.builder()
    board = {"finn_board": cfg.finn_board, **cfg.board_info}
    steps: list[Any] = [*estimate_steps(progress or Path(cfg.output_dir) / "progress.jsonl",
                                        weights=cfg.weights, board=board),
                        *cfg.hardware_steps]
    unknown = [s for s in cfg.hardware_steps if s not in fb.step_lookup]
    if unknown:
        raise ConfigError(f"finn-plus has no build steps {unknown} (finn-plus changed?)")
    fields = fb.DataflowBuildConfig.__dataclass_fields__
    fifo_enum = type(fields["auto_fifo_strategy"].default)  # AutoFIFOSizingMethod
    finn_cfg = fb.DataflowBuildConfig(
        output_dir=cfg.output_dir, steps=steps,
        generate_outputs=[fb.DataflowOutputType(o) for o in cfg.generate_outputs],
        synth_clk_period_ns=cfg.synth_clk_period_ns, target_fps=cfg.target_fps,
        folding_config_file=Path(cfg.folding_config_file) if cfg.folding_config_file else None,
        mvau_wwidth_max=cfg.mvau_wwidth_max, board=cfg.finn_board, fpga_part=cfg.fpga_part,
        shell_flow_type=fb.ShellFlowType(cfg.shell_flow), vitis_platform=cfg.vitis_platform,
        auto_fifo_depths=cfg.auto_fifo_depths, auto_fifo_strategy=fifo_enum(cfg.auto_fifo_strategy),
        save_intermediate_models=True)
    return finn_cfg


def describe_finn_config(finn_cfg: Any) -> dict[str, Any]:
    """What FINN itself resolves from the config (part, platform, driver, step names)."""
    shell = finn_cfg.shell_flow_type.value
    from . import finn_compat

    return {"fpga_part": finn_compat.fpga_part(finn_cfg),
            "vitis_platform": finn_compat.vitis_platform(finn_cfg) if shell == ALVEO else None,
            "driver_platform": finn_compat.driver_platform(finn_cfg),
            "shell_flow_type": shell,
            "generate_outputs": [o.value for o in finn_cfg.generate_outputs],
            "steps": [s if isinstance(s, str) else s.__name__ for s in finn_cfg.steps],
            "synth_clk_period_ns": finn_cfg.synth_clk_period_ns,
            "auto_fifo_depths": finn_cfg.auto_fifo_depths,
            "auto_fifo_strategy": finn_cfg.auto_fifo_strategy.value}


# --------------------------------------------------------------------------- running it
def run_full_flow(cfg: BitfileConfig, onnx_path: str | Path, timeout_s: float = 6 * 3600,
                  env: Mapping[str, str] | None = None) -> PostSynthesis | None:
    """Run the full flow on an exported QONNX model in a child process; tools are checked
    first. Returns the post-synthesis record (None if FINN wrote none)."""
    require_tools(cfg, env)
    from . import finn_compat

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    job = out / "bitfile_job.json"
    job.write_text(json.dumps({"config": cfg.model_dump(mode="json"),
                               "onnx": str(Path(onnx_path).resolve())}, indent=2), "utf-8")
    child_env = finn_compat.child_environment(out / "finn_env")
    if env is not None:
        child_env.update({k: v for k, v in env.items() if k.startswith(("XILINX", "PLATFORM"))})
    log = out / "bitfile_build.log"
    with open(log, "wb") as f:
        try:
            proc = subprocess.run([sys.executable, "-m", "fpgaslim.hw.bitfile", str(job)],
                                  stdout=f, stderr=subprocess.STDOUT, env=child_env,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BuildTimeoutError(f"the {cfg.flow.value} build ran past {timeout_s:.0f} s; "
                                    f"see {log}") from exc
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        raise ToolMissingError(f"the {cfg.flow.value} build failed (exit {proc.returncode}); "
                               f"last lines of {log}:\n{tail}")
    return read_post_synth(out, cfg.synth_clk_period_ns)


def build_bitfile(run: Any, variant_id: str, settings: Any,
                  env: Mapping[str, str] | None = None, data: Any = None) -> Any:
    """`fpgaslim build RUN --variant ID --board B --bitfile`: the estimate build (with its
    bit-exact verification), then FINN's full flow on the same exported model; the
    post-synthesis figures are attached to the hardware report next to the estimates.

    The toolchain is checked first: without Vivado/Vitis HLS (Alveo: also Vitis, XRT) this
    raises ToolMissingError with the doctor's message before reading, exporting or writing
    anything."""
    board = getattr(settings, "board", None)
    if not board:
        raise ConfigError("bitfile build: no board given (e.g. --board pynq-z1)")
    _, shell = resolve_board(board)
    flow = Flow.ZYNQ_BITFILE if shell == ZYNQ else Flow.ALVEO_XCLBIN
    status = flow_status(find_toolchain(env), flow)
    if not status.can_run:
        raise ToolMissingError(_missing_message(board, shell, status))
    return _build_with_tools(run, variant_id, settings, env, data)


def _missing_message(board: str, shell: str, status: FlowStatus) -> str:
    what = "bitfile" if shell == ZYNQ else "xclbin"
    return (f"cannot build a {what} for {board} here: {status.message}. Run `fpgaslim doctor` "
            "for details; estimates (`fpgaslim build` without --bitfile) need none of these "
            "tools.")


BITFILE_TIMEOUT_S = 12 * 3600.0  # synthesis + place and route of a large design: hours


def _build_with_tools(run: Any, variant_id: str, settings: Any,
                      env: Mapping[str, str] | None, data: Any) -> Any:
    """(tools present) estimate build + verification, then the full flow in builds/<b>/bitfile
    on the same exported QONNX; post-synthesis figures saved and attached to the report."""
    from .api import build_dir_for, build_variant
    from .boards import get_board
    from .report import save_report

    report = build_variant(run, variant_id, settings.board, settings=settings, data=data)
    s = settings.model_copy(update={"board": settings.board}).resolved()
    bdir = build_dir_for(run, variant_id, s)
    cfg = bitfile_config(get_board(s.board).model_dump(mode="json"), bdir / "bitfile",
                         clock_ns=s.clock_ns, target_fps=s.target_fps,
                         mvau_wwidth_max=s.mvau_wwidth_max, weights=s.weights)
    onnx = run.variant_dir(variant_id) / run.record(variant_id).qonnx
    timeout = float(getattr(settings, "bitfile_timeout_s", BITFILE_TIMEOUT_S))
    post = run_full_flow(cfg, onnx, timeout_s=timeout, env=env)
    if post is None:
        return report
    (bdir / "bitfile" / "post_synthesis.json").write_text(post.model_dump_json(indent=2),
                                                          encoding="utf-8")
    if "post_synthesis" in type(report).model_fields:  # shown next to FINN's estimates
        report = type(report).model_validate(
            {**report.model_dump(mode="json"), "post_synthesis": post.model_dump(mode="json")})
        save_report(report, bdir / "report.json")
    return report


def _child(job_paths: list[str], dry_run: bool = False) -> int:
    """Child process: build FINN's config for each job, save what FINN resolves from it
    (bitfile_config_resolved.json) and, unless dry_run, run the whole flow."""
    from . import finn_compat

    finn_compat.activate()
    for job_path in job_paths:
        job = json.loads(Path(job_path).read_text(encoding="utf-8"))
        cfg = BitfileConfig.model_validate(job["config"])
        finn_cfg = finn_config(cfg)
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.output_dir) / "bitfile_config_resolved.json").write_text(
            json.dumps(describe_finn_config(finn_cfg), indent=2), encoding="utf-8")
        if not dry_run and finn_compat.builder().build_dataflow_cfg(job["onnx"], finn_cfg) != 0:
            return 1
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(_child([a for a in args if a != "--dry-run"], dry_run="--dry-run" in args))
