"""The hardware report of one variant on one board: a typed record built from FINN's estimate
reports plus what FINN does not report (off-chip traffic, % of the board, fit and overflow),
a JSON writer with its schema, and a rich table renderer. Every figure carries its source."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fpgaslim.core.atomic import atomic_write_json, atomic_write_text
from fpgaslim.core.errors import CheckpointError

from .boards import Board
from .figure import Figure
from .offchip import OffChipTraffic, offchip_traffic
from .postsynth import PostSynthesis
from .second_opinion import SecondOpinion
from .verify import Verification

SCHEMA_VERSION = 1
FIT_RESOURCES = ("LUT", "DSP", "BRAM_18K", "URAM")  # what FINN estimates (no FF estimate)
LUTRAM_SOURCE = ("fpgaslim estimate from FINN's layer config: weight bits of on-chip weight "
                 "layers FINN places in neither BRAM nor URAM / 64 (one LUT6 as 64x1 RAM)")


class OnChipMemory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    BRAM_18K: Figure
    URAM: Figure
    LUTRAM: Figure  # LUTs used as weight memory
    weight_bits_onchip: Figure  # % of the board's BRAM+URAM bits
    weight_bits_offchip: Figure


class Throughput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fps: Figure
    latency_us: Figure
    bottleneck_layer: str
    bottleneck_cycles: Figure
    fps_bandwidth_limit: Figure  # what the board's off-chip bandwidth alone allows
    clock_ns: float
    source: str


class LayerReport(BaseModel):
    """One HW layer: its FINN estimates and placement (for per-layer plots)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    op_type: str
    cycles: int
    LUT: float
    BRAM_18K: float
    URAM: float
    DSP: float
    mem_mode: str | None = None
    weight_bits: int = 0
    weight_dtype: str | None = None
    offchip_weight_bytes_per_frame: float = 0.0
    PE: int | None = None
    SIMD: int | None = None
    source: str


class HardwareReport(BaseModel):
    """Everything the comparison needs about one variant on one board."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    variant: str | None = None
    board: str
    board_display: str
    part: str
    settings: dict[str, Any]
    status: str  # "fits" | "does not fit"
    fits: bool
    # resource -> amount over the board (only when not fitting); "offchip_GBps" when the
    # off-chip traffic at the estimated fps exceeds the board's memory bandwidth
    overflow: dict[str, Figure]
    resources: dict[str, Figure]  # LUT, DSP, BRAM_18K, URAM totals with % of the board
    memory: OnChipMemory
    offchip: OffChipTraffic
    throughput: Throughput
    layers: list[LayerReport]
    op_counts: dict[str, int]  # HW layers by generic op type (e.g. DuplicateStreams: 3)
    op_counts_source: str
    finn_verification: dict[str, str]  # FINN verify step -> SUCCESS/FAIL
    verification: Verification | None = None
    # Vivado's numbers from a --bitfile build, next to (never replacing) FINN's estimates
    post_synthesis: PostSynthesis | None = None
    # Yosys / Verilator figures per RTL layer beside FINN's (--synth yosys / --sim verilator)
    second_opinion: SecondOpinion | None = None
    timings: dict[str, float] = Field(default_factory=dict)  # build wall times, seconds
    finn_version: str
    build_dir: str
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"FINN report {path} is missing: the build did not finish")
    return json.loads(path.read_text(encoding="utf-8"))


def generic_op(op_type: str) -> str:
    for suffix in ("_hls", "_rtl"):
        if op_type.endswith(suffix):
            return op_type[: -len(suffix)]
    return op_type


def build_report(finn_out: Path, board: Board, settings: dict[str, Any], source: str,
                 variant: str | None = None) -> HardwareReport:
    """Assemble the report from a finished estimate build's report folder."""
    rep = finn_out / "report"
    perf = _read_json(rep / "estimate_network_performance.json")
    res = _read_json(rep / "estimate_layer_resources.json")
    cycles = _read_json(rep / "estimate_layer_cycles.json")
    table = _read_json(rep / "fpgaslim_layers.json")
    layers = _layer_reports(table, res, cycles, source)
    fps = float(perf["estimated_throughput_fps"])
    traffic = offchip_traffic(table, fps, board)
    for layer in layers:
        layer.offchip_weight_bytes_per_frame = traffic.weight_bytes_by_layer.get(layer.name, 0.0)
    resources, overflow = _fit(layers, traffic, board, source)
    from .finn_compat import finn_version

    return HardwareReport(
        variant=variant, board=board.name, board_display=board.display, part=board.part,
        settings=settings, status="does not fit" if overflow else "fits", fits=not overflow,
        overflow=overflow, resources=resources,
        memory=_onchip_memory(table, res, resources, board), offchip=traffic,
        throughput=_throughput(perf, traffic, board, source, float(settings["clock_ns"])),
        layers=layers, op_counts=_op_counts(layers),
        op_counts_source=f"{source}: HW layers of the folded dataflow graph",
        finn_verification=_finn_verification(finn_out / "verification_output"),
        finn_version=finn_version(), build_dir=str(finn_out.parent))


def _layer_reports(table: dict, res: dict, cycles: dict, source: str) -> list[LayerReport]:
    """One LayerReport per HW layer: fpgaslim's layer table joined with FINN's estimates."""
    layers: list[LayerReport] = []
    for row in table["layers"]:
        r = res.get(row["name"], {})
        layers.append(LayerReport(
            name=row["name"], op_type=row["op_type"], cycles=int(cycles[row["name"]]),
            LUT=float(r.get("LUT", 0)), BRAM_18K=float(r.get("BRAM_18K", 0)),
            URAM=float(r.get("URAM", 0)), DSP=float(r.get("DSP", 0)),
            mem_mode=row.get("mem_mode"), weight_bits=int(row.get("weight_bits", 0)),
            weight_dtype=row.get("weight_dtype"),
            PE=row.get("PE"), SIMD=row.get("SIMD"), source=source))
    return layers


def _fit(layers: list[LayerReport], traffic: OffChipTraffic, board: Board, source: str
         ) -> tuple[dict[str, Figure], dict[str, Figure]]:
    """(resource totals with % of the board, what is over the board: resources and off-chip
    bandwidth)."""
    totals = {k: sum(getattr(layer, k) for layer in layers) for k in FIT_RESOURCES}
    fab = board.source.fabric
    resources = {k: Figure.of(totals[k], "count", source, board.capacity(k), fab)
                 for k in FIT_RESOURCES}
    overflow = {k: Figure.of(totals[k] - board.capacity(k), "count",
                             f"{source} minus board capacity", None)
                for k in FIT_RESOURCES if totals[k] > board.capacity(k)}
    if traffic.bandwidth_needed.value > board.offchip_gbps:
        overflow["offchip_GBps"] = Figure.of(
            traffic.bandwidth_needed.value - board.offchip_gbps, "GB/s",
            f"{traffic.bandwidth_needed.source} minus board bandwidth ({board.source.offchip})")
    return resources, overflow


def _onchip_memory(table: dict, res: dict, resources: dict[str, Figure],
                   board: Board) -> OnChipMemory:
    """BRAM/URAM from the totals, LUTRAM and weight bits from the layer table."""
    fab = board.source.fabric
    onchip = [x for x in table["layers"] if "weight_bits" in x and x["mem_mode"] != "external"]
    lutram_bits = sum(x["weight_bits"] for x in onchip
                      if res.get(x["name"], {}).get("BRAM_18K", 0) == 0
                      and res.get(x["name"], {}).get("URAM", 0) == 0)
    onchip_bits = sum(x["weight_bits"] for x in onchip)
    offchip_bits = sum(x["weight_bits"] for x in table["layers"]
                       if x.get("mem_mode") == "external")
    mem_bits = board.BRAM_18K * 18 * 1024 + board.URAM * 288 * 1024
    return OnChipMemory(
        BRAM_18K=resources["BRAM_18K"], URAM=resources["URAM"],
        LUTRAM=Figure.of(math.ceil(lutram_bits / 64), "LUT", LUTRAM_SOURCE, board.LUT, fab),
        weight_bits_onchip=Figure.of(
            onchip_bits, "bit", "FINN layer config (weight tensor size x weight datatype bits); "
            "capacity = BRAM_18K x 18 Kib + URAM x 288 Kib", mem_bits, fab),
        weight_bits_offchip=Figure.of(offchip_bits, "bit", "FINN layer config, layers with "
                                      "mem_mode=external"))


def _throughput(perf: dict, traffic: OffChipTraffic, board: Board, source: str,
                clock_ns: float) -> Throughput:
    """FINN's throughput, latency and bottleneck, and what the off-chip bandwidth allows."""
    return Throughput(
        fps=Figure.of(float(perf["estimated_throughput_fps"]), "frames/s", source),
        latency_us=Figure.of(float(perf["estimated_latency_ns"]) / 1000.0, "us",
                             f"{source}, critical path cycles x clock"),
        bottleneck_layer=str(perf["max_cycles_node_name"]),
        bottleneck_cycles=Figure.of(float(perf["max_cycles"]), "cycles", source),
        fps_bandwidth_limit=Figure.of(
            board.offchip_gbps * 1e9 / traffic.total_bytes.value, "frames/s",
            f"board off-chip bandwidth ({board.source.offchip}) / off-chip bytes per frame"),
        clock_ns=clock_ns, source=source)


def _op_counts(layers: list[LayerReport]) -> dict[str, int]:
    """HW layers by generic op type, sorted by name."""
    counts: dict[str, int] = {}
    for layer in layers:
        g = generic_op(layer.op_type)
        counts[g] = counts.get(g, 0) + 1
    return dict(sorted(counts.items()))


def _finn_verification(verify_dir: Path) -> dict[str, str]:
    """FINN's verify step -> SUCCESS/FAIL, from its verification_output file names."""
    finn_ver: dict[str, str] = {}
    if verify_dir.is_dir():
        for f in sorted(verify_dir.glob("verify_*_0_*.npy")):
            step = f.stem.removeprefix("verify_").rsplit("_", 2)[0]
            finn_ver[step] = f.stem.rsplit("_", 1)[1]
    return finn_ver


def save_report(report: HardwareReport, path: str | Path) -> Path:
    """report.json plus its JSON schema next to it (report.schema.json), both atomic."""
    path = Path(path)
    atomic_write_json(path.with_name("report.schema.json"), HardwareReport.model_json_schema())
    atomic_write_text(path, report.model_dump_json(indent=2))
    return path


def load_report(path: str | Path) -> HardwareReport:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise CheckpointError(f"no hardware report at {path}")
    try:
        return HardwareReport.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{path} is not a valid hardware report: {exc}") from exc


def render(report: HardwareReport, console: Any = None) -> Any:
    """A rich table of the report (returned, and printed if a console is given)."""
    from rich.table import Table

    title = (f"{report.variant or 'model'} on {report.board_display}: "
             f"{report.status.upper()}")
    t = Table(title=title, caption=report.throughput.source)
    for col in ("figure", "value", "board", "%", "source"):
        t.add_column(col, overflow="fold")

    def row(name: str, f: Figure, fmt: str = "{:,.0f}") -> None:
        t.add_row(name, fmt.format(f.value) + ("" if f.unit == "count" else f" {f.unit}"),
                  "" if f.capacity is None else f"{f.capacity:,.0f}",
                  "" if f.percent is None else f"{f.percent:.1f}",
                  f.source if len(f.source) < 60 else f.source[:57] + "...")

    for k, f in report.resources.items():
        row(k, f)
    if report.post_synthesis is not None:  # only after a --bitfile build
        ps = report.post_synthesis
        for k in ("LUT", "FF", "DSP", "URAM"):
            if k in ps.total:
                t.add_row(f"{k} post-synth", f"{ps.total[k]:,}", "", "", ps.source[:57])
        t.add_row("BRAM_18K post-synth", f"{ps.bram_18k_equivalent:,}", "", "", ps.source[:57])
        if ps.timing is not None:
            t.add_row("fmax post-route", f"{ps.timing.fmax_mhz:,.1f} MHz", "", "",
                      ps.timing.source[:57])
    row("LUTRAM (weights)", report.memory.LUTRAM)
    row("weight bits on-chip", report.memory.weight_bits_onchip)
    row("weight bits off-chip", report.memory.weight_bits_offchip)
    o = report.offchip
    row("input / frame", o.input_bytes)
    row("output / frame", o.output_bytes)
    row("off-chip weights / frame", o.weight_bytes)
    row("off-chip total / frame", o.total_bytes)
    row("bandwidth needed", o.bandwidth_needed, "{:,.3f}")
    row("throughput", report.throughput.fps, "{:,.1f}")
    row("latency", report.throughput.latency_us, "{:,.1f}")
    row(f"bottleneck {report.throughput.bottleneck_layer}", report.throughput.bottleneck_cycles)
    row("fps allowed by off-chip bandwidth", report.throughput.fps_bandwidth_limit, "{:,.1f}")
    for k, f in report.overflow.items():
        row(f"OVER: {k}", f)
    if report.verification is not None:
        v = report.verification
        t.add_row("verification", v.summary(), "", "", f"{v.source[:57]}...")
        t.add_row("hardware accuracy (simulated)", v.accuracy_line(), "", "",
                  "simulated: folded FINN graph in Python (hw/verify.py)")
    t.add_row("HW layers", ", ".join(f"{k} x{n}" for k, n in report.op_counts.items()), "", "",
              report.op_counts_source[:57])
    if console is not None:
        console.print(t)
        if report.second_opinion is not None:
            from .second_opinion import render_second_opinion

            console.print(render_second_opinion(report.second_opinion))
    return t
