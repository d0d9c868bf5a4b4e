"""Dynamic channel pruning: the threshold search (scripted evaluator) and the method end to end
on the trained ResNet-8 (digits)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from fpgaslim.compress import dynamic_prune as dp
from fpgaslim.compress.data import DataSplits
from fpgaslim.compress.methods import get_method
from fpgaslim.compress.train import evaluate
from fpgaslim.core.errors import ConfigError


def _search(accuracy, target=95.0, **kw):
    tried: list[float] = []

    def attempt(p: float) -> float:
        tried.append(p)
        return accuracy(p)

    steps, kept = dp.binary_search(attempt, target, **kw)
    assert [s.threshold for s in steps] == tried
    return tried, steps, kept


def test_search_tries_thresholds_in_the_specified_order():
    # good enough from P >= 0.7 on: accept -> P_u = P_c, P_c = 3/4 P_u + 1/4 P_l;
    # reject -> P_l = P_c, P_c = midpoint; stop once P_u - P_l <= 0.03
    tried, steps, kept = _search(lambda p: 100.0 if p >= 0.7 else 90.0)
    assert tried == [0.75, 0.6875, 0.71875, 0.7109375]
    assert [s.accepted for s in steps] == [True, False, True, True]
    assert kept == 3 and steps[kept].threshold == 0.7109375
    assert steps[2].interval == (0.6875, 0.75)


def test_search_never_accepting_moves_up_and_keeps_nothing():
    tried, steps, kept = _search(lambda p: 0.0)
    assert tried == [0.75, 0.875, 0.9375, 0.96875, 0.984375]
    assert kept is None and not any(s.accepted for s in steps)


def test_search_always_accepting_prunes_more_each_step_and_keeps_the_last():
    tried, steps, kept = _search(lambda p: 99.0)
    assert tried[:3] == [0.75, 0.6875, 0.640625]
    assert all(a > b for a, b in zip(tried, tried[1:]))
    assert len(tried) == 9 and kept == 8
    low, high = steps[-1].interval
    assert high - low > 0.03 and tried[-1] - low <= 0.03  # stopped right after the gap closed


def test_search_accepts_on_equality_and_respects_its_settings():
    tried, steps, kept = _search(lambda p: 95.0, stop_gap=0.2)
    assert tried == [0.75, 0.6875] and kept == 1  # accuracy == target is good enough
    tried, _, kept = _search(lambda p: 96.0 if p > 0.8 else 0.0, p_low=0.6, p_high=0.9,
                             stop_gap=0.05)
    assert tried == pytest.approx([0.75, 0.825, 0.80625, 0.7921875]) and kept == 2


def test_settings_presets_and_validation():
    full = dp.Settings.preset("full")
    assert (full.lr, full.epochs, full.patience, full.restart_every) == (0.01, 320, 20, 160)
    assert full.stop_gap == 0.03 and full.iterations == 3 and full.thin_channels == 6
    assert full.bounds == "measured" and full.gap_fraction == 0.06
    paper = dp.Settings.preset("paper")
    assert (paper.bounds, paper.p_low, paper.p_high, paper.stop_gap) == ("paper", 0.5, 1.0, 0.03)
    assert paper.epochs == full.epochs and paper.restart_every == full.restart_every
    assert dp.Settings.preset("cpu").restart_every == 0
    with pytest.raises(ValueError, match="restart_every"):  # a warm restart inside a trial
        dp.Settings(epochs=3, restart_every=2)
    cpu = dp.Settings.preset("cpu", tolerance=1.0)
    assert cpu.tolerance == 1.0 and cpu.epochs < 10
    assert cpu.train_settings().restart_every == cpu.restart_every
    with pytest.raises(ConfigError, match="unknown preset 'gpu'"):
        dp.Settings.preset("gpu")
    with pytest.raises(ValueError, match="p_low"):
        dp.Settings(p_low=0.9, p_high=0.6)
    with pytest.raises(ValueError):
        dp.Settings(tolerence=1.0)
    assert get_method("dynamic-prune") is dp


def _small(digits, n_train: int) -> DataSplits:
    """Digits with a subset of the training images: fine-tuning in a test takes seconds."""
    x, y = digits.train.tensors
    return DataSplits(digits.name, TensorDataset(x[:n_train], y[:n_train]), digits.val,
                      digits.test, digits.num_classes, digits.class_names, digits.source)


SETTINGS = dict(epochs=1, iterations=2, gap_fraction=0.2, tolerance=3.0, restart_every=0,
                patience=None, channel_multiple=4)


@pytest.fixture(scope="module")
def pruned(resnet8_run, digits):
    """The shared trained ResNet-8 run, dynamically pruned with 1-epoch fine-tuning on 320
    training images (seconds per trial). Variant ids are this method's own."""
    data = _small(digits, 320)
    settings = dp.Settings.preset("cpu", **SETTINGS)
    base = resnet8_run.record("baseline")
    variants = dp.run(resnet8_run, "baseline", data, settings, progress=False)
    return resnet8_run, base, variants, data, settings


def test_dynamic_prune_on_trained_resnet8(pruned, digits):
    run, base, variants, data, settings = pruned
    assert variants and variants[0].id == "baseline.dp1" and variants[0].parent == "baseline"
    for prev, v in zip([base, *variants], variants):
        assert v.params < prev.params and v.macs < prev.macs
        assert v.accuracy.val >= v.details["target_val"]
        assert v.details["target_val"] == pytest.approx(v.details["baseline_val"] - 3.0)
        trials = v.details["trials"]
        b = v.details["search_bounds"]  # measured: the range of the start's channel sparsity
        vals = [x for xs in v.details["sparsity"]["layers"].values() for x in xs]
        assert b["p_low"] == min(vals) and max(vals) < b["p_high"] < max(vals) + 1e-5
        assert b["stop_gap"] == pytest.approx(0.2 * (b["p_high"] - b["p_low"]))
        assert trials[0]["threshold"] == pytest.approx((b["p_low"] + b["p_high"]) / 2)
        # the first trial of every iteration prunes something and is fine-tuned
        assert trials[0]["removed_total"] > 0 and trials[0]["fine_tuned"]
        assert sum(v.details["sparsity_histogram"]["counts"]) == len(vals)
        kept = [t for t in trials if t["accepted"]][-1]
        assert kept["threshold"] == v.details["threshold"]
        assert kept["removed"] == v.details["removed"] and kept["removed_total"] > 0
        widths = {f"blocks.{i}.mid": b.mid for i, b in enumerate(v.arch.blocks)}
        assert all(w % 4 == 0 for w in widths.values())  # channel_multiple
        for name, n in kept["removed"].items():
            assert widths[name] == v.details["widths_before"][name] - n
        assert v.details["thin_layers"] == sum(1 for w in v.widths.values() if w < 6)
        assert (run.variant_dir(v.id) / "sparsity.png").stat().st_size > 5000
        assert set(v.details["sparsity"]["layers"]) == {"blocks.0.mid", "blocks.1.mid",
                                                        "blocks.2.mid"}
        model = run.load_model(v.id)
        assert evaluate(model, digits.test) == pytest.approx(v.accuracy.test)
    keep = {"qonnx"}  # other tests may export the shared baseline meanwhile
    assert run.record("baseline").model_dump(exclude=keep) == base.model_dump(exclude=keep)
    # finished variants are returned as they are, not redone
    again = dp.run(run, "baseline", data, settings, progress=False)
    assert [v.model_dump() for v in again[:len(variants)]] == [v.model_dump() for v in variants]


@pytest.mark.slow
def test_pruned_variants_build_and_verify_in_finn_with_less_memory(pruned, digits):
    from fpgaslim.hw.api import build_variant

    run, _, variants, _, _ = pruned
    # verify_images=10: the baseline build test_hw_build makes, reused from disk in a full run
    ref = build_variant(run, "baseline", "pynq-z1", data=digits, verify_images=10)
    for v in variants:  # every accepted iteration: export, build, verify
        hw = build_variant(run, v.id, "pynq-z1", data=digits, verify_images=6)
        assert hw.verification is not None and hw.verification.integer_exact
        assert hw.verification.images == 6 and hw.verification.argmax_agreement == 1.0
        assert all(r == "SUCCESS" for r in hw.finn_verification.values())
        assert hw.memory.weight_bits_onchip.value < ref.memory.weight_bits_onchip.value
        assert run.record(v.id).qonnx == "model.qonnx.onnx"
    # BRAM_18K is not asserted: FINN packs each layer's weights by its folding, so a pruned
    # layer can take more blocks (measured: 44 input channels -> SIMD 11, 9 BRAM_18K for
    # 101 kbit vs 8 for the unpruned 147 kbit); it is reported by the benchmark.


def test_interrupted_search_replays_its_trial_log(resnet8_run, digits, tmp_path):
    start = resnet8_run.load_model("baseline")
    data = _small(digits, 128)
    settings = dp.Settings.preset("cpu", epochs=1, stop_gap=0.2, tolerance=50.0)
    acc = evaluate(start, data.val)
    first = dp.prune_iteration(start, data, settings, acc - 50.0, 1, tmp_path, acc,
                               progress=False)
    assert (tmp_path / "trials.json").is_file() and (tmp_path / "kept.pt").is_file()
    again = dp.prune_iteration(start, data, settings, acc - 50.0, 1, tmp_path, acc,
                               progress=False)
    assert [t.model_dump() for t in again.trials] == [t.model_dump() for t in first.trials]
    x = digits.test.tensors[0][:32]
    with torch.no_grad():
        assert torch.equal(first.model(x), again.model(x))
    assert again.model.arch == first.model.arch


def test_a_threshold_that_empties_a_layer_keeps_one_channel_and_logs_it(digits, tmp_path):
    from fpgaslim.compress.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet8", digits.input_shape).eval()
    with torch.no_grad():  # every inner channel of block 0 dead: sparsity 1.0
        model.blocks[0].bn1.weight.zero_()
        model.blocks[0].bn1.bias.fill_(-1.0)
    # no fine-tuning: only the bookkeeping; the paper's fixed bounds put the first P at 0.75
    settings = dp.Settings(bounds="paper", epochs=0, stop_gap=0.3)
    res = dp.prune_iteration(model, digits, settings, -1.0, 1, tmp_path, 10.0, progress=False)
    first = res.trials[0]
    assert first.threshold == 0.75 and first.accepted and first.fine_tuned
    assert first.floored == ["blocks.0.mid"] and first.removed["blocks.0.mid"] == 15
    assert "fewer than 1 channel(s) in blocks.0.mid" in first.note
    assert res.model.arch.blocks[0].mid == 1 and res.kept is res.trials[-1]
    assert res.model(digits.test.tensors[0][:2]).shape == (2, 10)


def test_paper_bounds_bracket_a_qat_network_so_the_first_trial_prunes_nothing(resnet8_run,
                                                                               digits, tmp_path):
    """The issue's finding, kept as the `paper` preset's behaviour: no channel of the trained
    QAT ResNet-8 is > 75 % zeros, so P = 0.75 prunes nothing and is not fine-tuned."""
    start = resnet8_run.load_model("baseline")
    settings = dp.Settings.preset("paper", epochs=0, stop_gap=0.2)
    acc = evaluate(start, digits.val)
    res = dp.prune_iteration(start, _small(digits, 64), settings, acc - 50.0, 1, tmp_path, acc,
                             progress=False)
    first = res.trials[0]
    assert first.threshold == 0.75 and first.interval == (0.5, 1.0)
    assert first.removed_total == 0 and not first.fine_tuned and "prunes nothing" in first.note
