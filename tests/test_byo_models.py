"""Your own model beyond the README: a small CNN with MaxPool defined only in this file, by
factory path; dynamic channel pruning on it (groups traced by Torch-Pruning's DependencyGraph,
the record replays the cuts on the factory's model), the pruned variant reloaded with
weights_only and built by FINN bit-exactly; block methods say what they need."""

from __future__ import annotations

from pathlib import Path

import brevitas.nn as qnn
import pytest
import torch
from brevitas.inject.enum import ScalingImplType
from brevitas.quant import Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from torch import nn

HERE = Path(__file__).resolve()


class PixelQuant(Uint8ActPerTensorFloat):
    scaling_impl_type = ScalingImplType.CONST
    scaling_init = 1.0


class W4(Int8WeightPerTensorFloat):
    bit_width = 4


class PoolCNN(nn.Module):
    """conv-BN-ReLU-MaxPool twice, then a linear classifier at 1x1 (not in the zoo)."""

    def __init__(self, in_shape=(1, 8, 8), num_classes=10, ch=12):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=PixelQuant, return_quant_tensor=True)
        self.c1 = qnn.QuantConv2d(in_shape[0], ch, 3, padding=1, bias=False, weight_quant=W4)
        self.b1 = nn.BatchNorm2d(ch)
        self.r1 = qnn.QuantReLU(bit_width=4, return_quant_tensor=True)
        self.p1 = nn.MaxPool2d(2)
        self.c2 = qnn.QuantConv2d(ch, ch, 3, padding=1, bias=False, weight_quant=W4)
        self.b2 = nn.BatchNorm2d(ch)
        self.r2 = qnn.QuantReLU(bit_width=4, return_quant_tensor=True)
        self.p2 = nn.MaxPool2d(4)
        self.fc = qnn.QuantLinear(ch, num_classes, bias=False, weight_quant=W4)

    def forward(self, x):
        x = self.p1(self.r1(self.b1(self.c1(self.inp(x / 255.0)))))
        x = self.p2(self.r2(self.b2(self.c2(x))))
        return self.fc(x.flatten(1))


def pool_cnn(in_shape, num_classes, ch=12):
    return PoolCNN(in_shape, num_classes, ch)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, digits):
    from fpgaslim.pipeline import TrainJob, train_job

    run = tmp_path_factory.mktemp("cnn") / "run"
    job = TrainJob(model=f"{HERE}:pool_cnn", model_args={"ch": 12},
                   train={"epochs": 2, "lr": 0.05, "batch_size": 32})
    rec = train_job(run, job, data=digits, progress=False)
    return run, rec


def test_factory_record_rebuilds_the_model(cnn_run):
    from fpgaslim.compress.variants import RunDir

    run, rec = cnn_run
    assert rec.arch.kind == "user" and rec.arch.factory == f"{HERE}:pool_cnn"
    assert rec.arch.kwargs == {"ch": 12} and rec.arch.bits.tag == "w4a4"
    assert rec.accuracy.test > 50.0  # 2 epochs on digits (measured, PyTorch)
    model = RunDir(run).load_model("baseline")
    assert type(model).__name__ == "PoolCNN" and model.c1.out_channels == 12


def test_dynamic_pruning_of_a_user_model_reloads_and_builds_bit_exact(cnn_run, digits):
    from fpgaslim.compress import dynamic_prune
    from fpgaslim.compress.variants import RunDir
    from fpgaslim.pipeline import build_job, run_method

    run, _ = cnn_run
    settings = dynamic_prune.Settings.preset("cpu", iterations=1, epochs=1, tolerance=30.0,
                                             patience=None, gap_fraction=0.3)  # few trials
    variants = run_method(run, "dynamic-prune", "baseline", settings, data=digits,
                          progress=False)
    assert variants, "a 30-point tolerance accepts some pruning"
    rec = variants[0]
    assert rec.arch.pruned and sum(len(i) for _, i in rec.arch.pruned) > 0
    assert {name for name, _ in rec.arch.pruned} <= {"c1", "c2"}  # never the classifier
    model = RunDir(run).load_model(rec.id)  # factory + replayed cuts + weights_only state
    assert model.c1.out_channels + model.c2.out_channels < 24
    assert sum(rec.widths.values()) < 24 + 10
    report = build_job(run, rec.id, "pynq-z1", verify_images=4)
    assert report.verification.integer_exact and report.verification.images == 4


def test_block_methods_need_the_residual_block_protocol(cnn_run, digits):
    from fpgaslim.compress import layer_fusion
    from fpgaslim.core.errors import ConfigError
    from fpgaslim.pipeline import run_method

    run, _ = cnn_run
    with pytest.raises(ConfigError, match="layer-fusion' needs its residual blocks, named by a residual_blocks"):
        run_method(run, "layer-fusion", "baseline", layer_fusion.Settings.preset("cpu"),
                   data=digits)
    assert torch.is_grad_enabled()
