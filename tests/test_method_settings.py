"""Method settings share one base (compress/method_settings.py): the values of every method's
presets (and of its plain defaults) are pinned here as they were before the base existed, so the
refactoring provably changed none of them. Cheap: no training, no data."""

from __future__ import annotations

import pytest

from fpgaslim.compress.methods import METHODS, get_method
from fpgaslim.core.errors import UnknownNameError

# Settings.preset(p).model_dump(mode="json", by_alias=True), dumped before the refactoring
PINNED = {
    ('dynamic-prune', '(defaults)'):
        {'tolerance': 0.5, 'iterations': 3, 'bounds': 'measured', 'gap_fraction': 0.06, 'p_low':
        0.5, 'p_high': 1.0, 'stop_gap': 0.03, 'min_channels': 1, 'channel_multiple': 1,
        'thin_channels': 6, 'residual': False, 'calib_images': None, 'epochs': 4, 'lr': 0.01,
        'momentum': 0.9, 'weight_decay': 0.0005, 'batch_size': 64, 'restart_every': 0, 'patience':
        2, 'seed': 0, 'device': 'auto'},
    ('dynamic-prune', 'cpu'):
        {'tolerance': 0.5, 'iterations': 3, 'bounds': 'measured', 'gap_fraction': 0.06, 'p_low':
        0.5, 'p_high': 1.0, 'stop_gap': 0.03, 'min_channels': 1, 'channel_multiple': 1,
        'thin_channels': 6, 'residual': False, 'calib_images': None, 'epochs': 4, 'lr': 0.01,
        'momentum': 0.9, 'weight_decay': 0.0005, 'batch_size': 64, 'restart_every': 0, 'patience':
        2, 'seed': 0, 'device': 'auto'},
    ('dynamic-prune', 'full'):
        {'tolerance': 0.5, 'iterations': 3, 'bounds': 'measured', 'gap_fraction': 0.06, 'p_low':
        0.5, 'p_high': 1.0, 'stop_gap': 0.03, 'min_channels': 1, 'channel_multiple': 1,
        'thin_channels': 6, 'residual': False, 'calib_images': None, 'epochs': 320, 'lr': 0.01,
        'momentum': 0.9, 'weight_decay': 0.0005, 'batch_size': 128, 'restart_every': 160,
        'patience': 20, 'seed': 0, 'device': 'auto'},
    ('dynamic-prune', 'paper'):
        {'tolerance': 0.5, 'iterations': 3, 'bounds': 'paper', 'gap_fraction': 0.06, 'p_low': 0.5,
        'p_high': 1.0, 'stop_gap': 0.03, 'min_channels': 1, 'channel_multiple': 1,
        'thin_channels': 6, 'residual': False, 'calib_images': None, 'epochs': 320, 'lr': 0.01,
        'momentum': 0.9, 'weight_decay': 0.0005, 'batch_size': 128, 'restart_every': 160,
        'patience': 20, 'seed': 0, 'device': 'auto'},
    ('layer-fusion', '(defaults)'):
        {'short_epochs': 2, 'long_epochs': 5, 'group_size': 4, 'temperature': 4.0, 'stop_drop':
        3.0, 'kd': True, 'short_finetune': True, 'max_removals': None, 'lr': 0.01, 'batch_size':
        64, 'patience': None, 'restart_every': 0, 'seed': 0, 'device': 'auto'},
    ('layer-fusion', 'cpu'):
        {'short_epochs': 2, 'long_epochs': 5, 'group_size': 4, 'temperature': 4.0, 'stop_drop':
        3.0, 'kd': True, 'short_finetune': True, 'max_removals': None, 'lr': 0.01, 'batch_size':
        64, 'patience': None, 'restart_every': 0, 'seed': 0, 'device': 'auto'},
    ('layer-fusion', 'full'):
        {'short_epochs': 50, 'long_epochs': 200, 'group_size': 4, 'temperature': 4.0, 'stop_drop':
        3.0, 'kd': True, 'short_finetune': True, 'max_removals': None, 'lr': 0.01, 'batch_size':
        64, 'patience': 20, 'restart_every': 100, 'seed': 0, 'device': 'auto'},
    ('layer-importance', '(defaults)'):
        {'k': 1, 'retrain_epochs': 2, 'train_epochs': 2, 'target_units': None, 'tolerance': 0.0,
        'omega_lr': 0.01, 'lr': 0.01, 'reference': 'parent', 'batch_size': 64, 'timing_repeats':
        5, 'seed': 0, 'device': 'auto'},
    ('layer-importance', 'cpu'):
        {'k': 1, 'retrain_epochs': 2, 'train_epochs': 2, 'target_units': None, 'tolerance': 0.0,
        'omega_lr': 0.01, 'lr': 0.01, 'reference': 'parent', 'batch_size': 64, 'timing_repeats':
        5, 'seed': 0, 'device': 'auto'},
    ('layer-importance', 'full'):
        {'k': 1, 'retrain_epochs': 200, 'train_epochs': 200, 'target_units': None, 'tolerance':
        0.0, 'omega_lr': 0.01, 'lr': 0.1, 'reference': 'parent', 'batch_size': 128,
        'timing_repeats': 5, 'seed': 0, 'device': 'auto'},
    ('magnitude-prune', '(defaults)'):
        {'macs_reduction': 0.5, 'steps': 3, 'importance': 'l1', 'global_pruning': True,
        'residual': True, 'round_to': 4, 'max_layer_ratio': 0.9, 'macs_tolerance': 0.01, 'epochs':
        12, 'lr': 0.01, 'momentum': 0.9, 'weight_decay': 0.0005, 'batch_size': 64, 'patience':
        None, 'seed': 0, 'device': 'auto'},
    ('magnitude-prune', 'cpu'):
        {'macs_reduction': 0.5, 'steps': 3, 'importance': 'l1', 'global_pruning': True,
        'residual': True, 'round_to': 4, 'max_layer_ratio': 0.9, 'macs_tolerance': 0.01, 'epochs':
        12, 'lr': 0.01, 'momentum': 0.9, 'weight_decay': 0.0005, 'batch_size': 64, 'patience':
        None, 'seed': 0, 'device': 'auto'},
    ('magnitude-prune', 'full'):
        {'macs_reduction': 0.5, 'steps': 3, 'importance': 'l1', 'global_pruning': True,
        'residual': True, 'round_to': 4, 'max_layer_ratio': 0.9, 'macs_tolerance': 0.01, 'epochs':
        320, 'lr': 0.01, 'momentum': 0.9, 'weight_decay': 0.0005, 'batch_size': 128, 'patience':
        20, 'seed': 0, 'device': 'auto'},
    ('resconv', '(defaults)'):
        {'lambda': 0.01, 'rate': 0.4, 'sparse_epochs': 8, 'lr': 0.02, 'retrain_epochs': 0,
        'finetune_epochs': 3, 'finetune_lr': 0.005, 'finetune_warmup': 1, 'finetune_clip': 2.0,
        'penalty': 'strength', 'prune_by': 'ratio', 'channel_bn': True, 'batch_size': 64,
        'weight_decay': 0.0005, 'calibration_images': 256, 'seed': 0},
    ('resconv', 'cpu'):
        {'lambda': 0.01, 'rate': 0.4, 'sparse_epochs': 8, 'lr': 0.02, 'retrain_epochs': 2,
        'finetune_epochs': 3, 'finetune_lr': 0.005, 'finetune_warmup': 1, 'finetune_clip': 2.0,
        'penalty': 'strength', 'prune_by': 'ratio', 'channel_bn': True, 'batch_size': 64,
        'weight_decay': 0.0005, 'calibration_images': 256, 'seed': 0},
    ('resconv', 'full'):
        {'lambda': 0.01, 'rate': 0.4, 'sparse_epochs': 300, 'lr': 0.1, 'retrain_epochs': 300,
        'finetune_epochs': 30, 'finetune_lr': 0.01, 'finetune_warmup': 1, 'finetune_clip': 2.0,
        'penalty': 'strength', 'prune_by': 'ratio', 'channel_bn': True, 'batch_size': 256,
        'weight_decay': 0.0005, 'calibration_images': 1024, 'seed': 0},
}


@pytest.mark.parametrize("method,preset", sorted(PINNED))
def test_preset_values_pinned(method: str, preset: str) -> None:
    settings_cls = get_method(method).Settings
    got = settings_cls() if preset == "(defaults)" else settings_cls.preset(preset)
    assert got.model_dump(mode="json", by_alias=True) == PINNED[(method, preset)]


def test_every_method_has_pinned_presets() -> None:
    single = {m for m in METHODS if "+" not in m}
    assert {m for m, _ in PINNED} == single
    for m in single:
        presets = set(get_method(m).Settings.PRESETS)
        assert presets == {p for mm, p in PINNED if mm == m} - {"(defaults)"}, m


@pytest.mark.parametrize("method", sorted(m for m in METHODS if "+" not in m))
def test_one_base_one_preset_contract(method: str) -> None:
    from fpgaslim.compress.method_settings import MethodSettings

    cls = get_method(method).Settings
    assert issubclass(cls, MethodSettings)
    assert cls.model_config.get("extra") == "forbid"
    for field in ("lr", "batch_size", "seed"):
        assert field in cls.model_fields
    assert cls.preset("cpu", seed=7).seed == 7  # overrides on top of a preset, every method
    with pytest.raises(UnknownNameError, match="unknown preset 'gpu'; valid: cpu, full"):
        cls.preset("gpu")
    with pytest.raises(ValueError):
        cls.preset("cpu", no_such_field=1)


# --------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_keeps_the_contract(method: str) -> None:
    """Settings, run and NEEDS (what it needs from a model), on the method itself: the
    capability table lives with the methods (compress/models/user.py only explains needs)."""
    from fpgaslim.compress.methods import Method
    from fpgaslim.compress.models.user import NEED_TEXT

    m = get_method(method)
    assert isinstance(m, Method)
    assert m.NEEDS and set(m.NEEDS) <= set(NEED_TEXT) | {"channels"}, m.NEEDS


def test_one_resume_rule_keyed_by_the_settings(tmp_path) -> None:
    """variants.finished: a record made by the method with these settings is finished (an
    unkeyed field such as the device, a field the record predates at its default, and the
    `ignore` fields aside); one made otherwise is an error naming the difference."""
    import json

    from fpgaslim.compress.variants import RunDir, finished, find_finished, settings_differ
    from fpgaslim.core.errors import ConfigError

    s = get_method("dynamic-prune").Settings.preset("cpu")
    run = RunDir(tmp_path)
    assert finished(run, "b.dp1", "dynamic-prune", s) is None  # not made yet
    vdir = run.variant_dir("b.dp1")
    vdir.mkdir(parents=True)
    recorded = {k: v for k, v in s.model_dump(mode="json").items() if k != "stop_gap"}
    from pathlib import Path

    real = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / \
        "compression-units" / "resnet20-16000img-15ep" / "baseline.dp1" / "record.json"
    rec = {**json.loads(real.read_text()), "id": "b.dp1", "parent": None,
           "settings": {**recorded, "device": "cuda"}}
    (vdir / "record.json").write_text(json.dumps(rec))
    assert finished(run, "b.dp1", "dynamic-prune", s).id == "b.dp1"
    other = s.model_copy(update={"tolerance": 2.0})
    assert settings_differ(run.record("b.dp1").settings, other) == {"tolerance": (0.5, 2.0)}
    with pytest.raises(ConfigError, match="tolerance: 0.5 there, 2.0 now"):
        finished(run, "b.dp1", "dynamic-prune", other)
    assert finished(run, "b.dp1", "dynamic-prune", other, ignore={"tolerance"}).id == "b.dp1"
    with pytest.raises(ConfigError, match="method"):
        finished(run, "b.dp1", "magnitude-prune", s)
    assert find_finished(run, ["b.dp1"], "dynamic-prune", other) is None
    assert find_finished(run, ["b.dp0", "b.dp1"], "dynamic-prune", s).id == "b.dp1"


def test_committed_benchmark_units_count_as_finished(tmp_path) -> None:
    """benchmarks/bench_compression.py restores the committed units
    (benchmarks/results/compression-units) into its run folder and runs every unit again:
    each method must find its variants there finished, with the settings the benchmark
    runs them with, or it would retrain hours of work (or refuse)."""
    import sys
    from pathlib import Path

    from fpgaslim.compress.variants import RunDir, finished, find_finished

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        import bench_compression_methods as recipe
    finally:
        sys.path.remove(str(bench))
    from argparse import Namespace

    args = Namespace(keep=recipe.KEPT, smoke=False, work=None, model="resnet20",
                     train_images=recipe.TRAIN_IMAGES, epochs=recipe.BASELINE_EPOCHS,
                     peer_epochs=recipe.PEER_EPOCHS)
    kept = recipe.kept_folder(args)
    assert kept is not None and kept.is_dir(), kept
    run = RunDir(tmp_path / "run")
    restored = recipe.restore(run, kept)
    assert len(restored) > 20 and set(run.ids()) == set(restored)
    ms = recipe.method_settings(False, [0.45, 0.37])
    lf, li = get_method("layer-fusion"), get_method("layer-importance")
    checked = 0
    for seed, base in ((0, "baseline"), (1, "baseline-s1")):
        at = {m: s.model_copy(update={"seed": seed}) for m, s in ms.items()}
        dp = sorted(v for v in run.ids() if v.startswith(f"{base}.dp") and v.count(".") == 1)
        for vid in dp:
            assert finished(run, vid, "dynamic-prune", at["dynamic-prune"]), vid
        for vid in [v for v in run.ids() if v.startswith(f"{dp[-1]}.lf")]:
            assert finished(run, vid, "layer-fusion", at["layer-fusion"]), vid
        for rate in (0.45, 0.37):  # resconv finds its variant by its settings
            rc = at["resconv"].model_copy(update={"rate": rate})
            assert find_finished(run, run.ids(), "resconv", rc) is not None, (base, rate)
        lis = sorted(v for v in run.ids() if v.startswith(f"{base}.li"))
        assert finished(run, lis[0], "layer-importance", at["layer-importance"],
                        ignore=li.LOOP_ONLY)
        for vid in lis[1:]:
            assert finished(run, vid, "layer-importance", at["layer-importance"]), vid
        peer = recipe.peer_settings(args)
        for vid in [v for v in run.ids() if v.startswith(f"{base}.mp")]:
            cut = run.record(vid).settings["macs_reduction"]
            assert finished(run, vid, "magnitude-prune",
                            peer.model_copy(update={"macs_reduction": cut, "seed": seed})), vid
            checked += 1
        assert lf.METHOD == "layer-fusion"
    assert checked >= 5
