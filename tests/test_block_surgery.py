"""Block surgery: removing residual blocks and adding omegas copies every other tensor exactly,
never touches the input model, and refuses blocks whose shapes would not allow x -> x."""

from __future__ import annotations

import pytest
import torch

from fpgaslim.compress.block_surgery import list_blocks, remove_blocks, set_omegas
from fpgaslim.compress.models import create_model
from fpgaslim.compress.models.resnet import resnet_arch
from fpgaslim.compress.variants import Accuracy, RunDir, Variant, describe, load_checkpoint
from fpgaslim.core.errors import ConfigError


def _randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics, so a wrong copy would show in the outputs."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def test_list_blocks_resnet14():
    blocks = list_blocks(resnet_arch(14, (1, 8, 8)))
    assert [b.stage for b in blocks] == [0, 0, 1, 1, 2, 2]
    assert [b.out_hw for b in blocks] == [(8, 8), (8, 8), (4, 4), (4, 4), (2, 2), (2, 2)]
    assert [b.first_of_stage for b in blocks] == [True, False, True, False, True, False]
    assert [b.removable for b in blocks] == [True, True, False, True, False, True]


def test_remove_copies_exactly_and_leaves_parent(digits):
    parent = _randomized(create_model("resnet14", (1, 8, 8), width=0.5))
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    x = digits.test.tensors[0][:16]
    with torch.no_grad():
        ref = parent(x)
    child = remove_blocks(parent, [3])
    assert isinstance(child.blocks[3], torch.nn.Identity)
    assert child.arch.blocks[3].removed and not parent.arch.blocks[3].removed
    state = child.state_dict()
    for k, v in parent.state_dict().items():
        assert torch.equal(v, before[k]), f"parent tensor {k} changed"
        if k.startswith("blocks.3."):
            assert k not in state
        else:
            assert torch.equal(state[k], v), f"{k} not copied exactly"
    with torch.no_grad():
        assert torch.equal(parent(x), ref)
        out = child(x)
    assert out.shape == ref.shape and not torch.equal(out, ref)
    assert describe(child)["depth"] == describe(parent)["depth"] - 2


@pytest.mark.parametrize("index, why", [(2, "shapes"), (9, "does not exist")])
def test_remove_refuses_bad_blocks(index, why):
    model = create_model("resnet14", (1, 8, 8), width=0.5)
    with pytest.raises(ConfigError, match=why):
        remove_blocks(model, [index])
    with pytest.raises(ConfigError, match="already removed"):
        remove_blocks(remove_blocks(model, [1]), [1])


def test_plain_network_is_refused():
    with pytest.raises(ConfigError, match="residual"):
        remove_blocks(create_model("cnv", (1, 8, 8), width=0.25), [0])


def test_omega_is_exact_at_one(digits):
    parent = _randomized(create_model("resnet14", (1, 8, 8), width=0.5))
    x = digits.test.tensors[0][:16]
    with torch.no_grad():
        assert torch.equal(set_omegas(parent, [3, 5])(x), parent(x))


def test_surgery_checkpoint_roundtrip(resnet14_run, digits, tmp_path):
    """save -> load_checkpoint rebuilds a removed + omega model exactly (trained quantizers)."""
    parent = resnet14_run.load_model("baseline")
    model = set_omegas(remove_blocks(parent, [1]), [3, 5])
    with torch.no_grad():
        model.blocks[5].omega.fill_(0.25)
    run = RunDir(tmp_path)
    run.save(model, Variant(id="t", method="test", dataset="digits", **describe(model),
                            accuracy=Accuracy()))
    loaded = load_checkpoint(run.variant_dir("t") / "model.pt")
    assert loaded.arch == model.arch and loaded.arch.blocks[1].removed
    x = digits.test.tensors[0][:32]
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
