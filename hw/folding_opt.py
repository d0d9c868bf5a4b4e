"""Optimal folding: the highest frame rate whose folding fits a resource budget of the board.

The cost model is FINN's own: every legal per-layer choice of PE / SIMD / parallel window and,
for HLS MVAUs, MAC resource type (LUT or DSP) and weight memory style (BRAM or LUTRAM), with
each op's `get_exp_cycles()` and resource estimates (hw/folding_table.py tabulates them on the
variant's specialized FINN graph), plus FINN's data-width-converter LUT estimate on every stream
whose folded widths differ (InsertDWC's rule). FINN's frame rate is clock / the slowest layer's
cycles, so the answer is a bisection on that bottleneck T over the table's distinct cycle
counts: for a T, each layer may use only candidates with cycles <= T, and an integer program
(python-mip, CBC; one binary per candidate, one per differing width pair on each stream edge)
finds the fewest LUTs subject to the BRAM_18K / URAM / DSP budgets; T is feasible when those
LUTs are within the LUT budget. Feasibility is monotone in T, so the smallest feasible T is
the optimum of the cost model, and among its foldings the one with the fewest LUTs is kept.

Hand-written (not FINN's SetFolding, which raises SIMD before PE in factor-of-two steps and
knows no budget, FINN_NOTES "Folding"), because no library solves this; python-mip does the
integer programming. The figures this module reports come from a real FINN estimate build
with the chosen folding config (hw/folding_run.py), never from the table's arithmetic.
"""

from __future__ import annotations

import bisect
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fpgaslim.errors import ConfigError

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")


class Budget(BaseModel):
    """Resource budget in % of the board (the default: 85 % LUT, all of the rest)."""

    model_config = ConfigDict(extra="forbid")
    LUT: float = Field(85.0, ge=0)
    BRAM_18K: float = Field(100.0, ge=0)
    URAM: float = Field(100.0, ge=0)
    DSP: float = Field(100.0, ge=0)

    def caps(self, board: Any) -> dict[str, float]:
        return {k: board.capacity(k) * getattr(self, k) / 100.0 for k in RESOURCES}


class Solution(BaseModel):
    """The optimizer's choice and its own (cost-model) arithmetic, kept as evidence only."""

    model_config = ConfigDict(extra="forbid")
    cycles: int  # bottleneck cycles per frame
    choice: list[int]  # candidate index per unit (into the table's candidate lists)
    predicted: dict[str, float]  # resources incl. DWCs, from the table
    dwc_LUT: float  # the part of predicted LUT that is data-width converters
    solves: int  # integer programs solved


def pareto(cands: list[dict]) -> list[int]:
    """Indices of the candidates not dominated by another with the same stream widths on
    every port (no more cycles and no more of any resource). Ties keep the first."""
    keep: list[int] = []
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cands):
        groups.setdefault(tuple(sorted(c["ports"].items())), []).append(i)
    for idx in groups.values():
        vecs = {i: (cands[i]["cycles"], *(cands[i]["res"][k] for k in RESOURCES)) for i in idx}
        for i in idx:
            vi = vecs[i]
            dominated = any(all(a <= b for a, b in zip(vecs[j], vi))
                            and (vecs[j] != vi or j < i) for j in idx if j != i)
            if not dominated:
                keep.append(i)
    return sorted(keep)


def _min_lut(table: dict, active: list[list[int]], caps: dict[str, float]):
    """Fewest LUTs (layers + DWCs) with each unit on one of its `active` candidates and the
    other resources within `caps`; None when no choice meets them. Returns (LUT, choice)."""
    import mip

    units, edges = table["units"], table["edges"]
    m = mip.Model(sense=mip.MINIMIZE, solver_name=mip.CBC)
    m.verbose, m.threads = 0, 1
    m.max_mip_gap, m.max_mip_gap_abs = 0.0, 1e-6
    x = [{i: m.add_var(var_type=mip.BINARY) for i in act} for act in active]
    for xs in x:
        m += mip.xsum(xs.values()) == 1
    cost = []
    for u, xs in enumerate(x):
        cost += [units[u]["candidates"][i]["res"]["LUT"] * v for i, v in xs.items()]
    for k in ("BRAM_18K", "URAM", "DSP"):
        m += mip.xsum(units[u]["candidates"][i]["res"][k] * v
                      for u, xs in enumerate(x) for i, v in xs.items()) <= caps[k] + 1e-9
    for e in edges:
        by_src = _by_port(units[e["src"]]["candidates"], x[e["src"]], e["src_port"])
        by_dst = _by_port(units[e["dst"]]["candidates"], x[e["dst"]], e["dst_port"])
        for a, va in by_src.items():
            for b, vb in by_dst.items():
                lut = e["dwc"].get(f"{a},{b}", 0)
                if lut > 0:
                    y = m.add_var(lb=0.0)
                    m += y >= mip.xsum(va) + mip.xsum(vb) - 1
                    cost.append(lut * y)
    m.objective = mip.xsum(cost)
    status = m.optimize()
    if status not in (mip.OptimizationStatus.OPTIMAL,):
        return None
    choice = [max(xs, key=lambda i: xs[i].x) for xs in x]
    return float(m.objective_value), choice


def _by_port(cands: list[dict], xs: dict, port: str) -> dict[int, list]:
    out: dict[int, list] = {}
    for i, v in xs.items():
        out.setdefault(cands[i]["ports"][port], []).append(v)
    return out


def evaluate(table: dict, choice: list[int]) -> tuple[int, dict[str, float], float]:
    """(bottleneck cycles, resources incl. DWC LUTs, DWC LUTs) of one choice: the cost model,
    also what the exhaustive test enumerates."""
    units = table["units"]
    picked = [units[u]["candidates"][i] for u, i in enumerate(choice)]
    res = {k: sum(c["res"][k] for c in picked) for k in RESOURCES}
    dwc = 0.0
    for e in table["edges"]:
        a = picked[e["src"]]["ports"][e["src_port"]]
        b = picked[e["dst"]]["ports"][e["dst_port"]]
        dwc += e["dwc"].get(f"{a},{b}", 0)
    res["LUT"] += dwc
    return max(c["cycles"] for c in picked), res, dwc


def solve(table: dict, caps: dict[str, float]) -> Solution | None:
    """The cost model's optimum (see the module docstring); None when nothing fits."""
    units = table["units"]
    if any(not u["candidates"] for u in units):
        bad = next(u["name"] for u in units if not u["candidates"])
        raise ConfigError(f"layer {bad}: FINN accepts none of its foldings")
    front = [pareto(u["candidates"]) for u in units]
    floor = max(min(units[u]["candidates"][i]["cycles"] for i in f) for u, f in enumerate(front))
    ts = sorted({units[u]["candidates"][i]["cycles"] for u, f in enumerate(front) for i in f
                 if units[u]["candidates"][i]["cycles"] >= floor})
    solves = 0
    best: tuple[int, tuple[float, list[int]]] | None = None

    def feasible(t: int):
        nonlocal solves
        active = [[i for i in f if units[u]["candidates"][i]["cycles"] <= t]
                  for u, f in enumerate(front)]
        low = {k: sum(min(units[u]["candidates"][i]["res"][k] for i in a)
                      for u, a in enumerate(active)) for k in RESOURCES}
        if any(low[k] > caps[k] + 1e-9 for k in RESOURCES):
            return None  # even each layer's cheapest candidate is over a budget
        solves += 1
        r = _min_lut(table, active, caps)
        return r if r is not None and r[0] <= caps["LUT"] + 1e-6 else None

    lo, hi = 0, len(ts) - 1
    top = feasible(ts[hi])
    if top is None:
        return None
    best = (ts[hi], top)
    while lo < hi:  # smallest feasible index in ts
        mid = (lo + hi) // 2
        r = feasible(ts[mid])
        if r is None:
            lo = mid + 1
        else:
            hi, best = mid, (ts[mid], r)
    t, (_, choice) = best
    cycles, res, dwc = evaluate(table, choice)
    return Solution(cycles=cycles, choice=choice, predicted=res, dwc_LUT=dwc, solves=solves)


def next_faster(table: dict, cycles: int) -> int | None:
    """The next smaller bottleneck the table offers (evidence that it did not fit)."""
    ts = sorted({c["cycles"] for u in table["units"] for c in u["candidates"]})
    i = bisect.bisect_left(ts, cycles)
    return ts[i - 1] if i > 0 else None


def folding_config(table: dict, choice: list[int]) -> dict[str, Any]:
    """FINN folding-config JSON (ApplyConfig's format) of a choice: every node's chosen
    attributes, weight nodes also keeping the memory mode of the graph they came from."""
    config: dict[str, Any] = {"Defaults": {}}
    for u, i in enumerate(choice):
        for name, attrs in table["units"][u]["candidates"][i]["attrs"].items():
            entry = dict(attrs)
            mem = table["start"].get(name, {}).get("mem_mode")
            if mem is not None:
                entry["mem_mode"] = mem
            config[name] = entry
    return config
