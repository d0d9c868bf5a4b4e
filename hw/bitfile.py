"""The full FINN flow to a bitfile (Zynq, vivado_zynq shell) or an xclbin (Alveo, vitis_alveo).

`bitfile_config()` describes the build as a plain record for a `Board`: fpgaslim's estimate
preset (the same step names `fpgaslim build` runs, so the folded graph is the one that was
estimated and verified) followed by FINN's hardware steps: HLS/RTL code and IP generation with
FIFO sizing, stitched IP, synthesis + place and route in the board's shell, the PYNQ driver and
the deployment package (hw/build_steps.py: preset "bitfile"). The record is JSON, so it is saved
next to the build and can be inspected or re-run.

`build_bitfile()` refuses to start (ToolMissingError with the doctor's message) unless Vivado
and Vitis HLS (and for Alveo Vitis + XRT) are present; it checks before exporting or creating
anything. The build itself is a BuildJob run by the same build child as the estimate build
(hw/build_job.py), with a time limit that kills the child's whole process group; a failing
step is reported with its name and message, as for an estimate build.

Post-synthesis figures are read by `hw/postsynth.py` (`read_post_synth`) after the flow.
Board names are accepted only at the public entries (`bitfile_config`, `build_bitfile`,
`resolve_board`) and turned into a `Board` once there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from fpgaslim.core.errors import ConfigError, ToolMissingError

from .boards import Board, as_board
from .build_job import BuildJob, HardwareOptions, run_job
from .build_steps import HARDWARE, preset
from .postsynth import PostSynthesis, read_post_synth
from .toolchain import Flow, FlowStatus, find_toolchain, flow_status

HARDWARE_STEPS = HARDWARE  # FINN's hardware steps after the estimate steps (build_steps.py)
OUTPUTS = ["estimate_reports", "stitched_ip", "bitfile", "pynq_driver", "deployment_package"]
BITFILE_TIMEOUT_S = 12 * 3600.0  # synthesis + place and route of a large design: hours


class BitfileConfig(BaseModel):
    """Everything a full-flow build needs beyond the estimate settings, as JSON-able data."""

    model_config = ConfigDict(extra="forbid")
    board: Board
    output_dir: str
    # after the estimate preset (hw/build_steps.ESTIMATE, the same names the estimate build
    # runs, so a bitfile is made from exactly the graph that was estimated):
    hardware_steps: list[str] = Field(default_factory=lambda: list(HARDWARE_STEPS))
    generate_outputs: list[str] = Field(default_factory=lambda: list(OUTPUTS))
    synth_clk_period_ns: float = Field(10.0, gt=0)
    target_fps: int | None = Field(None, gt=0)
    folding_config_file: str | None = None  # laid over the weight placement's folding
    # FINN's specialize-layers config (per node HLS/RTL): with an optimal folding of styles
    # "mix", its specialize_config.json beside the folding config
    specialize_config_file: str | None = None
    mvau_wwidth_max: int = Field(36, gt=0)
    auto_fifo_depths: bool = True
    auto_fifo_strategy: Literal["distributed_sim", "live_fifo", "force_minimal_fifos"] = \
        "distributed_sim"
    fpga_part: str | None = None  # None: FINN's part for the board
    vitis_platform: str | None = None  # Alveo only; None: FINN's default for the board
    weights: Literal["auto", "onchip", "external"] = "onchip"
    prefer_rtl: bool = False  # as the estimate build's setting: the same graph
    streamline: Literal["fast", "stock"] = "fast"

    @property
    def finn_board(self) -> str:
        return self.board.finn_board

    @property
    def shell_flow(self) -> str:
        return self.board.shell_flow

    @property
    def flow(self) -> Flow:
        return Flow.ZYNQ_BITFILE if self.board.is_zynq else Flow.ALVEO_XCLBIN

    @property
    def expected_files(self) -> dict[str, str]:
        """Where FINN leaves the products (relative to output_dir)."""
        if self.board.is_zynq:
            return {"bitfile": "bitfile/finn-accel.bit", "hwh": "bitfile/finn-accel.hwh",
                    "driver_settings": "driver/settings.json",
                    "post_synth": "report/post_synth_resources.json",
                    "timing": "report/post_route_timing.rpt"}
        return {"xclbin": "bitfile/finn-accel-0.xclbin", "driver_settings": "driver/settings.json",
                "post_synth": "report/post_synth_resources_0.json"}


def resolve_board(board: str | Board | Mapping[str, Any]) -> tuple[str, str]:
    """(FINN board name, shell flow) for a board name, a Board, or a catalogue-like mapping
    with "finn_board" and "shell_flow"."""
    if isinstance(board, Mapping):
        return str(board["finn_board"]), str(board["shell_flow"])
    b = as_board(board)
    return b.finn_board, b.shell_flow


def bitfile_config(board: str | Board, output_dir: str | Path, *, clock_ns: float = 10.0,
                   target_fps: int | None = None,
                   folding_config_file: str | Path | None = None, mvau_wwidth_max: int = 36,
                   specialize_config_file: str | Path | None = None,
                   weights: str = "onchip", fifo_strategy: str = "distributed_sim",
                   vitis_platform: str | None = None, prefer_rtl: bool = False,
                   streamline: str = "fast") -> BitfileConfig:
    """The full-flow configuration for `board` (Zynq: vivado_zynq; Alveo: vitis_alveo)."""
    if target_fps is None and folding_config_file is None:
        raise ConfigError("bitfile build: set target_fps or folding_config_file (FINN needs "
                          "one of them to fold the network)")
    return BitfileConfig(
        board=as_board(board), output_dir=str(output_dir), synth_clk_period_ns=clock_ns,
        target_fps=int(target_fps) if target_fps else None,
        folding_config_file=str(Path(folding_config_file).resolve())
        if folding_config_file else None,
        specialize_config_file=str(Path(specialize_config_file).resolve())
        if specialize_config_file else None,
        mvau_wwidth_max=mvau_wwidth_max, weights=weights, auto_fifo_strategy=fifo_strategy,
        vitis_platform=vitis_platform, prefer_rtl=prefer_rtl, streamline=streamline)


def bitfile_job(cfg: BitfileConfig, onnx_path: str | Path) -> BuildJob:
    """The build child's job for `cfg` on a QONNX file: the estimate preset (with prefer_rtl's
    step, as the estimate build) followed by cfg.hardware_steps, FINN's output in
    cfg.output_dir."""
    return BuildJob(
        preset="bitfile", steps=[*preset("estimate", prefer_rtl=cfg.prefer_rtl),
                                 *cfg.hardware_steps],
        onnx=str(Path(onnx_path).resolve()), out_dir=cfg.output_dir, finn_dir=cfg.output_dir,
        board=cfg.board, fpga_part=cfg.fpga_part, clock_ns=cfg.synth_clk_period_ns,
        target_fps=cfg.target_fps, mvau_wwidth_max=cfg.mvau_wwidth_max, weights=cfg.weights,
        folding_config=cfg.folding_config_file, streamline=cfg.streamline,
        specialize_config=cfg.specialize_config_file,
        prefer_rtl=cfg.prefer_rtl,
        hardware=HardwareOptions(generate_outputs=cfg.generate_outputs,
                                 auto_fifo_depths=cfg.auto_fifo_depths,
                                 auto_fifo_strategy=cfg.auto_fifo_strategy,
                                 vitis_platform=cfg.vitis_platform))


def require_tools(cfg: BitfileConfig, env: Mapping[str, str] | None = None,
                  board_name: str | None = None) -> FlowStatus:
    """Raise ToolMissingError with the doctor's words unless this flow can run here
    (`board_name`: the board as the user wrote it, for the message)."""
    status = flow_status(find_toolchain(env), cfg.flow, platform=cfg.vitis_platform)
    if not status.can_run:
        raise ToolMissingError(_missing_message(board_name or cfg.board.name, cfg.board,
                                                status))
    return status


def _missing_message(name: str, board: Board, status: FlowStatus) -> str:
    what = "bitfile" if board.is_zynq else "xclbin"
    return (f"cannot build a {what} for {name} here: {status.message}. Run `fpgaslim doctor` "
            "for details; estimates (`fpgaslim build` without --bitfile) need none of these "
            "tools.")


# --------------------------------------------------------------------------- running it
def run_full_flow(cfg: BitfileConfig, onnx_path: str | Path,
                  timeout_s: float = BITFILE_TIMEOUT_S, env: Mapping[str, str] | None = None,
                  *, check_tools: bool = True) -> PostSynthesis | None:
    """Run the full flow on an exported QONNX model in the build child; tools are checked
    first (`check_tools=False` runs it as far as the installed tools allow, e.g. to see which
    step needs what). Returns the post-synthesis record (None if FINN wrote none). A failing
    step raises its own error, named (hw/build_job.failure)."""
    if check_tools:
        require_tools(cfg, env)
    from . import finn_compat

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bitfile_config.json").write_text(cfg.model_dump_json(indent=2), encoding="utf-8")
    child_env = finn_compat.child_environment(out / "finn_env")
    if env is not None:
        child_env.update({k: v for k, v in env.items() if k.startswith(("XILINX", "PLATFORM"))})
    run_job(bitfile_job(cfg, onnx_path), child_env, timeout_s,
            what=f"the {cfg.flow.value} build", log_name="bitfile_build.log")
    return read_post_synth(out, cfg.synth_clk_period_ns)


def build_bitfile(run: Any, variant_id: str, settings: Any,
                  env: Mapping[str, str] | None = None, data: Any = None, *,
                  timeout_s: float = BITFILE_TIMEOUT_S, check_tools: bool = True) -> Any:
    """`fpgaslim build RUN --variant ID --board B --bitfile`: the estimate build (with its
    bit-exact verification), then FINN's full flow on the same exported model; the
    post-synthesis figures are attached to the hardware report next to the estimates.
    `timeout_s`: the full flow's limit (synthesis and place and route take hours).

    The toolchain is checked first: without Vivado/Vitis HLS (Alveo: also Vitis, XRT) this
    raises ToolMissingError with the doctor's message before reading, exporting or writing
    anything (`check_tools=False`: the flow runs as far as the installed tools allow and
    the step that fails is named)."""
    board = settings.board
    flow = Flow.ZYNQ_BITFILE if board.is_zynq else Flow.ALVEO_XCLBIN
    status = flow_status(find_toolchain(env), flow)
    if check_tools and not status.can_run:
        raise ToolMissingError(_missing_message(board.name, board, status))
    return _build_with_tools(run, variant_id, settings, board, env, data, timeout_s,
                             check_tools)


def _build_with_tools(run: Any, variant_id: str, settings: Any, board: Board,
                      env: Mapping[str, str] | None, data: Any, timeout_s: float,
                      check_tools: bool = True) -> Any:
    """(tools present) estimate build + verification, then the full flow in builds/<b>/bitfile
    on the same exported QONNX; post-synthesis figures saved and attached to the report."""
    from .api import build_dir_for, build_variant
    from .report import save_report

    report = build_variant(run, variant_id, board, settings=settings, data=data)
    s = settings.resolved()
    bdir = build_dir_for(run, variant_id, s)
    sized = sized_fifo_config(bdir)  # FIFOs sized by `fpgaslim simulate`: FINN's sizing off
    cfg = bitfile_config(board, bdir / "bitfile", clock_ns=s.clock_ns, target_fps=s.target_fps,
                         mvau_wwidth_max=s.mvau_wwidth_max, weights=s.weights,
                         prefer_rtl=s.prefer_rtl, streamline=s.streamline,
                         folding_config_file=sized,
                         fifo_strategy="force_minimal_fifos" if sized else "distributed_sim")
    onnx = run.variant_dir(variant_id) / run.record(variant_id).qonnx
    post = run_full_flow(cfg, onnx, timeout_s=timeout_s, env=env, check_tools=check_tools)
    if post is None:
        return report
    (bdir / "bitfile" / "post_synthesis.json").write_text(post.model_dump_json(indent=2),
                                                          encoding="utf-8")
    report = report.model_copy(update={"post_synthesis": post})  # next to FINN's estimates
    save_report(report, bdir / "report.json")
    return report


def sized_fifo_config(build: Path) -> Path | None:
    """The FIFO depths `fpgaslim simulate` sized for this build (hw/sim: a FINN folding config
    of the folded graph with the depths in inFIFODepths/outFIFODepths), when that simulation
    was bit-exact, deadlock-free, kept the throughput and is newer than the build's report;
    None otherwise (FINN's own FIFO sizing runs). With it a bitfile build inserts each FIFO at
    exactly that depth (auto_fifo_strategy force_minimal_fifos) and runs no sizing."""
    from .sim.records import Simulation

    saved = Path(build) / "work" / "simulate" / "simulation.json"
    report = Path(build) / "report.json"
    if not saved.is_file() or (report.is_file() and
                               saved.stat().st_mtime < report.stat().st_mtime):
        return None
    try:
        sim = Simulation.model_validate_json(saved.read_text(encoding="utf-8"))
    except ValueError:
        return None
    ok = sim.outputs_exact and not sim.deadlock and sim.throughput_kept
    if not ok or not sim.folding_config or not Path(sim.folding_config).is_file():
        return None
    return Path(sim.folding_config)
