"""Fast streamlining: finn-plus's own streamlining schedule, minus the work that provably
changes nothing (build setting `streamline: fast`, the default; `stock` runs FINN unchanged).

Why a hand-written piece: profiling a first ResNet-20 w4a4 build (benchmarks/bench_streamline.py)
showed ~80 % of finn-plus 1.6.1's residual streamlining (StreamlinePlus, nested
`qonnx.transformation.composed.ComposedTransformation`s) in the clean-up that follows every
single transformation: `cleanup()` (5 passes) plus RemoveIdentityOps, GiveUniqueNodeNames,
GiveReadableTensorNames, InferShapes and InferDataTypes, each again with `cleanup()`. The
fixpoint loops re-run every transformation until a whole pass changes nothing, so most of
these runs see a graph they have already seen, on which the transformation is a no-op and the
clean-up returns the same graph. Neither qonnx nor FINN offers a switch for this.

`ComposedTransformation.apply` is replaced (by `finn_compat.fast_streamlining()`, only while
a streamlining step runs) with `memo_composed_apply`: the same loop, statement for statement,
with two exact memos keyed by a BLAKE2 digest of the serialized model (protobuf serialization
of a message without map fields is deterministic, so equal digests mean equal graphs):
  * a transformation that returned "not modified" and left the serialized model unchanged is
    remembered as a no-op on that graph (nested ComposedTransformations included) and is not
    run again on it;
  * the clean-up sequence is remembered as a function from graph to graph, so it is run once
    per distinct graph.
Both rely on qonnx/FINN transformations being deterministic functions of the model (the
contract `ModelWrapper.transform`'s own fixpoint loop already depends on). Everything else
(which transformations run, in which order, how often the loops iterate, what they return) is
stock; tests/test_fast_streamline.py checks the streamlined and folded graphs are byte-identical
to stock finn-plus's on zoo models. A model wrapper with state besides the ONNX proto and
`fix_float64` (none in qonnx 1.x) is never memoized.
"""

from __future__ import annotations

import copy
import hashlib
from itertools import compress, repeat
from operator import attrgetter, contains
from typing import Any

# ModelWrapper attributes a memo key covers; a wrapper with any other state is not memoized.
_WRAPPER_STATE = {"_model_proto", "fix_float64"}


class Memo:
    """The two memos of one streamlining step, plus counters for the benchmark."""

    def __init__(self) -> None:
        self.noop: set[tuple[int, bytes]] = set()
        self.tidied: dict[bytes, tuple[bytes, bytes | None]] = {}
        self.keep: list[Any] = []  # transformations in `noop` keys stay alive: ids stay unique
        self.stats = {"apply_run": 0, "apply_skipped": 0, "tidy_run": 0, "tidy_skipped": 0}

    @staticmethod
    def digest(model: Any) -> tuple[bytes | None, bytes]:
        """(key, serialized model); key None when the wrapper carries state we do not key."""
        data = model.model.SerializeToString()
        if set(vars(model)) - _WRAPPER_STATE:
            return None, data
        h = hashlib.blake2b(data, digest_size=20)
        h.update(b"f64" if getattr(model, "fix_float64", False) else b"f32")
        return h.digest(), data

    def apply(self, transformation: Any, model: Any, key: bytes | None) -> tuple[Any, bool, Any]:
        """`transformation.apply(model)`, skipped when known to be a no-op on this graph.
        Returns (model, modified, key of the returned model or None if unknown)."""
        if key is None:
            key, _ = self.digest(model)
        if key is not None and (id(transformation), key) in self.noop:
            self.stats["apply_skipped"] += 1
            return model, False, key
        self.stats["apply_run"] += 1
        model, modified = transformation.apply(model)
        if modified or key is None:
            return model, modified, None
        new_key, _ = self.digest(model)
        if new_key == key:
            self.noop.add((id(transformation), key))
            self.keep.append(transformation)
        return model, modified, new_key

    def tidy(self, model: Any, key: bytes | None) -> tuple[Any, bytes | None]:
        """ComposedTransformation's clean-up after each transformation (stock sequence),
        run once per distinct graph. Returns (model, its key or None)."""
        if key is None:
            key, _ = self.digest(model)
        hit = self.tidied.get(key) if key is not None else None
        if hit is not None:
            self.stats["tidy_skipped"] += 1
            out_key, out_data = hit
            if out_data is not None:  # a different graph: rebuild it on a copy of the wrapper
                model = copy.deepcopy(model)
                model.model.ParseFromString(out_data)
            return model, out_key
        self.stats["tidy_run"] += 1
        model = _stock_tidy(model)
        out_key, out_data = self.digest(model)
        if key is not None and out_key is not None:
            self.tidied[key] = (out_key, None if out_key == key else out_data)
        return model, out_key


def _stock_tidy(model: Any) -> Any:
    """The clean-up in qonnx's ComposedTransformation.apply, verbatim."""
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.remove import RemoveIdentityOps

    model.cleanup()
    model = model.transform(RemoveIdentityOps())
    model = model.transform(GiveUniqueNodeNames())
    model = model.transform(GiveReadableTensorNames())
    model = model.transform(InferShapes())
    model = model.transform(InferDataTypes())
    return model


# ---- exact faster lookups (installed with the memo by finn_compat.fast_streamlining())
# qonnx finds tensors and attributes by scanning protobuf containers with Python list
# comprehensions (1.6 M get_by_name calls for a ResNet-20). These are the same scans with the
# names collected by C (operator.attrgetter, list.count/index): same result, same exceptions.
_NAME = attrgetter("name")


def get_by_name(container: Any, name: str, name_field: str = "name") -> Any:
    """qonnx.util.basic.get_by_name, exactly (first match; an Exception for two or more)."""
    names = list(map(attrgetter(name_field), container))
    count = names.count(name)
    if count > 1:
        raise Exception("Found multiple get_by_name matches, undefined behavior")
    if count == 0:
        return None
    return container[names.index(name)]


def get_initializer(self: Any, tensor_name: str, return_dtype: bool = False) -> Any:
    """qonnx's ModelWrapper.get_initializer, exactly."""
    from onnx import numpy_helper as np_helper

    graph = self._model_proto.graph
    init_names = list(map(_NAME, graph.initializer))
    try:
        init_ind = init_names.index(tensor_name)
        ret = np_helper.to_array(graph.initializer[init_ind])
        ret_dtype = graph.initializer[init_ind].data_type
        if return_dtype:
            return (ret, ret_dtype)
        else:
            return ret
    except ValueError:
        if return_dtype:
            return (None, None)
        else:
            return None


def get_tensor_shape(self: Any, tensor_name: str, fix_missing_init_shape: bool = False) -> Any:
    """qonnx's ModelWrapper.get_tensor_shape, exactly (inputs, outputs, value_info, then the
    initializer; an AssertionError for two ValueInfoProtos of one name)."""
    graph = self._model_proto.graph
    vi_t_names = list(map(_NAME, graph.input))
    vi_t_names += map(_NAME, graph.output)
    vi_t_names += map(_NAME, graph.value_info)
    count = vi_t_names.count(tensor_name)
    assert count <= 1, "Multiple ValueInfoProto found for " + tensor_name
    if count == 1:
        i = vi_t_names.index(tensor_name)
        for part in (graph.input, graph.output, graph.value_info):
            if i < len(part):
                vi = part[i]
                break
            i -= len(part)
        return [x.dim_value for x in vi.type.tensor_type.shape.dim]
    tensor_init, tensor_init_dtype = self.get_initializer(tensor_name, return_dtype=True)
    if tensor_init is None:
        return None
    if fix_missing_init_shape:
        self.set_tensor_shape(tensor_name, tensor_init.shape, dtype=tensor_init_dtype)
    return list(tensor_init.shape)


def find_producer(self: Any, tensor_name: str) -> Any:
    """qonnx's ModelWrapper.find_producer, exactly (the first node with the tensor among its
    outputs, the same message object the stock loop returns), with the loop in C."""
    nodes = self._model_proto.graph.node
    hits = map(contains, map(_OUTPUT, nodes), repeat(tensor_name))
    return next(compress(nodes, hits), None)


_OUTPUT = attrgetter("output")
_ACTIVE: list[Memo] = []


def active_memo() -> Memo | None:
    return _ACTIVE[-1] if _ACTIVE else None


def push_memo() -> Memo:
    memo = Memo()
    _ACTIVE.append(memo)
    return memo


LAST_STATS: dict[str, int] = {}  # the last popped memo's counters (for the benchmark)


def pop_memo(memo: Memo) -> None:
    global LAST_STATS
    _ACTIVE.remove(memo)
    LAST_STATS = dict(memo.stats)


def memo_composed_apply(self: Any, model: Any) -> tuple[Any, bool]:
    """qonnx's ComposedTransformation.apply (qonnx 1.x) with the memos above; installed over it
    by finn_compat.fast_streamlining(). Outside an active memo it is the stock loop."""
    memo = active_memo() or Memo()
    graph_modified = False
    key: bytes | None = None
    for index, transformation in enumerate(self.transformations):
        # stock deep-copies before every transformation "to mimic ModelWrapper.transform()";
        # only the first copy is observable (it protects the caller's model), later ones copy
        # this loop's own intermediate that nobody else holds
        if index == 0:
            model = copy.deepcopy(model)
        while True:
            model, _graph_modified, key = memo.apply(transformation, model, key)
            graph_modified = graph_modified or _graph_modified
            if not _graph_modified:
                break
        model, key = memo.tidy(model, key)
    return model, graph_modified
