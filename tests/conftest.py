"""Shared fixtures: small real data and small trained models, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def digits():
    from fpgaslim.compress.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _trained_run(tmp_path_factory, digits, model: str, width: float, epochs: int, bits=None):
    from fpgaslim.compress.baseline import BaselineSettings, train_baseline
    from fpgaslim.compress.models import BitWidths
    from fpgaslim.compress.train import TrainSettings
    from fpgaslim.compress.variants import RunDir

    run = RunDir(tmp_path_factory.mktemp(f"run-{model}"))
    settings = BaselineSettings(model=model, width=width, bits=bits or BitWidths(),
                                train=TrainSettings(epochs=epochs, lr=0.05, batch_size=32))
    train_baseline(run, digits, settings, progress=False)
    return run


@pytest.fixture(scope="session")
def resnet8_run(tmp_path_factory, digits):
    """RunDir with variant 'baseline': ResNet-8 w4a4 trained on digits (~97-99% test)."""
    return _trained_run(tmp_path_factory, digits, "resnet8", 1.0, 6)


@pytest.fixture(scope="session")
def cnv_run(tmp_path_factory, digits):
    """RunDir with variant 'baseline': a quarter-width CNV w4a4 trained on digits."""
    return _trained_run(tmp_path_factory, digits, "cnv", 0.25, 6)


@pytest.fixture(scope="session")
def resnet14_run(tmp_path_factory, digits):
    """RunDir with variant 'baseline': half-width ResNet-14 w4a4 on digits. Two units per stage,
    so block-removal methods (layer fusion, layer importance) have blocks to remove."""
    return _trained_run(tmp_path_factory, digits, "resnet14", 0.5, 5)
