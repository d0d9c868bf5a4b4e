"""Bring your own: every bad input is a clear fpgaslim error through the real CLI (exit code,
a message naming the file / factory / node and what to do, no traceback), and an existing run
is left as it was."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from fpgaslim.cli import main

FACTORIES = '''
import torch
from torch import nn


def not_a_module(in_shape, num_classes):
    return 42


def wrong_output(in_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def raises(hidden=4):
    raise ValueError("hidden must be even")
'''


def cli(*args: str):
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert "Traceback" not in res.output, res.output
    return res


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """A run with a finished baseline (ResNet-8, 0 epochs: its record is what must survive)."""
    d = tmp_path_factory.mktemp("existing")
    res = cli("train", str(d / "run"), "--epochs", "0", "--limit-train", "50")
    assert res.exit_code == 0, res.output
    record = d / "run" / "variants" / "baseline" / "record.json"
    return d / "run", record, record.read_bytes()


@pytest.fixture(scope="module")
def factories(tmp_path_factory):
    p = tmp_path_factory.mktemp("factories") / "bad_models.py"
    p.write_text(FACTORIES, encoding="utf-8")
    return p


@pytest.mark.parametrize("ref, match", [
    ("{dir}/missing.py:net", "does not exist"),
    ("{file}:nope", "has no 'nope'"),
    ("{file}:not_a_module", "returned int, not a torch nn.Module"),
    ("{file}:wrong_output", r"returns \(2, 3\) for 2 images.*\(N, 10\)"),
    ("no_such_package_xyz.models:net", "cannot import module"),
])
def test_bad_factories_are_clear_errors_and_leave_the_run_intact(existing_run, factories, ref,
                                                                 match):
    run, record, before = existing_run
    ref = ref.format(dir=factories.parent, file=factories)
    res = cli("train", str(run.parent / "other"), "--model", ref, "--epochs", "0")
    assert res.exit_code == 2
    assert ref.split(":")[0] in res.output or "no_such" in res.output
    assert re.search(match, res.output), res.output
    assert record.read_bytes() == before


def test_factory_that_raises_names_its_arguments(factories, tmp_path):
    import yaml

    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({"model": f"{factories}:raises", "model_args": {"hidden": 3},
                                   "train": {"epochs": 0}}), encoding="utf-8")
    res = cli("train", str(tmp_path / "run"), "--config", str(cfg))
    assert res.exit_code == 2 and "hidden must be even" in res.output
    assert "{'hidden': 3}" in res.output


def _float_conv_onnx(path):
    """A float ONNX graph (no quantizer at all), written with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="plain_conv")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])],
                          [w])
    onnx.save(helper.make_model(g), str(path))


def test_bad_onnx_files_are_clear_errors(tmp_path):
    good = tmp_path / "float.onnx"
    _float_conv_onnx(good)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:40])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 20, encoding="utf-8")
    for bad in (truncated, text):
        res = cli("build", str(bad), "--board", "pynq-z1", "--out", str(tmp_path / "o"))
        assert res.exit_code == 2, res.output
        assert str(bad) in res.output and "not a valid (Q)ONNX model" in res.output
    res = cli("build", str(good), "--board", "pynq-z1", "--out", str(tmp_path / "o"))
    assert res.exit_code == 3  # UnsupportedLayerError: names the node and what to put there
    assert str(good) in res.output and "(op type Conv)" in res.output
    assert "put an input quantizer in front" in res.output


def test_damaged_variant_files_are_clear_errors(existing_run, tmp_path):
    import shutil

    run, _, _ = existing_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    vdir = copy / "variants" / "baseline"
    ckpt = vdir / "model.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    res = cli("export", str(copy))
    assert res.exit_code == 2 and "truncated or corrupt" in res.output
    assert "weights_only" not in res.output and str(ckpt) in res.output
    shutil.copyfile(run / "variants" / "baseline" / "model.pt", ckpt)
    assert cli("export", str(copy), "--check-images", "2").exit_code == 0
    onnx_file = vdir / "model.qonnx.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:200])
    res = cli("build", str(copy), "--board", "pynq-z1")
    assert res.exit_code == 2 and "not a valid (Q)ONNX model" in res.output
    assert "fpgaslim export" in res.output


NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape=(1, 8, 8), num_classes=10):
        super().__init__()
        self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1) / 255.0)
"""


def test_add_model_keeps_weights_and_methods_say_what_they_need(tmp_path, digits, monkeypatch):
    import importlib
    import sys

    import torch

    import fpgaslim
    from fpgaslim.core.errors import ConfigError

    (tmp_path / "mynet.py").write_text(NET, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    net = importlib.import_module("mynet").Net()
    torch.nn.init.normal_(net.fc.weight)
    rec = fpgaslim.add_model(tmp_path / "run", net, digits)  # 0 epochs: weights kept
    assert rec.arch.kind == "user" and rec.arch.factory == f"{tmp_path / 'mynet.py'}:Net"
    sys.modules.pop("mynet")  # a later process: re-created from the file, weights_only load
    again = fpgaslim.RunDir(tmp_path / "run").load_model("baseline")
    assert torch.equal(again.fc.weight, net.fc.weight)
    for method in ("layer-fusion", "layer-importance", "resconv"):
        settings = fpgaslim.get_method(method).Settings.preset("cpu")
        with pytest.raises(ConfigError, match=f"method '{method}' needs .*your own"):
            fpgaslim.run_method(tmp_path / "run", method, "baseline", settings, data=digits)
    from fpgaslim.core.errors import UnsupportedLayerError

    settings = fpgaslim.get_method("dynamic-prune").Settings.preset("cpu")
    with pytest.raises(UnsupportedLayerError, match="no prunable channel group in 'Net'"):
        fpgaslim.run_method(tmp_path / "run", "dynamic-prune", "baseline", settings,
                            data=digits)  # a plain float Linear: nothing quantized to measure
    assert fpgaslim.RunDir(tmp_path / "run").ids() == ["baseline"]
