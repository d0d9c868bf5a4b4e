"""FINN estimate builds under a time limit: settings, the job, the reused prefix.

The build runs in a child process (hw/build_job.py: a BuildJob run by `python -m
fpgaslim.hw.worker`, its own session; the bitfile build uses the same) because finn-plus
changes process-wide state (logging, stdout, the finn_compat shim) and because a streamlining
loop can run forever (FINN_NOTES): at the limit the child's process group is killed and the
step it was in (from its progress file) is named in a BuildTimeoutError.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from . import finn_compat
from .boards import Board, BoardField, default_board
from .build_job import BuildJob, run_job, step_times
from .build_steps import preset
from .report import HardwareReport, build_report
from .verify import compare_outputs

# The board-independent prefix of the step list ends here; later builds of the same graph for
# other boards start from its saved output (streamlining dominates build time).
PREFIX_LAST, RESUME_AT = "step_create_dataflow_partition", "step_specialize_layers"
# A shorter prefix, kept beside it: the streamlined graph, which prefer_rtl does not change (it
# changes step_convert_to_hw), so a build with the other prefer_rtl (the optimal folding's
# standalone-thresholds start build) resumes there instead of streamlining again.
STREAMLINED_LAST = "step_fpgaslim_streamline"
PREFIX_VERSION = "fpgaslim-prefix/4"  # bump when a prefix step changes what it produces


class BuildSettings(BaseModel):
    """One estimate build. A misspelt option is an error (extra="forbid").

    `board`: the Board, looked up once here from its name (an unknown name fails listing
    the boards); saved settings hold its catalogue name."""

    model_config = ConfigDict(extra="forbid")
    board: BoardField = Field(default_factory=default_board)
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

    def for_board(self, board: Board) -> "BuildSettings":
        """These settings for `board` (a Board: looked up by the caller)."""
        if not isinstance(board, Board):
            raise TypeError(f"for_board takes a Board, not {type(board).__name__}")
        return self.model_copy(update={"board": board})

    def resolved(self) -> "BuildSettings":
        """target_fps filled in with the board's default, so equal builds hash equal."""
        return self.model_copy(update={"target_fps": self.target_fps
                                       or self.board.default_target_fps})


def _prefix_key(onnx_path: Path, out: Path, settings: BuildSettings,
                last: str = PREFIX_LAST) -> str:
    h = hashlib.sha256(PREFIX_VERSION.encode())
    for f in (onnx_path, out / "verify_input.npy", out / "verify_expected.npy"):
        h.update(f.read_bytes())
    h.update(str(settings.verify_steps).encode())
    if last == PREFIX_LAST:
        if settings.prefer_rtl:  # standalone thresholds change step_convert_to_hw
            h.update(b"prefer_rtl")
    else:
        h.update(last.encode())
    return h.hexdigest()[:20]


def _prefix_files(finn_out: Path, last: str = PREFIX_LAST) -> list[Path]:
    inter = finn_out / "intermediate_models"
    files = [inter / f"{last}.onnx"]
    if last == PREFIX_LAST:
        files.append(inter / "dataflow_parent.onnx")
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


def _store_prefix(cache: Path, finn_out: Path, last: str = PREFIX_LAST) -> None:
    tmp = cache.with_name(cache.name + f".part{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for f in _prefix_files(finn_out, last):
        dst = tmp / f.relative_to(finn_out)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
    (tmp / "complete").write_text("ok\n", encoding="utf-8")
    if (cache / "complete").is_file():  # a parallel build of the same graph stored it first
        shutil.rmtree(tmp, ignore_errors=True)  # (same key, same content)
        return
    shutil.rmtree(cache, ignore_errors=True)  # an unfinished one
    try:
        os.replace(tmp, cache)
    except OSError:  # a parallel build won the race between the check and the rename
        shutil.rmtree(tmp, ignore_errors=True)
        if not (cache / "complete").is_file():
            raise


def estimate_job(onnx_path: Path, out: Path, settings: BuildSettings, board: Board, *,
                 exec_npy: Path | None = None,
                 folding_config: Path | None = None,
                 specialize_config: Path | None = None) -> BuildJob:
    """The estimate build's job for the child: preset "estimate" (with prefer_rtl's step),
    FINN's own verification on out/verify_input.npy, the board's part and capacities."""
    return BuildJob(
        preset="estimate", steps=preset("estimate", prefer_rtl=settings.prefer_rtl),
        onnx=str(onnx_path), out_dir=str(out), finn_dir=str(out / "finn"), board=board,
        fpga_part=board.part, clock_ns=settings.clock_ns, target_fps=settings.target_fps,
        mvau_wwidth_max=settings.mvau_wwidth_max, weights=settings.weights,
        folding_config=str(Path(folding_config).resolve()) if folding_config else None,
        specialize_config=str(Path(specialize_config).resolve()) if specialize_config else None,
        streamline=settings.streamline, prefer_rtl=settings.prefer_rtl,
        verify_steps=settings.verify_steps, verify_input_npy=str(out / "verify_input.npy"),
        verify_expected_npy=str(out / "verify_expected.npy"),
        exec_input_npy=str(exec_npy) if exec_npy else None)


def _resume_step(steps: list[str], last: str = PREFIX_LAST) -> str:
    """The step a build resumes at after the restored prefix ending at `last`: the one after
    it (after PREFIX_LAST: RESUME_AT, or step_fpgaslim_prefer_rtl in front of it)."""
    return steps[steps.index(last) + 1]


def _write_verification_inputs(out: Path, onnx_path: Path, x: torch.Tensor,
                                model: nn.Module | None, reference: Any, topk: int | None = None
                                ) -> tuple[np.ndarray | None, Path | None]:
    """FINN's verification pair (the first image and its expected output: `model`'s, else
    `reference`'s, else the QONNX graph's) and, with a model or reference, all images to
    execute on the folded graph. Returns (the reference's logits or None, that file or None)."""
    ref_logits = None
    if model is not None:
        from .verify import brevitas_reference

        expected = brevitas_reference(model, x[:1])
    elif reference is not None:
        ref_logits = np.asarray(reference(x.numpy()))
        expected = ref_logits[:1]
        if topk is not None:  # the graph FINN checks returns the top-k indices
            from .verify import topk_indices

            expected = topk_indices(ref_logits[:1], topk)
    else:
        from .qonnx_export import execute_qonnx, load_onnx

        expected = execute_qonnx(load_onnx(onnx_path), x[:1].numpy())
    np.save(out / "verify_input.npy", x[:1].numpy())
    np.save(out / "verify_expected.npy", expected.astype(np.float32))
    exec_npy = None
    if model is not None or ref_logits is not None:
        exec_npy = out / "exec_input.npy"
        np.save(exec_npy, x.numpy())
    return ref_logits, exec_npy


def _run_with_prefix(job: BuildJob, onnx_path: Path, settings: BuildSettings,
                     prefix_cache: Path | None) -> tuple[BuildJob, dict, float]:
    """Run `job` in the build child, resuming after a cached board-independent prefix when
    `prefix_cache` has one for this graph (and storing it when it had none). Returns the
    job as run, the child's result and the wall seconds."""
    out = Path(job.out_dir)
    caches: dict[str, Path] = {}
    if prefix_cache is not None:
        caches = {last: Path(prefix_cache) / _prefix_key(onnx_path, out, settings, last)
                  for last in (PREFIX_LAST, STREAMLINED_LAST)}
        for last, cache in caches.items():  # the longer prefix first
            if _restore_prefix(cache, Path(job.finn_dir)):
                job = job.model_copy(update={"start_step": _resume_step(job.steps, last)})
                break
    t0 = time.perf_counter()
    child = run_job(job, finn_compat.child_environment(out), settings.timeout_s)
    wall = time.perf_counter() - t0
    ran = job.steps if job.start_step is None else job.steps[job.steps.index(job.start_step):]
    for last, cache in caches.items():
        if last in ran:  # this run produced that prefix's output itself
            _store_prefix(cache, Path(job.finn_dir), last)
    return job, child, wall


def build_estimate(onnx_path: str | Path, out_dir: str | Path, settings: BuildSettings,
                   *, model: nn.Module | None = None, images: torch.Tensor | None = None,
                   labels: torch.Tensor | None = None, variant: str | None = None,
                   prefix_cache: Path | None = None,
                   folding_config: Path | None = None,
                   specialize_config: Path | None = None, reference=None,
                   reference_source: str | None = None, topk: int | None = None
                   ) -> HardwareReport:
    """Run finn-plus's estimate flow on a QONNX file and return its report.

    `images` (raw 0..255 pixels, N x C x H x W) are real test images: the first is FINN's
    verification input (expected output: `model`'s, else the QONNX graph's), and with `model`
    all are executed on the folded dataflow graph and compared integer-exactly against it.
    `prefix_cache`: a folder where the board-independent first steps' outputs are kept and
    reused by builds of the same graph (same file, same verification data) for other boards.
    `folding_config`: a FINN folding-config JSON applied over the weight placement's (the
    folding optimizer's choice, hw/folding_run.py); `specialize_config`: FINN's
    specialize-layers config (per node HLS or RTL, the optimizer's mix).
    `reference` (without `model`): a function images -> logits, e.g. the QONNX file executed by
    qonnx, that all images are compared against instead (labelled `reference_source`).
    The board is settings.board. `topk`: the graph ends in FINN's top-k (LabelSelect): its
    output is class indices, checked against the reference's top-k; the integers are
    compared at the last weight layer."""
    settings = settings.resolved()
    board = settings.board
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
    ref_logits, exec_npy = _write_verification_inputs(out, onnx_path, x, model, reference,
                                                      topk)
    job = estimate_job(onnx_path, out, settings, board, exec_npy=exec_npy,
                       folding_config=folding_config, specialize_config=specialize_config)
    job, child, wall = _run_with_prefix(job, onnx_path, settings, prefix_cache)
    report = build_report(out / "finn", board, settings.model_dump(mode="json"),
                          finn_compat.provenance(settings.clock_ns), variant=variant)
    report.timings = {"build_wall_s": round(wall, 3), "finn_build_s": round(child["build_s"], 3),
                      "prefix_reused": float(job.start_step is not None),
                      **step_times(job.progress)}
    if model is not None or ref_logits is not None:
        report.verification = compare_outputs(out / "hw_outputs.npz", model, x, labels,
                                              child["exec_s"], child["last_layer"],
                                              strict=settings.strict, reference=ref_logits,
                                              reference_source=reference_source, topk=topk)
        report.timings["verify_exec_s"] = child["exec_s"]
    attach_second_opinion(report, out, settings)
    return report


def attach_second_opinion(report: HardwareReport, work: Path, settings: BuildSettings
                          ) -> None:
    """Yosys / Verilator figures for the RTL layers of the finished build in `work`, when the
    settings ask for them (progress on the `fpgaslim.hw.second_opinion` logger). Never fails
    the build: problems are recorded per layer."""
    from .second_opinion import run_second_opinion, wanted

    if not wanted(settings):
        return
    import logging

    log = logging.getLogger("fpgaslim.hw.second_opinion")
    t0 = time.perf_counter()
    report.second_opinion = run_second_opinion(work, settings, settings.board.part,
                                               progress=log.info)
    report.timings["second_opinion_s"] = round(time.perf_counter() - t0, 3)
