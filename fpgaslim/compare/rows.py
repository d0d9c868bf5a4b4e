"""The comparison's records: its columns, one row per variant x board, the result, and the
Pareto front over rows. The writers and the plots read these; nothing here reads files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fpgaslim.core.errors import ConfigError
from fpgaslim.hw.boards import board_order

URAM_IN_BRAM_18K = 16  # 288 Kib / 18 Kib: URAM expressed as BRAM_18K-equivalents


@dataclass(frozen=True)
class Column:
    """A table column: attribute of ComparisonRow, header, number format, unit."""

    key: str
    header: str
    fmt: str = "{:,.0f}"
    unit: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("variant", "variant", "{}"), Column("board", "board", "{}"),
    Column("method", "method", "{}"), Column("bits", "bits", "{}"),
    Column("accuracy", "PyTorch acc. %", "{:.2f}", "%"),
    Column("hw_accuracy", "hw acc. % (simulated)", "{:.2f}", "%"), Column("params", "params"),
    Column("macs", "MACs"), Column("depth", "depth"),
    Column("BRAM_18K", "BRAM_18K"), Column("URAM", "URAM"), Column("LUT", "LUT"),
    Column("DSP", "DSP"), Column("offchip_bytes", "off-chip B/frame", unit="B"),
    Column("bandwidth_gbps", "GB/s", "{:.3f}", "GB/s"),
    Column("maxfit_fps", "max-fit fps", "{:,.1f}", "frames/s"),
    Column("maxfit_LUT", "max-fit LUT"), Column("maxfit_BRAM_18K", "max-fit BRAM_18K"),
    Column("maxfit_DSP", "max-fit DSP"),
    Column("fps", "default fps", "{:,.1f}", "frames/s"),
    Column("sim_fps", "simulated fps", "{:,.1f}", "frames/s"),
    Column("latency_us", "latency us", "{:,.1f}", "us"), Column("fits", "fits", "{}"),
)
#: boards in this order in every table (then any other board by name): the catalogue's
BOARD_ORDER = board_order()
# columns whose source is the record (measured/counted on the PyTorch model), not a report
RECORD_SOURCES = {
    "accuracy": "measured in PyTorch: the Brevitas QAT model on the dataset's test split "
                "(variant record)",
    "params": "counted on the PyTorch model (compress/stats.py, variant record); a QONNX-file "
              "build (method qonnx-file): on its graph's Conv/MatMul/Gemm weights (hw/api.py)",
    "macs": "counted on the PyTorch model per conv/linear layer (compress/stats.py); a "
            "QONNX-file build: per Conv/MatMul/Gemm node of its graph (hw/api.py)",
    "depth": "counted on the PyTorch model: conv + linear layers (compress/stats.py); a "
             "QONNX-file build: its Conv/MatMul/Gemm nodes",
}


HW_ACCURACY_SOURCE = ("simulated: Python execution of the folded FINN dataflow graph "
                      "(hw/verify.py) on the build's verification images (their number in "
                      "the cell), labels of the dataset's test split")


class ComparisonRow(BaseModel):
    """One variant on one board; None where a figure does not exist (e.g. no max-fit run)."""

    model_config = ConfigDict(extra="forbid")
    run: str
    variant: str
    parent: str | None
    method: str
    dataset: str
    bits: str
    board: str
    board_display: str
    build: str  # build folder name: <board> or <board>-<settings hash>
    accuracy: float | None
    test_images: int
    params: int
    macs: int
    depth: int
    BRAM_18K: float
    URAM: float
    LUT: float
    DSP: float
    percent: dict[str, float]  # LUT/DSP/BRAM_18K/URAM as % of the board
    onchip_bram18k_equiv: float  # BRAM_18K + 16 x URAM
    weight_bits_onchip: float
    offchip_bytes: float
    bandwidth_gbps: float
    bandwidth_percent: float | None
    fps: float
    latency_us: float
    bottleneck: str
    fits: bool
    status: str
    overflow: list[str]
    maxfit_fps: float | None = None
    maxfit_none_fits: bool = False  # a folding search ran and nothing fitted the budget
    maxfit_method: str | None = None  # "optimal" (hw/folding_run.py) or "search"
    maxfit_LUT: float | None = None  # resources of the max-fit folding (its FINN estimate)
    maxfit_BRAM_18K: float | None = None
    maxfit_URAM: float | None = None
    maxfit_DSP: float | None = None
    verified: str | None = None  # e.g. "bit-exact 10/10" (simulated)
    hw_accuracy: float | None = None  # % of the verified images the hardware graph gets right
    hw_accuracy_images: int | None = None  # how many test images that is (simulated)
    # `fpgaslim simulate` of this build (hw/sim): fps of the stitched design with sized FIFOs,
    # only when its outputs were bit-exact and nothing deadlocked; sim_note says otherwise
    sim_fps: float | None = None
    sim_note: str | None = None
    report: str  # path of report.json

    @property
    def key(self) -> str:
        return f"{self.run}/{self.variant}"


class Skipped(BaseModel):
    """Something that could not be read (e.g. a report from an older schema) and why."""

    model_config = ConfigDict(extra="forbid")
    path: str
    reason: str


@dataclass
class ComparisonData:
    """The rows, the column sources and the files written: what the writers and plots read
    (`table.ComparisonResult` adds the terminal table)."""

    rows: list[ComparisonRow]
    legend: dict[str, str]  # column key -> where its numbers come from
    files: dict[str, Path] = field(default_factory=dict)  # "csv"/"markdown"/"html"/... -> path
    skipped: list[Skipped] = field(default_factory=list)
    detail: tuple[str, str] | None = None  # (run, variant) of the per-layer plots



# --------------------------------------------------------------------------- Pareto
def pareto_front(points: Sequence[Sequence[float | None]],
                 maximize: Sequence[bool]) -> list[bool]:
    """For each point, whether no other point dominates it (at least as good in every
    objective, strictly better in one). `maximize[i]` says the direction of objective i.
    Points with a missing (None) objective are never on the front; equal points both are."""
    signs = [1.0 if m else -1.0 for m in maximize]
    if any(len(p) != len(signs) for p in points):
        raise ConfigError(f"every point needs {len(signs)} objectives")
    valid = [all(v is not None for v in p) for p in points]
    scored = [[s * float(v) for s, v in zip(signs, p)] if ok else [] for p, ok in
              zip(points, valid)]
    front = []
    for i, a in enumerate(scored):
        if not valid[i]:
            front.append(False)
            continue
        dominated = any(valid[j] and all(x >= y for x, y in zip(b, a)) and
                        any(x > y for x, y in zip(b, a)) for j, b in enumerate(scored) if j != i)
        front.append(not dominated)
    return front
