"""`fpgaslim-board`: run a deployment bundle on a board (or simulated on a CPU) and write JSON.

This file runs on PYNQ images, so it imports only the standard library, numpy (<2 there; any
numpy works) and, for the real board, `pynq` + `finn-plus-driver`. It never imports torch,
brevitas, qonnx or finn: the simulated backend reaches the compiler side only through a
subprocess (`--sim-python`, default: this interpreter) that runs `fpgaslim.deploy.simulate`
and exchanges .npy files, so the same runner code measures the board and the simulation.

Every number it writes says where it came from: "measured on board" (the FPGA through
finn-plus-driver) or "simulated" (the bundle's dataflow graph executed on this CPU, bit-exact
with the hardware graph, timings are CPU timings and say nothing about the FPGA's speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from fpgaslim.core.errors import BundleError, ConfigError, FpgaslimError, ToolMissingError

from .manifest import sha256_file, unpack, verify_manifest

BUNDLE_INFO = "bundle.json"
MEASURED = "measured on board"
SIMULATED = "simulated"
_INT_TYPES = {"UINT8": np.uint8, "INT8": np.int8, "BIPOLAR": np.int8, "BINARY": np.uint8}


class Backend(Protocol):
    label: str
    detail: str

    def execute(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class Bundle:
    """An unpacked, manifest-verified bundle and what its bundle.json says about I/O."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = verify_manifest(self.root)
        try:
            self.info: dict[str, Any] = json.loads((self.root / BUNDLE_INFO).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{self.root / BUNDLE_INFO} is missing or unreadable") from exc
        self.driver = json.loads((self.root / self.info["driver"]["settings"]).read_text("utf-8"))
        self.io = self.driver["driver_information"]["io_shape_dict"]

    @classmethod
    def open(cls, path: str | Path, workdir: str | Path | None = None) -> "Bundle":
        """A folder is verified in place; a .tar.gz is unpacked (safely) into its own
        subfolder of `workdir`, named by the archive's sha256, and reused while it verifies."""
        path = Path(path)
        if path.is_dir():
            return cls(path)
        if not path.is_file():
            raise BundleError(f"bundle {path} does not exist")
        base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fpgaslim-bundle-"))
        name = path.name.split(".")[0] or "bundle"
        target = base / f"{name}-{sha256_file(path)[:16]}"
        if target.is_dir():
            try:
                return cls(target)
            except BundleError:
                shutil.rmtree(target)  # our own folder, damaged: unpack again
        unpack(path, target)
        return cls(target)

    def path(self, rel: str | None) -> Path | None:
        return self.root / rel if rel else None

    @property
    def input_dtype(self) -> str:
        idt = self.io["idt"][0]
        return idt[idt.index("[") + 1 : idt.index("]")].strip("'") if "[" in idt else idt

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """Raw 0..255 NCHW pixels -> what the accelerator's input stream expects.

        The models' input quantizer has scale exactly 1/255 and the hardware graph starts
        after it, so the stream carries the raw UINT8 pixels; only the layout changes (FINN's
        dataflow graph is channels-last)."""
        inp = self.info["input"]
        x = np.asarray(images)
        if x.ndim == len(inp["shape"]):  # N,H,W for 1-channel data
            x = x[:, None]
        if tuple(x.shape[1:]) != tuple(inp["shape"]):
            raise ConfigError(f"images have shape {x.shape[1:]}, the bundle's model expects "
                              f"{tuple(inp['shape'])} (C,H,W)")
        step = inp.get("input_step")
        if step and step != 1:  # a QONNX file's input quantizer: model input -> its integers
            lo, hi = inp["raw_range"]
            x = np.clip(np.round(np.asarray(x, dtype=np.float64) / step), lo, hi)
        if inp.get("transpose"):
            x = np.transpose(x, inp["transpose"])
        if inp.get("reshape"):  # the accelerator's input shape (an MLP's host-side flatten)
            x = x.reshape(len(x), *inp["reshape"])
        dtype = _INT_TYPES.get(self.input_dtype)
        if dtype is not None:
            lo, hi = inp["raw_range"]
            if x.min() < lo or x.max() > hi or not np.array_equal(x, np.round(x)):
                raise ConfigError(f"images must hold integer pixels in {lo}..{hi} "
                                  f"({self.input_dtype} input stream)")
            return np.ascontiguousarray(x.astype(dtype))
        return np.ascontiguousarray(x.astype(np.float32))

    def predict(self, y: np.ndarray) -> np.ndarray:
        """The predicted class per image from the accelerator's output: the first of its
        top-k indices when the bundle's graph ends in LabelSelect (--topk), else the argmax of
        the post-processed logits."""
        if self.info["output"].get("topk"):
            return np.asarray(y).reshape(len(y), -1)[:, 0].astype(np.int64)
        return self.postprocess(y).argmax(1)

    def postprocess(self, y: np.ndarray) -> np.ndarray:
        """Apply the few host-side ops that follow the accelerator (constants from the graph)."""
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        for op in self.info["output"].get("postprocess", []):
            value = np.asarray(op["value"], dtype=np.float64)
            y = y * value if op["op"] == "Mul" else y + value
        return y


def load_npz(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A dataset file: `images` (N,C,H,W or N,H,W raw 0..255 pixels) and `labels` (N)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: need an .npz with arrays 'images' and 'labels' "
                          f"({exc})") from exc
    if len(images) != len(labels):
        raise ConfigError(f"{path}: {len(images)} images but {len(labels)} labels")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels.astype(np.int64)


class BoardBackend:
    """The FPGA through finn-plus-driver (the driver class named in settings.json)."""

    label = MEASURED

    def __init__(self, bundle: Bundle, batch_size: int = 1) -> None:
        try:
            from finn_plus_driver import get_driver_class  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ToolMissingError("no board here: finn-plus-driver (and pynq) are not "
                                   "importable; install them on the board, or use --simulate "
                                   "to run the bundle's graph on this CPU") from exc
        acc = bundle.info["accelerator"]
        if not acc.get("kind"):
            raise ToolMissingError("this bundle has no bitfile/xclbin (it was made without "
                                   "Vivado); build with --bitfile first, or use --simulate")
        settings = dict(bundle.driver["driver_information"])
        settings["runtime_weight_dir"] = str(bundle.root / "driver" / "runtime_weights")
        settings["batch_size"] = batch_size
        cls = get_driver_class(settings["driver_type"])
        self.accel = cls(str(bundle.root / acc["files"][0]), **settings)
        self.detail = f"{settings['driver_type']} on {platform.node()} ({bundle.info['board']})"

    def execute(self, x: np.ndarray) -> np.ndarray:
        if self.accel.batch_size != len(x):
            self.accel.batch_size = len(x)
        return np.asarray(self.accel.execute(x))

    def driver_throughput(self) -> dict[str, Any]:
        return dict(self.accel.throughput_test())

    def close(self) -> None:
        self.accel = None


class SimulatedBackend:
    """The bundle's dataflow graph executed by `fpgaslim.deploy.simulate` in a subprocess.

    One long-lived worker (FINN's imports take seconds) answers JSON-line requests naming
    .npy files, so this process never imports the compiler side."""

    label = SIMULATED

    def __init__(self, bundle: Bundle, sim_python: str | None = None,
                 start_timeout_s: float = 600.0, image_timeout_s: float = 10.0) -> None:
        self.image_timeout_s = image_timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="fpgaslim-sim-"))
        self.log_path = self.dir / "worker.log"
        python = sim_python or sys.executable
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [python, "-m", "fpgaslim.deploy.simulate", "--serve", str(bundle.root)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)
        except OSError as exc:
            self._log.close()
            raise ToolMissingError(f"cannot start the simulator with {python} ({exc}); pass "
                                   "--sim-python with fpgaslim's compiler environment") from exc
        self.n = 0
        try:
            hello = self._read(start_timeout_s)
        except BaseException:
            self.close()
            raise
        self.detail = hello.get("detail", "dataflow graph, python execution on CPU")

    def _read(self, timeout_s: float) -> dict[str, Any]:
        """One reply line. Each request gets exactly one reply, so the pipe's buffer is empty
        here and select() on its descriptor tells whether the reply came in time."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.proc.kill()
            tail = self.log_path.read_text(errors="replace")[-1000:]
            raise FpgaslimError(f"the simulator gave no answer within {timeout_s:.0f} s and "
                                f"was stopped; its log ends:\n{tail}")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise ToolMissingError("the simulator process stopped (exit code "
                                   f"{self.proc.returncode}); is --sim-python fpgaslim's "
                                   f"compiler environment? Its log:\n{tail}")
        msg = json.loads(line)
        if msg.get("error"):
            hint = ("; is --sim-python the python of fpgaslim's compiler environment?"
                    if "ModuleNotFoundError" in msg["error"] else "")
            raise FpgaslimError(f"simulator: {msg['error']}{hint}")
        return msg

    def execute(self, x: np.ndarray) -> np.ndarray:
        self.n += 1
        src, dst = self.dir / f"in{self.n}.npy", self.dir / f"out{self.n}.npy"
        np.save(src, x)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"input": str(src), "output": str(dst)}) + "\n")
        self.proc.stdin.flush()
        self._read(60.0 + self.image_timeout_s * len(x))
        y = np.load(dst)
        src.unlink()
        dst.unlink()
        return y

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_accuracy(bundle: Bundle, backend: Backend, images: np.ndarray, labels: np.ndarray,
                 batch_size: int = 32) -> dict[str, Any]:
    x = bundle.prepare(images)
    preds = []
    for i in range(0, len(x), batch_size):
        preds.append(bundle.predict(backend.execute(x[i : i + batch_size])))
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    correct = int((pred == labels).sum())
    return {"images": int(len(labels)), "correct": correct,
            "accuracy_percent": 100.0 * correct / max(1, len(labels)),
            "predictions": pred.astype(int).tolist(), "source": backend.label}


def run_throughput(bundle: Bundle, backend: Backend, images: np.ndarray,
                   batch_sizes: Sequence[int], iterations: int) -> list[dict[str, Any]]:
    """Wall-clock time of whole execute() calls (packing + DMA + compute on the board)."""
    x = bundle.prepare(images)
    rows = []
    for bs in batch_sizes:
        batch = np.resize(x, (bs, *x.shape[1:])) if len(x) < bs else x[:bs]
        backend.execute(batch)  # warm-up: buffer allocation, first-call costs
        lat = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            backend.execute(batch)
            lat.append(time.perf_counter() - t0)
        lat_ms = np.asarray(lat) * 1e3
        rows.append({"batch_size": bs, "iterations": iterations,
                     "fps": bs * iterations / float(np.sum(lat)),
                     "latency_ms": {"mean": float(lat_ms.mean()),
                                    **{f"p{q}": float(np.percentile(lat_ms, q))
                                       for q in (50, 90, 99)}},
                     "source": backend.label})
    return rows


def run(bundle_path: str | Path, data: str | Path, out: str | Path, simulate: bool = False,
        sim_python: str | None = None, batch_sizes: Sequence[int] = (1, 8),
        iterations: int = 5, limit: int | None = None, workdir: str | Path | None = None,
        accuracy_batch: int = 32) -> dict[str, Any]:
    """Accuracy over the dataset file and a throughput test; the result is written to `out`."""
    bundle = Bundle.open(bundle_path, workdir)
    images, labels = load_npz(data, limit)
    backend: Backend = (SimulatedBackend(bundle, sim_python) if simulate
                        else BoardBackend(bundle, batch_size=max(batch_sizes)))
    try:
        t0 = time.perf_counter()
        accuracy = run_accuracy(bundle, backend, images, labels, accuracy_batch)
        accuracy["seconds"] = time.perf_counter() - t0
        throughput = run_throughput(bundle, backend, images, batch_sizes, iterations)
        extra = backend.driver_throughput() if isinstance(backend, BoardBackend) else None
    finally:
        backend.close()
    result = {
        "label": backend.label,
        "detail": backend.detail,
        "bundle": {k: bundle.info.get(k) for k in ("variant", "board", "finn_board", "platform")}
        | {"path": str(bundle_path)},
        "dataset": str(data),
        "accuracy": accuracy,
        "throughput": throughput,
        "driver_throughput_test": extra,
        "estimates": bundle.info.get("estimates"),  # copied from the bundle, labelled there
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "host": platform.node(), "machine": platform.machine()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if simulate:
        result["note"] = ("simulated: outputs are bit-exact with the hardware graph; timings "
                          "are CPU python-execution timings, not FPGA performance")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fpgaslim-board", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="bundle .tar.gz (unpacked and verified) or unpacked folder")
    p.add_argument("--data", required=True, help=".npz with images (raw 0..255) and labels")
    p.add_argument("--out", default="board-result.json", help="result JSON")
    p.add_argument("--simulate", action="store_true",
                   help="run the bundle's dataflow graph on this CPU instead of the FPGA")
    p.add_argument("--sim-python", help="python of fpgaslim's compiler environment "
                                        "(default: this interpreter)")
    p.add_argument("--batch-sizes", default="1,8", help="throughput test, e.g. 1,8,64")
    p.add_argument("--iterations", type=int, default=5, help="throughput calls per batch size")
    p.add_argument("--limit", type=int, help="use the first N images only")
    p.add_argument("--workdir", help="where to unpack the bundle (default: a temp folder)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
        if not sizes or min(sizes) < 1:
            raise ConfigError(f"--batch-sizes {args.batch_sizes!r}: give positive integers")
        result = run(args.bundle, args.data, args.out, simulate=args.simulate,
                     sim_python=args.sim_python, batch_sizes=sizes, iterations=args.iterations,
                     limit=args.limit, workdir=args.workdir)
    except (FpgaslimError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    acc = result["accuracy"]
    print(f"{result['label']}: accuracy {acc['accuracy_percent']:.2f}% "
          f"({acc['correct']}/{acc['images']})")
    for row in result["throughput"]:
        print(f"{result['label']}: batch {row['batch_size']}: {row['fps']:.1f} fps, "
              f"p50 {row['latency_ms']['p50']:.2f} ms")
    print(f"result written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
