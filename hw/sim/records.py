"""The records of a stitched-design simulation, and what is read out of one run.

A `SimRun` is one run of the compiled design (deep FIFOs, or the sized ones): its steady-state
cycles per frame (between the first and the last completed output frame), first-frame latency
(first input word of frame 1 to its last output word), per-layer stall cycles in that window,
the measured bottleneck, the outputs compared bit for bit, and on a deadlock the full FIFOs and
the waiting layers. `Simulation` is the whole answer of `fpgaslim simulate`: both runs, FINN's
estimates beside the measurements, the sized FIFOs and their cost, where the depths were
written. No finn-plus import here: the parent reads these from the child's JSON.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SOURCE = "Verilator simulation of the stitched design"
ESTIMATE_SOURCE = "FINN estimate"


class LayerStalls(BaseModel):
    """One node over the steady-state window (or the whole run with fewer than 2 frames)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    op_type: str
    inserted: bool = False  # a FIFO or width converter of FINN's stitching
    finn_cycles: int | None = None  # FINN's get_exp_cycles()
    words_out: int = 0
    input_starved: int = 0  # cycles nothing left it, nothing was blocked, an input was empty
    output_blocked: int = 0  # cycles a word it offered was not taken


class Deadlock(BaseModel):
    """What the design looked like when it stopped producing output."""

    model_config = ConfigDict(extra="forbid")
    cycle: int
    idle_cycles: int  # cycles without an output word that counted as a deadlock
    full_fifos: list[str] = Field(default_factory=list)
    waiting_on_output: list[str] = Field(default_factory=list)  # word offered, never taken
    waiting_on_input: list[str] = Field(default_factory=list)  # ready, nothing comes
    message: str


class FifoDepth(BaseModel):
    """One FIFO of FINN's stitching: where it is, its depth in a run and what it held."""

    model_config = ConfigDict(extra="forbid")
    name: str
    producer: str | None
    consumer: str | None
    width: int
    depth: int
    max_occupancy: int


class SimRun(BaseModel):
    """One Verilator run of the compiled stitched design."""

    model_config = ConfigDict(extra="forbid")
    label: str  # "deep FIFOs" | "sized FIFOs" | ...
    status: str  # done | deadlock | cycle_limit | timeout | failed
    frames: int
    frames_done: int
    cycles: int
    cycles_per_frame: float | None = None
    latency_cycles: int | None = None
    outputs_exact: bool = False
    mismatched_words: int = 0
    words_expected: int = 0
    words_out: int = 0
    compile_s: float = 0.0
    compiled: bool = True  # False: the simulator came from the cache
    sim_s: float = 0.0
    fifos: list[FifoDepth] = Field(default_factory=list)
    layers: list[LayerStalls] = Field(default_factory=list)
    bottleneck: str | None = None
    deadlock: Deadlock | None = None
    reason: str | None = None


class FifoCost(BaseModel):
    """A sized FIFO's cost: FINN's estimate, and Yosys's count where it ran."""

    model_config = ConfigDict(extra="forbid")
    name: str
    depth: int
    width: int
    finn_LUT: float | None = None
    finn_BRAM_18K: float | None = None
    finn_URAM: float | None = None
    yosys_LUT: int | None = None
    yosys_FF: int | None = None
    yosys_BRAM_18K: int | None = None
    yosys_note: str | None = None


class Simulation(BaseModel):
    """`fpgaslim simulate`: the stitched design run in Verilator, beside FINN's estimates."""

    model_config = ConfigDict(extra="forbid")
    source: str = SOURCE
    variant: str | None = None
    board: str | None = None
    build: str | None = None
    clock_ns: float
    frames: int
    outputs_exact: bool
    deadlock: bool
    cycles_per_frame: float | None
    estimated_cycles_per_frame: int
    cycles_ratio: float | None  # measured / estimated
    latency_cycles: int | None
    estimated_latency_cycles: int
    latency_ratio: float | None
    fps: float | None
    estimated_fps: float
    layers: int  # nodes of the stitched design (FIFOs and width converters included)
    rtl_layers: int
    bottleneck: str | None
    estimated_bottleneck: str
    fifo_depths: dict[str, int]  # FIFO node -> sized depth
    fifo_cost: list[FifoCost] = Field(default_factory=list)
    fifo_cost_total: dict[str, float] = Field(default_factory=dict)
    runs: list[SimRun]
    # the capacity search on the deep design (hw/sim/design.search_capacities): per round its
    # status, cycles per frame and the capacity tried per FIFO
    search: list[dict] = Field(default_factory=list)
    folding_config: str | None = None  # FINN folding config with in/outFIFODepths
    bitfile_config: str | None = None  # the full-flow config that uses it
    throughput_kept: bool | None = None  # sized run as fast as the deep run
    tools: dict[str, str | None] = Field(default_factory=dict)
    seconds: float = 0.0
    note: str | None = None


def render(sim: Simulation):
    """Two rich tables: the design against FINN's estimate, and the FIFOs / layers."""
    from rich.table import Table

    def num(x, fmt="{:,.0f}"):
        return "n/a" if x is None else fmt.format(x)

    t = Table(title=f"{sim.source}: {sim.frames} frames, "
              + ("outputs bit-exact" if sim.outputs_exact else "outputs DIFFER")
              + (", DEADLOCK" if sim.deadlock else ""),
              caption=f"measured: {SOURCE} (sized FIFOs), clock {sim.clock_ns:g} ns; "
              f"estimate: {ESTIMATE_SOURCE} (get_exp_cycles, critical path)")
    for col in ("", "measured", "FINN estimate", "ratio"):
        t.add_column(col)
    t.add_row("cycles per frame (steady state)", num(sim.cycles_per_frame, "{:,.1f}"),
              f"{sim.estimated_cycles_per_frame:,}", num(sim.cycles_ratio, "{:.2f}"))
    t.add_row("first-frame latency, cycles", num(sim.latency_cycles),
              f"{sim.estimated_latency_cycles:,}", num(sim.latency_ratio, "{:.2f}"))
    t.add_row("fps", num(sim.fps), f"{sim.estimated_fps:,.0f}",
              num(None if sim.fps is None else sim.fps / sim.estimated_fps, "{:.2f}"))
    t.add_row("bottleneck", sim.bottleneck or "n/a", sim.estimated_bottleneck, "")
    f = Table(title="FIFOs: max occupancy with deep FIFOs, sized depth, cost")
    for col in ("FIFO", "between", "width", "deep", "max occupancy", "sized depth",
                "occupancy (sized)", "FINN LUT", "FINN BRAM_18K", "Yosys LUT"):
        f.add_column(col)
    deep = {x.name: x for x in sim.runs[0].fifos} if sim.runs else {}
    sized = {x.name: x for x in sim.runs[-1].fifos} if len(sim.runs) > 1 else {}
    cost = {c.name: c for c in sim.fifo_cost}
    for name, depth in sim.fifo_depths.items():
        d, s, c = deep.get(name), sized.get(name), cost.get(name)
        f.add_row(name, f"{d.producer or 'input'} -> {d.consumer or 'output'}" if d else "",
                  str(d.width) if d else "", str(d.depth) if d else "",
                  str(d.max_occupancy) if d else "", str(depth),
                  str(s.max_occupancy) if s else "",
                  num(c.finn_LUT if c else None), num(c.finn_BRAM_18K if c else None),
                  num(c.yosys_LUT if c else None))
    last = sim.runs[-1] if sim.runs else None
    lt = Table(title="Layers in steady state: cycles input-starved / output-blocked "
               f"(window of {_window_cycles(last)} cycles)")
    for col in ("layer", "FINN cycles (exp.)", "input starved", "output blocked", "note"):
        lt.add_column(col)
    for x in (last.layers if last else []):
        if x.inserted:
            continue
        lt.add_row(x.name, num(x.finn_cycles), f"{x.input_starved:,}",
                   f"{x.output_blocked:,}", "bottleneck" if x.name == sim.bottleneck else "")
    return [t, f, lt]


def _window_cycles(run: SimRun | None) -> str:
    if run is None or run.cycles_per_frame is None:
        return "the whole run"
    return f"{run.cycles_per_frame * (run.frames_done - 1):,.0f}"
