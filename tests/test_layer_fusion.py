"""Layer fusion: material/carrier selection on hand-built architectures, carrier-only short
fine-tuning (tensor by tensor), the grouped run with resume and ablations, and real FINN
builds of the parent and a fused variant (bit-exact, fewer layers, faster, less memory)."""

from __future__ import annotations

import copy

import pytest
import torch

from fpgaslim.compress import layer_fusion as lf
from fpgaslim.compress.block_surgery import remove_blocks
from fpgaslim.compress.models import BlockSpec, ResNetArch
from fpgaslim.compress.models.resnet import resnet_arch
from fpgaslim.compress.train import KDSettings, TrainSettings, train
from fpgaslim.compress.variants import load_checkpoint

B = BlockSpec


def arch(*blocks: BlockSpec, stages: tuple[int, ...]) -> ResNetArch:
    return ResNetArch(name="hand", in_shape=(1, 8, 8), num_classes=10, stem=16,
                      blocks=tuple(blocks), stage_of=stages)


def pick(a: ResNetArch) -> tuple[int, int] | None:
    p = lf.select_fusion(a)
    return None if p is None else (p.material, p.carrier)


def test_selection_thinnest_block_and_previous_carrier():
    # a pruned ResNet-14: block 3 is the thinnest removable one; its carrier is block 2
    a = arch(B(in_ch=16, mid=10, out_ch=16), B(in_ch=16, mid=5, out_ch=16),
             B(in_ch=16, mid=2, out_ch=32, stride=2),  # thinnest, but not removable
             B(in_ch=32, mid=3, out_ch=32), B(in_ch=32, mid=20, out_ch=64, stride=2),
             B(in_ch=64, mid=4, out_ch=64), stages=(0, 0, 1, 1, 2, 2))
    assert pick(a) == (3, 2)
    p = lf.select_fusion(a)
    assert p.material_mid == 3 and p.feature_map == (4, 4)
    # ties go to the earliest block
    tie = a.with_blocks([b.model_copy(update={"mid": 4}) if i in (3, 5) else b
                         for i, b in enumerate(a.blocks)])
    assert pick(tie) == (3, 2)


def test_selection_first_block_takes_the_next_one():
    # block 0 has no block before it (only the stem): the next block, same 8x8 output
    a = arch(B(in_ch=16, mid=2, out_ch=16), B(in_ch=16, mid=9, out_ch=16),
             B(in_ch=16, mid=9, out_ch=32, stride=2), stages=(0, 0, 1))
    assert pick(a) == (0, 1)
    # after block 0 is gone, block 1 has no same-size neighbour (block 2 outputs 4x4): the
    # rule never crosses a change of feature-map size, so nothing is left to fuse
    gone = a.with_blocks([a.blocks[0].model_copy(update={"removed": True}), *a.blocks[1:]])
    assert pick(gone) is None


def test_selection_skips_removed_neighbours_and_resnet8():
    assert pick(resnet_arch(8, (1, 8, 8))) is None  # the next block downsamples
    r14 = resnet_arch(14, (1, 8, 8))
    assert pick(r14) == (0, 1)
    blocks = list(r14.blocks)
    blocks[0] = blocks[0].model_copy(update={"removed": True})
    assert pick(r14.with_blocks(blocks)) == (3, 2)  # block 1 has no same-size neighbour left
    a = arch(B(in_ch=16, mid=8, out_ch=16), B(in_ch=16, mid=8, out_ch=16, removed=True),
             B(in_ch=16, mid=4, out_ch=16), stages=(0, 0, 0))
    assert pick(a) == (2, 0)  # the nearest *present* block before


def test_short_finetune_changes_only_the_carrier(resnet14_run, digits):
    teacher = resnet14_run.load_model("baseline")
    p = lf.select_fusion(teacher)
    model = remove_blocks(teacher, [p.material])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    set_mode = lf.freeze_all_but(model, p.carrier)
    sub = torch.utils.data.TensorDataset(*(t[:192] for t in digits.train.tensors))
    train(model, sub, digits.val, TrainSettings(epochs=1, lr=0.05, batch_size=32),
          teacher=copy.deepcopy(teacher), kd=KDSettings(temperature=4.0),
          set_train_mode=set_mode, progress=False)
    after = model.state_dict()
    prefix = f"blocks.{p.carrier}."
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "short fine-tuning changed nothing"
    assert all(k.startswith(prefix) for k in changed), sorted(changed - {
        k for k in changed if k.startswith(prefix)})
    assert f"{prefix}conv1.weight" in changed
    assert f"{prefix}bn1.running_mean" in changed  # the carrier's BN statistics do adapt


@pytest.fixture(scope="module")
def fused(resnet14_run, digits):
    s = lf.Settings(short_epochs=1, long_epochs=1, group_size=2, max_removals=3, batch_size=64)
    return lf.run(resnet14_run, "baseline", digits, s, progress=False), s


def test_run_groups_records_and_resume(fused, resnet14_run, digits):
    variants, s = fused
    parent = resnet14_run.record("baseline")
    assert [v.id for v in variants] == ["baseline.lf1", "baseline.lf2"]
    assert [v.parent for v in variants] == ["baseline", "baseline.lf1"]
    v1, v2 = variants
    assert v1.details["fused_blocks"] == [0, 3] and v1.details["carriers"] == [1, 2]
    assert v2.details["fused_blocks"] == [5] and v2.details["removed_blocks"] == [0, 3, 5]
    assert (parent.depth, v1.depth, v2.depth) == (14, 10, 8)
    assert v2.details["fused_layers_total"] == 6
    assert parent.macs > v1.macs > v2.macs
    for v in variants:
        assert v.method == "layer-fusion" and v.settings == s.model_dump(mode="json")
        assert v.accuracy.val is not None and v.accuracy.test is not None
        assert set(v.timings) == {"short_ft_s", "long_ft_s"}
        assert (resnet14_run.variant_dir(v.id) / "fusion.png").is_file()
        assert not (resnet14_run.variant_dir(v.id) / "work").exists()
        model = resnet14_run.load_model(v.id)
        assert [b.removed for b in model.arch.blocks] == [
            i in v.details["removed_blocks"] for i in range(6)]
        x = digits.test.tensors[0][:32]
        again = load_checkpoint(resnet14_run.variant_dir(v.id) / "model.pt")
        with torch.no_grad():
            assert torch.equal(model(x), again(x))
    assert v2.accuracy.val >= 60  # 3 blocks fewer after 5 epochs in all, real digits
    # resume: finished variants come back as they are, nothing retrains
    again = lf.run(resnet14_run, "baseline", digits, s, progress=False)
    assert [v.created for v in again] == [v.created for v in variants]


def test_ablation_switches(resnet14_run, digits):
    s = lf.Settings(kd=False, short_finetune=False, long_epochs=1, max_removals=1)
    (v,) = lf.run(resnet14_run, "baseline", digits, s, progress=False)
    assert v.id == "baseline.lfcens1"
    assert v.details["ablation"] == {"kd": False, "short_finetune": False}
    step = v.details["steps"][0]
    assert step["short_history"] == [] and step["val_after_short"] == step["val_after_removal"]


def test_presets():
    full = lf.Settings.preset("full")
    assert (full.short_epochs, full.long_epochs, full.group_size, full.temperature,
            full.stop_drop) == (50, 200, 4, 4.0, 3.0)
    assert lf.Settings.preset("cpu").long_epochs < full.long_epochs
    with pytest.raises(Exception, match="valid: cpu, full"):
        lf.Settings.preset("gpu")


@pytest.mark.slow
def test_fused_variant_builds_smaller_and_faster(fused, resnet14_run, digits):
    from fpgaslim.hw.api import build_variant

    variants, _ = fused
    base = build_variant(resnet14_run, "baseline", "pynq-z1", data=digits, verify_images=5)
    last = build_variant(resnet14_run, variants[-1].id, "pynq-z1", data=digits,
                         verify_images=5)
    for r in (base, last):
        v = r.verification
        assert v is not None and v.integer_exact and v.mismatched_images == 0
        assert v.argmax_agreement == 1.0
    assert len(last.layers) < len(base.layers)
    assert last.throughput.latency_us.value < base.throughput.latency_us.value
    assert last.resources["BRAM_18K"].value + last.memory.LUTRAM.value < \
        base.resources["BRAM_18K"].value + base.memory.LUTRAM.value
    assert last.memory.weight_bits_onchip.value < base.memory.weight_bits_onchip.value
    assert last.op_counts.get("DuplicateStreams", 0) < base.op_counts.get("DuplicateStreams", 0)
