"""The estimate build as FINN builder steps, run inside the build child process (hw/build.py).

The step list is finn-plus's estimate-only preset with five fpgaslim steps slotted in, all with
FINN's `step_x(model, cfg) -> model` contract:
  * `step_fpgaslim_prepare`: the input's datatype from the graph's input quantizer (the zoo
    quantizes x/255 with a UINT8 quantizer of scale exactly 1/255, so the accelerator's input
    is UINT8 pixels; a foreign QONNX file says its own: hw/onnx_input.py; FINN needs to know);
    and widening Truncs are narrowed, which FINN's avg-pool conversion gets wrong;
  * `step_fpgaslim_streamline`: stock streamlining for plain CNNs; for residual graphs finn-plus's
    StreamlinePlus-based resnet step (the stock one leaves Transpose/Im2Col/MatMul unmapped);
  * `step_fpgaslim_check_mapped`: any node left outside FINN's HW layers, except the host-side
    output scaling, becomes an UnsupportedLayerError naming it (instead of a partition error);
  * `step_fpgaslim_place_weights`: on-chip/external weight placement as a folding config;
  * `step_fpgaslim_layer_table`: per-layer facts FINN's reports lack (weight streams, modes).
FINN's own `step_qonnx_to_finn` keeps its name but runs with exact thresholds
(hw/exact_thresholds.py). Each step is wrapped so that its start, end or failure is appended to a progress file: the
parent names the running step when it kills a build at its time limit.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from fpgaslim.core.errors import UnsupportedLayerError

from . import finn_compat

# Nodes FINN leaves in the (host-side) parent graph after the last HW layer: output scaling
# and reshaping of the final logits, not part of the accelerator.
HOST_OPS = {"Mul", "Add", "Reshape", "Flatten", "Squeeze", "Transpose", "Identity"}
# ... and before the first: the NCHW -> NHWC layout change of the input (FINN's default).
LEADING_HOST_OPS = {"Transpose", "Reshape", "Flatten", "Identity"}  # (an MLP flattens first)
_WEIGHT_OPS = ("MVAU", "VVAU")
_FIX_HINT = {
    "Transpose": "a layout change FINN could not absorb: avoid reshapes/permutes between layers",
    "MatMul": "a matmul without quantized inputs: put a QuantIdentity/QuantReLU in front",
    "Mul": "a float scale FINN could not stream through: check that every Add has one shared "
           "quantizer and that pooling is TruncAvgPool2d with FLOOR rounding",
    "AveragePool": "use brevitas TruncAvgPool2d with FLOOR rounding instead of nn.AvgPool2d",
    "GlobalAveragePool": "use brevitas TruncAvgPool2d with FLOOR rounding",
}


def _hint(op_type: str) -> str:
    return _FIX_HINT.get(op_type, f"replace the {op_type} with a layer FINN maps (quantized "
                         "conv/linear, QuantReLU thresholds, MaxPool, TruncAvgPool2d, Add with "
                         "a shared quantizer)")


def _make_widening_trunc_fix() -> type:
    from qonnx.transformation.base import Transformation

    class NarrowWideningTrunc(Transformation):
        """Rewrite a QONNX Trunc (v2) whose output is wider than its input (nothing is
        truncated, e.g. TruncAvgPool2d to 8 bits over a 2x2 window of 4-bit values) into the
        same function with output bits = input bits and output scale = input scale.

        Why: FINN's AvgPool+Trunc conversion turns the bit difference into a right shift and
        clamps a negative shift to 0, so such a pool computes 1/4 (for 2x2) of the Brevitas
        value (measured: FINN's own QONNX_TO_FINN_PYTHON verification fails). Both forms
        compute round(x / scale) * scale within range, so the rewrite is exact."""

        def apply(self, model):  # type: ignore[override]
            for node in model.graph.node:
                if node.op_type != "Trunc" or len(node.input) != 6:
                    continue
                init = [model.get_initializer(i) for i in node.input[1:]]
                if any(v is None for v in init):
                    continue
                scale, _, in_bits, _, out_bits = init
                if float(out_bits) > float(in_bits):
                    model.set_initializer(node.input[4], scale.copy())
                    model.set_initializer(node.input[5], in_bits.copy())
            return model, False

    return NarrowWideningTrunc


def step_fpgaslim_prepare(model: Any, cfg: Any) -> Any:
    """Annotate the input with the datatype of the graph's input quantizer (UINT8 for
    fpgaslim's models, whatever a foreign file's quantizer says: hw/onnx_input.py) and fix
    widening Truncs (see NarrowWideningTrunc)."""
    from qonnx.core.datatype import DataType

    from .onnx_input import read_input_quant

    iq = read_input_quant(model, "the model")
    if iq.step != 1.0:
        raise UnsupportedLayerError(
            f"the input quantizer ({iq.found}) has step {iq.step:g} in input units, so the "
            "accelerator's input would not be integers; build the file with `fpgaslim build "
            "MODEL.onnx`, which puts the step in front of the graph (hw/onnx_input.py)")
    model.set_tensor_datatype(model.graph.input[0].name, DataType[iq.dtype])
    return model.transform(_make_widening_trunc_fix()())


def is_residual(model: Any) -> bool:
    """A graph with an Add whose two inputs are both computed (a skip connection)."""
    for node in model.graph.node:
        if node.op_type == "Add" and len(node.input) == 2 and all(
                model.get_initializer(i) is None for i in node.input):
            return True
    return False


def step_fpgaslim_streamline(model: Any, cfg: Any, mode: str = "fast") -> Any:
    """`mode` "fast": the residual streamlining runs under finn_compat.fast_streamlining()
    (same graph, byte for byte; hw/fast_streamline.py); "stock": finn-plus unchanged."""
    fb = finn_compat.builder()
    if not is_residual(model):
        return fb.step_lookup["step_streamline"](model, cfg)
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts

    if mode == "fast":
        with finn_compat.fast_streamlining():
            model = fb.resnet_streamline(model, cfg)
    else:
        model = fb.resnet_streamline(model, cfg)
    # the tail of FINN's stock streamline step, which the resnet step lacks
    model = model.transform(fb.MakeMaxPoolNHWC())
    model = model.transform(fb.AbsorbConsecutiveTransposes())
    model = model.transform(InferDataLayouts())
    model = model.transform(RemoveUnusedTensors())
    if finn_compat.verification_enabled(cfg, "STREAMLINED_PYTHON"):
        fb.verify_step(model, cfg, "streamlined_python", need_parent=False)
    return model


def step_fpgaslim_check_mapped(model: Any, cfg: Any) -> Any:
    """Fail with the first node FINN did not map, unless it is host-side: the input layout
    change in front of the accelerator or the output scaling after it."""
    hw = [n for n in model.graph.node if n.domain.startswith("finn.custom_op.fpgadataflow")]
    if not hw:
        node = model.graph.node[0]
        raise UnsupportedLayerError(
            f"FINN mapped no layer to hardware; first node {node.name!r} ({node.op_type}): "
            f"{_hint(node.op_type)}")
    downstream: set[str] = set()
    for n in hw:  # everything fed (transitively) by a HW layer
        stack = list(n.output)
        while stack:
            t = stack.pop()
            for c in model.find_consumers(t):
                if c.name not in downstream:
                    downstream.add(c.name)
                    stack.extend(c.output)
    for node in model.graph.node:
        if node.domain.startswith("finn.custom_op.fpgadataflow"):
            continue
        consumers_hw = any(c.domain.startswith("finn.custom_op.fpgadataflow")
                           for t in node.output for c in model.find_consumers(t))
        trailing = node.name in downstream and not consumers_hw
        leading = node.name not in downstream
        if not ((trailing and node.op_type in HOST_OPS)
                or (leading and node.op_type in LEADING_HOST_OPS)):
            where = "between hardware layers" if consumers_hw else "at the graph's edge"
            raise UnsupportedLayerError(
                f"FINN cannot map node {node.name!r} (op type {node.op_type}, {where}): "
                f"{_hint(node.op_type)}")
    return model


def _weight_nodes(model: Any) -> list[Any]:
    return [n for n in model.graph.node if n.op_type.split("_")[0] in _WEIGHT_OPS]


def step_fpgaslim_place_weights(model: Any, cfg: Any, place: str,
                                board: dict[str, Any], folding: str | None = None) -> Any:
    """Write the folding config for the weight placement and point the builder at it.

    "onchip" keeps FINN's default (internal_decoupled); "external" streams every weight layer
    from off-chip memory; "auto" moves the layers with the most weight BRAM/URAM off-chip,
    largest first, until FINN's memory estimate fits the board. `folding`: a folding-config
    JSON whose per-node entries are laid over these (the folding optimizer's choice)."""
    fb = finn_compat.builder()
    nodes = _weight_nodes(model)
    external: list[str] = []
    if place == "external":
        external = [n.name for n in nodes]
    elif place == "auto":
        part = finn_compat.fpga_part(cfg)
        est = model.analysis(lambda m: fb.res_estimation(m, part))
        bram = sum(v.get("BRAM_18K", 0) for v in est.values())
        uram = sum(v.get("URAM", 0) for v in est.values())
        by_size = sorted(nodes, key=lambda n: (est[n.name].get("BRAM_18K", 0)
                                               + 8 * est[n.name].get("URAM", 0)), reverse=True)
        for n in by_size:
            if bram <= board["BRAM_18K"] and uram <= board["URAM"]:
                break
            if est[n.name].get("BRAM_18K", 0) + est[n.name].get("URAM", 0) == 0:
                continue
            bram -= est[n.name].get("BRAM_18K", 0)
            uram -= est[n.name].get("URAM", 0)
            external.append(n.name)
    config: dict[str, Any] = {"Defaults": {}}
    for n in nodes:
        config[n.name] = {"mem_mode": "external" if n.name in external else "internal_decoupled"}
    if folding:
        for name, attrs in json.loads(Path(folding).read_text(encoding="utf-8")).items():
            config.setdefault(name, {}).update(attrs)
    path = Path(cfg.output_dir) / "fpgaslim_folding_config.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    cfg.folding_config_file = path
    return model


def step_fpgaslim_layer_table(model: Any, cfg: Any) -> Any:
    """Per-layer facts fpgaslim's report needs and FINN's reports lack (weight stream widths,
    memory modes, stream shapes), written to report/fpgaslim_layers.json."""
    fb = finn_compat.builder()
    layers = []
    for node in model.graph.node:
        inst = fb.getHWCustomOp(node)
        row: dict[str, Any] = {"name": node.name, "op_type": node.op_type,
                               "exp_cycles": int(inst.get_exp_cycles())}
        if node.op_type.split("_")[0] in _WEIGHT_OPS:
            wdt = inst.get_input_datatype(1)
            w = model.get_initializer(node.input[1])
            row.update(mem_mode=inst.get_nodeattr("mem_mode"),
                       ram_style=inst.get_nodeattr("ram_style"),
                       weight_bits=int(w.size * wdt.bitwidth()),
                       weight_dtype=wdt.name, weightstream_width=int(inst.get_instream_width(1)),
                       PE=int(inst.get_nodeattr("PE")), SIMD=int(inst.get_nodeattr("SIMD")))
        layers.append(row)
    first = fb.getHWCustomOp(model.graph.node[0])
    last = fb.getHWCustomOp(model.graph.node[-1])
    io = {"input_shape": list(first.get_normal_input_shape()),
          "input_dtype": first.get_input_datatype(0).name,
          "input_bits": first.get_input_datatype(0).bitwidth(),
          "output_shape": list(last.get_normal_output_shape()),
          "output_dtype": last.get_output_datatype(0).name,
          "output_bits": last.get_output_datatype(0).bitwidth()}
    out = Path(cfg.output_dir) / "report" / "fpgaslim_layers.json"
    out.write_text(json.dumps({"layers": layers, "io": io}, indent=2), encoding="utf-8")
    return model


def _tracked(step: Callable[[Any, Any], Any], name: str, progress: Path) -> Callable:
    """Wrap a step so its start/end/failure is appended to the progress file (JSON lines)."""

    def run(model: Any, cfg: Any) -> Any:
        _log(progress, {"event": "start", "step": name})
        try:
            model = step(model, cfg)
        except BaseException as exc:
            _log(progress, {"event": "error", "step": name, "type": type(exc).__name__,
                            "message": str(exc), "traceback": traceback.format_exc(limit=8)})
            raise
        _log(progress, {"event": "end", "step": name})
        return model

    run.__name__ = name
    return run


def _log(progress: Path, entry: dict[str, Any]) -> None:
    entry["t"] = time.time()
    with open(progress, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()


def step_fpgaslim_prefer_rtl(model: Any, cfg: Any) -> Any:
    """Ask FINN's SpecializeLayers for the RTL variant of every HW layer that has one (its
    `preferred_impl_style` attribute); FINN falls back to HLS where RTL is not possible (e.g.
    an MVAU with unsigned weights) and logs why."""
    from finn.custom_op.fpgadataflow.rtl import custom_op as rtl_variants
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        if node.domain == "finn.custom_op.fpgadataflow" and f"{node.op_type}_rtl" in rtl_variants:
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    return model


def with_prefer_rtl(steps: list[Callable], progress: Path) -> list[Callable]:
    """`steps` with step_fpgaslim_prefer_rtl (tracked) right before step_specialize_layers."""
    at = [s.__name__ for s in steps].index("step_specialize_layers")
    return steps[:at] + [_tracked(step_fpgaslim_prefer_rtl, "step_fpgaslim_prefer_rtl",
                                  progress)] + steps[at:]


def estimate_steps(progress: Path, weights: str | None = None,
                   board: dict[str, Any] | None = None,
                   folding: str | None = None, streamline: str = "fast") -> list[Callable]:
    """finn-plus's estimate-only preset with fpgaslim's steps inserted, each tracked;
    `weights` and `board` (its BRAM_18K / URAM capacities) drive the weight placement. When
    they are None, they are read from `cfg._fpgaslim = {"weights": ..., "board": ...}` on the
    FINN config (the contract hw/bitfile.py uses)."""
    fb = finn_compat.builder()

    def place(model: Any, cfg: Any) -> Any:
        if weights is None or board is None:
            return step_fpgaslim_place_weights(model, cfg, cfg._fpgaslim["weights"],
                                               cfg._fpgaslim["board"])
        return step_fpgaslim_place_weights(model, cfg, weights, board, folding)

    from .exact_thresholds import step_exact_qonnx_to_finn

    ours = {"step_qonnx_to_finn": step_exact_qonnx_to_finn,  # FINN's, thresholds made exact
            "step_fpgaslim_prepare": step_fpgaslim_prepare,
            "step_fpgaslim_streamline": lambda m, c: step_fpgaslim_streamline(m, c, streamline),
            "step_fpgaslim_check_mapped": step_fpgaslim_check_mapped,
            "step_fpgaslim_place_weights": place,
            "step_fpgaslim_layer_table": step_fpgaslim_layer_table}
    names: list[str] = ["step_fpgaslim_prepare"]
    for s in fb.estimate_only_steps:
        if s == "step_streamline":
            names.append("step_fpgaslim_streamline")
            continue
        if s == "step_apply_folding_config":
            names.append("step_fpgaslim_place_weights")
        names.append(s)
        if s == "step_convert_to_hw":
            names.append("step_fpgaslim_check_mapped")
    names.append("step_fpgaslim_layer_table")
    return [_tracked(ours.get(n) or fb.step_lookup[n], n, progress) for n in names]

