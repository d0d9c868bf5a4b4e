"""magnitude-prune: Torch-Pruning's pruner to a MACs target on a real digits ResNet-8, through
channel surgery, QAT fine-tuning and a FINN build that verifies integer-exact."""

from __future__ import annotations

import pytest


def _settings(**kw):
    from fpgaslim.compress import magnitude_prune as mp

    return mp.Settings.preset("cpu", **{"macs_reduction": 0.5, "steps": 2, "epochs": 2,
                                        "lr": 0.01, "batch_size": 32, **kw})


def test_selection_respects_groups_and_round_to(resnet8_run):
    from fpgaslim.compress import magnitude_prune as mp

    model = resnet8_run.load_model("baseline")
    plan = mp.select_channels(model, 0.3, _settings(round_to=4, residual=False))
    assert plan and all(g.endswith(".mid") for g in plan)  # the streams stay whole
    widths = {f"blocks.{i}.mid": b.mid for i, b in enumerate(model.arch.blocks)}
    assert all((widths[g] - len(idx)) % 4 == 0 for g, idx in plan.items())
    both = mp.select_channels(model, 0.3, _settings(round_to=4, residual=True))
    assert any(g.startswith("residual.") for g in both)  # DepGraph couples the streams


def test_settings_split_the_budget_and_reject_bad_values():
    from pydantic import ValidationError

    from fpgaslim.compress import magnitude_prune as mp
    from fpgaslim.core.errors import ConfigError

    assert mp.Settings(epochs=7, steps=3).step_epochs() == [2, 2, 3]
    with pytest.raises(ValidationError):
        mp.Settings(macs_reduction=1.2)
    with pytest.raises(ValidationError):
        mp.Settings(unknown=1)
    with pytest.raises(ConfigError):
        mp.Settings.preset("gpu")


@pytest.fixture(scope="module")
def pruned(resnet8_run, digits):
    from fpgaslim.compress import magnitude_prune as mp
    from fpgaslim.compress.methods import get_method

    assert get_method("magnitude-prune") is mp
    return mp.run(resnet8_run, "baseline", digits, _settings(), progress=False)


def test_reaches_the_macs_target_and_keeps_accuracy(pruned, resnet8_run):
    (v,) = pruned
    base = resnet8_run.record("baseline")
    cut = 1 - v.macs / base.macs
    assert v.id == "baseline.mp50" and v.method == "magnitude-prune"
    assert 0.45 <= cut <= 0.55, cut
    assert [s["step"] for s in v.details["steps"]] == [1, 2]
    assert v.details["steps"][0]["macs"] > v.details["steps"][1]["macs"]
    assert all(w % 4 == 0 for n, w in v.widths.items() if n != "fc")
    assert v.accuracy.test >= base.accuracy.test - 5.0, (v.accuracy, base.accuracy)
    # resumable: a second run returns the stored variant
    from fpgaslim.compress import magnitude_prune as mp
    from fpgaslim.compress.data import load_dataset

    again = mp.run(resnet8_run, "baseline", load_dataset("digits"), _settings(),
                   progress=False)
    assert again[0].created == v.created


@pytest.mark.slow
def test_pruned_variant_verifies_in_finn(pruned, resnet8_run, digits):
    from fpgaslim.hw.api import build_variant

    (v,) = pruned
    r = build_variant(resnet8_run, v.id, "pynq-z1", data=digits, verify_images=4)
    ver = r.verification
    assert ver is not None and ver.integer_exact and ver.mismatched_images == 0
    assert r.finn_verification and set(r.finn_verification.values()) == {"SUCCESS"}
