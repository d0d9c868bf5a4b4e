"""Your own data: `folder:PATH`, `npz:PATH` and `idx:PATH` dataset specs, and content hashes.

* `folder:PATH`: one subfolder of PNG/JPEG images per class (torchvision ImageFolder layout;
  class names are the subfolder names, sorted). With `train/` and `test/` subfolders of that
  layout, those are the splits; otherwise a seeded 20 % of the images is the test split.
* `npz:PATH`: arrays `x` (N x C x H x W, N x H x W or N x H x W x C, uint8) and `y` (N integer
  labels); optional `x_test`/`y_test` (else a seeded 20 % test split) and `classes` (names).
* `idx:PATH`: a folder of raw or gzipped IDX files (MNIST layout: `*train*images*`,
  `*train*labels*`, `*t10k*`/`*test*` images/labels; a single images/labels pair is split).

Every loader returns uint8 N x C x H x W arrays, int64 labels, the class names and the list of
files it read, whose content hash (`content_hash`) the run records: a later command that finds
a different hash refuses to go on instead of silently making a new split.

Hand-written rather than torchvision's ImageFolder: torchvision is not a dependency, and the
checks (one image size, at least two classes, uint8 pixels) need to name the offending file.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
from pathlib import Path

import numpy as np

from fpgaslim.core.errors import DatasetNotFoundError

SPEC_KINDS = ("folder", "npz", "idx")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str],
               list[Path]]


class DataFormatError(DatasetNotFoundError):
    """The data exists but is not in a form fpgaslim can use; the message names the file."""


def parse_spec(spec: str) -> tuple[str, Path] | None:
    """('npz', path) for 'npz:PATH' etc.; None for a named dataset."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in SPEC_KINDS:
        return None
    if not rest:
        raise DataFormatError(f"dataset {spec!r}: give a path after '{kind}:'")
    return kind, Path(rest).expanduser().resolve()


def content_hash(files: list[Path], root: Path | None = None) -> str:
    """sha256 over the files' relative names and bytes, in sorted order."""
    h = hashlib.sha256()
    for f in sorted(files):
        name = str(f.relative_to(root)) if root and f.is_relative_to(root) else f.name
        h.update(name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_spec(kind: str, path: Path) -> Arrays:
    if kind == "npz":
        return load_npz(path)
    if kind == "folder":
        return load_folder(path)
    return load_idx_folder(path)


# --------------------------------------------------------------------------- npz
def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise DataFormatError(f"{where}: pixels must be uint8 (0..255), got dtype {x.dtype}; "
                              "save them with x.astype(np.uint8)")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataFormatError(f"{where}: expected N x C x H x W, N x H x W or N x H x W x C "
                              f"images, got shape {x.shape}")
    if x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # channels last
    if x.shape[1] not in (1, 3, 4):
        raise DataFormatError(f"{where}: cannot tell the channel axis of shape {x.shape}; use "
                              "N x C x H x W with C = 1 or 3")
    return x


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise DataFormatError(f"{where}: labels must be a 1-D array of {n} entries (one per "
                              f"image), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DataFormatError(f"{where}: labels must be non-negative integers, got dtype "
                              f"{y.dtype}")
    return y.astype(np.int64)


def load_npz(path: Path) -> Arrays:
    if not path.is_file():
        raise DatasetNotFoundError(f"npz file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"{path} is not a readable .npz file ({exc})") from exc
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataFormatError(f"{path}: missing array(s) {missing}; expected 'x' (images) and "
                              f"'y' (labels), found {sorted(arrays)}")
    x = _to_nchw(arrays["x"], f"{path} array 'x'")
    y = _labels(arrays["y"], len(x), f"{path} array 'y'")
    xt = yt = None
    if "x_test" in arrays or "y_test" in arrays:
        if not {"x_test", "y_test"} <= set(arrays):
            raise DataFormatError(f"{path}: give both 'x_test' and 'y_test', or neither")
        xt = _to_nchw(arrays["x_test"], f"{path} array 'x_test'")
        yt = _labels(arrays["y_test"], len(xt), f"{path} array 'y_test'")
        if xt.shape[1:] != x.shape[1:]:
            raise DataFormatError(f"{path}: 'x_test' images are {xt.shape[1:]}, 'x' images "
                                  f"{x.shape[1:]}")
    n_cls = int(max(y.max(initial=0), yt.max(initial=0) if yt is not None else 0)) + 1
    classes = ([str(c) for c in arrays["classes"].tolist()] if "classes" in arrays
               else [str(i) for i in range(n_cls)])
    if len(classes) < n_cls:
        raise DataFormatError(f"{path}: 'classes' names {len(classes)} classes, labels go up "
                              f"to {n_cls - 1}")
    return x, y, xt, yt, classes, [path]


# --------------------------------------------------------------------------- image folder
def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _read_images(root: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    from PIL import Image, UnidentifiedImageError

    files, labels = [], []
    for i, c in enumerate(classes):
        d = root / c
        found = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) \
            if d.is_dir() else []
        if not found:
            raise DataFormatError(f"{d}: class {c!r} has no PNG/JPEG images")
        files += found
        labels += [i] * len(found)
    imgs, first = [], None
    modes = set()
    opened = []
    for f in files:
        try:
            im = Image.open(f)
            im.load()
        except (OSError, UnidentifiedImageError) as exc:
            raise DataFormatError(f"{f} is not a readable image ({exc})") from exc
        if first is None:
            first = (f, im.size)
        elif im.size != first[1]:
            raise DataFormatError(
                f"images of different sizes: {f} is {im.size[0]}x{im.size[1]}, {first[0]} is "
                f"{first[1][0]}x{first[1][1]}; resize them to one size first")
        modes.add("L" if im.mode in ("L", "1", "I;16", "I") else "RGB")
        opened.append(im)
    mode = "L" if modes == {"L"} else "RGB"
    for im in opened:
        a = np.asarray(im.convert(mode), dtype=np.uint8)
        imgs.append(a[None] if mode == "L" else a.transpose(2, 0, 1))
    return np.stack(imgs), np.asarray(labels, dtype=np.int64), files


def load_folder(root: Path) -> Arrays:
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    base = root / "train" if split else root
    classes = [d.name for d in _class_dirs(base)]
    if len(classes) < 2:
        raise DataFormatError(
            f"{base}: found {len(classes)} class subfolder(s) {classes}; a classifier needs at "
            "least two, one subfolder of PNG/JPEG images per class")
    x, y, files = _read_images(base, classes)
    xt = yt = None
    if split:
        test_classes = [d.name for d in _class_dirs(root / "test")]
        if not set(test_classes) <= set(classes):
            extra = sorted(set(test_classes) - set(classes))
            raise DataFormatError(f"{root / 'test'}: classes {extra} are not in train/")
        xt, yt, tfiles = _read_images(root / "test", classes if test_classes == classes
                                      else test_classes)
        if test_classes != classes:
            yt = np.asarray([classes.index(test_classes[i]) for i in yt], dtype=np.int64)
        if xt.shape[1:] != x.shape[1:]:
            raise DataFormatError(f"{root}: test images are {xt.shape[1:]}, train images "
                                  f"{x.shape[1:]}")
        files += tfiles
    return x, y, xt, yt, classes, files


# --------------------------------------------------------------------------- idx folder
def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file, raw or gzipped (by its magic bytes, not its name)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, EOFError, struct.error) as exc:
        raise DatasetNotFoundError(f"{path} is not a readable IDX file ({exc}); replace it with "
                                   "a good copy (or delete it and let fpgaslim fetch it again)"
                                   ) from exc


_IDX_NAME = re.compile(r"idx\d|ubyte", re.IGNORECASE)


def load_idx_folder(root: Path) -> Arrays:
    if not root.is_dir():
        raise DatasetNotFoundError(f"IDX folder {root} does not exist")
    files = sorted(f for f in root.iterdir() if f.is_file() and _IDX_NAME.search(f.name))

    def pick(split: tuple[str, ...], what: str) -> Path | None:
        hits = [f for f in files if what in f.name.lower()
                and any(s in f.name.lower() for s in split)]
        return hits[0] if hits else None

    tr_x, tr_y = pick(("train",), "images"), pick(("train",), "labels")
    te_x, te_y = pick(("t10k", "test"), "images"), pick(("t10k", "test"), "labels")
    if tr_x is None or tr_y is None:
        imgs = [f for f in files if "images" in f.name.lower() or "idx3" in f.name]
        labs = [f for f in files if "labels" in f.name.lower() or "idx1" in f.name]
        if len(imgs) == 1 and len(labs) == 1:
            tr_x, tr_y, te_x, te_y = imgs[0], labs[0], None, None
        else:
            raise DatasetNotFoundError(
                f"{root}: no IDX images/labels pair found (looked for *train*images* and "
                "*train*labels*, raw or .gz; found "
                f"{[f.name for f in files] or 'no IDX files'})")
    used = [p for p in (tr_x, tr_y, te_x, te_y) if p is not None]
    x = _to_nchw(read_idx(tr_x), str(tr_x))
    y = _labels(read_idx(tr_y), len(x), str(tr_y))
    xt = yt = None
    if te_x is not None and te_y is not None:
        xt = _to_nchw(read_idx(te_x), str(te_x))
        yt = _labels(read_idx(te_y), len(xt), str(te_y))
    n_cls = int(max(y.max(initial=0), yt.max(initial=0) if yt is not None else 0)) + 1
    return x, y, xt, yt, [str(i) for i in range(n_cls)], used
