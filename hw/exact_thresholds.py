"""Exact MultiThreshold thresholds for FINN's QONNX -> FINN conversion.

FINN's ConvertQONNXtoFINN (finn/transformation/qonnx/qonnx_activation_handlers.py) replaces an
activation `Quant` (round(x / scale), clipped) by a MultiThreshold counting `x >= T_t` with
T_t = (t + 1/2) * scale computed in float64 and stored as float32. That is not the Quant's
function on float32 inputs:
  * a tie: x / scale == k + 1/2 exactly; Quant rounds half to even, `x >= T` always rounds up;
  * float32 error: Quant divides in float32 (qonnx `int_quant`), the threshold is a rounded
    product; an x within an ulp or two of the boundary lands on different sides of the two
    (seen: a ResNet-8 stem element at x / scale = 5.499999 in float32, FINN_NOTES).
`ExactQuantThresholds` replaces every threshold by the smallest float32 x whose qonnx Quant
level reaches the next level: the boundary of the float32 function itself, found by walking
float32 neighbours (`np.nextafter`) from FINN's value. Because x -> round(fl32(x / s)) is
monotone, `x >= T` then equals the Quant on every float32 input: the converted graph computes
exactly what the exported QONNX model computes, ties resolved the way qonnx/Brevitas round
them. Hand-written (no library computes this); it is a qonnx Transformation, run by
`step_exact_qonnx_to_finn` right after FINN's own conversion.

For an activation computed inside the network the reference is float64 arithmetic on the
integers (hw/verify_layers.py), so `AbsorbScalesExactly` gives those float64 thresholds
(k + 1/2) * s, ties to even, and absorbs the scale Mul in front in float64, so that FINN's
streamlining (which would collapse two float32 scales into one float32 product first) divides
float64 thresholds by one float32 scale at a time before its final ceil; a BatchNorm in front
is absorbed in float64 by `AbsorbBatchNormExactly`. hw/verify_layers.py compares each hardware
layer with the reference and names any difference that remains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name


@dataclass(frozen=True)
class QuantParams:
    """The parameters of one activation Quant node of the QONNX model."""

    scale: np.ndarray  # float32, as the initializer (per tensor or per channel)
    zeropt: float
    bitwidth: int
    signed: bool
    narrow: bool
    rounding_mode: str

    @property
    def levels(self) -> tuple[int, int]:
        from qonnx.custom_op.general.intquant import max_int, min_int

        return (int(min_int(self.signed, self.narrow, self.bitwidth)),
                int(max_int(self.signed, self.narrow, self.bitwidth)))


def quant_level(x: np.ndarray, scale: np.ndarray, p: QuantParams) -> np.ndarray:
    """The integer level qonnx's `int_quant` gives float32 `x` (same operations, same order,
    same dtype: divide, add zero point, clamp, round), without the re-scaling."""
    from qonnx.custom_op.general.intquant import resolve_rounding_mode

    lo, hi = p.levels
    y = x.astype(np.float32) / scale.astype(np.float32)
    y = y + np.float32(p.zeropt)
    y = np.where(y > hi, np.float32(hi), y)
    y = np.where(y < lo, np.float32(lo), y)
    return resolve_rounding_mode(p.rounding_mode)(y)


def activation_quants(model: Any) -> dict[str, QuantParams]:
    """Activation Quant nodes of a QONNX model (input computed, parameters constant), keyed by
    output tensor name: the name the conversion keeps at the end of its MultiThreshold chain."""
    from qonnx.custom_op.registry import getCustomOp

    found = {}
    for n in model.graph.node:
        if n.op_type != "Quant" or model.get_initializer(n.input[0]) is not None:
            continue
        init = [model.get_initializer(i) for i in n.input[1:4]]
        if any(v is None for v in init):
            continue
        inst = getCustomOp(n)
        found[n.output[0]] = QuantParams(
            scale=np.asarray(init[0], dtype=np.float32), zeropt=float(np.asarray(init[1])),
            bitwidth=int(np.asarray(init[2])), signed=bool(inst.get_nodeattr("signed")),
            narrow=bool(inst.get_nodeattr("narrow")),
            rounding_mode=str(inst.get_nodeattr("rounding_mode")))
    return found


def exact_thresholds(thresholds: np.ndarray, p: QuantParams) -> np.ndarray | None:
    """Thresholds (channels or 1, n) that make `x >= T` equal Quant `p` on float32 x; None
    when the node is not the plain staircase this reasons about (threshold count differs)."""
    lo, hi = p.levels
    th = np.asarray(thresholds, dtype=np.float32)
    if th.ndim != 2 or th.shape[1] != hi - lo:
        return None
    scale = np.abs(p.scale.astype(np.float32)).reshape(-1)
    if scale.size not in (1, th.shape[0]) and th.shape[0] != 1:
        return None
    rows = max(th.shape[0], scale.size)
    th = np.broadcast_to(th, (rows, th.shape[1])).copy()
    s = np.broadcast_to(scale.reshape(-1, 1), th.shape).astype(np.float32)
    target = np.arange(lo + 1, hi + 1, dtype=np.float32)[None, :] - np.float32(p.zeropt)
    target = np.broadcast_to(target, th.shape)
    x = th.copy()
    for _ in range(4096):  # up: while x does not reach the level yet
        low = quant_level(x, s, p) < target
        if not low.any():
            break
        x = np.where(low, np.nextafter(x, np.float32(np.inf)), x)
    else:
        return None
    for _ in range(4096):  # down: while the float32 just below reaches it as well
        below = np.nextafter(x, np.float32(-np.inf))
        still = quant_level(below, s, p) >= target
        if not still.any():
            break
        x = np.where(still, below, x)
    else:
        return None
    return x.astype(np.float32)


def _chain_end(model: Any, node: Any) -> str:
    """The tensor at the end of MultiThreshold -> [Add] -> [Mul] (the conversion's chain)."""
    tensor = node.output[0]
    for op in ("Add", "Mul"):
        consumers = model.find_consumers(tensor) or []
        if len(consumers) == 1 and consumers[0].op_type == op and \
                model.get_initializer(consumers[0].input[1]) is not None:
            tensor = consumers[0].output[0]
    return tensor


class ExactQuantThresholds(Transformation):
    """Replace the thresholds of every MultiThreshold that came from an activation Quant
    (found by the Quant's output tensor name, in `quants`) by the float32-exact ones."""

    def __init__(self, quants: dict[str, QuantParams]) -> None:
        super().__init__()
        self.quants = quants
        self.changed: dict[str, int] = {}  # node name -> thresholds moved

    def apply(self, model):  # type: ignore[override]
        for node in model.graph.node:
            if node.op_type != "MultiThreshold":
                continue
            p = self.quants.get(_chain_end(model, node)) or \
                self.quants.get(node.output[0])
            old = model.get_initializer(node.input[1])
            if p is None or old is None:
                continue
            new = exact_thresholds(old, p)
            if new is None:
                continue
            moved = int((new != np.broadcast_to(old, new.shape)).sum())
            if moved or new.shape != old.shape:
                model.set_initializer(node.input[1], new)
            self.changed[node.name] = moved
        return model, False


def make_transformation(quants: dict[str, QuantParams]) -> ExactQuantThresholds:
    """ExactQuantThresholds(quants) (the name the tests and older callers use)."""
    return ExactQuantThresholds(quants)


class AbsorbBatchNormExactly(Transformation):
    """BatchNormalization -> MultiThreshold (from an activation Quant) becomes one
    MultiThreshold on the BatchNorm's input, its thresholds computed in float64 from the
    BatchNorm and Quant parameters and stored as float64.

    Why: FINN's streamlining turns the BatchNorm into a float32 Mul/Add
    (BatchNormToAffine) and folds it and the scales into the thresholds in float32 before
    rounding them to integers; on a 3x32x32 ResNet-8 stem (27 taps of 8-bit pixels and
    weights, accumulators ~1e5) one integer threshold came out one step low: at that
    accumulator the float64 reference is 2.5e-8 (relative) below the boundary 11.5, the
    hardware a level above. With float64 thresholds the later absorptions of the float32
    scales (T / s, exact to ~1e-16) and FINN's final ceil stay on the reference's side.
    The reference is the Brevitas model in float64: y = (x - mean) / sqrt(var + eps) *
    gamma + beta, level round(y / s), so x >= ((L - 1/2) s - beta) / gamma *
    sqrt(var + eps) + mean reaches level L. Only for all-positive gamma (a negative one
    flips the comparison); other nodes keep FINN's conversion."""

    def __init__(self, quants: dict[str, QuantParams]) -> None:
        super().__init__()
        self.quants = quants
        self.absorbed: list[str] = []  # node names (empty right after the conversion)
        self.outputs: set[str] = set()  # their output tensors

    def apply(self, model):  # type: ignore[override]
        for mt in list(model.graph.node):
            if mt.op_type != "MultiThreshold":
                continue
            bn = model.find_producer(mt.input[0])
            p = self.quants.get(_chain_end(model, mt))
            if bn is None or bn.op_type != "BatchNormalization" or p is None:
                continue
            if len(model.find_consumers(bn.output[0]) or []) != 1:
                continue
            par = [model.get_initializer(t) for t in bn.input[1:5]]
            if any(v is None for v in par):
                continue
            gamma, beta, mean, var = (np.asarray(v, dtype=np.float64).reshape(-1)
                                      for v in par)
            eps = get_by_name(bn.attribute, "epsilon")
            eps = float(eps.f) if eps is not None else 1e-5
            layout = getCustomOp(mt).get_nodeattr("data_layout")
            if (gamma <= 0).any() or layout not in ("NCHW", "NC", "") \
                    or p.rounding_mode.upper() != "ROUND":
                continue
            lo, hi = p.levels
            th = model.get_initializer(mt.input[1])
            if th is None or th.shape[-1] != hi - lo:
                continue
            y, k = _boundaries(p)  # thresholds on the BatchNorm output
            x = (y - beta[:, None]) / gamma[:, None] * np.sqrt(var[:, None] + eps) \
                + mean[:, None]
            model.set_initializer(mt.input[1], _ties_to_even(x, k))
            mt.input[0] = bn.input[0]
            model.graph.node.remove(bn)
            self.absorbed.append(mt.name)
            self.outputs.add(mt.output[0])
        return model, False


def _boundaries(p: QuantParams) -> tuple[np.ndarray, np.ndarray]:
    """(y, k): the float64 rounding boundaries y = (k - zeropt - 1/2) * scale of Quant `p` on
    its input (channels or 1, levels) and the level k each one reaches. float64 holds the
    product of a float32 scale and a small half-integer exactly."""
    lo, hi = p.levels
    scale = np.abs(p.scale.astype(np.float64)).reshape(-1, 1)
    k = np.arange(lo + 1, hi + 1, dtype=np.float64)[None, :]
    return (k - p.zeropt - 0.5) * scale, k


def _ties_to_even(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Thresholds `x` (float64) of levels `k` with ties resolved to even, as Brevitas
    (torch.round) and qonnx round: on an exact tie (input equal to the threshold) an odd level
    is not reached, so its threshold is the next float64 above. Seen without this: a 2-bit
    conv -> BN -> ReLU whose power-of-two scales put 118 elements exactly on k + 1/2
    (tests/test_verify_ties.py)."""
    return np.where(k % 2 != 0, np.nextafter(x, np.inf), x).astype(np.float64)


def _from_graph_input(model: Any, tensor: str) -> bool:
    """Whether `tensor` is a graph input, or made from one by constant elementwise ops only
    (e.g. the model's x / 255): a real float32 input, not a value computed from integers."""
    inputs = {i.name for i in model.graph.input}
    while tensor not in inputs:
        node = model.find_producer(tensor)
        if node is None or node.op_type not in ("Mul", "Add", "Sub", "Div") or \
                len(node.input) != 2 or model.get_initializer(node.input[1]) is None:
            return False
        tensor = node.input[0]
    return True


class AbsorbScalesExactly(Transformation):
    """Float64 thresholds for every activation computed inside the network, with the scale
    Muls in front of it absorbed in float64, before FINN's streamlining sees them.

    Why: the float64 reference (and Brevitas) quantizes the real value acc * s_in * s_w (the
    integer accumulator times the float32 input and weight scales) at (k + 1/2) * s; the
    integer threshold that is exact for it is ceil((k + 1/2) * s / (s_in * s_w)). FINN's
    streamlining moves the input scale Mul past the conv and collapses it with the weight
    scale Mul into one float32 Mul (CollapseRepeatedMul: fl32(s_in * s_w), up to 6e-8 off
    the exact product, which float64 holds exactly) before dividing the thresholds by it, and
    divides float32 thresholds in float32. Seen on the digits ResNet-8 stem: thresholds set to
    1e-4 above an integer A of the exact product came out A, not A + 1, for 14 of 15 levels.
    Absorbing the Mul directly in front of each MultiThreshold here (T / s_w in float64, as
    FINN's AbsorbMulIntoMultiThreshold does but on float64 T) leaves FINN one scale per
    threshold to divide by, in float64; its final ceil then gives the exact integers.

    Which thresholds: those of activation Quants (`quants`) whose input is computed by the
    network (not a graph input: a real float32 image keeps ExactQuantThresholds' float32-exact
    ones), ROUND rounding; a BatchNorm absorbed by AbsorbBatchNormExactly is kept as it is (its
    thresholds are already float64). Which nodes: a constant, scalar or per-channel Add (a
    bias: T - b) or positive Mul whose only consumer is the MultiThreshold, repeated while
    there is one. Seen with a bias: a ResConv-Prune fused conv (conv -> Mul -> Add -> ReLU
    quant, Fashion-MNIST ResNet-8) had 1 of 3,375 integer thresholds a step low with FINN's
    conversion (exact 41878.0031, FINN 41878)."""

    def __init__(self, quants: dict[str, QuantParams], keep: set[str] | None = None) -> None:
        super().__init__()
        self.quants = quants
        # MultiThresholds (output tensors) whose float64 thresholds are already set
        self.keep = keep or set()
        self.exact: list[str] = []  # MultiThresholds (output tensors) given float64 ones here
        self.absorbed: dict[str, int] = {}  # MultiThreshold output -> Mul/Add nodes absorbed

    def apply(self, model):  # type: ignore[override]
        for mt in list(model.graph.node):
            if mt.op_type != "MultiThreshold" or _from_graph_input(model, mt.input[0]):
                continue
            p = self.quants.get(_chain_end(model, mt))
            th = model.get_initializer(mt.input[1])
            if p is None or th is None or p.rounding_mode.upper() != "ROUND":
                continue
            layout = getCustomOp(mt).get_nodeattr("data_layout")
            if layout not in ("NCHW", "NC", ""):
                continue
            if mt.output[0] not in self.keep:
                lo, hi = p.levels
                if th.shape[-1] != hi - lo:
                    continue
                y, k = _boundaries(p)
                model.set_initializer(mt.input[1], _ties_to_even(y, k))
                self.exact.append(mt.output[0])
            elif np.asarray(th).dtype != np.float64:
                continue
            self.absorbed[mt.output[0]] = self._absorb_muls(model, mt)
        return model, False

    @staticmethod
    def _absorb_muls(model: Any, mt: Any) -> int:
        """Absorb the constant Mul (positive) and Add (a bias, e.g. a fused conv's) nodes
        directly in front of `mt` into its float64 thresholds, nearest first; the count."""
        done = 0
        while True:
            node = model.find_producer(mt.input[0])
            if node is None or node.op_type not in ("Mul", "Add") or \
                    len(model.find_consumers(node.output[0]) or []) != 1:
                return done
            a = model.get_initializer(node.input[1])
            if a is None or model.get_initializer(node.input[0]) is not None:
                return done
            a = np.asarray(a, dtype=np.float64)
            th = np.asarray(model.get_initializer(mt.input[1]), dtype=np.float64)
            shape = model.get_tensor_shape(mt.input[0]) or []
            channels = shape[1] if len(shape) > 1 else None
            per_channel = a.ndim >= 2 and a.shape[1] == a.size == channels and \
                th.shape[0] in (1, channels)  # (1, C[, 1, 1]): one value per channel
            if not (a.size == 1 or per_channel) or (node.op_type == "Mul" and (a <= 0).any()):
                return done
            new = th / a.reshape(-1, 1) if node.op_type == "Mul" else th - a.reshape(-1, 1)
            model.set_initializer(mt.input[1], new)
            mt.input[0] = node.input[0]
            model.graph.node.remove(node)
            done += 1


def make_bn_absorption(quants: dict[str, QuantParams]) -> AbsorbBatchNormExactly:
    """AbsorbBatchNormExactly(quants) (the name the tests and older callers use)."""
    return AbsorbBatchNormExactly(quants)


def exact_conversion(model: Any, quants: dict[str, QuantParams]) -> Any:
    """The exact thresholds on a model FINN's ConvertQONNXtoFINN has converted: float32-exact
    ones for every activation (ExactQuantThresholds), float64 ones absorbing the BatchNorm in
    front where there is one (AbsorbBatchNormExactly), float64 ones with the scale Muls in
    front absorbed for every activation computed inside the network (AbsorbScalesExactly)."""
    model = model.transform(ExactQuantThresholds(quants))
    bn = AbsorbBatchNormExactly(quants)
    model = model.transform(bn)
    return model.transform(AbsorbScalesExactly(quants, keep=bn.outputs))


def step_exact_qonnx_to_finn(model: Any, cfg: Any) -> Any:
    """FINN's step_qonnx_to_finn, then `exact_conversion`. FINN builder step contract."""
    from qonnx.util.cleanup import cleanup_model

    from . import finn_compat

    fb = finn_compat.builder()
    quants = activation_quants(cleanup_model(model))
    model = fb.step_lookup["step_qonnx_to_finn"](model, cfg)
    return exact_conversion(model, quants)
