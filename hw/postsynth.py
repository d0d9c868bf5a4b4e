"""Vivado's post-synthesis / post-route figures, read from a finished FINN bitfile build.

FINN writes `report/post_synth_resources.json` (Zynq) or `report/post_synth_resources_<device>.json`
(Alveo), `{instance: {LUT, FF, SRL, BRAM_36K, BRAM_18K, URAM, DSP}}` with "(top)" for the whole
design including the shell, plus `report/post_route_timing.rpt` (Vivado's timing summary).
`read_post_synth()` turns them into a `PostSynthesis` record for the hardware report, shown next
to (never instead of) FINN's estimates. Its own module so that the report (below the bitfile
flow, which drives builds) does not import the flow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Timing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clock_ns: float
    wns_ns: float
    fmax_mhz: float  # 1000 / (clock - WNS)
    met: bool
    source: str = "Vivado post-route timing summary (report/post_route_timing.rpt)"


class PostSynthesis(BaseModel):
    """Vivado's numbers, for the hardware report next to FINN's estimates."""

    model_config = ConfigDict(extra="forbid")
    total: dict[str, int]  # the whole design, shell included: "(top)"
    bram_18k_equivalent: int  # 2 x BRAM_36K + BRAM_18K, comparable to FINN's BRAM_18K
    layers: dict[str, dict[str, int]]  # per FINN layer instance
    timing: Timing | None = None
    source: str = "Vivado post-synthesis (finn-plus report/post_synth_resources.json)"


def parse_wns(text: str) -> float | None:
    """WNS (ns) from Vivado's report_timing_summary 'Design Timing Summary' table."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "WNS(ns)" in line and "TNS(ns)" in line:
            for follow in lines[i + 1 : i + 4]:
                m = re.match(r"\s*(-?\d+(?:\.\d+)?)\s", follow)
                if m:
                    return float(m.group(1))
    return None


def read_post_synth(output_dir: str | Path, clock_ns: float) -> PostSynthesis | None:
    """Parse FINN's post-synthesis reports in a build folder; None when synthesis did not run."""
    report = Path(output_dir) / "report"
    files = sorted(report.glob("post_synth_resources.json")) or \
        sorted(report.glob("post_synth_resources_*.json"))
    files = [f for f in files if "_dcp" not in f.name]
    if not files:
        return None
    total: dict[str, int] = {}
    layers: dict[str, dict[str, int]] = {}
    for f in files:  # one per device for Alveo; summed (single-device builds have one)
        data = json.loads(f.read_text(encoding="utf-8"))
        for inst, res in data.items():
            res = {k: int(v) for k, v in res.items()}
            if inst == "(top)":
                for k, v in res.items():
                    total[k] = total.get(k, 0) + v
            elif not inst.startswith("top_"):  # shell components (interconnects) aside
                layers[inst] = res
    timing = None
    rpt = report / "post_route_timing.rpt"
    if rpt.is_file():
        wns = parse_wns(rpt.read_text(encoding="utf-8", errors="replace"))
        if wns is not None:
            timing = Timing(clock_ns=clock_ns, wns_ns=wns, fmax_mhz=1000.0 / (clock_ns - wns),
                            met=wns >= 0)
    return PostSynthesis(total=total, layers=layers, timing=timing,
                         bram_18k_equivalent=2 * total.get("BRAM_36K", 0)
                         + total.get("BRAM_18K", 0))
