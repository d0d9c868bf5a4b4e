"""Datasets: real files, fixed splits, clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from fpgaslim.compress.data import DEBIAN_FASHION_MNIST, load_dataset
from fpgaslim.errors import DatasetNotFoundError, UnknownNameError


def test_digits_splits_are_disjoint_seeded_and_uint8_range(digits):
    x = digits.train.tensors[0]
    assert digits.input_shape == (1, 8, 8)
    assert float(x.min()) == 0.0 and float(x.max()) == 255.0
    assert torch.equal(x, x.round()), "pixels must be integers for the UINT8 input quantizer"
    again = load_dataset("digits")
    assert torch.equal(again.val.tensors[0], digits.val.tensors[0])
    n = len(digits.train) + len(digits.val) + len(digits.test)
    assert n == 1797
    flat = {tuple(v.flatten().tolist()) for v in digits.test.tensors[0]}
    overlap = sum(tuple(v.flatten().tolist()) in flat for v in digits.val.tensors[0])
    assert overlap <= 2  # digits has a few duplicate images; splits are by index


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownNameError, match="fashion-mnist"):
        load_dataset("imagenet")


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr("fpgaslim.compress.data.CACHE_DIR", tmp_path / "cache")
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere") in str(err.value)
    assert "FPGASLIM_DATA_DIR" in str(err.value)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_reader_on_local_copy_and_corrupt_file(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("t10k", 20)):
        _write_idx(d / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(d / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    data = load_dataset("mnist", tmp_path, download=False)
    assert data.input_shape == (1, 28, 28) and len(data.test) == 20
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(DatasetNotFoundError, match="not a readable IDX"):
        load_dataset("mnist", tmp_path, download=False)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    data = load_dataset("fashion-mnist", download=False, limit_train=500, limit_test=100)
    assert data.input_shape == (1, 28, 28)
    assert len(data.train) == 500 and len(data.test) == 100
    assert data.class_names[9] == "Ankle boot"
