"""Model zoo and QONNX export: the ONNX file computes what the Brevitas model computes."""

from __future__ import annotations

import pytest
import torch

from fpgaslim.compress.models import BitWidths, create_model, make_arch
from fpgaslim.compress.models.resnet import resnet_arch
from fpgaslim.compress.stats import count_macs
from fpgaslim.compress.train import TrainSettings, train
from fpgaslim.core.errors import CheckpointError, UnknownNameError
from fpgaslim.hw.qonnx_export import check_export, export_qonnx


@pytest.mark.parametrize("name,shape", [("resnet8", (1, 8, 8)), ("resnet20", (1, 28, 28)),
                                        ("resnet8", (3, 32, 32)), ("cnv", (1, 28, 28)),
                                        ("cnv", (3, 32, 32))])
def test_any_input_size(name, shape):
    model = create_model(name, shape, width=0.25).eval()
    assert model(torch.rand(2, *shape) * 255).shape == (2, 10)


def test_resnet_depths_and_macs_by_hand():
    arch = make_arch("resnet20", (1, 8, 8))
    assert len(arch.blocks) == 9 and arch.blocks[3].stride == 2
    model = create_model("resnet8", (1, 8, 8))
    macs = count_macs(model, (1, 8, 8))
    assert macs["stem"] == 8 * 8 * 16 * 9  # 8x8 output, 16 filters of 1x3x3
    assert macs["fc"] == 64 * 10
    with pytest.raises(ValueError, match="6n\\+2"):
        resnet_arch(9, (1, 8, 8))
    with pytest.raises(UnknownNameError, match="resnet20"):
        create_model("vgg16", (1, 8, 8))


@pytest.mark.parametrize("name,bits", [("resnet8", "w4a4"), ("resnet8", "w2a2"),
                                       ("cnv", "w4a4"), ("cnv", "w2a2")])
def test_export_round_trip_on_real_images(tmp_path, digits, name, bits):
    w, a = int(bits[1]), int(bits[3])
    model = create_model(name, digits.input_shape, bits=BitWidths(weight=w, act=a),
                         width=0.25 if name == "cnv" else 0.5)
    train(model, digits.train, digits.val, TrainSettings(epochs=1, batch_size=64),
          progress=False)
    path = export_qonnx(model, tmp_path / "m.onnx")
    check = check_export(model, path, digits.test.tensors[0][:16])
    assert check.argmax_agreement == 1.0
    assert check.max_abs_diff < 1e-4


def test_w8a8_builds_and_runs():
    model = create_model("resnet8", (1, 8, 8), bits=BitWidths(weight=8, act=8)).eval()
    assert torch.isfinite(model(torch.rand(1, 1, 8, 8) * 255)).all()


def test_export_refuses_a_diverged_model(tmp_path):
    model = create_model("resnet8", (1, 8, 8), width=0.5)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite .*fc.weight.*diverged"):
        export_qonnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
