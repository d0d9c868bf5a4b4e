"""FIFO depths from the simulation, as finn-plus would choose them, and what they cost.

`allowed_depth(required, width)`: finn-plus 1.6.1's distributed FIFO sizing starts every FIFO
at max(peak + 1, 32) (`_safe_bram_starting_depth`: one slot more than the peak seen, and never
below 32, where an SRL FIFO costs width/2 LUTs whatever its depth) and only ever picks the
deepest depth of a primitive count (`calculate_*_depth_range`). The same here, from FINN's own
functions, with the storage fifo.sv would choose at that depth (its RAM_STYLE "auto" ladder);
`required` is the capacity the simulation found necessary (hw/sim/design.py: the smallest
capacity that kept the throughput, at most the deep run's peak + 1).

`fifo_cost`: FINN's estimate of each sized StreamingFIFO_rtl (its node_res_estimation), and
Yosys synth_xilinx on the sized FIFO RTL (hw/synth_yosys.py), once per distinct width x depth.

`write_folding_config`: the folded graph's configuration as a FINN folding config (FINN's
extract_model_config_to_json) with the sized depths in inFIFODepths / outFIFODepths, so a
bitfile build with FINN's FIFO sizing off (auto_fifo_strategy force_minimal_fifos: InsertFIFO
at exactly those depths, no simulation) builds these FIFOs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .records import FifoCost

# the node attributes a folding config carries (finn-plus's live-FIFO flow list, depths included)
FOLDING_ATTRS = ["PE", "SIMD", "parallel_window", "ram_style", "ram_style_thresholds",
                 "resType", "mem_mode", "runtime_writeable_weights", "inFIFODepths",
                 "outFIFODepths", "depth_trigger_uram", "depth_trigger_bram", "impl_style"]


def fifo_style(depth: int, width: int) -> str:
    """fifo.sv's storage for RAM_STYLE "auto" (its RAM_STYLE_EFF ladder)."""
    if depth <= 33 or (depth <= 64 and width < 12):
        return "shift"
    if depth <= 257 or width < 5:
        return "distributed"
    return "block" if depth <= 2028 else "ultra"


def allowed_depth(required: int, width: int) -> int:
    """The depth finn-plus's FIFO sizing would give a FIFO that must hold `required` words
    (its starting depth is the peak seen + 1, never below 32)."""
    from finn.transformation.fpgadataflow import simulation_connected as sc

    d = sc._safe_bram_starting_depth(int(required) - 1, 0)
    style = fifo_style(d, width)
    if style in ("shift", "distributed"):
        return int(math.ceil(d / 32) * 32)  # SRL/LUTRAM: 32 entries per LUT column
    if style == "block":
        return int(sc.calculate_bram_depth_range(sc.calculate_bram_blocks(d, width), width)[1])
    lo, hi = sc.calculate_uram_depth_range(sc.calculate_uram_blocks(d, width), width)
    return int(hi or d)


def fifo_cost(model: Any, part: str, workdir: Path, family: str | None,
              timeout_s: float) -> list[FifoCost]:
    """FINN's estimate (and Yosys's count, with `family`) of every FIFO of `model`, whose RTL
    hw/sim/stitch.generate wrote (code_gen_dir_ipgen set). Yosys runs once per distinct
    width x depth x memory style, cached in `workdir` across runs; `timeout_s` bounds all
    Yosys runs of this call together (the FIFOs left say so)."""
    import time

    from qonnx.custom_op.registry import getCustomOp

    out, synth_once = [], {}
    t_end = time.monotonic() + timeout_s
    for n in model.graph.node:
        if not n.op_type.startswith("StreamingFIFO"):
            continue
        inst = getCustomOp(n)
        est = inst.node_res_estimation(part)
        c = FifoCost(name=n.name, depth=int(inst.get_nodeattr("depth")),
                     width=int(inst.get_instream_width_padded()),
                     finn_LUT=float(est.get("LUT", 0)), finn_BRAM_18K=float(est.get("BRAM_18K", 0)),
                     finn_URAM=float(est.get("URAM", 0)))
        if family is not None:
            key = (c.width, c.depth, str(inst.get_nodeattr("ram_style")))
            if key not in synth_once:
                synth_once[key] = _synth_cached(inst, key, family, workdir, t_end)
            s = synth_once[key]
            if s is not None and s.status == "ok":
                c.yosys_LUT, c.yosys_FF, c.yosys_BRAM_18K = s.LUT, s.FF, s.BRAM_18K
            else:
                c.yosys_note = "not synthesized: the time limit" if s is None else s.reason
        out.append(c)
    return out


def _synth_cached(inst: Any, key: tuple, family: str, workdir: Path, t_end: float):
    """Yosys on one FIFO configuration, or its cached result (None: no time left)."""
    import hashlib
    import time

    from ..synth_yosys import SynthResult, synthesize, yosys_version

    files = [Path(f) for f in inst.get_rtl_file_list(abspath=True)
             if not str(f).endswith("fifo_gauge.sv")]  # simulation-only (FINN_SIMULATION)
    lib = [f for f in files if f.name == "fifo.sv"]
    h = hashlib.sha256(json.dumps([list(key), family, yosys_version()]).encode())
    for f in lib:
        h.update(f.read_bytes())
    cache = workdir / "cache" / f"{h.hexdigest()[:20]}.json"
    if cache.is_file():
        return SynthResult.model_validate_json(cache.read_text(encoding="utf-8"))
    left = t_end - time.monotonic()
    if left < 5:
        return None
    d = workdir / f"w{key[0]}_d{key[1]}_{key[2]}"
    d.mkdir(parents=True, exist_ok=True)
    res = synthesize([str(f) for f in files], inst.get_verilog_top_module_name(), family, d,
                     left, scope="sized FIFO")
    if res.status == "ok":
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(res.model_dump_json(), encoding="utf-8")
    return res


def totals(costs: list[FifoCost]) -> dict[str, float]:
    keys = ("finn_LUT", "finn_BRAM_18K", "finn_URAM", "yosys_LUT", "yosys_FF", "yosys_BRAM_18K")
    out = {}
    for k in keys:
        vals = [getattr(c, k) for c in costs]
        if vals and all(v is not None for v in vals):
            out[k] = float(sum(vals))
    return out


def write_folding_config(folded: Any, sides: dict[str, list[list]], depths: dict[str, int],
                         path: Path) -> Path:
    """FINN folding config of `folded` with each FIFO's sized depth on the attributes FINN's
    InsertFIFO reads (`sides`: FIFO -> [[side, node, index]...], hw/sim/stitch.fifo_sides)."""
    from finn.util.config import extract_model_config_to_json

    tmp = path.with_suffix(".part.json")
    extract_model_config_to_json(folded, str(tmp), FOLDING_ATTRS)
    cfg = json.loads(tmp.read_text(encoding="utf-8"))
    tmp.unlink()
    for fifo, where in sides.items():
        for side, node, index in where:
            key = "inFIFODepths" if side == "in" else "outFIFODepths"
            entry = cfg.setdefault(node, {})
            cur = list(entry.get(key) or [2])
            while len(cur) <= index:
                cur.append(2)
            cur[index] = int(depths[fifo])
            entry[key] = cur
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return path
