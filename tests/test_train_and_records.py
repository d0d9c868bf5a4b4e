"""Trainer, checkpoints and variant records: accuracy, resume, safe loading, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch

from fpgaslim.compress.models import create_model
from fpgaslim.compress.train import KDSettings, TrainSettings, kd_loss, train
from fpgaslim.compress.variants import RunDir, load_checkpoint
from fpgaslim.core.errors import CheckpointError, ConfigError, TrainingDivergedError


def test_resnet8_baseline_reaches_90_percent_on_digits(resnet8_run, digits):
    rec = resnet8_run.record("baseline")
    assert rec.accuracy.test >= 90.0, rec.accuracy
    model = resnet8_run.load_model("baseline")
    from fpgaslim.compress.train import evaluate
    assert evaluate(model, digits.test) == pytest.approx(rec.accuracy.test)
    assert rec.depth == 8 and rec.params > 0 and rec.macs == sum(rec.macs_by_layer.values())


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, digits):
    settings = TrainSettings(epochs=3, batch_size=64, lr=0.05)
    torch.manual_seed(0)
    ref = create_model("resnet8", digits.input_shape, width=0.5)
    model = copy.deepcopy(ref)  # the same initial state, Brevitas' statistics phase included
    train(ref, digits.train, digits.val, settings, progress=False)

    calls = {"n": 0}

    def crash_in_epoch_3(model):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    ckpt = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train(model, digits.train, digits.val, settings, checkpoint=ckpt,
              set_train_mode=crash_in_epoch_3, progress=False)
    resumed = create_model("resnet8", digits.input_shape, width=0.5)
    result = train(resumed, digits.train, digits.val, settings, checkpoint=ckpt, progress=False)
    assert result.resumed_from_epoch == 2 and result.epochs_run == 3
    for k, v in ref.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-5), k


def test_diverging_training_stops_with_a_clear_error_and_keeps_the_last_epoch(tmp_path, digits):
    """Seen in the benchmark: w2a2 ResNet-20 at lr 0.05 went NaN in epoch 1 and trained on
    for 10 epochs at 10 %. Now the first non-finite loss stops it, naming epoch and lr, and
    the checkpoint of the last finished epoch stays for a resume."""
    torch.manual_seed(0)
    model = create_model("resnet8", digits.input_shape, width=0.5)
    epoch = {"n": 0}

    def count_epochs(model):
        epoch["n"] += 1

    def nan_in_epoch_2(model):
        return torch.tensor(float("nan") if epoch["n"] == 2 else 0.0)

    ckpt = tmp_path / "state.pt"
    with pytest.raises(TrainingDivergedError, match=r"nan in epoch 2 .*learning rate"):
        train(model, digits.train, digits.val, TrainSettings(epochs=3, lr=0.05),
              checkpoint=ckpt, set_train_mode=count_epochs, extra_loss=nan_in_epoch_2,
              progress=False)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path, resnet8_run):
    good = resnet8_run.variant_dir("baseline") / "model.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an fpgaslim checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="variants: baseline"):
        resnet8_run.record("nope")


def test_incomplete_variant_is_invisible(tmp_path):
    run = RunDir(tmp_path)
    vdir = run.variant_dir("half")
    vdir.mkdir(parents=True)
    (vdir / "model.pt").write_bytes(b"partial")  # killed before the record was written
    assert run.ids() == [] and not run.has("half")


def test_kd_loss_is_cross_entropy_plus_soft_term():
    s = torch.tensor([[2.0, 0.0, -1.0]])
    y = torch.tensor([0])
    same = kd_loss(s, s, y, KDSettings(temperature=4.0))
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(same, ce, atol=1e-6)  # KL of identical distributions is 0
    other = kd_loss(s, torch.tensor([[0.0, 3.0, 0.0]]), y, KDSettings(temperature=4.0))
    assert other > same
