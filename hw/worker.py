"""Entry point of the build child process: `python -m fpgaslim.hw.worker job.json`.

It is a separate process so the parent can enforce the build's time limit by killing it
(FINN's streamlining can loop forever, FINN_NOTES) and so finn-plus's process-wide side effects
(logging setup, stdout redirection, the finn_compat shim) never touch the caller.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from . import finn_compat


def run_job(job: dict) -> int:
    random.seed(0)  # FINN names some new tensors with random.choice: the same in every build
    out = Path(job["out_dir"])
    progress = out / "progress.jsonl"
    _log_step(progress, "start", "startup_import_finn")
    finn_compat.activate()
    from .build_steps import estimate_steps
    from .verify import execute_dataflow

    fb = finn_compat.builder()
    _log_step(progress, "end", "startup_import_finn")
    verify = [fb.VerificationStepType.QONNX_TO_FINN_PYTHON, fb.VerificationStepType.TIDY_UP_PYTHON,
              fb.VerificationStepType.STREAMLINED_PYTHON] if job["verify_steps"] else None
    cfg = fb.DataflowBuildConfig(
        output_dir=str(out / "finn"), synth_clk_period_ns=job["clock_ns"],
        target_fps=job["target_fps"], mvau_wwidth_max=job["mvau_wwidth_max"],
        board=job["board"]["finn_board"], fpga_part=job["board"]["part"],
        shell_flow_type=fb.ShellFlowType(job["board"]["shell_flow"]),
        generate_outputs=[fb.DataflowOutputType.ESTIMATE_REPORTS],
        steps=estimate_steps(progress, job["weights"], job["board"],
                             folding=job.get("folding_config"),
                             streamline=job.get("streamline", "fast")), verify_steps=verify,
        verify_input_npy=job["verify_input_npy"],
        verify_expected_output_npy=job["verify_expected_npy"],
        save_intermediate_models=True, start_step=job.get("start_step"),
        standalone_thresholds=bool(job.get("prefer_rtl")))
    if job.get("prefer_rtl"):
        from .build_steps import with_prefer_rtl

        cfg.steps = with_prefer_rtl(cfg.steps, progress)
        if cfg.start_step == "step_specialize_layers":  # resuming after the cached prefix
            cfg.start_step = "step_fpgaslim_prefer_rtl"
    t0 = time.time()
    rc = fb.build_dataflow_cfg("" if cfg.start_step else job["onnx"], cfg)
    build_s = time.time() - t0
    if rc != 0:
        return 1
    result = {"build_s": build_s}
    if job.get("exec_input_npy"):
        t0 = time.time()
        _log_step(progress, "start", "fpgaslim_python_exec")
        try:
            result["last_layer"] = execute_dataflow(
                Path(cfg.output_dir), Path(job["exec_input_npy"]), out / "hw_outputs.npz")
        except Exception as exc:
            _log_step(progress, "error", "fpgaslim_python_exec", type=type(exc).__name__,
                      message=str(exc))
            raise
        _log_step(progress, "end", "fpgaslim_python_exec")
        result["exec_s"] = time.time() - t0
    (out / "child_result.json").write_text(json.dumps(result), encoding="utf-8")
    return 0


def _log_step(progress: Path, event: str, step: str, **extra: str) -> None:
    with open(progress, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": event, "step": step, "t": time.time(), **extra}) + "\n")


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    return run_job(job)


if __name__ == "__main__":
    sys.exit(main())
