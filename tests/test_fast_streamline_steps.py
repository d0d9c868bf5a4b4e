"""The fast FINN steps (hw/fast_streamline.fast_steps, build setting `streamline: fast`): qonnx's
transform/cleanup no-op memo and the exact faster copies of SortGraph, GiveUniqueParameterTensors,
rename_tensor, GiveUniqueTensorNames, GiveReadableTensorNames, check_all_tensor_shapes_specified
and toposort_flatten give what stock qonnx gives, byte for byte, and a qonnx or
toposort release that changes the patched internals fails loudly.

The copies are compared with stock on a real graph (a quarter-width ResNet-8 exported by Brevitas
to QONNX) and on hand-made corner cases; the whole build's
equality (streamlined and folded graphs of three zoo models) is tests/test_fast_streamline.py.
"""

from __future__ import annotations

import copy
import random

import pytest

from fpgaslim.hw import fast_streamline as fs


def test_patched_internals_are_the_ones_it_was_written_for():
    assert fs.check_internals() == []


def test_changed_internals_fail_loudly_and_patch_nothing(monkeypatch):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import SortGraph

    stock = (ModelWrapper.transform, ModelWrapper.cleanup, SortGraph.apply)
    ref = "qonnx.transformation.general:SortGraph.apply"
    monkeypatch.setitem(fs.INTERNALS, ref, "0" * 16)
    monkeypatch.setitem(fs.INTERNALS, "toposort:no_such_function", "0" * 16)
    monkeypatch.setattr(fs, "_CHECKED", {})  # fast_steps checks once per process
    problems = fs.check_internals()
    assert any(p.startswith(f"{ref} changed") for p in problems)
    assert any("no_such_function is gone" in p for p in problems)
    with pytest.raises(RuntimeError, match="cannot be used with the installed qonnx"):
        with fs.fast_steps("fast"):
            pass
    assert (ModelWrapper.transform, ModelWrapper.cleanup, SortGraph.apply) == stock


def test_scope_is_restored_after_an_error_and_stock_mode_patches_nothing():
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation import general

    def installed():
        return (vars(ModelWrapper)["transform"], vars(ModelWrapper)["cleanup"],
                vars(ModelWrapper)["rename_tensor"],
                vars(ModelWrapper)["check_all_tensor_shapes_specified"],
                vars(ModelWrapper)["get_initializer"], vars(general.SortGraph)["apply"],
                vars(general.GiveUniqueParameterTensors)["apply"],
                vars(general.GiveUniqueTensorNames)["apply"],
                vars(general.GiveReadableTensorNames)["apply"], general.util.get_by_name)

    stock = installed()
    with fs.fast_steps("stock") as memo:
        assert memo is None and installed() == stock
    with pytest.raises(KeyError):
        with fs.fast_steps("fast") as memo:
            assert installed() == (
                fs.memo_transform, fs.memo_cleanup, fs.rename_tensor,
                fs.check_all_tensor_shapes_specified, fs.get_initializer, fs.sort_graph_apply,
                fs.unique_parameter_tensors_apply, fs.unique_tensor_names_apply,
                fs.readable_tensor_names_apply, fs.get_by_name)
            with fs.fast_steps("fast") as inner:  # nested: the same scope
                assert inner is memo
            assert installed()[0] is fs.memo_transform
            # the guards hash qonnx's own source, also while the copies are installed
            assert fs.check_internals() == []
            raise KeyError("boom")
    assert installed() == stock


@pytest.mark.parametrize("seed", range(40))
def test_toposort_flatten_is_the_library_s(seed):
    import toposort

    rng = random.Random(seed)
    n = rng.randint(0, 30)
    data = {i: {rng.randrange(n + 5) for _ in range(rng.randint(0, 3))} for i in range(n)
            if rng.random() < 0.9}
    data = {k: {d for d in v if d < k or d >= n or rng.random() < 0.1} for k, v in data.items()}
    try:
        want = toposort.toposort_flatten(copy.deepcopy(data))
    except toposort.CircularDependencyError as exc:
        with pytest.raises(toposort.CircularDependencyError) as got:
            fs.toposort_flatten(copy.deepcopy(data))
        assert str(got.value) == str(exc)
        return
    assert fs.toposort_flatten(copy.deepcopy(data)) == want


@pytest.fixture(scope="module")
def resnet_graph(tmp_path_factory):
    """A real graph: a quarter-width ResNet-8 (8x8) exported by Brevitas (QONNX Quant nodes,
    residual forks and joins) after qonnx's tidy-up transformations."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    import torch

    from fpgaslim.compress.models import create_model
    from fpgaslim.hw.qonnx_export import export_qonnx

    torch.manual_seed(0)
    path = export_qonnx(create_model("resnet8", (1, 8, 8), 10, None, 0.25).eval(),
                        tmp_path_factory.mktemp("fast_steps") / "resnet8.onnx")
    model = ModelWrapper(str(path))
    for t in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(),
              GiveReadableTensorNames(), InferDataTypes()):
        model = model.transform(t)
    return model


def _outcome(model, run, raises: type[Exception] | None):
    """The serialized result of run(model copy); with `raises`, the error it must raise
    instead, as "Type: message". An error nobody expected is raised, not compared: two runs
    that fail alike are no evidence that the copies are stock."""
    random.seed(1)
    if raises is None:
        return run(copy.deepcopy(model)).model.SerializeToString()
    with pytest.raises(raises) as err:
        run(copy.deepcopy(model))
    return f"{type(err.value).__name__}: {err.value}"


def _both(model, run, raises: type[Exception] | None = None):
    """run(model copy) with stock qonnx and inside fast_steps: the two serialized results
    (or, with `raises`, the two errors of that type)."""
    stock = _outcome(model, run, raises)
    with fs.fast_steps("fast"):
        fast = _outcome(model, run, raises)
    return stock, fast


def _shuffled(model, seed):
    nodes = list(model.graph.node)
    random.Random(seed).shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sort_graph_is_stock_on_a_shuffled_resnet(resnet_graph, seed):
    from qonnx.transformation.general import SortGraph

    shuffled = _shuffled(copy.deepcopy(resnet_graph), seed)
    stock, fast = _both(shuffled, lambda m: m.transform(SortGraph(), cleanup=False))
    assert stock == fast
    assert stock != shuffled.model.SerializeToString()  # it did sort


def test_unique_parameter_tensors_is_stock_with_shared_parameters(resnet_graph):
    from qonnx.transformation.general import GiveUniqueParameterTensors

    model = copy.deepcopy(resnet_graph)
    # three nodes share one initializer (seeded random names for the copies, as stock)
    muls = [n for n in model.graph.node if model.get_initializer(n.input[-1]) is not None][:3]
    assert len(muls) == 3
    for n in muls[1:]:
        n.input[len(n.input) - 1] = muls[0].input[-1]
    stock, fast = _both(model, lambda m: m.transform(GiveUniqueParameterTensors(),
                                                     cleanup=False))
    assert stock == fast
    assert stock != model.model.SerializeToString()


def test_rename_tensor_is_stock_also_for_repeated_inputs(resnet_graph):
    model = copy.deepcopy(resnet_graph)
    node = next(n for n in model.graph.node if len(n.input) >= 2)
    node.input[1] = node.input[0]  # the same tensor twice: stock renames the first only

    def rename_all(m):
        for i, name in enumerate(m.get_all_tensor_names()):
            m.rename_tensor(name, f"t{i}")
        m.rename_tensor(m.graph.initializer[0].name, "w0")
        m.rename_tensor("no_such_tensor", "x")
        return m

    stock, fast = _both(model, rename_all)
    assert stock == fast


def test_readable_and_unique_tensor_names_are_stock_also_on_collisions(resnet_graph):
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueTensorNames

    model = _shuffled(copy.deepcopy(resnet_graph), 4)
    node = next(n for n in model.graph.node if len(n.input) >= 2)
    node.input[1] = node.input[0]  # one tensor twice in a node
    for t in (GiveUniqueTensorNames(), GiveReadableTensorNames()):
        stock, fast = _both(model, lambda m: m.transform(t, cleanup=False))
        assert isinstance(stock, bytes) and stock == fast
    # a tensor renamed to a name another one gets (renames collide): two tensors of one
    # name, stock raises (get_by_name), and so does the copy
    model.rename_tensor(node.output[0], f"{model.graph.node[4].name}_out0")
    stock, fast = _both(model, lambda m: m.transform(GiveUniqueTensorNames()).transform(
        GiveReadableTensorNames()), raises=Exception)  # qonnx raises a bare Exception
    assert "multiple get_by_name matches" in stock and stock == fast


def test_whole_clean_up_and_inference_are_stock_and_no_ops_are_skipped(resnet_graph):
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    def pipeline(m):
        for t in (InferShapes(), InferDataTypes(), GiveUniqueNodeNames(),
                  GiveReadableTensorNames(), InferShapes(), InferDataTypes()):
            m = m.transform(t)
        m.cleanup()
        return m

    model = _shuffled(copy.deepcopy(resnet_graph), 3)
    before = dict(fs._MEMO.stats)
    stock, fast = _both(model, pipeline)
    assert stock == fast
    with fs.fast_steps("fast"):
        again = pipeline(copy.deepcopy(model)).model.SerializeToString()
    assert again == stock
    skipped = fs._MEMO.stats["transform_skipped"] - before["transform_skipped"]
    assert skipped >= 2 and fs._MEMO.stats["cleanup_skipped"] > before["cleanup_skipped"]


def _shapes_class(draws_random: bool):
    from qonnx.transformation.infer_shapes import InferShapes

    class Probe(InferShapes):
        calls = 0

        def apply(self, model):
            type(self).calls += 1
            if draws_random:
                random.random()
            return super().apply(model)

    Probe.__qualname__ = Probe.__name__ = "DrawsRandom" if draws_random else "CountedShapes"
    return Probe


def test_memo_skips_only_a_no_op_on_the_same_graph_and_never_a_random_one(
        resnet_graph, monkeypatch):
    from qonnx.transformation.infer_shapes import InferShapes

    counted, draws = _shapes_class(False), _shapes_class(True)
    monkeypatch.setattr(fs, "PURE_TRANSFORMS", fs.PURE_TRANSFORMS | {
        f"{__name__}.CountedShapes", f"{__name__}.DrawsRandom"})
    with fs.fast_steps("fast"):
        model = resnet_graph.transform(InferShapes())  # a fixed point of InferShapes
        a = model.transform(counted())
        b = model.transform(counted())  # the same graph: skipped
        assert counted.calls == 1 and a is not model and b is not model
        assert b.model.SerializeToString() == model.model.SerializeToString()
        model.graph.node[0].name += "_x"
        model.transform(counted())  # a different graph: run
        assert counted.calls == 2
        model.transform(draws())
        model.transform(draws())  # drew random numbers: never memoized
        assert draws.calls == 2
