"""Learned layer importance: omegas only on non-first units, the smallest |omega| goes first,
the recursive loop records what the issue asks for, resumes, and its variants verify
bit-exactly in FINN."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fpgaslim.compress import layer_importance as li
from fpgaslim.compress.block_surgery import list_blocks
from fpgaslim.compress.models import create_model
from fpgaslim.compress.train import evaluate
from fpgaslim.compress.variants import RunDir, load_checkpoint
from fpgaslim.core.errors import ConfigError


def test_omega_only_on_non_first_units():
    model = li.with_importance(create_model("resnet14", (1, 8, 8), width=0.5))
    assert [b.omega for b in model.arch.blocks] == [False, True, False, True, False, True]
    assert li.omega_units(model) == [1, 3, 5]
    assert all(b.index not in li.omega_units(model) for b in list_blocks(model)
               if b.first_of_stage)
    with pytest.raises(ConfigError, match="first unit of each stage"):
        li.with_importance(create_model("resnet8", (1, 8, 8)))


def test_smallest_abs_omega_is_picked():
    model = li.with_importance(create_model("resnet20", (1, 8, 8), width=0.5))
    units = li.omega_units(model)
    assert units == [1, 2, 4, 5, 7, 8]  # 3 units per stage, firsts (0, 3, 6) excluded
    values = {1: 0.9, 2: -0.05, 4: 0.3, 5: 0.07, 7: -1.2, 8: 0.06}
    with torch.no_grad():
        for i, w in values.items():
            model.blocks[i].omega.fill_(w)
    assert li.pick_units(model, 1) == [2]  # |-0.05| is the smallest, sign ignored
    assert li.pick_units(model, 3) == [2, 5, 8]
    with torch.no_grad():
        model.blocks[5].omega.fill_(0.05)
    assert li.pick_units(model, 1) == [2]  # ties: the earliest


@pytest.fixture(scope="module")
def reduced(resnet14_run, digits):
    s = li.Settings(train_epochs=1, retrain_epochs=1, target_units=4, tolerance=100.0,
                    timing_repeats=2)
    return li.run(resnet14_run, "baseline", digits, s, progress=False), s


def test_recursive_reduction_records(reduced, resnet14_run, digits):
    variants, s = reduced
    assert [v.id for v in variants] == ["baseline.li0", "baseline.li1", "baseline.li2"]
    assert [v.parent for v in variants] == ["baseline", "baseline.li0", "baseline.li1"]
    for prev, cur in zip(variants, variants[1:]):
        w = {int(k): v for k, v in prev.details["omegas"].items()}
        smallest = min(w, key=lambda i: (abs(w[i]), i))
        assert cur.details["removed_units"] == [smallest]
        assert cur.depth == prev.depth - 2 and cur.macs < prev.macs
        assert cur.params < prev.params
    assert variants[-1].details["removed_blocks"] == sorted(
        variants[1].details["removed_units"] + variants[2].details["removed_units"])
    for v in variants:
        assert set(v.details["removed_blocks"]) <= {1, 3, 5}  # never a first unit of a stage
        assert v.timings["forward_ms_per_batch"] > 0 and v.timings["backward_ms_per_batch"] > 0
        assert len(v.details["steps"]) == v.details["step"] + 1
        for name in ("omega.png", "accuracy_vs_depth.png"):
            assert (resnet14_run.variant_dir(v.id) / name).stat().st_size > 1000
        model = resnet14_run.load_model(v.id)
        x = digits.test.tensors[0][:32]
        with torch.no_grad():
            assert torch.equal(model(x), load_checkpoint(
                resnet14_run.variant_dir(v.id) / "model.pt")(x))
    row = variants[-1].details["steps"][-1]
    assert {"depth", "val_accuracy", "test_accuracy", "macs", "params", "forward_ms_per_batch",
            "backward_ms_per_batch", "omegas", "residual_norms"} <= set(row)
    # every step's drop is reported against the parent
    parent = resnet14_run.record("baseline")
    for r in variants[-1].details["steps"]:
        assert r["parent_val_accuracy"] == pytest.approx(evaluate(
            resnet14_run.load_model("baseline"), digits.val))
        assert r["parent_test_accuracy"] == pytest.approx(parent.accuracy.test)
        assert r["drop_vs_parent_test"] == pytest.approx(
            r["parent_test_accuracy"] - r["test_accuracy"])
        assert r["drop_vs_parent_val"] == pytest.approx(
            r["parent_val_accuracy"] - r["val_accuracy"])
    # step 0 learns the omegas at the fine-tuning lr: it starts from the trained parent and
    # must not undo it (at the baseline's lr 0.05 it cost 5.6 points on Fashion-MNIST)
    assert s.omega_lr == 0.01
    assert variants[0].details["steps"][0]["drop_vs_parent_val"] <= 2.0
    log = resnet14_run.path / "methods" / "layer-importance-baseline.json"
    assert "target reached" in log.read_text()
    again = li.run(resnet14_run, "baseline", digits, s, progress=False)  # resumes: no work
    assert [v.created for v in again] == [v.created for v in variants]


def test_accuracy_floor_stops_the_loop(reduced, resnet14_run, digits, tmp_path):
    """With no tolerance, a step below the starting accuracy is logged and not kept."""
    run = RunDir(tmp_path)
    for vid in ("baseline", "baseline.li0"):  # reuse the trained parent and step 0
        shutil.copytree(resnet14_run.variant_dir(vid), run.variant_dir(vid),
                        ignore=shutil.ignore_patterns("builds", "*.onnx"))
    s = li.Settings(train_epochs=1, retrain_epochs=0, tolerance=0.0, timing_repeats=1, k=3)
    # all three omega units at once and no retraining: accuracy falls below the start
    got = li.run(run, "baseline", digits, s, progress=False)
    assert [v.id for v in got] == ["baseline.li0"]  # step 1 rejected, not a variant
    assert not run.has("baseline.li1")
    log = json.loads((run.path / "methods" / "layer-importance-baseline.json").read_text())
    assert "< starting" in log["stop_reason"] and log["last_kept"] == "baseline.li0"
    assert [r["kept"] for r in log["steps"]] == [True, False]
    assert log["steps"][1]["val_accuracy"] < got[0].accuracy.val


@pytest.mark.slow
def test_reduced_variant_verifies_in_finn(reduced, resnet14_run, digits):
    from fpgaslim.hw.api import build_variant

    variants, _ = reduced
    r = build_variant(resnet14_run, variants[-1].id, "pynq-z1", data=digits, verify_images=5)
    v = r.verification
    assert v is not None and v.integer_exact and v.mismatched_images == 0
    assert v.argmax_agreement == 1.0
    assert r.finn_verification and set(r.finn_verification.values()) == {"SUCCESS"}
