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
