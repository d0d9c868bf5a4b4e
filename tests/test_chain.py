"""A chain of methods is a registered method (compress/chain.py): its settings and presets, the
sweep's per-step settings, and the real chain through the CLI, which makes the same variants
as running its steps one after another by hand (what the hand-written chain did before)."""

from __future__ import annotations

import shutil

import pytest
import yaml
from click.testing import CliRunner

from fpgaslim.compress import dynamic_prune as dp
from fpgaslim.compress import layer_fusion as lf
from fpgaslim.compress.chain import Composite
from fpgaslim.compress.methods import get_method, list_methods, method_settings
from fpgaslim.core.config import validate
from fpgaslim.core.errors import ConfigError, UnknownNameError

CHAIN = "dynamic-prune+fuse"
# no fine-tuning (epochs 0; every trial accepted): seconds, and every accuracy is still
# measured, so the two ways must agree on it
TINY = {"dynamic-prune": {"iterations": 1, "epochs": 0, "patience": None, "tolerance": 100.0,
                          "gap_fraction": 0.3, "calib_images": 100},
        "layer-fusion": {"short_epochs": 0, "long_epochs": 0, "group_size": 1,
                         "max_removals": 1}}


def test_the_chain_is_a_registered_method() -> None:
    assert CHAIN in list_methods()
    chain = get_method(CHAIN)
    assert isinstance(chain, Composite) and chain.STEPS == ("dynamic-prune", "layer-fusion")
    for preset in ("cpu", "full"):
        got = chain.Settings.preset(preset).model_dump(mode="json", by_alias=True)
        assert got == {"dynamic-prune": dp.Settings.preset(preset).model_dump(mode="json"),
                       "layer-fusion": lf.Settings.preset(preset).model_dump(mode="json")}
    with pytest.raises(UnknownNameError, match="unknown preset 'paper'; valid: cpu, full"):
        chain.Settings.preset("paper")  # only dynamic-prune has it


def test_step_overrides_go_on_top_of_each_steps_preset() -> None:
    s = method_settings(CHAIN, "full", {"dynamic-prune": {"epochs": 3, "restart_every": 0}})
    assert s.step("dynamic-prune") == dp.Settings.preset("full", epochs=3, restart_every=0)
    assert s.step("layer-fusion") == lf.Settings.preset("full")
    with pytest.raises(ConfigError, match=r"dynamic-prune\.epoch: unknown field"):
        method_settings(CHAIN, "cpu", {"dynamic-prune": {"epoch": 3}})
    with pytest.raises(ConfigError, match="dynamic-prun: unknown field"):
        method_settings(CHAIN, "cpu", {"dynamic-prun": {"epochs": 3}})


def test_sweep_step_of_the_demo_validates_as_before() -> None:
    from fpgaslim.demo import DEMO
    from fpgaslim.sweep import MethodStep

    raw = DEMO["methods"][0]
    step = validate(MethodStep, raw)
    assert step.method == CHAIN
    assert step.key == "dynamic-prune+fuse-baseline-9b1721ed"  # unchanged: finished steps reused
    settings = step.resolved_settings()
    for name, cls in (("dynamic-prune", dp.Settings), ("layer-fusion", lf.Settings)):
        before = {**cls.preset("cpu").model_dump(by_alias=True), **raw["settings"][name]}
        assert settings.step(name) == cls(**before)  # what the sweep's own chain code built
    with pytest.raises(ConfigError, match=r"methods\[dynamic-prune\+fuse\]"):
        validate(MethodStep, {**raw, "settings": {"layer-fusion": {"long_epoch": 1}}}
                 ).resolved_settings()


def test_the_cli_chain_makes_the_variants_of_its_steps_run_by_hand(tmp_path) -> None:
    from fpgaslim.cli import main
    from fpgaslim.compress.baseline import BaselineSettings, train_baseline
    from fpgaslim.compress.data import load_dataset
    from fpgaslim.compress.train import TrainSettings
    from fpgaslim.compress.variants import RunDir

    # a quarter-width ResNet-14 (two units per stage: blocks to fuse), one epoch on a subset
    # of digits (the run records it, so the CLI loads the same splits)
    digits = load_dataset("digits", limit_train=400, limit_test=100)
    digits.origin.update(limit_train=400, limit_test=100)
    by_cli = RunDir(tmp_path / "cli")
    train_baseline(by_cli, digits, BaselineSettings(model="resnet14", width=0.25, train=(
        TrainSettings(epochs=1, lr=0.05, batch_size=32))), progress=False)
    by_hand = RunDir(shutil.copytree(by_cli.path, tmp_path / "hand"))
    config = tmp_path / "chain.yaml"
    config.write_text(yaml.safe_dump(TINY), encoding="utf-8")
    res = CliRunner().invoke(main, ["compress", CHAIN, str(by_cli.path), "--config",
                                    str(config)])
    assert res.exit_code == 0, res.output
    pruned = dp.run(by_hand, "baseline", digits, dp.Settings.preset("cpu",
                                                                    **TINY["dynamic-prune"]),
                    progress=False)
    fused = lf.run(by_hand, pruned[-1].id, digits,
                   lf.Settings.preset("cpu", **TINY["layer-fusion"]), progress=False)
    made = [v.id for v in pruned + fused]
    assert made == ["baseline.dp1", "baseline.dp1.lf1"]
    assert by_cli.ids() == by_hand.ids() == ["baseline", *made]
    for vid in made:
        a, b = by_cli.record(vid), by_hand.record(vid)
        assert (a.method, a.parent, a.settings, a.macs, a.widths) == \
            (b.method, b.parent, b.settings, b.macs, b.widths)
        assert a.accuracy == b.accuracy
        assert f"{vid}: depth {a.depth}" in res.output
    # the Python API: a rerun through the registry finds the finished variants
    import fpgaslim

    again = fpgaslim.run_method(by_cli.path, CHAIN, "baseline", TINY, data=digits,
                                progress=False)
    assert [v.id for v in again] == made


def test_cli_lists_the_chain_and_maps_settings_errors(tmp_path) -> None:
    from fpgaslim.cli import main

    r = CliRunner().invoke(main, ["compress", "--help"])
    assert r.exit_code == 0 and CHAIN in r.output and "the paper's chain" in r.output
    r = CliRunner().invoke(main, ["compress", "resconv", str(tmp_path), "--lambda", "3"])
    assert r.exit_code == 2 and "lambda" in r.output, r.output
    r = CliRunner().invoke(main, ["compress", CHAIN, str(tmp_path), "--preset", "gpu"])
    assert r.exit_code == 2 and "unknown preset 'gpu'; valid: cpu, full" in r.output, r.output
    bad = tmp_path / "chain.yaml"
    bad.write_text("layer-fusion: {long_epoch: 1}\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["compress", CHAIN, str(tmp_path), "--config", str(bad)])
    assert r.exit_code == 2 and "layer-fusion.long_epoch: unknown field" in r.output, r.output
