"""Channel sparsity and dependency-aware channel removal on real Brevitas models."""

from __future__ import annotations

import pytest
import torch

from fpgaslim.compress.channel_surgery import prunable_groups, remove_channels, thin_layers
from fpgaslim.compress.models import create_model
from fpgaslim.compress.sparsity import SparsityReport, channel_sparsity, select_channels
from fpgaslim.compress.variants import RunDir, load_checkpoint
from fpgaslim.core.errors import ConfigError


def _kill(block, channels: list[int]) -> None:
    """Make inner channels dead: conv1 filter and conv2 input slice zero, BN output -1, so the
    quantized ReLU output is 0 on every input (and no per-tensor weight max-abs moves)."""
    with torch.no_grad():
        for c in channels:
            block.conv1.weight[c] = 0
            block.bn1.weight[c] = 0
            block.bn1.bias[c] = -1
            block.conv2.weight[:, c] = 0


def test_dead_channels_are_found_and_removed_exactly(resnet8_run, digits):
    model = resnet8_run.load_model("baseline")
    dead = {0: [1, 5], 1: [0, 3, 7], 2: [10, 40]}
    for b, chans in dead.items():
        _kill(model.blocks[b], chans)
    report = channel_sparsity(model, digits.val)
    assert report.images == len(digits.val)
    for b, chans in dead.items():
        vals = report.layers[f"blocks.{b}.mid"]
        assert all(vals[c] == 1.0 for c in chans)
    # only the dead channels have sparsity exactly 1 in this trained model
    sel = select_channels(report, 1.0 - 1e-9)
    assert sel.remove == {f"blocks.{b}.mid": c for b, c in dead.items()}
    pruned = remove_channels(model, sel.remove).model
    assert [b.mid for b in pruned.arch.blocks] == [14, 29, 62]
    assert pruned.blocks[2].conv1.weight.shape[0] == 62
    assert pruned.blocks[2].bn1.running_mean.shape == (62,)
    assert pruned.blocks[2].conv2.weight.shape[1] == 62
    x = torch.cat([digits.test.tensors[0][:100], digits.val.tensors[0][:20]])
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), pruned(x), atol=1e-5)
    # the caller's model is untouched
    assert model.blocks[2].conv1.weight.shape[0] == 64


def test_pruned_model_checkpoint_reloads_identically(resnet8_run, digits, tmp_path):
    from fpgaslim.compress.variants import Accuracy, Variant, describe

    model = resnet8_run.load_model("baseline")
    pruned = remove_channels(model, {"blocks.1.mid": list(range(0, 32, 2)),
                                     "blocks.2.mid": [3]}).model
    run = RunDir(tmp_path)
    rec = Variant(id="p", method="test", dataset="digits", **describe(pruned),
                  accuracy=Accuracy())
    run.save(pruned, rec)
    again = load_checkpoint(run.variant_dir("p") / "model.pt")
    assert again.arch == pruned.arch and again.arch.blocks[1].mid == 16
    x = digits.test.tensors[0][:64]
    with torch.no_grad():
        assert torch.equal(pruned(x), again(x))
    assert rec.params < resnet8_run.record("baseline").params


def test_residual_stream_cut_keeps_every_coupled_layer_consistent(digits):
    torch.manual_seed(0)
    model = create_model("resnet8", digits.input_shape).eval()
    names = [g.name for g in prunable_groups(model, residual=True)]
    assert names == ["blocks.0.mid", "blocks.1.mid", "blocks.2.mid",
                     "residual.0", "residual.1", "residual.2"]
    pruned = remove_channels(model, {"residual.0": [0, 1], "residual.1": [5]},
                             residual=True).model
    a = pruned.arch
    assert a.stem == 14 and (a.blocks[0].in_ch, a.blocks[0].out_ch) == (14, 14)
    assert (a.blocks[1].in_ch, a.blocks[1].out_ch, a.blocks[2].in_ch) == (14, 31, 31)
    assert pruned.blocks[1].shortcut[0].weight.shape[:2] == (31, 14)
    out = pruned(digits.test.tensors[0][:4])
    assert out.shape == (4, 10)


def test_cnv_convs_and_hidden_layer_are_prunable(cnv_run, digits):
    model = cnv_run.load_model("baseline")
    groups = {g.name: g.size for g in prunable_groups(model)}
    assert groups == {"features.0": 16, "features.1": 16, "features.3": 64, "hidden.0": 32}
    report = channel_sparsity(model, digits.val, limit=64)
    assert set(report.layers) == set(groups) and report.images == 64
    pruned = remove_channels(model, {"features.1": [0, 2], "features.3": list(range(60)),
                                     "hidden.0": [7]}).model
    assert [getattr(s, "out_ch", None) for s in pruned.arch.layers] == [16, 14, None, 4]
    assert pruned.arch.hidden == (31,)
    assert thin_layers(pruned) == ["features.3.conv"]
    assert pruned(digits.test.tensors[0][:3]).shape == (3, 10)


def test_threshold_selection_keeps_one_channel_and_says_so():
    report = SparsityReport(images=10, layers={"a": [0.9, 0.95, 0.7], "b": [0.1, 0.6, 0.99]})
    sel = select_channels(report, 0.5)
    assert sel.remove == {"a": [0, 1], "b": [1, 2]} and sel.floored == ["a"]  # 0.7 kept
    assert sel.counts() == {"a": 2, "b": 2} and sel.total == 4
    sel = select_channels(report, 0.9, min_channels=2)
    assert sel.remove == {"a": [1], "b": [2]} and sel.floored == []
    # strictly greater than the threshold, as the paper says
    assert select_channels(report, 0.95).remove["a"] == []


def test_bad_plans_are_refused_with_the_group_named(digits):
    model = create_model("resnet8", digits.input_shape).eval()
    with pytest.raises(ConfigError, match="no prunable channel group 'blocks.9.mid'"):
        remove_channels(model, {"blocks.9.mid": [0]})
    with pytest.raises(ConfigError, match="blocks.0.mid: removing all 16"):
        remove_channels(model, {"blocks.0.mid": list(range(16))})
    with pytest.raises(ConfigError, match="out of range"):
        remove_channels(model, {"blocks.0.mid": [16]})


def test_channel_multiple_puts_back_the_least_sparse():
    report = SparsityReport(images=1, layers={"a": [0.9, 0.8, 0.95, 0.6, 0.99, 0.1, 0.2, 0.3]})
    sel = select_channels(report, 0.7, channel_multiple=4)  # 4 selected, 4 left: fine
    assert sel.remove == {"a": [0, 1, 2, 4]} and sel.rounded == []
    sel = select_channels(report, 0.5, channel_multiple=4)  # 5 selected, 3 left -> keep 4
    assert sel.remove == {"a": [0, 1, 2, 4]} and sel.rounded == ["a"]  # 0.6 put back
