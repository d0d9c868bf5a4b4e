"""FINN estimate builds under a time limit: settings, the child process, error mapping.

The build runs in a child process (`python -m fpgaslim.hw.worker`, its own session) because
finn-plus changes process-wide state (logging, stdout, the finn_compat shim) and because a
streamlining loop can run forever (FINN_NOTES): at the limit the child's process group is
killed and the step it was in (from its progress file) is named in a BuildTimeoutError.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from fpgaslim.core.atomic import atomic_write_json
from fpgaslim.core.errors import (BuildTimeoutError, FpgaslimError, ToolMissingError,
                             UnsupportedLayerError)

from . import finn_compat
from .boards import Board, get_board
from .child import run_logged
from .report import HardwareReport, build_report
from .verify import compare

# The board-independent prefix of the step list ends here; later builds of the same graph for
# other boards start from its saved output (streamlining dominates build time).
PREFIX_LAST, RESUME_AT = "step_create_dataflow_partition", "step_specialize_layers"
PREFIX_VERSION = "fpgaslim-prefix/3"  # bump when a prefix step changes what it produces

# Steps up to here turn the graph into HW layers: a failure there means FINN cannot map it.
_MAPPING_STEPS = ("step_qonnx_to_finn", "step_tidy_up", "step_fpgaslim_streamline",
                  "step_convert_to_hw", "step_fpgaslim_check_mapped",
                  "step_minimize_bit_width_initial", "step_create_dataflow_partition",
                  "step_specialize_layers")


class BuildSettings(BaseModel):
    """One estimate build. A misspelt option is an error (extra="forbid")."""

    model_config = ConfigDict(extra="forbid")
    board: str = "pynq-z1"
    target_fps: int | None = Field(None, gt=0)  # None: the board's default (10k Zynq)
    clock_ns: float = Field(10.0, gt=0)
    weights: Literal["auto", "onchip", "external"] = "auto"
    mvau_wwidth_max: int = Field(36, gt=0)  # FINN's cap on SIMD x weight bits per MVAU
    timeout_s: float = Field(900.0, gt=0)
    verify_steps: bool = True  # FINN's QONNX_TO_FINN / TIDY_UP / STREAMLINED python checks
    strict: bool = True  # a verification mismatch raises VerificationError
    # FINN's RTL variants wherever it offers them, thresholds as standalone (RTL) layers
    prefer_rtl: bool = False
    # second opinion on the RTL layers after the estimate build (hw/second_opinion.py)
    synth: Literal["none", "yosys"] = "none"
    sim: Literal["none", "verilator"] = "none"
    layer_timeout_s: float = Field(120.0, gt=0)  # per layer, for each of synth and sim
    # "fast": finn-plus's streamlining with its redundant clean-ups memoized (hw/fast_streamline
    # .py), the same graph byte for byte, so not part of a build's cache key; "stock": unchanged
    streamline: Literal["fast", "stock"] = "fast"

    def resolved(self, board: Board | None = None) -> "BuildSettings":
        """Board name normalised and target_fps filled in, so equal builds hash equal.
        `board`: the Board these settings are for, already looked up (its name replaces
        `self.board`); without it, `self.board` is looked up."""
        board = board if board is not None else get_board(self.board)
        return self.model_copy(update={"board": board.name, "target_fps": self.target_fps
                                       or board.default_target_fps})


def _last_step(progress: Path) -> tuple[str | None, dict | None]:
    """(step running at the end, the error entry if a step failed) from the progress file."""
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


def _run_child(job_path: Path, out: Path, env: dict[str, str], timeout_s: float) -> None:
    log = out / "child.log"
    try:
        rc = run_logged([sys.executable, "-m", "fpgaslim.hw.worker", str(job_path)], log,
                        timeout_s, env=env, tie_to_parent=True)
    except subprocess.TimeoutExpired:
        step, _ = _last_step(out / "progress.jsonl")
        raise BuildTimeoutError(
            f"FINN build ran past its {timeout_s:g} s limit in step "
            f"{step or 'before the first step'}; killed. Raise timeout_s, or if "
            "it is a streamlining step, check the model (nn.AvgPool2d makes streamlining "
            f"loop forever; use TruncAvgPool2d). Log: {log}") from None
    if rc == 0:
        return
    step, error = _last_step(out / "progress.jsonl")
    if error is None:
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
        raise FpgaslimError(f"FINN build child exited with code {rc} before/after its steps "
                            f"(running: {step}); log {log}:\n{tail}")
    msg = f"{error['type']}: {error['message']}"
    if error["type"] == "UnsupportedLayerError":
        raise UnsupportedLayerError(error["message"])
    if error["type"] == "ToolMissingError":
        raise ToolMissingError(error["message"])
    if error["step"] in _MAPPING_STEPS:
        raise UnsupportedLayerError(
            f"FINN could not map the model in {error['step']}: {msg}. Check that every layer "
            f"is a FINN-supported quantized layer (log: {log})")
    raise FpgaslimError(f"FINN build failed in {error['step']}: {msg} (log: {log})")


def _prefix_key(onnx_path: Path, out: Path, settings: BuildSettings) -> str:
    h = hashlib.sha256(PREFIX_VERSION.encode())
    for f in (onnx_path, out / "verify_input.npy", out / "verify_expected.npy"):
        h.update(f.read_bytes())
    h.update(str(settings.verify_steps).encode())
    if settings.prefer_rtl:  # standalone thresholds change step_convert_to_hw
        h.update(b"prefer_rtl")
    return h.hexdigest()[:20]


def _prefix_files(finn_out: Path) -> list[Path]:
    inter = finn_out / "intermediate_models"
    files = [inter / f"{PREFIX_LAST}.onnx", inter / "dataflow_parent.onnx"]
    return files + sorted((finn_out / "verification_output").glob("verify_*.npy"))


def _restore_prefix(cache: Path, finn_out: Path) -> bool:
    if not (cache / "complete").is_file():
        return False
    for f in cache.rglob("*"):
        if f.is_file() and f.name != "complete":
            dst = finn_out / f.relative_to(cache)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
    return True


def _store_prefix(cache: Path, finn_out: Path) -> None:
    tmp = cache.with_name(cache.name + f".part{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for f in _prefix_files(finn_out):
        dst = tmp / f.relative_to(finn_out)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
    (tmp / "complete").write_text("ok\n", encoding="utf-8")
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(tmp, cache)


def _step_times(progress: Path) -> dict[str, float]:
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


def build_estimate(onnx_path: str | Path, out_dir: str | Path, settings: BuildSettings,
                   *, model: nn.Module | None = None, images: torch.Tensor | None = None,
                   labels: torch.Tensor | None = None, variant: str | None = None,
                   prefix_cache: Path | None = None,
                   folding_config: Path | None = None, reference=None,
                   reference_source: str | None = None,
                   board: Board | None = None) -> HardwareReport:
    """Run finn-plus's estimate flow on a QONNX file and return its report.

    `images` (raw 0..255 pixels, N x C x H x W) are real test images: the first is FINN's
    verification input (expected output: `model`'s, else the QONNX graph's), and with `model`
    all are executed on the folded dataflow graph and compared integer-exactly against it.
    `prefix_cache`: a folder where the board-independent first steps' outputs are kept and
    reused by builds of the same graph (same file, same verification data) for other boards.
    `folding_config`: a FINN folding-config JSON applied over the weight placement's (the
    folding optimizer's choice, hw/folding_run.py).
    `reference` (without `model`): a function images -> logits, e.g. the QONNX file executed by
    qonnx, that all images are compared against instead (labelled `reference_source`).
    `board`: the Board, looked up by the caller (else settings.board is looked up here)."""
    board = board if board is not None else get_board(settings.board)
    settings = settings.resolved(board)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("progress.jsonl", "child_result.json", "hw_outputs.npz"):
        (out / stale).unlink(missing_ok=True)
    onnx_path = Path(onnx_path).resolve()
    from .onnx_input import open_onnx

    open_onnx(onnx_path)  # a missing / truncated / non-ONNX file: a clear error, not the child's
    if images is None:
        from fpgaslim.core.errors import ConfigError

        raise ConfigError("build_estimate needs real input images (verification input)")
    x = images.detach().cpu().float()
    ref_logits = None
    if model is not None:
        from .verify import brevitas_reference

        expected = brevitas_reference(model, x[:1])
    elif reference is not None:
        ref_logits = np.asarray(reference(x.numpy()))
        expected = ref_logits[:1]
    else:
        from .qonnx_export import execute_qonnx, load_onnx

        expected = execute_qonnx(load_onnx(onnx_path), x[:1].numpy())
    np.save(out / "verify_input.npy", x[:1].numpy())
    np.save(out / "verify_expected.npy", expected.astype(np.float32))
    exec_npy = None
    if model is not None or ref_logits is not None:
        exec_npy = out / "exec_input.npy"
        np.save(exec_npy, x.numpy())
    job = {"onnx": str(onnx_path), "out_dir": str(out), "clock_ns": settings.clock_ns,
           "target_fps": settings.target_fps, "mvau_wwidth_max": settings.mvau_wwidth_max,
           "weights": settings.weights, "verify_steps": settings.verify_steps,
           "streamline": settings.streamline,
           "board": board.model_dump(include={"finn_board", "part", "shell_flow", "BRAM_18K",
                                              "URAM"}),
           "verify_input_npy": str(out / "verify_input.npy"),
           "verify_expected_npy": str(out / "verify_expected.npy"),
           "exec_input_npy": str(exec_npy) if exec_npy else None, "start_step": None,
           "prefer_rtl": settings.prefer_rtl,
           "folding_config": str(Path(folding_config).resolve()) if folding_config else None}
    cache = None
    if prefix_cache is not None:
        cache = Path(prefix_cache) / _prefix_key(onnx_path, out, settings)
        if _restore_prefix(cache, out / "finn"):
            job["start_step"] = RESUME_AT
    job_path = atomic_write_json(out / "job.json", job)
    t0 = time.perf_counter()
    _run_child(job_path, out, finn_compat.child_environment(out), settings.timeout_s)
    wall = time.perf_counter() - t0
    child = json.loads((out / "child_result.json").read_text(encoding="utf-8"))
    if cache is not None and job["start_step"] is None:
        _store_prefix(cache, out / "finn")
    report = build_report(out / "finn", board, settings.model_dump(mode="json"),
                          finn_compat.provenance(settings.clock_ns), variant=variant)
    report.timings = {"build_wall_s": round(wall, 3), "finn_build_s": round(child["build_s"], 3),
                      "prefix_reused": float(job["start_step"] is not None),
                      **_step_times(out / "progress.jsonl")}
    if model is not None or ref_logits is not None:
        report.verification = compare(out / "hw_outputs.npz", model, x, labels,
                                      child["exec_s"], child["last_layer"],
                                      strict=settings.strict, reference=ref_logits,
                                      reference_source=reference_source)
        report.timings["verify_exec_s"] = child["exec_s"]
    attach_second_opinion(report, out, settings, board)
    return report


def attach_second_opinion(report: HardwareReport, work: Path, settings: BuildSettings,
                          board: Board | None = None) -> None:
    """Yosys / Verilator figures for the RTL layers of the finished build in `work`, when the
    settings ask for them (progress on the `fpgaslim.hw.second_opinion` logger). Never fails
    the build: problems are recorded per layer."""
    from .second_opinion import run_second_opinion, wanted

    if not wanted(settings):
        return
    import logging

    log = logging.getLogger("fpgaslim.hw.second_opinion")
    t0 = time.perf_counter()
    part = (board if board is not None else get_board(settings.board)).part
    report.second_opinion = run_second_opinion(work, settings, part, progress=log.info)
    report.timings["second_opinion_s"] = round(time.perf_counter() - t0, 3)
