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
with two exact memos keyed by a SHA-256 digest of the serialized model (protobuf serialization
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

import contextlib
import copy
import hashlib
from collections import Counter
from itertools import compress, repeat
from operator import attrgetter, contains, or_
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
        h = hashlib.sha256(data)  # with the CPU's SHA instructions: twice BLAKE2's speed
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


# ---- the whole fast build (every step, not only streamlining): fast_steps(mode)
# Profiling the fast ResNet-20 build after the memo above (cProfile of the build child) left
# most of the time in qonnx's clean-up after every `transform` (SortGraph: a find_producer scan
# per node input and toposort's pass per graph level; GiveUniqueParameterTensors: a
# get_initializer scan per node input), in InferShapes/InferDataTypes re-run on graphs they
# leave unchanged, and in rename_tensor (GiveReadableTensorNames). fast_steps() installs, for
# the steps it wraps, exact faster copies of those functions and a memo of no-op results: a
# pure transformation (PURE_TRANSFORMS, or cleanup()) that left a graph unchanged is not run
# on that graph again. Outside the scope qonnx is stock; `streamline: stock` never enters it.

# transformations whose result is a function of the graph and their constructor arguments
# (no randomness, files, clocks); the memo also checks that a run drew no random numbers
PURE_TRANSFORMS = {"qonnx.transformation.infer_shapes.InferShapes",
                   "qonnx.transformation.infer_datatypes.InferDataTypes"}
_PLAIN = (bool, int, float, str, type(None))


class BuildMemo:
    """No-op results of pure transformations and of cleanup() in one build, by graph digest."""

    def __init__(self) -> None:
        self.noop: set[tuple[Any, ...]] = set()
        self.clean: set[bytes] = set()
        self.last: tuple[Any, bytes | None] | None = None  # (proto, its key) after cleanup()
        self.stats = {"transform_run": 0, "transform_skipped": 0, "cleanup_run": 0,
                      "cleanup_skipped": 0}


_BUILD: list[BuildMemo] = []
_MW = "qonnx.core.modelwrapper:ModelWrapper"
_STOCK: dict[str, Any] = {}  # the stock functions fast_steps() replaced, while installed


def _pure_key(transformation: Any) -> tuple[Any, ...] | None:
    cls = type(transformation)
    if f"{cls.__module__}.{cls.__qualname__}" not in PURE_TRANSFORMS:
        return None
    state = vars(transformation)
    if not all(isinstance(v, _PLAIN) for v in state.values()):
        return None
    return (cls, tuple(sorted(state.items())))


def _rng_state() -> tuple[Any, ...]:
    import random

    import numpy as np

    np_state = np.random.get_state()
    return random.getstate(), np_state[0], np_state[1].tobytes(), np_state[2:]


def memo_transform(self: Any, transformation: Any, make_deepcopy: bool = True,
                   cleanup: bool = True, apply_to_subgraphs: bool = False,
                   use_preorder_traversal: bool = True) -> Any:
    """qonnx's ModelWrapper.transform, with the no-op memo for pure transformations (a hit
    returns a deep copy of the model, as stock does). Everything else runs stock."""
    stock = _STOCK[_MW + ".transform"]
    memo = _BUILD[-1] if _BUILD else None
    tkey = _pure_key(transformation) if memo is not None else None
    if tkey is None or not make_deepcopy or apply_to_subgraphs:
        return stock(self, transformation, make_deepcopy, cleanup, apply_to_subgraphs,
                     use_preorder_traversal)
    key, _ = Memo.digest(self)
    if key is not None and (tkey, cleanup, key) in memo.noop:
        memo.stats["transform_skipped"] += 1
        return copy.deepcopy(self)
    memo.stats["transform_run"] += 1
    rng = _rng_state()
    memo.last = None
    out = stock(self, transformation, make_deepcopy, cleanup, apply_to_subgraphs,
                use_preorder_traversal)
    if key is None or _rng_state() != rng:
        return out
    # transform's last act is cleanup(): its digest of the result is still valid
    last = memo.last
    out_key = last[1] if cleanup and last and last[0] is out._model_proto else None
    if out_key is None:
        out_key, _ = Memo.digest(out)
    if out_key == key:
        memo.noop.add((tkey, cleanup, key))
    return out


def memo_cleanup(self: Any) -> Any:
    """qonnx's ModelWrapper.cleanup, skipped on a graph it already left unchanged; a skip
    re-seats the node list as stock's SortGraph does (references to old nodes detach)."""
    stock = _STOCK[_MW + ".cleanup"]
    memo = _BUILD[-1] if _BUILD else None
    if memo is None:
        return stock(self)
    key, _ = Memo.digest(self)
    if key is not None and key in memo.clean:
        memo.stats["cleanup_skipped"] += 1
        nodes = self._model_proto.graph.node
        if len(nodes) > 1:
            kept = list(nodes)
            del nodes[:]
            nodes.extend(kept)
        memo.last = (self._model_proto, key)
        return self
    memo.stats["cleanup_run"] += 1
    rng = _rng_state()
    out = stock(self)
    out_key, _ = Memo.digest(self)
    if key is not None and out is self and out_key == key and _rng_state() == rng:
        memo.clean.add(key)
    memo.last = (self._model_proto, out_key)
    return out


def sort_graph_apply(self: Any, model: Any) -> tuple[Any, bool]:
    """qonnx's SortGraph.apply, exactly: the producers from one pass over the nodes (the first
    producer of each tensor, as find_producer) and toposort_flatten's rounds by counting."""
    import qonnx.util.basic as util

    if len(model.graph.node) == 1:
        return (model, False)
    node_list = [n for n in model.graph.node]
    producer: dict[str, int] = {}
    for idx, n in enumerate(node_list):
        for o in n.output:
            producer.setdefault(o, idx)
    graph_dependencies = {}
    for node_idx, n in enumerate(node_list):
        preds = [producer[t] for t in n.input if t in producer]
        if not preds:
            if len(n.input) > 0:
                for name in n.input:
                    if util.get_by_name(model.graph.initializer, name) or util.get_by_name(
                            model.graph.input, name):
                        graph_dependencies[node_idx] = set()
                        break
            continue
        graph_dependencies[node_idx] = set(preds)
    sorted_node_indexes = toposort_flatten(graph_dependencies)
    for n in node_list:
        model.graph.node.remove(n)
    for new_idx, sorted_idx in enumerate(sorted_node_indexes):
        model.graph.node.insert(new_idx, node_list[sorted_idx])
    return (model, False)


def toposort_flatten(data: dict[Any, set[Any]]) -> list[Any]:
    """toposort.toposort_flatten(data, sort=True), exactly: the same rounds (items whose
    dependencies all came in earlier rounds), each sorted, in O(items + edges) instead of a
    pass over all remaining items per round. A cycle: the library's own error."""
    deps = {item: {e for e in dep if e != item} for item, dep in data.items()}
    for extra in {v for vs in deps.values() for v in vs} - set(deps):
        deps[extra] = set()
    waiting = {item: len(dep) for item, dep in deps.items()}
    users: dict[Any, list[Any]] = {}
    for item, dep in deps.items():
        for d in dep:
            users.setdefault(d, []).append(item)
    result: list[Any] = []
    ready = sorted(item for item, n in waiting.items() if n == 0)
    while ready:
        result.extend(ready)
        nxt = []
        for item in ready:
            for u in users.get(item, ()):
                waiting[u] -= 1
                if waiting[u] == 0:
                    nxt.append(u)
        ready = sorted(nxt)
    if len(result) != len(deps):
        import toposort

        return toposort.toposort_flatten(data, sort=True)  # raises CircularDependencyError
    return result


def unique_parameter_tensors_apply(self: Any, model: Any) -> tuple[Any, bool]:
    """qonnx's GiveUniqueParameterTensors.apply with "is it an initializer" from a set of
    names instead of a get_initializer scan (and decode) per node input; the same graph
    (initializers are decoded for the duplicates it copies, as stock)."""
    graph = model.graph
    graph_modified = False
    init_names = set(map(_NAME, graph.initializer))
    seen_parameters: set[str] = set()
    for n in graph.node:
        node_inputs_list = [x for x in n.input]
        for input_idx, node_input in enumerate(node_inputs_list):
            if node_input not in init_names:
                continue  # dynamic input
            if node_input not in seen_parameters:
                seen_parameters.add(node_input)
                continue
            input_init = model.get_initializer(node_input)
            new_param_name = model.make_new_valueinfo_name()
            model.set_initializer(new_param_name, input_init)
            model.set_tensor_datatype(new_param_name, model.get_tensor_datatype(node_input))
            n.input[input_idx] = new_param_name
            init_names.add(new_param_name)
    return (model, graph_modified)


_INPUT = attrgetter("input")


def rename_tensor(self: Any, old_name: str, new_name: str) -> None:
    """qonnx's ModelWrapper.rename_tensor, exactly, with the scan over the nodes in C."""
    import qonnx.util.basic as util

    graph = self.graph
    for part in (graph.input, graph.output, graph.value_info, graph.initializer):
        found = util.get_by_name(part, old_name)
        if found is not None:
            found.name = new_name
    quant_annotation = util.get_by_name(graph.quantization_annotation, old_name, "tensor_name")
    if quant_annotation is not None:
        quant_annotation.tensor_name = new_name
    nodes = graph.node
    ins = list(map(contains, map(_INPUT, nodes), repeat(old_name)))
    outs = list(map(contains, map(_OUTPUT, nodes), repeat(old_name)))
    for i in compress(range(len(ins)), map(or_, ins, outs)):
        n = nodes[i]
        if ins[i]:
            n.input[list(n.input).index(old_name)] = new_name
        if outs[i]:
            n.output[list(n.output).index(old_name)] = new_name



def check_all_tensor_shapes_specified(self: Any, fix_missing_init_shape: bool = False) -> bool:
    """qonnx's ModelWrapper.check_all_tensor_shapes_specified (run by every ModelWrapper(),
    e.g. after each InferShapes), exactly: a tensor with one ValueInfoProto is answered from
    a count of the names; anything else goes through get_tensor_shape as stock (errors for
    duplicates, initializers, adding the missing ValueInfoProto)."""
    graph = self._model_proto.graph
    counts = Counter(map(_NAME, graph.input))
    counts.update(map(_NAME, graph.output))
    counts.update(map(_NAME, graph.value_info))

    def known(name: str) -> bool:
        if counts.get(name, 0) == 1:
            return True
        found = self.get_tensor_shape(name, fix_missing_init_shape=fix_missing_init_shape)
        if fix_missing_init_shape:  # it may have added a ValueInfoProto
            counts[name] = sum(1 for part in (graph.input, graph.output, graph.value_info)
                               for vi in part if vi.name == name)
        return found is not None

    ret = True
    for n in graph.node:
        for i in n.input:
            if i != "":
                ret = known(i) and ret
        for o in n.output:
            ret = known(o) and ret
    return ret



class Renamer:
    """A run of qonnx rename_tensor calls on one graph, exactly, for transformations that
    change nothing else in between (GiveUniqueTensorNames, GiveReadableTensorNames): where
    each name occurs is indexed once and kept up to date, instead of rename_tensor's scan of
    every container and node per rename (~400 renames per clean-up of a ResNet-20)."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.parts = [(graph.input, "name"), (graph.output, "name"), (graph.value_info, "name"),
                      (graph.initializer, "name"), (graph.quantization_annotation,
                                                    "tensor_name")]
        self.where: list[dict[str, list[int]]] = []
        for part, field in self.parts:
            found: dict[str, list[int]] = {}
            for i, name in enumerate(map(attrgetter(field), part)):
                found.setdefault(name, []).append(i)
            self.where.append(found)
        self.ins: dict[str, set[int]] = {}
        self.outs: dict[str, set[int]] = {}
        for j, n in enumerate(graph.node):
            for t in n.input:
                self.ins.setdefault(t, set()).add(j)
            for t in n.output:
                self.outs.setdefault(t, set()).add(j)

    def rename(self, old_name: str, new_name: str) -> None:
        """ModelWrapper.rename_tensor(old_name, new_name)."""
        for (part, field), found in zip(self.parts, self.where):
            at = found.get(old_name)
            if not at:
                continue
            if len(at) > 1:  # what get_by_name raises
                raise Exception("Found multiple get_by_name matches, undefined behavior")
            del found[old_name]
            setattr(part[at[0]], field, new_name)
            found.setdefault(new_name, []).append(at[0])
        nodes = self.graph.node
        for index, attr in ((self.ins, "input"), (self.outs, "output")):
            for j in index.pop(old_name, ()):
                field = getattr(nodes[j], attr)
                field[list(field).index(old_name)] = new_name  # the first occurrence only
                if old_name in field:
                    index.setdefault(old_name, set()).add(j)
                index.setdefault(new_name, set()).add(j)

    def initializer(self, name: str) -> Any:
        """ModelWrapper.get_initializer(name)."""
        from onnx import numpy_helper as np_helper

        at = self.where[3].get(name)
        return np_helper.to_array(self.graph.initializer[min(at)]) if at else None


def unique_tensor_names_apply(self: Any, model: Any) -> tuple[Any, bool]:
    """qonnx's GiveUniqueTensorNames.apply through a Renamer."""
    names = model.get_all_tensor_names()
    renamer = Renamer(model.graph)
    i = 0
    for name in names:
        renamer.rename(name, f"tensor_{i}")
        i += 1
    return (model, False)


def readable_tensor_names_apply(self: Any, model: Any) -> tuple[Any, bool]:
    """qonnx's GiveReadableTensorNames.apply through a Renamer (statement for statement)."""
    from qonnx.transformation.general import GiveUniqueTensorNames

    model = model.transform(GiveUniqueTensorNames())
    graph = model.graph
    renamer = Renamer(graph)
    for n in graph.node:
        assert n.name != "", "Found empty node name"
        out_num = 0
        for o in n.output:
            renamer.rename(o, "%s_out%d" % (n.name, out_num))
            out_num += 1
        init_in_num = 0
        for i in n.input:
            if renamer.initializer(i) is not None:
                renamer.rename(i, "%s_param%d" % (n.name, init_in_num))
                init_in_num += 1
    for i, inp in enumerate(model.graph.input):
        iname = "global_in" if i == 0 else "global_in_%d" % i
        renamer.rename(inp.name, iname)
    for i, outp in enumerate(model.graph.output):
        oname = "global_out" if i == 0 else "global_out_%d" % i
        renamer.rename(outp.name, oname)
    return (model, False)


# qonnx/toposort internals fast_steps() replaces or relies on, with the SHA-256 (first 16 hex
# digits) of their source in qonnx 1.0.0 / toposort 1.10: a release that changes one makes
# check_internals() (and tests/test_fast_streamline.py) fail, and fast_steps() refuse to run:
# re-read the new source, port the copy above, then update the digest here.
INTERNALS = {
    "qonnx.util.basic:get_by_name": "282c772dede0ef12",
    "qonnx.core.modelwrapper:ModelWrapper.transform": "decef9c00176cee9",
    "qonnx.core.modelwrapper:ModelWrapper.cleanup": "425fdc1526ee8a72",
    "qonnx.core.modelwrapper:ModelWrapper.rename_tensor": "0db45a4cd64999c2",
    "qonnx.core.modelwrapper:ModelWrapper.find_producer": "74c71a930439d2c5",
    "qonnx.core.modelwrapper:ModelWrapper.find_direct_predecessors": "5fd159c084b8529d",
    "qonnx.core.modelwrapper:ModelWrapper.get_initializer": "acf96b1bc0e0664c",
    "qonnx.core.modelwrapper:ModelWrapper.get_tensor_shape": "f20ed84b49f97332",
    "qonnx.core.modelwrapper:ModelWrapper.check_all_tensor_shapes_specified":
        "d3e2ca0fe56e4788",
    "qonnx.transformation.general:SortGraph.apply": "d811a084752c74b5",
    "qonnx.transformation.general:GiveUniqueParameterTensors.apply": "3f01172cc61c6d87",
    "qonnx.transformation.general:GiveUniqueTensorNames.apply": "6e5069d86f72400e",
    "qonnx.transformation.general:GiveReadableTensorNames.apply": "8df0251474698f82",
    "qonnx.core.modelwrapper:ModelWrapper.get_all_tensor_names": "050b1c1b86053485",
    "qonnx.transformation.infer_shapes:InferShapes.apply": "d24b8ad3598b9aa1",
    "qonnx.transformation.infer_datatypes:InferDataTypes.__init__": "9f7d14663ad105bb",
    "qonnx.transformation.infer_datatypes:InferDataTypes.apply": "2e95b4270754c866",
    "toposort:toposort": "aff4296306982986",
    "toposort:toposort_flatten": "a1585ba3897b3517",
}
# (class, attribute) -> the fast copy installed over it
_PATCHES = {("qonnx.core.modelwrapper:ModelWrapper", "transform"): memo_transform,
            ("qonnx.core.modelwrapper:ModelWrapper", "cleanup"): memo_cleanup,
            ("qonnx.core.modelwrapper:ModelWrapper", "rename_tensor"): rename_tensor,
            ("qonnx.core.modelwrapper:ModelWrapper", "check_all_tensor_shapes_specified"):
                check_all_tensor_shapes_specified,
            # the exact C-level lookups above, for every step (finn_compat.fast_streamlining
            # installs them for streamlining only)
            ("qonnx.core.modelwrapper:ModelWrapper", "get_initializer"): get_initializer,
            ("qonnx.core.modelwrapper:ModelWrapper", "get_tensor_shape"): get_tensor_shape,
            ("qonnx.core.modelwrapper:ModelWrapper", "find_producer"): find_producer,
            ("qonnx.transformation.general:SortGraph", "apply"): sort_graph_apply,
            ("qonnx.transformation.general:GiveUniqueParameterTensors", "apply"):
                unique_parameter_tensors_apply,
            ("qonnx.transformation.general:GiveUniqueTensorNames", "apply"):
                unique_tensor_names_apply,
            ("qonnx.transformation.general:GiveReadableTensorNames", "apply"):
                readable_tensor_names_apply}
_MEMO = BuildMemo()  # no-op results stay valid for the whole process (pure functions)
_CHECKED: dict[str, list[str]] = {}  # check_internals() of this process


def internal_source(ref: str) -> str:
    """The source of `module:qualname` as installed (a fast copy in place: the stock one)."""
    import importlib
    import inspect

    mod, attr = ref.split(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = inspect.getattr_static(obj, part) if inspect.isclass(obj) else getattr(obj, part)
    return inspect.getsource(inspect.unwrap(obj))


def check_internals() -> list[str]:
    """What changed in the internals fast_steps() depends on (empty: none)."""
    problems = []
    for ref, digest in INTERNALS.items():
        try:
            got = hashlib.sha256(internal_source(ref).encode()).hexdigest()[:16]
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            problems.append(f"{ref} is gone ({type(exc).__name__}: {exc})")
            continue
        if got != digest:
            problems.append(f"{ref} changed (source digest {got}, hw/fast_streamline.py was "
                            f"written for {digest}): port its copy before using it")
    return problems


def _resolve(ref: str) -> Any:
    import importlib

    mod, cls = ref.split(":")
    return getattr(importlib.import_module(mod), cls)


def _stock_key(ref: str, attr: str) -> str:
    return f"{ref}.{attr}"


def _rebind_get_by_name(old: Any, new: Any) -> None:
    """get_by_name in qonnx.util.basic and in every qonnx/finn module that imported it."""
    import sys

    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith(("qonnx", "finn")) and getattr(
                mod, "get_by_name", None) is old:
            mod.get_by_name = new


@contextlib.contextmanager
def fast_steps(mode: str = "fast") -> Any:
    """The scope of one build step: with mode "fast", qonnx's transform/cleanup memo and the
    exact faster copies above are installed (and restored on exit, also after an error);
    any other mode (stock) changes nothing. Nested scopes share the outer one's."""
    if mode != "fast" or _STOCK:
        yield _MEMO if _STOCK else None
        return
    if _CHECKED.get("problems") is None:  # once per process: sources do not change
        _CHECKED["problems"] = check_internals()
    problems = _CHECKED["problems"]
    if problems:
        raise RuntimeError("fast FINN steps cannot be used with the installed qonnx: "
                           + "; ".join(problems) + " (or build with streamline: stock)")
    import qonnx.util.basic as qub

    for (ref, attr), fast in _PATCHES.items():
        _STOCK[_stock_key(ref, attr)] = vars(_resolve(ref))[attr]
    _STOCK["get_by_name"] = qub.get_by_name
    try:
        for (ref, attr), fast in _PATCHES.items():
            fast.__wrapped__ = _STOCK[_stock_key(ref, attr)]  # inspect (the guards): stock
            setattr(_resolve(ref), attr, fast)
        get_by_name.__wrapped__ = _STOCK["get_by_name"]
        _rebind_get_by_name(_STOCK["get_by_name"], get_by_name)
        _BUILD.append(_MEMO)
        yield _MEMO
    finally:
        if _BUILD:
            _BUILD.pop()
        for (ref, attr), fast in _PATCHES.items():
            setattr(_resolve(ref), attr, _STOCK[_stock_key(ref, attr)])
            fast.__dict__.pop("__wrapped__", None)
        _rebind_get_by_name(get_by_name, _STOCK["get_by_name"])
        get_by_name.__dict__.pop("__wrapped__", None)
        _STOCK.clear()
