"""The simulated board: a bundle's dataflow graph executed on the CPU (compiler side).

The bundle carries the final folded hardware graph (the specialized `*_hls`/`*_rtl` layers
FINN would turn into a bitfile). Those layers have no Python execution of their own, so each
runs as its generic FINN base op (`hw.finn_compat.to_python_exec`, the same path as the build's
verification), which computes the same integers as the hardware: the outputs are the
accelerator's output stream, bit-exact, and the board runner applies the host-side ops.

`python -m fpgaslim.deploy.simulate --serve BUNDLE_DIR` is the worker the board runner starts
for `--simulate`: it answers JSON lines {"input": in.npy, "output": out.npy} on stdin with
{"ok": true, "seconds": t} on stdout, so the runner itself never imports the compiler side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fpgaslim.core.errors import BundleError, FpgaslimError

SOURCE = ("simulated: Python execution of the bundle's folded FINN dataflow graph "
          "(generic base ops), CPU")


class GraphSimulator:
    """Loads the bundle's hardware graph once; executes batches image by image."""

    def __init__(self, bundle_dir: str | Path) -> None:
        from qonnx.core.modelwrapper import ModelWrapper

        from fpgaslim.hw.finn_compat import to_python_exec

        root = Path(bundle_dir)
        try:
            info = json.loads((root / "bundle.json").read_text(encoding="utf-8"))
            graph = root / info["graph"]["path"]
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{root}: no readable bundle.json with a graph entry") from exc
        if not graph.is_file():
            raise BundleError(f"{root}: the bundle's dataflow graph {graph.name} is missing")
        self.model = to_python_exec(ModelWrapper(str(graph)))
        self.iname = self.model.graph.input[0].name
        self.oname = self.model.graph.output[0].name
        self.ishape = tuple(self.model.get_tensor_shape(self.iname))[1:]

    def execute(self, x: np.ndarray) -> np.ndarray:
        from qonnx.core.onnx_exec import execute_onnx

        x = np.asarray(x)
        if tuple(x.shape[1:]) != self.ishape:
            raise FpgaslimError(f"simulator input has shape {x.shape[1:]}, the graph expects "
                                f"{self.ishape}")
        outs = [execute_onnx(self.model, {self.iname: img[None].astype(np.float32)})[self.oname]
                for img in x]
        return np.concatenate(outs)


def serve(bundle_dir: str | Path, setup: Callable[[], None] | None = None) -> int:
    """The worker loop. Anything FINN or qonnx prints goes to stderr (fd 1 is re-pointed), so
    the protocol channel carries only protocol lines. `setup` (FINN's environment) runs
    inside the reported region: a Python without qonnx/finn-plus is told over the protocol."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(msg: dict[str, Any]) -> None:
        channel.write(json.dumps(msg) + "\n")
        channel.flush()

    try:
        if setup is not None:
            setup()
        sim = GraphSimulator(bundle_dir)
    except Exception as exc:  # report any failure to the runner instead of dying silently
        say({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    say({"ready": True, "detail": SOURCE})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            t0 = time.perf_counter()
            y = sim.execute(np.load(req["input"], allow_pickle=False))
            seconds = time.perf_counter() - t0
            np.save(req["output"], y)
            say({"ok": True, "seconds": seconds})
        except Exception as exc:
            say({"error": f"{type(exc).__name__}: {exc}"})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpgaslim.deploy.simulate")
    p.add_argument("--serve", metavar="BUNDLE_DIR", required=True,
                   help="unpacked bundle whose graph to execute")
    args = p.parse_args(argv)
    return serve(args.serve, setup=_finn_environment)


def _finn_environment() -> None:
    """finn-plus reads its settings from these; keep it out of ~/.finn (own process only)."""
    from fpgaslim.hw.finn_compat import child_environment

    env = child_environment(Path(tempfile.mkdtemp(prefix="fpgaslim-simulate-")))
    for var in ("FINN_SETTINGS", "FINN_BUILD_DIR", "FINN_DEPS"):
        os.environ.setdefault(var, env[var])


if __name__ == "__main__":
    sys.exit(main())
