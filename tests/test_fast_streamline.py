"""Fast streamlining (build setting `streamline: fast`, hw/fast_streamline.py): the graphs it
produces are byte-identical to stock finn-plus's, its memo skips only real no-ops, and a qonnx
release that changes the internals it replaces fails loudly.

The equality test runs fpgaslim's real estimate step list (FINN transformations, estimates)
both ways on three untrained quarter-width zoo models at 8x8 in one child process (FINN's
import costs ~15 s): a ResNet-8 (residual: the streamlining the memo speeds up), a CNV and a
TFC MLP (plain: FINN's stock step, which fast mode leaves alone). ResNet-14 (~2 min of stock
streamlining on a loaded 2-core machine) and ResNet-20 (28x28, ~100 s idle) are too slow for
the suite: the ResNet-20 test below runs with FPGASLIM_LONG_TESTS=1, and
benchmarks/bench_streamline.py checks the 28x28 ResNet-20 equality.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fpgaslim.hw import fast_streamline, finn_compat

_COMPOSED = "qonnx.transformation.composed:ComposedTransformation.apply"

_CHILD = r"""
import json, shutil, sys
from fpgaslim.hw import finn_compat
finn_compat.activate()
from fpgaslim.hw.streamline_check import run_estimate_steps
out = {}
for name, path in json.loads(sys.argv[1]).items():
    runs = {}
    for m in ("stock", "fast"):  # the same folder: FINN writes paths into node attributes
        shutil.rmtree(sys.argv[2] + "/" + name, ignore_errors=True)
        runs[m] = run_estimate_steps(path, sys.argv[2] + "/" + name, m)
    out[name] = {k: runs["stock"][k] == runs["fast"][k] for k in ("streamlined", "folded")}
    out[name]["nodes"] = len(runs["fast"]["folded"])
    out[name]["seconds"] = {m: r["seconds"] for m, r in runs.items()}
print("RESULT " + json.dumps(out))
"""


def test_patched_internals_are_the_ones_it_was_written_for():
    assert finn_compat.check_streamline_internals() == []


def test_changed_internals_fail_loudly(monkeypatch):
    from qonnx.transformation.composed import ComposedTransformation

    stock = ComposedTransformation.apply
    monkeypatch.setitem(finn_compat.STREAMLINE_INTERNALS, _COMPOSED, "0" * 16)
    monkeypatch.setitem(finn_compat.STREAMLINE_INTERNALS,
                        "qonnx.core.modelwrapper:ModelWrapper.no_such_method", "0" * 16)
    problems = finn_compat.check_streamline_internals()
    assert any(p.startswith(f"{_COMPOSED} changed") for p in problems)
    assert any("no_such_method is gone" in p for p in problems)
    with pytest.raises(RuntimeError, match="cannot be used with the installed qonnx"):
        with finn_compat.fast_streamlining():
            pass
    assert ComposedTransformation.apply is stock  # nothing left patched


def test_patch_is_scoped_and_restored_after_an_error():
    from qonnx.transformation.composed import ComposedTransformation

    stock = ComposedTransformation.apply
    with pytest.raises(KeyError):
        with finn_compat.fast_streamlining() as memo:
            assert ComposedTransformation.apply is fast_streamline.memo_composed_apply
            assert fast_streamline.active_memo() is memo
            raise KeyError("boom")
    assert ComposedTransformation.apply is stock
    assert fast_streamline.active_memo() is None


def test_streamline_setting_keeps_build_folders_and_is_validated(tmp_path):
    """Both modes give the same graph, so the setting is not part of a build's cache key:
    builds made before it existed keep their folders."""
    from pydantic import ValidationError

    from fpgaslim.compress.variants import RunDir
    from fpgaslim.hw.api import BuildSettings, build_dir_for

    run = RunDir(tmp_path)
    assert BuildSettings().streamline == "fast"
    for extra in ({}, {"weights": "external"}):
        dirs = {build_dir_for(run, "v", BuildSettings(streamline=m, **extra)) for m in
                ("fast", "stock")}
        assert len(dirs) == 1
    with pytest.raises(ValidationError, match="streamline"):
        BuildSettings(streamline="quick")


def _tiny_model():
    import numpy as np
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], np.full(4, 2.0, np.float32))
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"], name="m")], "g",
                              [x], [y], [w])
    return ModelWrapper(helper.make_model(graph))


def test_memo_skips_a_no_op_only_on_the_same_graph():
    from qonnx.transformation.base import Transformation

    calls = []

    class Probe(Transformation):
        def apply(self, model):
            calls.append(1)
            return model, False

    class SilentEdit(Transformation):  # changes the graph but reports "not modified"
        def apply(self, model):
            model.graph.node[0].name += "x"
            return model, False

    memo = fast_streamline.Memo()
    model, probe = _tiny_model(), Probe()
    key, _ = memo.digest(model)
    model, modified, key2 = memo.apply(probe, model, key)
    assert (modified, key2, len(calls)) == (False, key, 1)
    memo.apply(probe, model, key)
    assert len(calls) == 1 and memo.stats["apply_skipped"] == 1  # same graph: skipped
    edit = SilentEdit()
    model, _, key3 = memo.apply(edit, model, key)
    assert key3 != key and not any(k[0] == id(edit) for k in memo.noop)  # not a no-op
    memo.apply(probe, model, key3)
    assert len(calls) == 2  # a different graph: run again


def test_same_graphs_as_stock_finn_on_three_zoo_models(tmp_path):
    from fpgaslim.compress.models import create_model
    from fpgaslim.hw.qonnx_export import export_qonnx

    models = {}
    for name in ("resnet8", "cnv", "tfc"):
        models[name] = str(export_qonnx(create_model(name, (1, 8, 8), 10, None, 0.25).eval(),
                                        tmp_path / f"{name}.onnx"))
    env = finn_compat.child_environment(tmp_path / "finn")
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(models), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    for name in models:
        assert result[name]["streamlined"], f"{name}: streamlined graph differs from stock"
        assert result[name]["folded"], f"{name}: folded graph differs from stock"
    print(json.dumps({n: r["seconds"] for n, r in result.items()}))


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").environ.get("FPGASLIM_LONG_TESTS"),
                    reason="ResNet-20: ~100 s of stock streamlining on 2 idle cores, ~3 min "
                           "loaded; run with FPGASLIM_LONG_TESTS=1 (bench_streamline.py checks "
                           "the 28x28 one too)")
def test_same_graphs_as_stock_finn_on_resnet20(tmp_path):
    """The issue's ResNet-20 (quarter width, 8x8: the same 135-node graph shape as 28x28),
    streamlined and folded graphs equal to stock finn-plus's."""
    from fpgaslim.compress.models import create_model
    from fpgaslim.hw.qonnx_export import export_qonnx

    models = {"resnet20": str(export_qonnx(
        create_model("resnet20", (1, 8, 8), 10, None, 0.25).eval(), tmp_path / "r20.onnx"))}
    env = finn_compat.child_environment(tmp_path / "finn")
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(models), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=1200)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])["resnet20"]
    assert result["streamlined"] and result["folded"], result
