"""The folding optimizer's cost model, tabulated with FINN's own per-layer estimate functions.

Run in a child process (`python -m fpgaslim.hw.folding_table job.json`, FINN's process-wide
state stays out of the caller, as for builds): it loads a specialized FINN dataflow graph (the
estimate build's last intermediate model), and for every HW layer (or pair of layers FINN
ties together) sets each legal combination of its parallelism and resource attributes on the
node and records the op's own `get_exp_cycles()` and `node_res_estimation()` (the
`lut/bram/uram/dsp_estimation()` methods that FINN's estimate report sums). It also records the
folded stream width on every layer boundary, so data-width converters can be charged with the
LUT estimate of FINN's StreamingDataWidthConverter, inserted wherever InsertDWC would insert one
(the folded last dimensions differ). The table is plain JSON; hw/folding_opt.py solves it.

Legal values follow finn/transformation/fpgadataflow/set_folding.py: PE divides the output
channels, SIMD the input channels; a depthwise ConvolutionInputGenerator takes the SIMD of its
VVAU/Pool consumer's PE (one unit here); a VVAU's SIMD (kernel window) grows only once its PE
is full and then needs the RTL window generator's parallel_window; HLS streams stay within
AP_INT_MAX_W bits.

FINN's HW ops read only their node's attributes, so two layers with the same op type and
attributes (bar the knobs tabulated and name-derived paths) and the same constant inputs have
the same candidates: each such layer signature is evaluated once (ResNet stages repeat their
blocks), and with a cache folder once across graphs (a sweep's variants share most layers).

Implementation style (`mix=True`): FINN specializes each HW layer as HLS or RTL
(step_specialize_layers; per node its `preferred_impl_style`). The table then also holds,
for every layer FINN specialized as RTL that has an HLS variant (MVAU, Thresholding, ...),
the HLS variant's candidates: the graph is specialized the other way the way FINN's
SpecializeLayers does it (the node re-made as `<op>_hls` with all its attributes) and its bit
widths minimized again by FINN's own transformations, as step_minimize_bit_width does (the
two variants adjust threshold widths differently), and tabulated like the first. Each
candidate names its nodes' op types (`impl`); `folding_config` and `specialize_config` (in
hw/folding_opt.py) turn a mixed choice into FINN's two config files. (RTL-to-HLS only: a
layer FINN made HLS has no RTL variant or cannot be one, e.g. an MVAU with embedded
thresholds.)
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
AP_INT_MAX_W = 8191  # finn.util.basic.MAX_ALLOWED_AP_INT_W
PE_OPS = ("DuplicateStreams", "GlobalAccPool", "Thresholding", "ReplicateStream",
          "Elementwise", "AddStreams", "ChannelwiseOp", "Squeeze", "Unsqueeze", "Reshape")
SIMD_OPS = ("FMPadding", "StreamingMaxPool")
TABLE_VERSION = "fpgaslim-folding-table/3"  # bump when a unit's candidates change
#: attributes that name files or record results, not what the layer computes
_NOT_SIGNATURE = ("code_gen_dir_cppsim", "code_gen_dir_ipgen", "executable_path", "ipgen_path",
                  "ip_path", "ip_vlnv", "gen_top_module", "rtlsim_so", "rtlsim_trace",
                  "res_estimate", "res_hls", "res_synth", "cycles_estimate", "cycles_rtlsim",
                  "partition_id", "device_id", "slr", "mem_port")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, int(n) + 1) if n % d == 0]


def _base(op_type: str) -> str:
    return op_type.rsplit("_", 1)[0] if op_type.endswith(("_hls", "_rtl")) else op_type


def _channels(inst: Any, attr: str, default_in: bool) -> int:
    try:
        return int(inst.get_nodeattr(attr))
    except (AttributeError, Exception):
        shape = inst.get_normal_input_shape() if default_in else inst.get_normal_output_shape()
        return int(shape[-1])


def node_knobs(node: Any, inst: Any) -> list[dict[str, Any]]:
    """Every legal attribute assignment of one (untied) HW node, as dicts."""
    op, base = node.op_type, _base(node.op_type)
    if base == "MVAU":
        pes, simds = divisors(inst.get_nodeattr("MH")), divisors(inst.get_nodeattr("MW"))
        # HLS: MACs in LUTs or DSPs, and (FINN's decoupled weight memory) weights in BRAM
        # ("auto": FINN's estimate counts BRAM) or LUTRAM (counted in its LUT estimate).
        # RTL: none; its MVU is DSP-only and FINN estimates it at 0 LUT whatever the weights'
        # memory, so LUTRAM weights would look free (the RTL-vs-HLS choice is per graph:
        # the build setting prefer_rtl, see hw/folding_run.py)
        extra: list[dict[str, Any]] = [{}]
        if op.endswith("_hls"):
            styles = [{"ram_style": s} for s in ("auto", "distributed")] \
                if inst.get_nodeattr("mem_mode") == "internal_decoupled" else [{}]
            extra = [{"resType": r, **s} for r in ("lut", "dsp") for s in styles]
        return [{"PE": p, "SIMD": s, **e} for p in pes for s in simds for e in extra]
    if base.startswith("ConvolutionInputGenerator"):
        cands = [{"SIMD": s} for s in divisors(inst.get_nodeattr("IFMChannels"))]
        if op.endswith("_rtl"):
            for c in cands:
                c["parallel_window"] = 0
            cands.append({"SIMD": int(inst.get_nodeattr("IFMChannels")), "parallel_window": 1})
        return cands
    if base == "LabelSelect":
        return [{"PE": p} for p in divisors(inst.get_nodeattr("Labels"))]
    if base.startswith(PE_OPS):
        return [{"PE": p} for p in divisors(_channels(inst, "NumChannels", False))]
    if base.startswith(SIMD_OPS) and "SIMD" in inst.get_nodeattr_types():
        return [{"SIMD": s} for s in divisors(_channels(inst, "NumChannels", True))]
    if base in ("VVAU", "Pool"):  # a pointwise depthwise op without a window generator
        return _depthwise_knobs(inst, base)
    return [{}]


def _depthwise_knobs(inst: Any, base: str) -> list[dict[str, Any]]:
    ch = int(inst.get_nodeattr("Channels"))
    cands = [{"PE": p} for p in divisors(ch)]
    if base == "VVAU":
        k = int(math.prod(inst.get_nodeattr("Kernel")))
        cands = [{"PE": p, "SIMD": 1} for p in divisors(ch)]
        cands += [{"PE": ch, "SIMD": s} for s in divisors(k) if s > 1]
    return cands


def _tied_knobs(swg: Any, consumer: Any, cons_inst: Any, swg_inst: Any) -> list[dict]:
    """(SWG, depthwise consumer) pairs: the SWG's SIMD is the consumer's PE (SetFolding)."""
    out = []
    for c in _depthwise_knobs(cons_inst, _base(consumer.op_type)):
        s = {"SIMD": c["PE"]}
        if swg.op_type.endswith("_rtl"):
            s["parallel_window"] = int(c.get("SIMD", 1) > 1)
        elif c.get("SIMD", 1) > 1:
            continue  # the HLS window generator has no parallel window
        out.append({swg.name: s, consumer.name: c})
    return out


def _legal(node: Any, inst: Any) -> bool:
    if not node.op_type.endswith("_hls"):
        return True
    n_in = len([i for i in node.input if i])
    widths = [inst.get_outstream_width(0)]
    for i in range(n_in):
        try:
            widths.append(inst.get_instream_width(i))
        except Exception:
            pass
    return max(widths) <= AP_INT_MAX_W


@functools.lru_cache(maxsize=None)
def _dwc_lut(inw: int, outw: int, part: str) -> int:
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    node = helper.make_node("StreamingDataWidthConverter", ["i"], ["o"],
                            domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
                            inShape=[1, inw], outShape=[1, outw], inWidth=inw, outWidth=outw,
                            dataType="UINT8")
    return int(getCustomOp(node).lut_estimation(part))


def tabulate(model: Any, part: str, cache: str | Path | None = None,
             memo: bool = True, mix: bool = False) -> dict[str, Any]:
    """The cost-model table of a specialized FINN dataflow graph (see the module docstring).
    `cache`: a folder of per-signature candidate lists, read and added to. `memo=False`
    evaluates every unit (the test that signatures change nothing). `mix`: also the HLS
    variant of every RTL layer that has one (module docstring)."""
    from finn.util.basic import getHWCustomOp

    graphs = [model] + ([g for g in [_other_style(model)] if g is not None] if mix else [])
    hw = [n for n in model.graph.node if n.domain.startswith("finn.custom_op.fpgadataflow")]
    unit_of: dict[str, int] = {}
    nodes_of: list[list[str]] = []
    tied: dict[str, Any] = {}
    for n in hw:
        if _base(n.op_type) in ("VVAU", "Pool"):
            p = model.find_producer(n.input[0])
            if p is not None and _base(p.op_type).startswith("ConvolutionInputGenerator"):
                tied[p.name] = n
    for n in hw:
        if n.name in unit_of:
            continue
        nodes = [n.name] + ([tied[n.name].name] if n.name in tied else [])
        for m in nodes:
            unit_of[m] = len(nodes_of)
        nodes_of.append(nodes)
    edges, internal = _edges(model, hw, unit_of)
    ops = {n.name: n.op_type for n in hw}
    stats = {"evaluated": 0, "memo": 0, "cache": 0}
    seen: dict[str, list[dict]] = {}
    cands_of: list[list[dict]] = [[] for _ in nodes_of]
    start: dict[str, Any] = {}
    for gi, g in enumerate(graphs):
        by_name = {n.name: n for n in g.graph.node}
        inst = {name: getHWCustomOp(by_name[name]) for name in ops}
        if gi == 0:
            start = {name: _attrs(inst[name]) for name in ops}
        for u, nodes in enumerate(nodes_of):
            g_ops = [by_name[m].op_type for m in nodes]
            if gi > 0 and g_ops == [ops[m] for m in nodes]:
                continue  # not restyled: the same candidates as in the first graph
            if len(nodes) == 2:
                combos = _tied_knobs(by_name[nodes[0]], by_name[nodes[1]], inst[nodes[1]],
                                     inst[nodes[0]])
            else:
                combos = [{nodes[0]: k} for k in node_knobs(by_name[nodes[0]], inst[nodes[0]])]
            unit = {"nodes": nodes, "combos": combos}
            before = {m: _attrs(inst[m]) for m in nodes}
            sig = _signature(g, inst, unit, internal, part)
            generic = seen.get(sig) if memo else None
            if generic is not None:
                stats["memo"] += 1
            else:
                generic = _cache_get(cache, sig) if memo else None
                stats["cache" if generic is not None else "evaluated"] += 1
            if generic is None:
                cands = [c for c in (_evaluate(g, inst, unit, combo, internal, part)
                                     for combo in combos) if c is not None]
                generic = _rename(cands, {n: f"#{i}" for i, n in enumerate(nodes)})
                if memo:
                    _cache_put(cache, sig, generic)
                for name in nodes:  # leave the graph as it came
                    for k, v in before[name].items():
                        inst[name].set_nodeattr(k, v)
            seen[sig] = generic
            cands_of[u] += _rename(generic, {f"#{i}": n for i, n in enumerate(nodes)})
    units = [{"name": "+".join(nodes), "nodes": nodes, "candidates": c}
             for nodes, c in zip(nodes_of, cands_of)]
    keys = _port_keys(units)
    for e in edges:
        src = {tuple(c["ports"][e["src_port"]]) for c in units[e["src"]]["candidates"]}
        dst = {tuple(c["ports"][e["dst_port"]]) for c in units[e["dst"]]["candidates"]}
        e["dwc"] = {f"{keys[e['src_port']][a]},{keys[e['dst_port']][b]}":
                    (0 if a[0] == b[0] else _dwc_lut(a[1], b[1], part))
                    for a, b in itertools.product(sorted(src), sorted(dst))}
    on_edge = {p for e in edges for p in (e["src_port"], e["dst_port"])}
    for u in units:  # graph inputs/outputs need no converter
        for c in u["candidates"]:
            c["ports"] = {k: keys[k][tuple(v)] for k, v in c["ports"].items() if k in on_edge}
    return {"units": units, "edges": edges, "start": start, "order": [n.name for n in hw],
            "ops": ops, "signatures": stats}


def _port_keys(units: list[dict]) -> dict[str, dict[tuple, Any]]:
    """Per stream port, a key for each (folded width, stream bits) seen on it: the folded
    width (what decides whether InsertDWC inserts a converter), or "width/bits" where two
    variants give the same folded width different stream bits (their converters differ)."""
    pairs: dict[str, set] = {}
    for u in units:
        for c in u["candidates"]:
            for k, v in c["ports"].items():
                pairs.setdefault(k, set()).add(tuple(v))
    out = {}
    for k, seen in pairs.items():
        dims = [a for a, _ in seen]
        unique = len(set(dims)) == len(dims)
        out[k] = {p: (p[0] if unique else f"{p[0]}/{p[1]}") for p in seen}
    return out


def _other_style(model: Any) -> Any | None:
    """A copy of the specialized graph with every RTL layer that has an HLS variant made HLS
    (SpecializeLayers' own node rewrite: `<op>_hls`, its domain, every attribute kept; node
    names kept so the two graphs' layers line up), bit widths minimized again with FINN's
    transformations in step_minimize_bit_width's order. None when no layer changes."""
    import copy

    from finn.custom_op.fpgadataflow.hls import custom_op as hls_variants
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth)
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import (
        MinimizeWeightBitWidth)
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes

    alt = ModelWrapper(copy.deepcopy(model.model))
    changed = False
    for i, node in enumerate(list(alt.graph.node)):
        if not node.op_type.endswith("_rtl") or f"{_base(node.op_type)}_hls" not in hls_variants:
            continue
        new = helper.make_node(f"{_base(node.op_type)}_hls", node.input, node.output,
                               domain="finn.custom_op.fpgadataflow.hls", name=node.name)
        new.attribute.extend(node.attribute)
        alt.graph.node.remove(node)
        alt.graph.node.insert(i, new)
        changed = True
    if not changed:
        return None
    for t in (MinimizeWeightBitWidth(), MinimizeAccumulatorWidth(), InferDataTypes(),
              RoundAndClipThresholds(), InferDataTypes(), MinimizeWeightBitWidth(),
              InferDataTypes()):
        alt = alt.transform(t)
    return alt


def _signature(model: Any, inst: dict, unit: dict, internal: list, part: str) -> str:
    """What a unit's candidates depend on: per node its op, its attributes except the knobs
    tabulated and name-derived ones, which inputs are constants (shape, FINN datatype), and
    the streams inside the unit; the FPGA part and this module's version."""
    from onnx import helper

    knobs: dict[str, set] = {n: set() for n in unit["nodes"]}
    for combo in unit["combos"]:
        for name, attrs in combo.items():
            knobs[name].update(attrs)
    index = {n: i for i, n in enumerate(unit["nodes"])}
    parts: list[Any] = [TABLE_VERSION, _finn_version(), part]
    for name in unit["nodes"]:
        node = inst[name].onnx_node
        attrs = sorted((a.name, repr(helper.get_attribute_value(a))) for a in node.attribute
                       if a.name not in knobs[name] and a.name not in _NOT_SIGNATURE)
        consts = []
        for t in node.input:
            init = model.get_initializer(t) if t else None
            consts.append(None if not t else "stream" if init is None else
                          (list(init.shape), str(model.get_tensor_datatype(t))))
        parts.append([node.op_type, node.domain, attrs, consts, len(node.output),
                      sorted(knobs[name])])
    parts.append(sorted((index[a], oi, index[b], ii) for a, oi, b, ii in internal
                        if a in index))
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def _finn_version() -> str:
    from importlib.metadata import version

    return version("finn-plus")


def _rename(cands: list[dict], names: dict[str, str]) -> list[dict]:
    """Candidates with node names mapped (to positions in the unit, or back to names)."""
    def port(key: str) -> str:
        kind, rest = key.split(":", 1)
        name, i = rest.rsplit(":", 1)
        return f"{kind}:{names[name]}:{i}"

    return [{"attrs": {names[n]: dict(a) for n, a in c["attrs"].items()},
             "impl": {names[n]: op for n, op in c["impl"].items()},
             "cycles": c["cycles"], "res": dict(c["res"]),
             "ports": {port(k): list(v) for k, v in c["ports"].items()}} for c in cands]


def _cache_get(cache: str | Path | None, sig: str) -> list[dict] | None:
    if cache is None:
        return None
    try:
        return json.loads((Path(cache) / f"{sig}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _cache_put(cache: str | Path | None, sig: str, generic: list[dict]) -> None:
    if cache is None:
        return
    path = Path(cache) / f"{sig}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(generic), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader sees the whole list or none


def _attrs(inst: Any) -> dict[str, Any]:
    keys = ("PE", "SIMD", "parallel_window", "resType", "ram_style", "mem_mode")
    types = inst.get_nodeattr_types()
    return {k: inst.get_nodeattr(k) for k in keys if k in types}


def _edges(model: Any, hw: list, unit_of: dict[str, int]) -> tuple[list[dict], list[tuple]]:
    """Stream edges between HW layers: across units (charged by the solver) and inside a unit
    (charged on the candidate)."""
    edges, internal = [], []
    names = {n.name for n in hw}
    for n in hw:
        for oi, t in enumerate(n.output):
            for c in model.find_consumers(t) or []:
                if c.name not in names or c.op_type.startswith("StreamingDataWidthConverter"):
                    continue
                ii = list(c.input).index(t)
                if unit_of[n.name] == unit_of[c.name]:
                    internal.append((n.name, oi, c.name, ii))
                else:
                    edges.append({"src": unit_of[n.name], "src_port": f"out:{n.name}:{oi}",
                                  "dst": unit_of[c.name], "dst_port": f"in:{c.name}:{ii}"})
    return edges, internal


def _evaluate(model: Any, inst: dict, unit: dict, combo: dict, internal: list,
              part: str) -> dict[str, Any] | None:
    res = dict.fromkeys(RESOURCES, 0.0)
    cycles = 0
    try:
        for name in unit["nodes"]:
            for k, v in combo.get(name, {}).items():
                inst[name].set_nodeattr(k, v)
        ports: dict[str, list[int]] = {}
        for name in unit["nodes"]:
            i = inst[name]
            if not _legal(i.onnx_node, i):
                return None
            cycles = max(cycles, int(i.get_exp_cycles()))
            est = i.node_res_estimation(part)
            for k in RESOURCES:
                res[k] += float(est.get(k, 0))
            for oi, _ in enumerate(i.onnx_node.output):
                ports[f"out:{name}:{oi}"] = [int(i.get_folded_output_shape(oi)[-1]),
                                             int(i.get_outstream_width(oi))]
            for ii, t in enumerate(i.onnx_node.input):
                if t and model.get_initializer(t) is None:
                    ports[f"in:{name}:{ii}"] = [int(i.get_folded_input_shape(ii)[-1]),
                                                int(i.get_instream_width(ii))]
        for a, oi, b, ii in internal:
            if a in unit["nodes"] and ports[f"out:{a}:{oi}"][0] != ports[f"in:{b}:{ii}"][0]:
                res["LUT"] += _dwc_lut(ports[f"out:{a}:{oi}"][1], ports[f"in:{b}:{ii}"][1], part)
    except Exception:  # FINN rejects this combination (e.g. an unsupported window mode)
        return None
    return {"attrs": combo, "cycles": cycles, "res": res, "ports": ports,
            "impl": {name: inst[name].onnx_node.op_type for name in unit["nodes"]}}


def main() -> int:
    """Child entry: job.json {"model": onnx path, "part": FPGA part, "out": table path,
    "cache": optional folder of per-signature candidates, "memo": false to evaluate all,
    "mix": true for the HLS variants of RTL layers too}."""
    job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    # FINN's HW ops and qonnx only: the builder (finn_compat.activate) is not needed for the
    # estimate functions and costs 1.4 s of CPU to import (measured)
    from qonnx.core.modelwrapper import ModelWrapper

    from .finn_compat import install_rtl_ops

    install_rtl_ops()  # the graph may hold fpgaslim's RTL layers (hw/rtl)
    table = tabulate(ModelWrapper(job["model"]), job["part"], job.get("cache"),
                     memo=job.get("memo", True), mix=job.get("mix", False))
    Path(job["out"]).write_text(json.dumps(table), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
