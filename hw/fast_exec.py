"""Batched execution of the folded dataflow graph, node by node with FINN's own Python code.

qonnx's `execute_onnx` runs one image at a time and spends most of its time per node on
bookkeeping (datatype sanitizing, linear-time name lookups, shape checks): about 5 images/s on a
Fashion-MNIST ResNet-20. Here the child (dataflow partition) graph is walked once per batch of
images: every HW node's generic base op (`finn_compat.to_python_exec`) runs its own
`execute_node` on a (batch, ...) context; the ops whose Python code assumes batch 1 get the
same computation batched here (MVAU: `np.matmul` + qonnx `multithreshold`, exactly FINN's
code path; DuplicateStreams: a copy); an op not known to be batch-safe runs image by image
through its own `execute_node`.

Where the time went (cProfile, process CPU time, Fashion-MNIST ResNet-20 w4a4, batch 64):
the im2col copies of ConvolutionInputGenerator (46 %: nine slice assignments of 16 channels
each), the threshold counts (40 %: a float64 conversion and a binary search per element) and
per-batch graph bookkeeping (attribute lookups, initializers converted from protobuf). Now:
one strided-view copy per im2col (5x faster), the threshold count of integer inputs read from
a per-channel table (`_count_table`, 9x faster), the graph read once per run (`_Plan`), and
batches of 16 (tensors stay in cache; 64 was 35 % slower per image). benchmarks/bench_verify.py
measures it. `tests/test_verify_layers.py` proves the result equal to
FINN's per-image execution on the test suite's models. Hand-written because neither FINN nor
qonnx executes HW graphs batched (their ops reshape to batch-1 shapes).

The host-side nodes of the parent graph (FINN leaves the input layout change in front of the
partition and the output scaling after it; `build_steps.HOST_OPS`) are executed in numpy.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

# Base ops whose FINN `execute_node` is written for any leading batch dimension (read in
# finn-plus 1.6.1: they use the context's own shapes).
_BATCH_SAFE = {"Thresholding", "FMPadding", "Pool", "GlobalAccPool"}
_BATCH_SAFE_PREFIX = ("Elementwise",)


def _is_batch_safe(op_type: str) -> bool:
    return op_type in _BATCH_SAFE or op_type.startswith(_BATCH_SAFE_PREFIX)


TABLE_MAX = 1 << 22  # entries of a per-channel count table (float32: 16 MiB)


def _count_table(v: np.ndarray, th: np.ndarray) -> np.ndarray | None:
    """The threshold count of integer-valued `v` (channels last) read from a per-channel
    table: table[ch, u - lo] = number of thresholds of channel ch that are <= u, for every
    integer u between v's minimum and maximum. For an integer u that is exactly the count of
    `u >= t`, so the lookup is qonnx's multithreshold on every element; one gather instead of
    a search per element. None where `v` is not all integers or the table would be large."""
    c = v.shape[-1]
    if not v.size:
        return None
    lo, hi = float(v.min()), float(v.max())
    if not (-2.0 ** 30 < lo <= hi < 2.0 ** 30) or (hi - lo + 1) * c > TABLE_MAX:
        return None  # also NaN (comparisons false) and inf
    vi = v.astype(np.int32)
    if not np.array_equal(vi, v):
        return None
    lo_i, span = int(lo), int(hi) - int(lo) + 1
    # for an integer u, t <= u exactly when ceil(t) <= u; ceilings clipped to [lo, hi + 1]
    # keep every count on u in [lo, hi]; a histogram of them per channel, summed up, is the
    # table (all in integers: exact)
    tc = (np.clip(np.ceil(th), lo_i, lo_i + span) - lo_i).astype(np.int64)
    rows = np.arange(c, dtype=np.int64)[:, None] * (span + 1)
    hist = np.bincount((tc + rows).reshape(-1), minlength=c * (span + 1))
    table = np.cumsum(hist.reshape(c, span + 1), axis=1)[:, :span].astype(np.float32)
    vi -= np.int32(lo_i)
    vi += np.arange(c, dtype=np.int32) * np.int32(span)
    return np.take(table.reshape(-1), vi)


def threshold_count(v: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """qonnx's `multithreshold` count (number of thresholds t with v >= t), channels last.
    Integer-valued inputs (accumulators, sums of levels: every HW layer here) are counted by
    a table lookup (`_count_table`); others by one binary search per element instead of
    comparing every element with every threshold: per-channel rows are made one sorted array
    by offsetting each channel by a multiple of a power of two beyond the values' range (exact
    in float64 for float32 inputs). Falls back to qonnx's own function where a row is not
    sorted. Returns float32 counts (small integers: exact)."""
    from qonnx.custom_op.general.multithreshold import multithreshold

    th = np.asarray(thresholds, dtype=np.float64)
    c = v.shape[-1]
    if th.ndim != 2 or th.shape[0] not in (1, c) or (np.diff(th, axis=1) < 0).any() \
            or not np.isfinite(th).all():
        return multithreshold(v, thresholds, channels_last=True).astype(np.float32)
    th = np.broadcast_to(th, (c, th.shape[1]))
    counted = _count_table(v, th)
    if counted is not None:
        return counted
    if not np.isfinite(v).all():
        return multithreshold(v, thresholds, channels_last=True).astype(np.float32)
    lo = min(float(v.min()), float(th.min()))
    span = max(float(v.max()), float(th.max())) - lo + 1.0
    step = 2.0 ** np.ceil(np.log2(span))
    if step * c > 2.0 ** 50:
        return multithreshold(v, thresholds, channels_last=True).astype(np.float64)
    off = np.arange(c, dtype=np.float64) * step - lo
    flat = (th + off[:, None]).reshape(-1)
    pos = np.searchsorted(flat, v.astype(np.float64) + off, side="right")
    return (pos - np.arange(c) * th.shape[1]).astype(np.float32)


def _mvau(inst: Any, node: Any, ctx: dict[str, np.ndarray], n: int,
          oshape: tuple[int, ...], attrs: dict[str, Any]) -> None:
    """FINN's MVAU.execute_node (python mode, non-binary) with a batch dimension; the
    thresholds are applied channels last (FINN transposes to NCHW and back: the same)."""
    x = ctx[node.input[0]].reshape([n] + attrs["in_shape"][1:])
    result = np.matmul(x, ctx[node.input[1]])
    if attrs["noActivation"] == 0:
        bipolar = attrs["outputDataType"] == "BIPOLAR"
        out_scale, out_bias = (2, -1) if bipolar else (1, attrs["ActVal"])
        result = out_scale * threshold_count(result, ctx[node.input[2]]) + out_bias
    ctx[node.output[0]] = result.astype(np.float32).reshape(oshape)


def _thresholding(inst: Any, node: Any, ctx: dict[str, np.ndarray],
                  attrs: dict[str, Any]) -> None:
    """FINN's Thresholding.execute_node (channels last, + ActVal, BIPOLAR as 2y - 1)."""
    y = threshold_count(ctx[node.input[0]], ctx[node.input[1]]) + attrs["ActVal"]
    if attrs["bipolar"]:
        y = 2 * y - 1
    ctx[node.output[0]] = y.astype(np.float32)


def _conv_input_generator(inst: Any, node: Any, ctx: dict[str, np.ndarray], n: int,
                          oshape: tuple[int, ...]) -> None:
    """FINN's ConvolutionInputGenerator.execute_node (qonnx Im2Col, NHWC, no padding) with a
    batch dimension: qonnx's im2col_indices_nchw orders a batch > 1 wrongly (it flattens
    (channels x window, positions, batch) before the caller splits off the batch), so the
    gather uses qonnx's own indices and keeps the batch axis first."""
    from qonnx.custom_op.general.im2col import get_im2col_indices_nchw

    kh, kw = inst.get_nodeattr("ConvKernelDim")
    sh, sw = inst.get_nodeattr("Stride")
    dh, dw = inst.get_nodeattr("Dilation")
    x = np.ascontiguousarray(ctx[node.input[0]], dtype=np.float32)  # NHWC
    if (dh, dw) == (1, 1) and (oshape[1] - 1) * sh + kh <= x.shape[1] \
            and (oshape[2] - 1) * sw + kw <= x.shape[2]:
        # a strided view (n, oh, ow, kh, kw, c) of x, copied once: the same order as qonnx
        # (kernel row, kernel column, channel) with the window's row of kw pixels contiguous
        oh, ow, c = oshape[1], oshape[2], x.shape[3]
        st = x.strides
        win = np.lib.stride_tricks.as_strided(
            x, (n, oh, ow, kh, kw, c), (st[0], st[1] * sh, st[2] * sw, st[1], st[2], st[3]),
            writeable=False)
        ctx[node.output[0]] = np.ascontiguousarray(win).reshape(oshape)
        return
    x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    c = x.shape[1]
    k, i, j = get_im2col_indices_nchw(x.shape, kh, kw, [0, 0, 0, 0], sh, sw, dh, dw)
    cols = x[:, k, i, j]  # (N, C*kh*kw, positions)
    cols = cols.reshape(n, c, kh, kw, oshape[1], oshape[2]).transpose(0, 4, 5, 2, 3, 1)
    ctx[node.output[0]] = cols.reshape(oshape)


def _per_image(inst: Any, node: Any, graph: Any, ctx: dict[str, np.ndarray], n: int,
               consts: dict[str, np.ndarray]) -> None:
    outs = {o: [] for o in node.output}
    for i in range(n):
        sub = {t: (consts[t] if t in consts else ctx[t][i:i + 1]) for t in node.input if t}
        for o in node.output:
            sub[o] = np.zeros((1,) + ctx[o].shape[1:], dtype=np.float32)
        inst.execute_node(sub, graph)
        for o in node.output:
            outs[o].append(np.asarray(sub[o]).reshape((1,) + ctx[o].shape[1:]))
    for o, parts in outs.items():
        ctx[o] = np.concatenate(parts)


class _Plan:
    """What run_child needs of the child graph, read once (not per batch): the constants as
    numpy arrays, each node's custom op, its kind of execution, its attributes and output
    shapes (without the batch dimension)."""

    def __init__(self, child: Any) -> None:
        from qonnx.core.datatype import DataType
        from qonnx.custom_op.registry import getCustomOp

        self.consts = {i.name: np.asarray(child.get_initializer(i.name))
                       for i in child.graph.initializer}
        self.steps: list[tuple[Any, Any, str, list[tuple[int, ...]], dict[str, Any]]] = []
        for node in child.graph.node:
            inst = getCustomOp(node)
            shapes = [tuple(child.get_tensor_shape(o))[1:] for o in node.output]
            base, attrs = node.op_type, {}
            if base == "MVAU" and not inst.get_nodeattr("binaryXnorMode") and not (
                    inst.get_nodeattr("inputDataType") == "BIPOLAR"
                    and inst.get_nodeattr("weightDataType") == "BIPOLAR"):
                kind = "mvau"
                attrs = {k: inst.get_nodeattr(k) for k in
                         ("noActivation", "outputDataType", "ActVal")}
                attrs["in_shape"] = list(inst.get_normal_input_shape())
            elif base == "ConvolutionInputGenerator":
                kind = "swg"
                attrs = {"IFMDim": list(inst.get_nodeattr("IFMDim"))}
            elif base == "Thresholding" and not inst.get_nodeattr("runtime_writeable_weights"):
                kind = "thresholding"
                attrs = {"ActVal": inst.get_nodeattr("ActVal"), "bipolar": DataType[
                    inst.get_nodeattr("outputDataType")] == DataType["BIPOLAR"]}
            elif base == "DuplicateStreams":
                kind = "duplicate"
            elif _is_batch_safe(base):
                kind = "finn"
            else:
                kind = "per_image"
            self.steps.append((node, inst, kind, shapes, attrs))


def run_child(child: Any, x: np.ndarray, keep: set[str] | None = None,
              plan: _Plan | None = None) -> dict[str, np.ndarray]:
    """Execute the dataflow partition graph on a batch `x` (its input layout, float32); return
    its outputs and every tensor named in `keep` (all when keep is None). `plan`: the graph
    read once (run_parent reuses one over its batches)."""
    plan = plan or _Plan(child)
    n = x.shape[0]
    consts = plan.consts
    ctx: dict[str, np.ndarray] = {child.graph.input[0].name: x.astype(np.float32)}
    kept: dict[str, np.ndarray] = {}
    for node, inst, kind, shapes, attrs in plan.steps:
        for t in node.input:
            if t in consts:
                ctx[t] = consts[t]
        if kind == "swg" and attrs["IFMDim"] != list(ctx[node.input[0]].shape[1:3]):
            kind = "per_image"
        if kind in ("finn", "per_image"):  # FINN's execute_node reshapes to the context's
            for o, sh in zip(node.output, shapes):
                ctx[o] = np.empty((n,) + sh, dtype=np.float32)
        if kind == "mvau":
            _mvau(inst, node, ctx, n, (n,) + shapes[0], attrs)
        elif kind == "swg":
            _conv_input_generator(inst, node, ctx, n, (n,) + shapes[0])
        elif kind == "thresholding":
            _thresholding(inst, node, ctx, attrs)
        elif kind == "duplicate":
            for o, sh in zip(node.output, shapes):
                ctx[o] = ctx[node.input[0]].reshape((n,) + sh).copy()
        elif kind == "finn":
            inst.execute_node(ctx, child.graph)
        else:
            _per_image(inst, node, child.graph, ctx, n, consts)
        for o in node.output:
            ctx[o] = np.asarray(ctx[o], dtype=np.float32)
            if keep is None or o in keep:
                kept[o] = ctx[o]
    for o in child.graph.output:
        kept[o.name] = ctx[o.name]
    return kept


def _host(node: Any, model: Any, x: np.ndarray) -> np.ndarray:
    """One host-side ONNX node of the parent graph, in numpy (float32 as onnxruntime)."""
    from qonnx.util.basic import get_by_name

    op = node.op_type
    if op == "Transpose":
        return x.transpose(list(get_by_name(node.attribute, "perm").ints))
    if op in ("Reshape", "Flatten", "Squeeze"):
        out_shape = list(model.get_tensor_shape(node.output[0]))
        return x.reshape([x.shape[0]] + out_shape[1:])
    if op == "Identity":
        return x
    if op in ("Mul", "Add"):
        c = model.get_initializer(node.input[1])
        if c is None:
            raise NotImplementedError(op)
        c = np.asarray(c, dtype=np.float32)
        return (x * c if op == "Mul" else x + c).astype(np.float32)
    raise NotImplementedError(op)


def run_parent(parent: Any, child: Any, images: np.ndarray, keep: set[str] | None = None,
               batch: int = 16) -> dict[str, np.ndarray]:
    """Execute FINN's parent graph (host nodes, one StreamingDataflowPartition whose model is
    `child`, host nodes) on `images` in batches. Returns the parent's output under its name
    and the child tensors in `keep` (None: all), each concatenated over the images.
    NotImplementedError when the parent holds a node this does not execute."""
    nodes = list(parent.graph.node)
    sdp = [i for i, n in enumerate(nodes) if n.op_type == "StreamingDataflowPartition"]
    if len(sdp) != 1:
        raise NotImplementedError("expected one StreamingDataflowPartition")
    k = sdp[0]
    child_outs = [o.name for o in child.graph.output]
    oname = parent.graph.output[0].name
    for node in nodes[:k] + nodes[k + 1:]:  # fail before any work on a node not handled
        if node.op_type not in ("Transpose", "Reshape", "Flatten", "Squeeze", "Identity",
                                "Mul", "Add"):
            raise NotImplementedError(node.op_type)

    plan = _Plan(child)

    def one(start: int) -> dict[str, np.ndarray]:
        x = np.asarray(images[start:start + batch], dtype=np.float32)
        for node in nodes[:k]:
            x = _host(node, parent, x)
        got = run_child(child, x, keep, plan)
        sdp_node = nodes[k]
        env = {sdp_node.output[j]: got[c] for j, c in enumerate(child_outs)}
        y = env[sdp_node.output[0]]
        for node in nodes[k + 1:]:
            y = _host(node, parent, env.get(node.input[0], y))
            env[node.output[0]] = y
        got[oname] = env.get(oname, y)
        return {name: v for name, v in got.items()
                if keep is None or name in keep or name == oname}

    # numpy releases the GIL in its array loops: batches in threads use both cores
    starts = list(range(0, len(images), batch))
    threads = max(1, min(int(os.environ.get("FPGASLIM_EXEC_THREADS", "2")), len(starts)))
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, starts))
    return {name: np.concatenate([r[name] for r in results]) for name in results[0]}
