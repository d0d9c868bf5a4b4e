"""Block methods on your own model: the residual-block protocol (compress/models/blocks.py).

A residual CNN defined here (not from the zoo; its blocks under `layers`, plain Brevitas
quantizers) goes through magnitude pruning (a channel method), layer fusion, then layer
importance (its omegas hooked on the blocks' BatchNorms), then ResConv-Prune (its blocks'
`residual_shortcut` dropped, the net turned plain); the layer-importance and ResConv variants
are exported, built by FINN (estimate) and verified bit-exact. A model without the protocol,
without `residual_end` or `residual_shortcut`, gets the clear error naming the method, the
block and what it needs; the zoo ResNet's protocol reproduces its record, and the zoo models
read as a user chain convert as the zoo path does. Real Brevitas training (1 epoch each,
width 4, 8x8 digits), real FINN.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import brevitas.nn as qnn
import pytest
import torch
from brevitas.inject.enum import ScalingImplType
from brevitas.quant import Uint8ActPerTensorFloat
from torch import nn
from torch.utils.data import TensorDataset

README = Path(__file__).resolve().parent.parent / "docs" / "bring-your-own.md"


class PixelQuant(Uint8ActPerTensorFloat):
    scaling_impl_type = ScalingImplType.CONST
    scaling_init = 1.0


def qconv(cin: int, cout: int, k: int, stride: int = 1) -> qnn.QuantConv2d:
    return qnn.QuantConv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False,
                           weight_bit_width=4)


class NoEndBlock(nn.Module):
    """relu(q(bn2(conv2(relu(bn1(conv1 x))))) + q(shortcut x)), q one shared quantizer; the
    protocol without layer importance's BatchNorm or ResConv-Prune's shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = qconv(cin, cout, 3, stride), nn.BatchNorm2d(cout)
        self.relu1 = qnn.QuantReLU(bit_width=4)
        self.conv2, self.bn2 = qconv(cout, cout, 3), nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(qconv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())
        self.add_q = qnn.QuantIdentity(bit_width=6)
        self.relu = qnn.QuantReLU(bit_width=4, return_quant_tensor=True)

    def forward(self, x):
        f = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu(self.add_q(f) + self.add_q(self.shortcut(x)))


class Block(NoEndBlock):
    residual_end = "bn2"  # layer importance: the BatchNorm that ends F(x)
    residual_shortcut = "shortcut"  # ResConv-Prune: S(x), dropped when the net turns plain


class ResCNN(nn.Module):
    """Stem, 4 blocks (8x8: two, then 4x4: a downsampling one and one more), max-pool, FC."""

    def __init__(self, in_shape=(1, 8, 8), num_classes=10, ch=4, omega_ready=True):
        super().__init__()
        blk = Block if omega_ready else NoEndBlock
        self.inp = qnn.QuantIdentity(act_quant=PixelQuant)
        self.stem = nn.Sequential(
            qnn.QuantConv2d(in_shape[0], ch, 3, padding=1, bias=False, weight_bit_width=8),
            nn.BatchNorm2d(ch), qnn.QuantReLU(bit_width=4, return_quant_tensor=True))
        self.layers = nn.ModuleList([blk(ch, ch), blk(ch, ch), blk(ch, 2 * ch, 2),
                                     blk(2 * ch, 2 * ch)])
        self.pool = nn.MaxPool2d(in_shape[1] // 2)
        self.fc = qnn.QuantLinear(2 * ch, num_classes, bias=False, weight_bit_width=8)

    def residual_blocks(self):
        return [f"layers.{i}" for i in range(len(self.layers))]

    def forward(self, x):
        x = self.stem(self.inp(x / 255.0))
        for block in self.layers:
            x = block(x)
        return self.fc(self.pool(x).flatten(1))


class NoBlocks(ResCNN):
    residual_blocks = None  # a user model without the protocol


def test_zoo_protocol_traces_like_the_record():
    """The zoo ResNet's residual_blocks() traced gives the blocks its record describes."""
    from fpgaslim.compress.block_surgery import list_blocks, traced_blocks
    from fpgaslim.compress.models import create_model

    model = create_model("resnet14", (1, 8, 8), width=0.25)
    arch = model.arch
    flags = dict(removed=[i for i, b in enumerate(arch.blocks) if b.removed],
                 omegas=[i for i, b in enumerate(arch.blocks) if b.omega])
    assert traced_blocks(model, **flags) == list_blocks(arch)


@pytest.mark.parametrize("name", ["resnet14", "cnv"])
def test_zoo_model_as_a_user_chain_converts_like_the_zoo(name, monkeypatch):
    """ResConv-Prune's chain read off the model (plain_chain, your own model's path) gives the
    zoo conversion's network: the same layers, bit widths, head and weights (ResNet: blocks
    named by the protocol, shortcut dropped; CNV: hidden Linear-BatchNorm1d layers)."""
    import copy

    from fpgaslim.compress.models import create_model
    from fpgaslim.compress.models.arch import UserArch
    from fpgaslim.compress.models.resnet import BasicBlock
    from fpgaslim.compress.resconv_net import to_resconv

    monkeypatch.setattr(BasicBlock, "residual_shortcut", "shortcut", raising=False)
    model = create_model(name, (1, 8, 8), width=0.25)
    user = copy.deepcopy(model)
    user.arch = UserArch(name=model.arch.name, in_shape=model.arch.in_shape,
                         num_classes=model.arch.num_classes)
    torch.manual_seed(0)  # the new 1x1 shortcut convs are random
    zoo = to_resconv(model)
    torch.manual_seed(0)
    ours = to_resconv(user)

    def unnamed(spec):  # a CNV's zoo names are its ConvBNAct modules, ours their convs
        return spec.model_copy(update={"layers": tuple(
            s.model_copy(update={"name": "-"}) if s.kind == "resconv" else s
            for s in spec.layers)})

    assert unnamed(ours.spec) == unnamed(zoo.spec)
    assert [s.name for s in ours.spec.resconvs()][:2] == (
        ["stem", "blocks.0.conv1"] if name == "resnet14" else ["features.0.conv",
                                                               "features.1.conv"])
    a, b = zoo.state_dict(), ours.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_user_model_fusion_importance_and_finn(tmp_path, digits):
    import fpgaslim
    from fpgaslim.compress.block_surgery import block_omegas, list_blocks
    from fpgaslim.compress.models.fold import fold_omegas
    from fpgaslim.compress.resconv_net import to_resconv
    from fpgaslim.compress.train import evaluate

    torch.manual_seed(0)
    run = tmp_path / "run"
    rec = fpgaslim.add_model(run, ResCNN(), digits, train={"epochs": 1, "batch_size": 64})
    assert rec.arch.kind == "user"
    # magnitude pruning (a channel method) on the user model: Torch-Pruning picks among the
    # groups DepGraph can cut alone (the blocks' inner widths); no fine-tune, one bisection
    mp = fpgaslim.get_method("magnitude-prune").Settings(
        macs_reduction=0.3, macs_tolerance=0.3, steps=1, epochs=0, round_to=2)
    [cut] = fpgaslim.run_method(run, "magnitude-prune", "baseline", mp, data=digits)
    assert cut.arch.pruned and {n for n, _ in cut.arch.pruned} <= {
        f"layers.{i}.conv1" for i in range(4)}  # never a residual stream or the classifier
    assert 0.4 * rec.macs <= cut.macs <= 0.7 * rec.macs
    again = fpgaslim.RunDir(run).load_model(cut.id)  # factory + replayed cuts, weights_only
    assert evaluate(again, digits.test) == cut.accuracy.test

    lf = fpgaslim.get_method("layer-fusion").Settings(
        short_epochs=1, long_epochs=1, group_size=1, max_removals=1)
    [fused] = fpgaslim.run_method(run, "layer-fusion", "baseline", lf, data=digits)
    # the thinnest removable block is 0 (ties: earliest); its carrier the next one, same map
    assert fused.details["fused_blocks"] == [0] and fused.details["carriers"] == [1]
    assert fused.arch.removed_blocks == (0,) and fused.depth == rec.depth - 2
    model = fpgaslim.RunDir(run).load_model(fused.id)  # factory + replayed edit, weights_only
    assert isinstance(model.layers[0], nn.Identity)
    assert [b.index for b in list_blocks(model) if b.removable] == [1, 3]

    li = fpgaslim.get_method("layer-importance").Settings(
        train_epochs=1, retrain_epochs=1, k=1, target_units=2, tolerance=100.0,
        timing_repeats=1)
    out = fpgaslim.run_method(run, "layer-importance", fused.id, li, data=digits)
    assert [v.id for v in out] == [f"{fused.id}.li0", f"{fused.id}.li1"]
    step0 = fpgaslim.RunDir(run).load_model(out[0].id)
    assert sorted(block_omegas(step0)) == [1, 3]  # not block 2: it starts the 4x4 stage
    last = out[1]
    picked = last.details["removed_units"]
    assert len(picked) == 1 and picked[0] in (1, 3)
    assert last.arch.removed_blocks == tuple(sorted((0, *picked)))
    reduced = fpgaslim.RunDir(run).load_model(last.id)
    with torch.no_grad():
        reduced.get_submodule(f"layers.{4 - picked[0]}.bn2").omega.value.fill_(0.5)
        x = digits.test.tensors[0][:16]
        assert torch.allclose(fold_omegas(reduced)(x), reduced(x), atol=1e-4)
    assert not any(n.endswith("omega.value") for n, _ in fold_omegas(reduced).named_parameters())
    # ResConv-Prune's conversion takes the omega folded (and leaves the model as it is)
    end = reduced.get_submodule(f"layers.{4 - picked[0]}.bn2")
    [conv2] = [b for b in to_resconv(reduced).blocks()
               if b.spec.name == f"layers.{4 - picked[0]}.conv2"]
    assert torch.allclose(conv2.bn.weight, 0.5 * end.weight) and end.omega.value == 0.5

    report = fpgaslim.build_job(run, last.id, "pynq-z1", verify_images=4, data=digits)
    assert report.verification.integer_exact and report.verification.images == 4

    # ResConv-Prune on the reduced model (2 blocks removed, omegas folded): every conv left on
    # the main path a ResConv (names from the model), shortcuts and adds dropped; FINN-exact
    rc = fpgaslim.get_method("resconv").Settings(**{
        "lambda": 0.05, "rate": 0.4, "sparse_epochs": 1, "finetune_epochs": 1,
        "calibration_images": 64, "batch_size": 64})
    x, y = digits.train.tensors
    few = dataclasses.replace(digits, train=TensorDataset(x[:256], y[:256]))
    [plain] = fpgaslim.run_method(run, "resconv", last.id, rc, data=few)
    kept = [i for i in range(4) if i not in last.arch.removed_blocks]
    names = [r["name"] for r in plain.details["resconv_layers"]]
    assert names == ["stem.0", *(f"layers.{i}.conv{j}" for i in kept for j in (1, 2))]
    assert plain.arch.kind == "plain" and plain.details["parent_kind"] == "user"
    assert plain.details["pruned_layers"] == 2 and plain.details["fusion_max_abs_diff"] < 1e-4
    assert plain.arch.bits.tag == "w4a4" and plain.arch.bits.first_weight == 8
    hw = fpgaslim.build_job(run, plain.id, "pynq-z1", verify_images=4, data=digits)
    assert hw.verification.integer_exact and hw.verification.images == 4
    assert not {"DuplicateStreams", "AddStreams", "ElementwiseAdd"} & set(hw.op_counts)
    assert report.op_counts.get("DuplicateStreams", 0) > 0  # the parent had residual adds


def test_without_the_protocol_a_clear_error(tmp_path, digits):
    import fpgaslim
    from fpgaslim.core.errors import ConfigError

    run = tmp_path / "run"
    fpgaslim.add_model(run, NoBlocks(), digits)
    for method in ("layer-fusion", "layer-importance"):
        settings = fpgaslim.get_method(method).Settings.preset("cpu")
        with pytest.raises(ConfigError, match=rf"method '{method}' needs its residual blocks, "
                           r"named by a residual_blocks\(\) method .*Bring your own.*no "
                           r"residual_blocks\(\)"):
            fpgaslim.run_method(run, method, "baseline", settings, data=digits)
    run2 = tmp_path / "run2"
    fpgaslim.add_model(run2, ResCNN(omega_ready=False), digits, kwargs={"omega_ready": False})
    with pytest.raises(ConfigError, match=r"layer-importance needs .*block 'layers.1' "
                       r"\(NoEndBlock\) has no class attribute residual_end"):
        fpgaslim.run_method(run2, "layer-importance", "baseline",
                            fpgaslim.get_method("layer-importance").Settings(), data=digits)
    rc = fpgaslim.get_method("resconv").Settings()
    with pytest.raises(ConfigError, match=r"method 'resconv' needs .*your own .*: ResConv-Prune "
                       r"needs each residual block to name its shortcut: block 'layers.0' "
                       r"\(NoEndBlock\) has no class attribute residual_shortcut"):
        fpgaslim.run_method(run2, "resconv", "baseline", rc, data=digits)
    # undeclared blocks: the projection shortcut reads the block input, as conv1 does
    with pytest.raises(ConfigError, match=r"layers 'layers.2.conv1' and 'layers.2.shortcut.0' "
                       r"read the same tensor \(a branch\).*residual_shortcut"):
        fpgaslim.run_method(run, "resconv", "baseline", rc, data=digits)
    assert fpgaslim.RunDir(run).ids() == ["baseline"] == fpgaslim.RunDir(run2).ids()


def test_resconv_chain_errors_name_the_block_or_layer():
    """What ResConv-Prune cannot turn plain is named, with what to change (no training)."""
    from fpgaslim.compress.models.blocks import plain_chain
    from fpgaslim.core.errors import ConfigError

    class Typo(Block):
        residual_shortcut = "short"

    model = ResCNN()
    model.layers[1] = Typo(4, 4)
    with pytest.raises(ConfigError, match=r"block 'layers.1': residual_shortcut = 'short' must "
                       "name a submodule of the block"):
        plain_chain(model, (1, 8, 8))
    model = ResCNN()
    model.stem[2] = nn.Sigmoid()
    with pytest.raises(ConfigError, match=r"layer 'stem.2' \(Sigmoid\) has no ResConv form"):
        plain_chain(model, (1, 8, 8))
    chain = plain_chain(ResCNN(), (1, 8, 8))  # the model as it is: 9 convs, a 4x4 max-pool
    assert [t[0] for t in chain.trunk] == ["conv"] * 9 + ["maxpool"]
    assert chain.trunk[-1] == ("maxpool", 4) and chain.bits.tag == "w4a4"
    model = ResCNN()
    model.pool = nn.AdaptiveAvgPool2d(1)  # a global average pool: kernel = stride = 4
    assert plain_chain(model, (1, 8, 8)).trunk[-1] == ("avgpool", 4, 4)


def test_readme_residual_blocks_example(tmp_path, monkeypatch):
    """docs/bring-your-own.md's protocol example, as written: the model file and its CLI lines."""
    from click.testing import CliRunner

    from fpgaslim.cli import main

    blocks = dict(re.findall(r"<!-- byo: (\S+) -->\n```\w+\n(.*?)```",
                             README.read_text(encoding="utf-8"), re.DOTALL))
    monkeypatch.chdir(tmp_path)
    for name in ("make_data.py", "my_resnet.py"):
        (tmp_path / name).write_text(blocks[name], encoding="utf-8")
    exec(compile(blocks["make_data.py"], "make_data.py", "exec"), {"__name__": "make_data"})
    for line in blocks["cli_blocks.sh"].strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "fpgaslim", line
        res = CliRunner().invoke(main, argv[1:], catch_exceptions=False)
        assert res.exit_code == 0, f"{line}\n{res.output[-3000:]}"
    import fpgaslim

    rec = fpgaslim.RunDir(tmp_path / "runs/res").record("baseline.lf1")
    assert rec.method == "layer-fusion" and len(rec.arch.removed_blocks) == 1
    rc = fpgaslim.RunDir(tmp_path / "runs/res").record("baseline.rc1")
    assert rc.method == "resconv" and rc.arch.kind == "plain" and rc.details["pruned_layers"]
