"""ResConv-Prune's hardware side by side: a residual parent and its fused plain variant on FINN's
estimates (what the removed skip paths cost). Reads saved records and hardware reports only, so
it regenerates without retraining or rebuilding."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from fpgaslim.core.atomic import atomic_write_text
from fpgaslim.core.errors import ConfigError
from fpgaslim.hw.api import BuildSettings, build_dir_for, load_report
from fpgaslim.hw.boards import DEFAULT_BOARD, as_board

# FINN layer types a residual connection costs: the fork, the add, and their HLS/RTL variants
SKIP_OPS = ("DuplicateStreams", "AddStreams", "ElementwiseAdd")


class SideBySideRow(BaseModel):
    metric: str
    residual: float | int | str | None
    fused: float | int | str | None
    source: str  # where the number came from


class SkipPathComparison(BaseModel):
    residual_id: str
    fused_id: str
    board: str | None
    rows: list[SideBySideRow]

    def markdown(self) -> str:
        lines = [f"### Residual `{self.residual_id}` vs fused plain `{self.fused_id}`"
                 + (f" on {self.board}" if self.board else ""), "",
                 "| metric | residual | fused plain | change | source |",
                 "|---|---:|---:|---:|---|"]
        for r in self.rows:
            change = ""
            if isinstance(r.residual, (int, float)) and isinstance(r.fused, (int, float)):
                change = f"{r.fused - r.residual:+,.6g}"
                if r.residual:
                    change += f" ({100 * (r.fused - r.residual) / abs(r.residual):+.1f}%)"
            lines.append(f"| {r.metric} | {_fmt(r.residual)} | {_fmt(r.fused)} | {change} "
                         f"| {r.source} |")
        return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _residual_adds(record: Any) -> int | None:
    """Residual adds (skip paths) in the model itself, from its architecture record; None for
    a user model, whose record names the blocks a method removed but not how many it has (the
    AddStreams row below counts them in the hardware graph)."""
    arch = record.arch
    kind = getattr(arch, "kind", None)
    if kind == "user":
        return None
    if kind != "resnet":
        return 0
    return sum(1 for b in arch.blocks if not b.removed)


def _skip_cost(hw: Any, field: str) -> float:
    return float(sum(getattr(layer, field) for layer in hw.layers
                     if any(layer.op_type.startswith(op) for op in SKIP_OPS)))


def skip_path_report(residual: Any, fused: Any, residual_hw: Any, fused_hw: Any,
                     ) -> SkipPathComparison:
    """Side by side: a residual parent and its fused plain variant (Variant records) with their
    FINN hardware reports (hw.report.HardwareReport) on the same board. The difference is what
    the removed skip paths and layers cost; the skip-path layers' own LUT/BRAM are listed too.
    FINN's estimate flow sizes no FIFOs, so skip-path FIFO depth is not in these numbers."""
    est = "FINN estimate (finn-plus, estimate-only flow)"
    rec = "variant record (measured on the model)"
    rows: list[SideBySideRow] = []

    def add(metric: str, a: Any, b: Any, source: str) -> None:
        rows.append(SideBySideRow(metric=metric, residual=a, fused=b, source=source))

    add("test accuracy %", residual.accuracy.test, fused.accuracy.test,
        "measured on the test set, CPU (Brevitas)")
    add("weight layers (conv + linear)", residual.depth, fused.depth, rec)
    add("MACs / image", residual.macs, fused.macs, rec)
    add("parameters", residual.params, fused.params, rec)
    add("residual adds in the model", _residual_adds(residual), _residual_adds(fused),
        "architecture record (a user model's does not count them: -)")
    add("HW layers", len(residual_hw.layers), len(fused_hw.layers),
        f"{est}: folded dataflow graph")
    ops = list(SKIP_OPS) + sorted((set(residual_hw.op_counts) | set(fused_hw.op_counts))
                                  - set(SKIP_OPS))
    for op in ops:
        add(f"{op} layers", residual_hw.op_counts.get(op, 0), fused_hw.op_counts.get(op, 0),
            f"{est}: folded dataflow graph")
    skip_src = (f"{est}, layers {'/'.join(SKIP_OPS)}; FINN has no resource model for these "
                "HLS layers and reports 0, so their cost shows only in a synthesis")
    add("LUT of skip-path layers", _skip_cost(residual_hw, "LUT"), _skip_cost(fused_hw, "LUT"),
        skip_src)
    add("BRAM_18K of skip-path layers", _skip_cost(residual_hw, "BRAM_18K"),
        _skip_cost(fused_hw, "BRAM_18K"), skip_src)
    for res in ("LUT", "BRAM_18K", "URAM", "DSP"):
        add(f"{res} total", residual_hw.resources[res].value, fused_hw.resources[res].value, est)
    add("on-chip weight bits", residual_hw.memory.weight_bits_onchip.value,
        fused_hw.memory.weight_bits_onchip.value, est)
    add("est. throughput fps", residual_hw.throughput.fps.value,
        fused_hw.throughput.fps.value, est)
    add("est. latency us", residual_hw.throughput.latency_us.value,
        fused_hw.throughput.latency_us.value, f"{est}: critical path cycles x clock")
    add("fits the board", str(residual_hw.fits), str(fused_hw.fits), est)
    ver = fused_hw.verification or residual_hw.verification
    add("verification", _verified(residual_hw), _verified(fused_hw),
        ver.source if ver is not None else "not run")
    return SkipPathComparison(residual_id=residual.id, fused_id=fused.id,
                              board=fused_hw.board, rows=rows)


def _verified(hw: Any) -> str | None:
    return hw.verification.summary() if hw.verification is not None else None


def saved_skip_path_report(run: Any, fused_id: str, board: str = DEFAULT_BOARD,
                           settings: Any = None) -> SkipPathComparison:
    """The side-by-side of `fused_id` and its parent from their saved records and hardware
    reports (no rebuilding), also written as skip_paths-<board>.md into the variant's folder."""
    fused = run.record(fused_id)
    if fused.parent is None:
        raise ConfigError(f"variant {fused_id!r} has no parent to compare with")
    parent = run.record(fused.parent)
    settings = (settings or BuildSettings()).for_board(as_board(board))
    reports = [load_report(build_dir_for(run, v.id, settings)) for v in (parent, fused)]
    cmp = skip_path_report(parent, fused, *reports)
    atomic_write_text(run.variant_dir(fused_id) / f"skip_paths-{reports[1].board}.md",
                      cmp.markdown())
    return cmp
