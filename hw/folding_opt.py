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

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fpgaslim.core.errors import ConfigError, FpgaslimError

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
#: the max-fit defaults (optimal folding and folding search, the CLI and the sweep): % of the
#: board's LUTs a folding may use (headroom for routing and the shell), and the search's grid
LUT_BUDGET = 85.0
STEP_FACTOR = 1.25


class Budget(BaseModel):
    """Resource budget in % of the board (the default: LUT_BUDGET % LUT, all of the rest)."""

    model_config = ConfigDict(extra="forbid")
    LUT: float = Field(LUT_BUDGET, ge=0)
    BRAM_18K: float = Field(100.0, ge=0)
    URAM: float = Field(100.0, ge=0)
    DSP: float = Field(100.0, ge=0)

    def caps(self, board: Any) -> dict[str, float]:
        return {k: board.capacity(k) * getattr(self, k) / 100.0 for k in RESOURCES}


def default_budget() -> dict[str, float]:
    """The default Budget as the folding search's and the sweep's mapping."""
    return Budget().model_dump()


class Solution(BaseModel):
    """The optimizer's choice and its own (cost-model) arithmetic, kept as evidence only."""

    model_config = ConfigDict(extra="forbid")
    cycles: int  # bottleneck cycles per frame
    choice: list[int]  # candidate index per unit (into the table's candidate lists)
    predicted: dict[str, float]  # resources incl. DWCs, from the table
    dwc_LUT: float  # the part of predicted LUT that is data-width converters
    solves: int  # integer programs solved
    lut_optimal: bool  # the LUT minimum at this bottleneck was proven (else: best found)


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


def _reduce(cands: list[dict], active: list[int], keys: tuple[str, ...]) -> list[int]:
    """Within each port signature, the active candidates not dominated on `keys` (cycles no
    longer matter once they are <= T). Ties keep the first."""
    groups: dict[tuple, list[int]] = {}
    for i in active:
        groups.setdefault(tuple(sorted(cands[i]["ports"].items())), []).append(i)
    keep = []
    for idx in groups.values():
        vec = {i: tuple(cands[i]["res"][k] for k in keys) for i in idx}
        for i in idx:
            if not any(all(a <= b for a, b in zip(vec[j], vec[i])) and (vec[j] != vec[i] or j < i)
                       for j in idx if j != i):
                keep.append(i)
    return sorted(keep)


def _min_lut(table: dict, active: list[list[int]], caps: dict[str, float],
             first: bool = False, max_seconds: float = 60.0):
    """Fewest LUTs (layers + DWCs) with each unit on one of its `active` candidates and every
    resource within `caps`; None when no choice meets them. Returns (LUT, choice, proven).
    `first`: any choice within the caps will do (a feasibility question, answered exactly:
    CBC either finds one under the LUT cutoff or proves there is none). Otherwise the LUT
    minimum, proven optimal unless `max_seconds` ran out (then the best one found).

    Data-width converters are a transport formulation per stream edge: w[a, b] >= 0 with
    row sums = the producer's choice of folded width a and column sums = the consumer's
    width b, costing FINN's DWC LUT estimate for (a, b); with binary choices w is exactly the
    product, and its LP relaxation is far tighter than the usual y >= x_a + x_b - 1."""
    import mip

    units, edges = table["units"], table["edges"]
    binding = tuple(k for k in ("BRAM_18K", "URAM", "DSP") if sum(
        max(units[u]["candidates"][i]["res"][k] for i in a) for u, a in enumerate(active))
        > caps[k] + 1e-9)
    active = [_reduce(units[u]["candidates"], a, ("LUT", *binding))
              for u, a in enumerate(active)]
    m = mip.Model(sense=mip.MINIMIZE, solver_name=mip.CBC)
    m.verbose, m.threads = 0, 1
    m.max_mip_gap, m.max_mip_gap_abs = 0.0, 1e-6
    x = [{i: m.add_var(var_type=mip.BINARY) for i in act} for act in active]
    for xs in x:
        m += mip.xsum(xs.values()) == 1
    cost = []
    for u, xs in enumerate(x):
        cost += [units[u]["candidates"][i]["res"]["LUT"] * v for i, v in xs.items()]
    for k in binding:
        m += mip.xsum(units[u]["candidates"][i]["res"][k] * v
                      for u, xs in enumerate(x) for i, v in xs.items()) <= caps[k] + 1e-9
    for e in edges:
        by_src = _by_port(units[e["src"]]["candidates"], x[e["src"]], e["src_port"])
        by_dst = _by_port(units[e["dst"]]["candidates"], x[e["dst"]], e["dst_port"])
        if len(by_src) == 1 and len(by_dst) == 1:
            (a,), (b,) = by_src, by_dst
            cost.append(e["dwc"].get(f"{a},{b}", 0))
            continue
        w = {(a, b): m.add_var(lb=0.0) for a in by_src for b in by_dst}
        for a, va in by_src.items():
            m += mip.xsum(w[a, b] for b in by_dst) == mip.xsum(va)
        for b, vb in by_dst.items():
            m += mip.xsum(w[a, b] for a in by_src) == mip.xsum(vb)
        cost += [e["dwc"].get(f"{a},{b}", 0) * v for (a, b), v in w.items()
                 if e["dwc"].get(f"{a},{b}", 0) > 0]
    m.objective = mip.xsum(cost)
    m.cutoff = caps["LUT"] + 1e-6
    status = m.optimize(max_solutions=1) if first else m.optimize(max_seconds=max_seconds)
    S = mip.OptimizationStatus
    if status not in (S.OPTIMAL, S.FEASIBLE) or m.num_solutions == 0:
        if status in (S.INFEASIBLE, S.INT_INFEASIBLE, S.NO_SOLUTION_FOUND) or first:
            return None
        raise RuntimeError(f"CBC stopped with {status} and no solution")
    choice = [max(xs, key=lambda i: xs[i].x) for xs in x]
    return float(m.objective_value), choice, status == S.OPTIMAL


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


def solve(table: dict, caps: dict[str, float], max_seconds: float = 60.0,
          at_cycles: int | None = None) -> Solution | None:
    """The cost model's optimum (see the module docstring); None when nothing fits.
    `at_cycles`: instead, the fewest LUTs with every layer within that many cycles (the
    same frame rate as another folding, for a like-for-like resource comparison)."""
    units = table["units"]
    if any(not u["candidates"] for u in units):
        bad = next(u["name"] for u in units if not u["candidates"])
        raise ConfigError(f"layer {bad}: FINN accepts none of its foldings")
    front = [pareto(u["candidates"]) for u in units]
    floor = max(min(units[u]["candidates"][i]["cycles"] for i in f) for u, f in enumerate(front))
    ts = sorted({units[u]["candidates"][i]["cycles"] for u, f in enumerate(front) for i in f
                 if units[u]["candidates"][i]["cycles"] >= floor})
    solves = 0

    def feasible(t: int):
        nonlocal solves
        active = [[i for i in f if units[u]["candidates"][i]["cycles"] <= t]
                  for u, f in enumerate(front)]
        low = {k: sum(min(units[u]["candidates"][i]["res"][k] for i in a)
                      for u, a in enumerate(active)) for k in RESOURCES}
        if any(low[k] > caps[k] + 1e-9 for k in RESOURCES):
            return None  # even each layer's cheapest candidate is over a budget
        greedy = [min(a, key=lambda i: units[u]["candidates"][i]["res"]["LUT"])
                  for u, a in enumerate(active)]
        _, res, _ = evaluate(table, greedy)
        if all(res[k] <= caps[k] + 1e-9 for k in RESOURCES):
            return active, (res["LUT"], greedy, False)  # each layer's cheapest fits
        solves += 1
        return active, _min_lut(table, active, caps, first=True)

    if at_cycles is not None:
        ts = [t for t in ts if t <= at_cycles][-1:]
        if not ts:
            return None
    lo, hi = 0, len(ts) - 1
    top = feasible(ts[hi])
    if top is None or top[1] is None:
        return None
    best = (ts[hi], top[0], top[1])
    while lo < hi:  # smallest feasible index in ts
        mid = (lo + hi) // 2
        r = feasible(ts[mid])
        if r is None or r[1] is None:
            lo = mid + 1
        else:
            hi, best = mid, (ts[mid], r[0], r[1])
    solves += 1
    final = _min_lut(table, best[1], caps, max_seconds=max_seconds) or best[2]
    _, choice, proven = final
    cycles, res, dwc = evaluate(table, choice)
    return Solution(cycles=cycles, choice=choice, predicted=res, dwc_LUT=dwc, solves=solves,
                    lut_optimal=proven)


def chosen_ops(table: dict, choice: list[int]) -> dict[str, str]:
    """Each HW node's op type (`MVAU_hls`, `MVAU_rtl`, ...) in the graph the choice makes."""
    ops = dict(table.get("ops", {}))
    for u, i in enumerate(choice):
        ops.update(table["units"][u]["candidates"][i].get("impl", {}))
    return ops


def finn_names(table: dict, ops: dict[str, str]) -> dict[str, str]:
    """The name FINN gives each of the table's nodes in the graph specialized as `ops`:
    SpecializeLayers keeps the node order and GiveUniqueNodeNames names every node
    `<op_type>_<k>`, k counting that op type in order. Checked on the table's own graph (its
    nodes must be named that way), so a graph named otherwise is an error, not a wrong file."""
    order = table.get("order") or []
    own = _names_in_order(order, table.get("ops", {}))
    if any(own[n] != n for n in order):
        bad = next(n for n in order if own[n] != n)
        raise FpgaslimError(f"the tabulated graph's node {bad} is not named as FINN's "
                            f"GiveUniqueNodeNames would ({own[bad]}): cannot name its layers "
                            "in a graph specialized differently")
    return _names_in_order(order, ops)


def is_mixed(table: dict, choice: list[int]) -> bool:
    """Whether the choice specializes any layer differently from the tabulated graph."""
    ops = chosen_ops(table, choice)
    return ops != table.get("ops", ops)


def folding_config(table: dict, choice: list[int]) -> dict[str, Any]:
    """FINN folding-config JSON (ApplyConfig's format) of a choice: every node's chosen
    attributes, weight nodes also keeping the memory mode of the graph they came from, under
    the names the nodes have in the graph the choice specializes (finn_names)."""
    rename = finn_names(table, chosen_ops(table, choice)) if is_mixed(table, choice) else {}
    config: dict[str, Any] = {"Defaults": {}}
    for u, i in enumerate(choice):
        for name, attrs in table["units"][u]["candidates"][i]["attrs"].items():
            entry = dict(attrs)
            mem = table["start"].get(name, {}).get("mem_mode")
            if mem is not None:
                entry["mem_mode"] = mem
            config[rename.get(name, name)] = entry
    return config


def specialize_config(table: dict, choice: list[int]) -> dict[str, Any] | None:
    """FINN's specialize-layers config (step_specialize_layers' `specialize_layers_config_file`,
    ApplyConfig's format) giving every HW node its chosen `preferred_impl_style`, under the
    names step_specialize_layers gives the unspecialized nodes (`<op>_<k>`, as finn_names);
    None when the choice keeps the tabulated graph's styles (nothing to ask FINN for)."""
    if not is_mixed(table, choice):
        return None
    ops = chosen_ops(table, choice)
    finn_names(table, ops)  # checks that the table's graph is named FINN's way
    generic = {n: ops[n].rsplit("_", 1)[0] if ops[n].endswith(("_hls", "_rtl")) else ops[n]
               for n in table["order"]}
    pre = _names_in_order(table["order"], generic)
    return {"Defaults": {}, **{pre[n]: {"preferred_impl_style": ops[n].rsplit("_", 1)[1]}
                               for n in table["order"] if ops[n].endswith(("_hls", "_rtl"))}}


def _names_in_order(order: list[str], ops: dict[str, str]) -> dict[str, str]:
    """GiveUniqueNodeNames' naming (qonnx, and finn's ...Recursive without a prefix)."""
    count: dict[str, int] = {}
    out = {}
    for n in order:
        out[n] = f"{ops[n]}_{count.get(ops[n], 0)}"
        count[ops[n]] = count.get(ops[n], 0) + 1
    return out
