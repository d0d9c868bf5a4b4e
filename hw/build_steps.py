"""The estimate and bitfile builds as FINN builder steps, registered by name.

A build is a list of step names (FINN builder style): `preset("estimate")` is finn-plus's
estimate-only preset with fpgaslim's steps slotted in, `preset("bitfile")` is the same list
followed by FINN's hardware steps. `resolve_steps(names)` turns names into callables the way
FINN's builder does (fpgaslim's registry first, then FINN's `build_dataflow_step_lookup`),
each wrapped so that its start, end or failure is appended to the build's progress file (the
parent names the step that failed or ran past the time limit). Every step has FINN's contract
`step_x(model, cfg) -> model`; what fpgaslim's steps need beyond FINN's settings is in the
`fpgaslim_*` fields of the config (hw/finn_config.py builds it).

fpgaslim's steps:
  * `step_fpgaslim_prepare`: the input's datatype from the graph's input quantizer (the zoo
    quantizes x/255 with a UINT8 quantizer of scale exactly 1/255, so the accelerator's input
    is UINT8 pixels; a foreign QONNX file says its own: hw/onnx_input.py; FINN needs to know);
    and widening Truncs are narrowed, which FINN's avg-pool conversion gets wrong;
  * `step_qonnx_to_finn` (FINN's name, fpgaslim's version): FINN's conversion with exact
    thresholds (hw/exact_thresholds.py);
  * `step_fpgaslim_streamline`: stock streamlining for plain CNNs; for residual graphs finn-plus's
    StreamlinePlus-based resnet step (the stock one leaves Transpose/Im2Col/MatMul unmapped);
    for depthwise-separable ones (MobileNet) finn-plus's mobilenet steps;
  * `step_fpgaslim_check_mapped`: any node left outside FINN's HW layers, except the host-side
    output scaling, becomes an UnsupportedLayerError naming it (instead of a partition error);
  * `step_fpgaslim_place_weights`: on-chip/external weight placement as a folding config;
  * `step_fpgaslim_layer_table`: per-layer facts FINN's reports lack (weight streams, modes);
  * `step_fpgaslim_prefer_rtl` (only with prefer_rtl): FINN's RTL variants where it has them.
The read-only parts are qonnx analyses (`model.analysis(fn) -> dict`: `unmapped_nodes`,
`weight_placement`, `layer_table`); the steps act on what they return.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
from qonnx.transformation.base import Transformation

from fpgaslim.core.errors import ConfigError, UnknownNameError, UnsupportedLayerError

from . import fast_streamline, finn_compat
from .exact_thresholds import step_exact_qonnx_to_finn

Step = Callable[[Any, Any], Any]

# Nodes FINN leaves in the (host-side) parent graph after the last HW layer: output scaling
# and reshaping of the final logits, not part of the accelerator.
HOST_OPS = {"Mul", "Add", "Reshape", "Flatten", "Squeeze", "Transpose", "Identity"}
# ... and before the first: the NCHW -> NHWC layout change of the input (FINN's default).
LEADING_HOST_OPS = {"Transpose", "Reshape", "Flatten", "Identity"}  # (an MLP flattens first)
_WEIGHT_OPS = ("MVAU", "VVAU")
_HW_DOMAIN = "finn.custom_op.fpgadataflow"
_FIX_HINT = {
    "Transpose": "a layout change FINN could not absorb: avoid reshapes/permutes between layers",
    "MatMul": "a matmul without quantized inputs: put a QuantIdentity/QuantReLU in front",
    "Mul": "a float scale FINN could not stream through: check that every Add has one shared "
           "quantizer and that pooling is TruncAvgPool2d with FLOOR rounding",
    "AveragePool": "use brevitas TruncAvgPool2d with FLOOR rounding instead of nn.AvgPool2d",
    "GlobalAveragePool": "use brevitas TruncAvgPool2d with FLOOR rounding",
    "TopK": "--topk's LabelSelect needs integer scores, and the layer in front of it ends in a "
            "float scale or per-class float bias FINN cannot fold away (e.g. a classifier "
            "with an unquantized bias): build without --topk (the host takes the argmax of "
            "the logits), or quantize the classifier's bias",
}

# ----------------------------------------------------------------------------- the registry
STEPS: dict[str, Step] = {}  # fpgaslim's steps by name (they win over FINN's of the same name)


def register_step(fn: Step | None = None, *, name: str | None = None) -> Any:
    """Register a build step under its function name (or `name`, e.g. to replace FINN's)."""

    def add(f: Step) -> Step:
        STEPS[name or f.__name__] = f
        return f

    return add if fn is None else add(fn)


register_step(step_exact_qonnx_to_finn, name="step_qonnx_to_finn")  # FINN's, thresholds exact

# The presets. ESTIMATE is finn-plus 1.6.1's estimate_only_dataflow_steps
# (finn_compat.FINN_ESTIMATE_STEPS, checked by check_internals) with step_streamline replaced
# and fpgaslim's steps inserted; BITFILE adds FINN's hardware steps in finn-plus's default order.
ESTIMATE = ["step_fpgaslim_prepare", "step_qonnx_to_finn", "step_tidy_up",
            "step_fpgaslim_streamline", "step_convert_to_hw", "step_fpgaslim_check_mapped",
            "step_minimize_bit_width_initial", "step_create_dataflow_partition",
            "step_specialize_layers", "step_target_fps_parallelization",
            "step_fpgaslim_place_weights", "step_apply_folding_config", "step_minimize_bit_width",
            "step_generate_estimate_reports", "step_fpgaslim_layer_table"]
HARDWARE = ["step_assign_ddr_weight_offsets", "step_generate_hardware",
            "step_create_stitched_ip", "step_prepare_synthesis", "step_synthesize_bitfile",
            "step_make_driver", "step_deployment_package"]
PRESETS = {"estimate": ESTIMATE, "bitfile": ESTIMATE + HARDWARE}
PREFER_RTL_BEFORE = "step_specialize_layers"


def preset(name: str, *, prefer_rtl: bool = False) -> list[str]:
    """The step names of preset `name` ("estimate", "bitfile"); with `prefer_rtl`,
    step_fpgaslim_prefer_rtl right before step_specialize_layers."""
    if name not in PRESETS:
        raise UnknownNameError("build preset", name, list(PRESETS))
    names = list(PRESETS[name])
    if prefer_rtl:
        names.insert(names.index(PREFER_RTL_BEFORE), "step_fpgaslim_prefer_rtl")
    return names


def resolve_steps(names: list[str]) -> list[Step]:
    """(child, after finn_compat.activate) The callables for `names`, as FINN's builder
    resolves a step name (fpgaslim's registry first, then FINN's lookup), each tracked in the
    progress file. An unknown name is a ConfigError listing the known ones."""
    lookup = {**finn_compat.builder().step_lookup, **STEPS}
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise ConfigError(f"unknown build steps {unknown}; fpgaslim's: {sorted(STEPS)}; "
                          f"finn-plus's: {sorted(set(lookup) - set(STEPS))}")
    return [_tracked(lookup[n], n) for n in names]


def _tracked(step: Step, name: str) -> Step:
    """`step` with its start/end/failure appended to cfg.fpgaslim_progress (JSON lines)."""

    def run(model: Any, cfg: Any) -> Any:
        progress = cfg.fpgaslim_progress
        log_progress(progress, "start", name)
        try:  # streamline "fast": every step with qonnx's exact fast paths (fast_streamline)
            with fast_streamline.fast_steps(getattr(cfg, "fpgaslim_streamline", "fast")):
                model = step(model, cfg)
        except BaseException as exc:
            log_progress(progress, "error", name, type=type(exc).__name__, message=str(exc),
                         traceback=traceback.format_exc(limit=8))
            raise
        log_progress(progress, "end", name)
        return model

    run.__name__ = name  # FINN names the step's checkpoint after it
    return run


def log_progress(progress: str | Path | None, event: str, step: str, **extra: str) -> None:
    """Append one event to the progress file (nothing when there is none)."""
    if progress is None:
        return
    with open(progress, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": event, "step": step, **extra, "t": time.time()}) + "\n")
        f.flush()


# ------------------------------------------------------------------ graph edits and analyses
class NarrowWideningTrunc(Transformation):
    """Rewrite a QONNX Trunc (v2) whose output is wider than its input (nothing is truncated,
    e.g. TruncAvgPool2d to 8 bits over a 2x2 window of 4-bit values) into the same function
    with output bits = input bits and output scale = input scale.

    Why: FINN's AvgPool+Trunc conversion turns the bit difference into a right shift and
    clamps a negative shift to 0, so such a pool computes 1/4 (for 2x2) of the Brevitas value
    (measured: FINN's own QONNX_TO_FINN_PYTHON verification fails). Both forms compute
    round(x / scale) * scale within range, so the rewrite is exact."""

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


def _input_chain(model: Any, ops: tuple[str, ...], stop: str, const_ok: Callable[..., bool]
                 ) -> tuple[list[Any], Any] | None:
    """(chain, stop node): the single-consumer path from the graph input through `ops` with a
    constant second input (`const_ok(const, shape of the tensor it meets)`) to the first
    `stop` node; None when the path is anything else. Shared by the two rewrites below."""
    chain, tensor = [], model.graph.input[0].name
    while True:
        consumers = model.find_consumers(tensor)
        if len(consumers) != 1:
            return None
        node = consumers[0]
        if node.op_type == stop:
            return chain, node
        const = model.get_initializer(node.input[1]) if len(node.input) == 2 else None
        if (node.op_type not in ops or node.input[0] != tensor or const is None
                or not const_ok(const, model.get_tensor_shape(tensor))):
            return None
        chain.append(node)
        tensor = node.output[0]


class LeadingReshapeToFlatten(Transformation):
    """A Reshape that flattens the graph's input (1 x C x H x W -> 1 x CHW: Brevitas's
    bnn_pynq TFC/LFC/SFC `x.view(n, -1)`), possibly behind scalar Mul/Add/Sub/Div (a prepended
    `x / 255`, TFC's own `2x - 1`), becomes a Flatten(axis=1) on the input itself, the scalar
    ops after it.

    Why: finn-plus 1.6.1's convert_to_hw turns any static Reshape into a Reshape_rtl layer
    (InferReshape); at the input that layer moves one element per cycle (784 cycles for
    28x28), unfolded, and became TFC-W1A1's bottleneck (127,551 fps estimated with
    finn-examples' own folding, which gives 837,019 img/s on the board). A leading Flatten
    stays on the host, as FINN's published TFC builds have it (the accelerator reads
    784-vectors; the board runner reshapes). Scalar elementwise ops commute with a reshape:
    same values, same order, exact."""

    SCALAR_OPS = ("Mul", "Add", "Sub", "Div")

    def apply(self, model):  # type: ignore[override]
        from onnx import helper

        iname = model.graph.input[0].name
        shape = model.get_tensor_shape(iname)
        if shape is None or len(shape) < 3:
            return model, False
        found = _input_chain(model, self.SCALAR_OPS, "Reshape",
                             lambda const, _shape: np.asarray(const).size == 1)
        if found is None:
            return model, False
        chain, node = found
        target = model.get_initializer(node.input[1])
        flat = [shape[0], int(np.prod(shape[1:]))]
        want = None if target is None else [int(v) for v in np.asarray(target).reshape(-1)]
        if want not in (flat, [shape[0], -1], [-1, flat[1]]):
            return model, False
        out = node.output[0]
        nodes = list(model.graph.node)
        idx = min(nodes.index(n) for n in chain + [node])
        model.graph.node.remove(node)
        first = f"{iname}_flat"
        model.graph.node.insert(idx, helper.make_node(
            "Flatten", [iname], [first], name=node.name or "input_flatten", axis=1))
        prev = first
        for i, n in enumerate(chain):  # the scalar ops on the flat tensor, in order
            n.input[0] = prev
            prev = n.output[0] if i < len(chain) - 1 else out
            if i == len(chain) - 1:
                n.output[0] = out
            model.set_tensor_shape(n.output[0], flat)
        from qonnx.transformation.infer_shapes import InferShapes

        return model.transform(InferShapes()), False


class MoveInputTransposeToFront(Transformation):
    """Constant Mul/Add ops on the input (scalar or per channel, 1 x C x 1 x 1) followed by
    the NCHW -> NHWC Transpose that lowering a conv puts in front of its Im2Col: the Transpose
    goes first, the constants are laid out channels-last (1 x 1 x 1 x C).

    Why: fpgaslim's exact integer form of a mean offset (hw/onnx_input.py `integer_offset`)
    leaves `K*p - c` in front of the first conv; lowered, the Transpose sits between those ops
    and the conv, where FINN makes it a Shuffle layer (no cycle estimate, a needless layer)
    instead of the host-side layout change it is at the input. Elementwise ops commute with a
    transpose when their constants are transposed too: exact."""

    def apply(self, model):  # type: ignore[override]
        iname = model.graph.input[0].name
        found = _input_chain(model, ("Mul", "Add"), "Transpose", lambda const, shape: (
            const.size == 1 or (const.ndim == 4 and const.shape == (1, shape[1], 1, 1))))
        if found is None:
            return model, False
        chain, node = found
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if not chain or perm != [0, 2, 3, 1]:
            return model, False
        out = node.output[0]
        # the Transpose reads the input; the chain reads the Transpose's output
        node.input[0] = iname
        first_in = f"{iname}_nhwc"
        node.output[0] = first_in
        chain[0].input[0] = first_in
        chain[-1].output[0] = out
        nchw = model.get_tensor_shape(iname)
        nhwc = [nchw[i] for i in perm]
        model.set_tensor_shape(first_in, nhwc)
        for n in chain:
            const = model.get_initializer(n.input[1])
            if const.size != 1:
                model.set_initializer(n.input[1], np.transpose(const, perm).copy())
            model.set_tensor_shape(n.output[0], nhwc)
        nodes = list(model.graph.node)
        model.graph.node.remove(node)
        model.graph.node.insert(min(nodes.index(n) for n in chain), node)
        from qonnx.transformation.infer_data_layouts import InferDataLayouts
        from qonnx.transformation.infer_datatypes import InferDataTypes

        return model.transform(InferDataTypes()).transform(InferDataLayouts()), False


def _hint(op_type: str) -> str:
    return _FIX_HINT.get(op_type, f"replace the {op_type} with a layer FINN maps (quantized "
                         "conv/linear, QuantReLU thresholds, MaxPool, TruncAvgPool2d, Add with "
                         "a shared quantizer)")


def has_depthwise_conv(model: Any) -> bool:
    """A grouped Conv with one input channel per group (MobileNet's depthwise layers)."""
    for node in model.graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            shape = model.get_tensor_shape(node.input[0])
            if group > 1 and shape is not None and len(shape) > 1 and group == shape[1]:
                return True
    return False


def is_residual(model: Any) -> bool:
    """A graph with an Add whose two inputs are both computed (a skip connection)."""
    for node in model.graph.node:
        if node.op_type == "Add" and len(node.input) == 2 and all(
                model.get_initializer(i) is None for i in node.input):
            return True
    return False


def unmapped_nodes(model: Any) -> dict[str, Any]:
    """(analysis) The nodes FINN did not map to HW layers that are not host-side (the input
    layout change in front of the accelerator, the output scaling after it):
    {"hw_layers": n, "unmapped": [{"name", "op_type", "where"}, ...]} in graph order."""
    hw = [n for n in model.graph.node if n.domain.startswith(_HW_DOMAIN)]
    downstream: set[str] = set()
    for n in hw:  # everything fed (transitively) by a HW layer
        stack = list(n.output)
        while stack:
            t = stack.pop()
            for c in model.find_consumers(t):
                if c.name not in downstream:
                    downstream.add(c.name)
                    stack.extend(c.output)
    unmapped = []
    for node in model.graph.node:
        if node.domain.startswith(_HW_DOMAIN):
            continue
        consumers_hw = any(c.domain.startswith(_HW_DOMAIN)
                           for t in node.output for c in model.find_consumers(t))
        trailing = node.name in downstream and not consumers_hw
        leading = node.name not in downstream
        if not ((trailing and node.op_type in HOST_OPS)
                or (leading and node.op_type in LEADING_HOST_OPS)):
            unmapped.append({"name": node.name, "op_type": node.op_type,
                             "where": "between hardware layers" if consumers_hw
                             else "at the graph's edge"})
    return {"hw_layers": len(hw), "unmapped": unmapped}


def _weight_nodes(model: Any) -> list[Any]:
    return [n for n in model.graph.node if n.op_type.split("_")[0] in _WEIGHT_OPS]


def weight_placement(model: Any, place: str, fpga_part: str, bram_18k: int | None,
                     uram: int | None) -> dict[str, str]:
    """(analysis) mem_mode per weight layer. "onchip" keeps FINN's default (internal_decoupled);
    "external" streams every weight layer from off-chip memory; "auto" moves the layers with
    the most weight BRAM/URAM off-chip, largest first, until FINN's memory estimate fits the
    board's `bram_18k` / `uram`."""
    nodes = _weight_nodes(model)
    external: list[str] = []
    if place == "external":
        external = [n.name for n in nodes]
    elif place == "auto":
        if bram_18k is None or uram is None:
            raise ConfigError("weights: auto needs the board's BRAM_18K and URAM capacities")
        est = finn_compat.builder().res_estimation(model, fpga_part)
        bram = sum(v.get("BRAM_18K", 0) for v in est.values())
        ur = sum(v.get("URAM", 0) for v in est.values())
        by_size = sorted(nodes, key=lambda n: (est[n.name].get("BRAM_18K", 0)
                                               + 8 * est[n.name].get("URAM", 0)), reverse=True)
        for n in by_size:
            if bram <= bram_18k and ur <= uram:
                break
            if est[n.name].get("BRAM_18K", 0) + est[n.name].get("URAM", 0) == 0:
                continue
            bram -= est[n.name].get("BRAM_18K", 0)
            ur -= est[n.name].get("URAM", 0)
            external.append(n.name)
    return {n.name: "external" if n.name in external else "internal_decoupled" for n in nodes}


def layer_table(model: Any) -> dict[str, Any]:
    """(analysis) Per-layer facts fpgaslim's report needs and FINN's reports lack (weight
    stream widths, memory modes, stream shapes) of a specialized dataflow graph."""
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
    return {"layers": layers, "io": io}


# ------------------------------------------------------------------------------ the steps
@register_step
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
    return model.transform(NarrowWideningTrunc()).transform(LeadingReshapeToFlatten())


@register_step
def step_fpgaslim_streamline(model: Any, cfg: Any) -> Any:
    """cfg.fpgaslim_streamline "fast": the residual streamlining runs under
    finn_compat.fast_streamlining() (same graph, byte for byte; hw/fast_streamline.py);
    "stock": finn-plus unchanged."""
    fb = finn_compat.builder()
    if has_depthwise_conv(model) and not is_residual(model):
        # finn-plus's MobileNet steps (finn-examples' recipe): the stock streamline leaves the
        # per-channel scales in front of the depthwise convs, which then stay unmapped
        model = fb.mobilenet_lower_convs(fb.mobilenet_streamline(model, cfg), cfg)
        return model.transform(MoveInputTransposeToFront())
    if not is_residual(model):
        model = fb.step_lookup["step_streamline"](model, cfg)
        return model.transform(MoveInputTransposeToFront())
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts

    if cfg.fpgaslim_streamline == "fast":
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


@register_step
def step_fpgaslim_check_mapped(model: Any, cfg: Any) -> Any:
    """Fail with the first node FINN did not map (`unmapped_nodes`), unless it is host-side."""
    found = model.analysis(unmapped_nodes)
    if not found["hw_layers"]:
        node = model.graph.node[0]
        raise UnsupportedLayerError(
            f"FINN mapped no layer to hardware; first node {node.name!r} ({node.op_type}): "
            f"{_hint(node.op_type)}")
    if found["unmapped"]:
        n = found["unmapped"][0]
        raise UnsupportedLayerError(
            f"FINN cannot map node {n['name']!r} (op type {n['op_type']}, {n['where']}): "
            f"{_hint(n['op_type'])}")
    return model


@register_step
def step_fpgaslim_place_weights(model: Any, cfg: Any) -> Any:
    """Write the folding config for the weight placement (`weight_placement` with
    cfg.fpgaslim_weights and the board's cfg.fpgaslim_bram_18k / cfg.fpgaslim_uram) and point
    the builder at it. cfg.fpgaslim_folding: a folding-config JSON whose per-node entries are
    laid over these (the folding optimizer's choice, or a bitfile build's folding file)."""
    part = finn_compat.fpga_part(cfg) if cfg.fpgaslim_weights == "auto" else ""
    modes = model.analysis(lambda m: weight_placement(
        m, cfg.fpgaslim_weights, part, cfg.fpgaslim_bram_18k, cfg.fpgaslim_uram))
    config: dict[str, Any] = {"Defaults": {}}
    config.update({name: {"mem_mode": mode} for name, mode in modes.items()})
    if cfg.fpgaslim_folding:
        for name, attrs in _read_folding(Path(cfg.fpgaslim_folding)).items():
            config.setdefault(name, {}).update(attrs)
    path = Path(cfg.output_dir) / "fpgaslim_folding_config.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    cfg.folding_config_file = path
    return model


def _read_folding(path: Path) -> dict[str, Any]:
    """A folding-config JSON ({node: {attr: value}}); a clear error naming the file if not."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"folding config {path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise ConfigError(f"folding config {path}: expected {{node name: {{attribute: "
                          "value}}}}, as FINN's folding config files")
    return config


@register_step
def step_fpgaslim_layer_table(model: Any, cfg: Any) -> Any:
    """`layer_table` written to report/fpgaslim_layers.json."""
    out = Path(cfg.output_dir) / "report" / "fpgaslim_layers.json"
    out.write_text(json.dumps(model.analysis(layer_table), indent=2), encoding="utf-8")
    return model


@register_step
def step_fpgaslim_prefer_rtl(model: Any, cfg: Any) -> Any:
    """Ask FINN's SpecializeLayers for the RTL variant of every HW layer that has one (its
    `preferred_impl_style` attribute), fpgaslim's hand-written ones (hw/rtl: DuplicateStreams,
    integer ElementwiseAdd/Sub/Mul and the output Mul, Pool) included; FINN falls back to HLS
    where RTL is not possible (e.g. an MVAU with unsigned weights) and logs why."""
    from finn.custom_op.fpgadataflow.rtl import custom_op as rtl_variants
    from qonnx.custom_op.registry import getCustomOp

    problems = finn_compat.install_rtl_ops()
    if problems:
        raise ConfigError("prefer_rtl: fpgaslim's RTL layers cannot be used with the "
                          "installed finn-plus: " + "; ".join(problems))

    for node in model.graph.node:
        if node.domain == _HW_DOMAIN and f"{node.op_type}_rtl" in rtl_variants:
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    return model
