"""Low-bit networks: 1- and 2-bit quantizers, the BNN-PYNQ zoo entries (CNV, TFC/SFC/LFC), their
training defaults and near-chance warning, and real FINN builds (XNOR-popcount layers at w1a1)
that verify bit-exactly on digits."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from fpgaslim.cli import main
from fpgaslim.compress.baseline import BaselineSettings, train_baseline
from fpgaslim.compress.channel_surgery import remove_channels
from fpgaslim.compress.models import BitWidths, create_model, make_arch
from fpgaslim.compress.train import (TrainSettings, defaults_for, evaluate, near_chance_warning,
                                     train, with_defaults_for)
from fpgaslim.compress.variants import RunDir
from fpgaslim.core.config import parse_bits
from fpgaslim.core.errors import ConfigError


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a loaded 2-core machine two threads made the CNV training 30x
    slower (7 s -> 202 s, measured), a thread-oversubscription stall."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _bits(w: int, a: int, edge: int | None = None) -> BitWidths:
    edge = edge or 8
    return BitWidths(weight=w, act=a, first_weight=edge, last_weight=edge)


def test_bits_parse_1_to_8_and_reject_others():
    assert parse_bits("w1a1") == {"weight": 1, "act": 1}
    assert parse_bits("W1A2") == {"weight": 1, "act": 2}
    assert BitWidths(**parse_bits("w2a2")).tag == "w2a2"
    with pytest.raises(ValueError, match="not supported"):
        BitWidths(**parse_bits("w9a2"))
    r = CliRunner().invoke(main, ["train", "unused-run", "--bits", "w0a2"])
    assert r.exit_code == 2 and "bit width 0 not supported" in r.output
    assert "Traceback" not in r.output
    with pytest.raises(ConfigError, match="1-bit activations"):
        make_arch("resnet8", (1, 8, 8), 10, _bits(2, 1))


def test_weight_levels_do_not_collapse_at_two_bits():
    torch.manual_seed(0)
    model = create_model("cnv", (1, 8, 8), 10, _bits(2, 2), 0.5)
    conv = model.features[1].conv  # a 2-bit layer
    q = conv.quant_weight()
    levels = torch.round(q.value / q.scale)
    assert set(levels.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert q.scale.numel() == conv.out_channels  # per output channel
    # max-abs scaling would round ~90 % of the weights to 0; the statistics scale keeps most
    assert float((levels == 0).float().mean()) < 0.5
    binary = create_model("tfc", (1, 8, 8), 10, _bits(1, 1), 0.5)
    qw = binary.hidden[3].quant_weight()
    assert set((qw.value / qw.scale).unique().tolist()) == {-1.0, 1.0}
    x = torch.randint(0, 256, (4, 1, 8, 8)).float()
    act = binary.hidden[2]  # the bipolar sign activation after BatchNorm
    assert set(act(torch.randn(64)).unique().tolist()) == {-1.0, 1.0}
    assert binary(x).shape == (4, 10)


def test_zoo_topologies_follow_bnn_pynq():
    cnv = make_arch("cnv", (3, 32, 32), 10, _bits(1, 1, 1))
    convs = [s for s in cnv.layers if s.kind == "conv"]
    assert [c.out_ch for c in convs] == [64, 64, 128, 128, 256, 256]
    assert all(c.padding == 0 and c.kernel == 3 for c in convs)  # BNN-PYNQ: unpadded
    assert [s.kind for s in cnv.layers].count("maxpool") == 2 and cnv.hidden == (512, 512)
    mnist = make_arch("cnv", (1, 28, 28), 10, _bits(1, 1))
    assert sum(c.padding for c in mnist.layers if c.kind == "conv") == 0  # bipolar: no pads
    assert create_model("cnv", (1, 28, 28), 10, _bits(2, 2), 0.25)(
        torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert make_arch("tfc", (1, 28, 28)).hidden == (64, 64, 64)
    assert make_arch("sfc", (1, 28, 28)).hidden == (256, 256, 256)
    assert make_arch("lfc", (1, 28, 28)).hidden == (1024, 1024, 1024)
    # the 8x8 CNV keeps its compact form at 4 bits (other tests rely on it)
    assert make_arch("cnv", (1, 8, 8), 10, None, 0.25).hidden == (32,)


def test_training_defaults_by_bit_width():
    assert defaults_for(4, 4) == {} and defaults_for(8, 4) == {}
    assert defaults_for(1, 1)["lr"] == 0.2 and defaults_for(1, 1)["weight_decay"] == 0.0
    assert defaults_for(2, 2) == {"warmup_epochs": 1, "clip_grad_norm": 5.0}
    same = TrainSettings(epochs=3)
    assert with_defaults_for(same, 4, 4) is same
    explicit = with_defaults_for(TrainSettings(lr=0.01), 1, 1)
    assert explicit.lr == 0.01 and explicit.weight_decay == 0.0 and explicit.warmup_epochs == 1


def test_near_chance_warning_in_record(digits, tmp_path):
    assert near_chance_warning(50.0, 10) is None
    assert "near chance" in near_chance_warning(11.0, 10)
    run = RunDir(tmp_path)
    settings = BaselineSettings(model="tfc", width=0.25, bits=_bits(2, 2),
                                train=TrainSettings(epochs=1, lr=1e-6, batch_size=64))
    rec = train_baseline(run, digits, settings, progress=False)
    assert rec.accuracy.val < 20
    assert "near chance" in rec.details["warnings"][0]


def test_w2a2_cnv_learns_on_digits_in_seconds(digits):
    torch.manual_seed(0)
    model = create_model("cnv", digits.input_shape, 10, _bits(2, 2), 0.25)
    settings = with_defaults_for(TrainSettings(epochs=4, batch_size=32), 2, 2)
    train(model, digits.train, digits.val, settings, progress=False)
    assert evaluate(model, digits.test) >= 85  # chance: 10 %


def test_channel_surgery_keeps_low_bit_scales():
    torch.manual_seed(0)
    model = create_model("tfc", (1, 8, 8), 10, _bits(2, 2), 0.5).eval()
    x = torch.randint(0, 256, (8, 1, 8, 8)).float()
    # group hidden.1 (module hidden.3) is 2-bit: per-output-channel statistics scales
    pruned = remove_channels(model, {"hidden.1": [0, 5, 7]}).model
    keep = [c for c in range(32) if c not in (0, 5, 7)]
    inp = model.input_quant(x / 255).flatten(1)
    before = model.hidden[:4](inp)[:, keep]
    after = pruned.hidden[:4](inp)
    assert pruned.arch.hidden == (32, 29, 32)
    torch.testing.assert_close(after, before)


@pytest.mark.slow
@pytest.mark.parametrize("name,w,a,boards", [
    ("cnv", 1, 1, ("pynq-z1", "zcu104", "u250")),
    ("cnv", 2, 2, ("pynq-z1",)),
    ("tfc", 1, 1, ("pynq-z1",)),
    ("tfc", 2, 2, ("pynq-z1",)),
])
def test_low_bit_models_build_and_verify_bit_exact(digits, tmp_path, name, w, a, boards):
    from fpgaslim.hw.api import build_variant

    run = RunDir(tmp_path)
    edge = 1 if w == 1 else None  # w1a1: binary first and last layers too, as in BNN-PYNQ
    settings = BaselineSettings(model=name, width=0.25, bits=_bits(w, a, edge),
                                train=TrainSettings(epochs=2, batch_size=32))
    train_baseline(run, digits, settings, progress=False)
    for board in boards:
        r = build_variant(run, "baseline", board, data=digits, verify_images=5)
        v = r.verification
        assert v.integer_exact and v.mismatched_images == 0, (board, v)
        assert r.finn_verification["streamlined_python"] == "SUCCESS"
        dtypes = [layer.weight_dtype for layer in r.layers if layer.weight_dtype]
        if w == 1:  # bipolar x bipolar became XNOR-popcount (FINN stores such weights BINARY)
            assert dtypes.count("BINARY") >= len(dtypes) - 1
        else:
            assert "INT2" in dtypes
