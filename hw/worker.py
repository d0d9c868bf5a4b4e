"""The build child process, for estimate and bitfile builds alike:
`python -m fpgaslim.hw.worker [--dry-run] job.json [job2.json ...]` (hw/build_job.py).

It is a separate process so the parent can enforce the build's time limit by killing it
(FINN's streamlining can loop forever, FINN_NOTES) and so finn-plus's process-wide side effects
(logging setup, stdout redirection, the finn_compat shim) never touch the caller. For each job
it builds FINN's config (hw/finn_config.py), saves what FINN resolves from it (a bitfile
job, or --dry-run: <preset>_config_resolved.json) and, unless --dry-run, runs the job's steps; with
exec_input_npy it then executes those images on the folded graph (hw/verify.py). The result
(times, the last layer executed) goes to child_result.json; a failure is in progress.jsonl.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from . import finn_compat
from .build_job import RESULT_FILE, BuildJob
from .build_steps import log_progress


def run_job(job: BuildJob, dry_run: bool = False) -> int:
    """Run one job in this (child) process; 0 on success."""
    random.seed(0)  # FINN names some new tensors with random.choice: the same in every build
    out, progress = Path(job.out_dir), job.progress
    out.mkdir(parents=True, exist_ok=True)
    log_progress(progress, "start", "startup_import_finn")
    finn_compat.activate()
    from .finn_config import describe_finn_config, finn_config

    fb = finn_compat.builder()
    log_progress(progress, "end", "startup_import_finn")
    try:
        cfg = finn_config(job)  # e.g. an unknown step name
    except Exception as exc:
        log_progress(progress, "error", "fpgaslim_finn_config", type=type(exc).__name__,
                     message=str(exc))
        raise
    if dry_run or job.hardware is not None:
        (out / f"{job.preset}_config_resolved.json").write_text(
            json.dumps(describe_finn_config(cfg), indent=2), encoding="utf-8")
    if dry_run:
        return 0
    t0 = time.time()
    rc = fb.build_dataflow_cfg("" if cfg.start_step else job.onnx, cfg)
    result: dict = {"build_s": time.time() - t0}
    if rc != 0:
        return 1
    if job.exec_input_npy:
        from .verify import execute_dataflow

        t0 = time.time()
        log_progress(progress, "start", "fpgaslim_python_exec")
        try:
            result["last_layer"] = execute_dataflow(
                Path(cfg.output_dir), Path(job.exec_input_npy), out / "hw_outputs.npz")
        except Exception as exc:
            log_progress(progress, "error", "fpgaslim_python_exec", type=type(exc).__name__,
                         message=str(exc))
            raise
        log_progress(progress, "end", "fpgaslim_python_exec")
        result["exec_s"] = time.time() - t0
    (out / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
    return 0


def main(argv: list[str]) -> int:
    dry_run = "--dry-run" in argv
    for path in (a for a in argv if a != "--dry-run"):
        job = BuildJob.model_validate_json(Path(path).read_text(encoding="utf-8"))
        if run_job(job, dry_run) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
