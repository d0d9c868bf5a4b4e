"""(child process) `python -m fpgaslim.hw.sim.child job.json`: one stitched-design simulation.

finn-plus changes process-wide state, so the simulation runs here, under the parent's time
limit (hw/sim/api.py). The job names the build's FINN folder, the frames (raw images, as the
build's verification saw them) and the settings; the child writes `result.json` beside the
job: the design's records (hw/sim/records.py) or an error with its kind, and appends progress
lines to `progress.jsonl`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np


def partition_inputs(finn_out: Path, images: np.ndarray) -> np.ndarray:
    """The dataflow partition's input for each image: FINN's parent graph (its host-side
    nodes before the accelerator, e.g. the NCHW -> NHWC transpose) executed by qonnx."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    inter = finn_out / "intermediate_models"
    parent = ModelWrapper(str(inter / "dataflow_parent.onnx"))
    sdp = parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]
    k = list(parent.graph.node).index(sdp)
    # only the nodes before the partition are needed: cut the parent there
    prefix = parent.transform(_KeepBefore(k, sdp.input[0]))
    if len(prefix.graph.node) == 0:
        return images.astype(np.float32)
    out = []
    for img in images:
        ctx = execute_onnx(prefix, {prefix.graph.input[0].name: img[None].astype(np.float32)})
        out.append(ctx[sdp.input[0]])
    return np.concatenate(out).astype(np.float32)


class _KeepBefore:
    """The first `k` nodes of a graph, with tensor `out` as its only output."""

    def __init__(self, k: int, out: str) -> None:
        self.k, self.out = k, out

    def apply(self, model):  # noqa: D102
        g = model.graph
        for n in list(g.node)[self.k:]:
            g.node.remove(n)
        vi = model.get_tensor_valueinfo(self.out)
        while len(g.output):
            g.output.pop()
        if vi is None:  # the input itself feeds the partition
            from onnx import helper

            vi = helper.make_tensor_value_info(self.out, 1, model.get_tensor_shape(self.out))
        else:
            g.value_info.remove(vi)
        g.output.append(vi)
        return model, False


def _install_rtl_ops() -> None:
    """fpgaslim's own RTL ops (hw/rtl: DuplicateStreams, ElementwiseAdd/Mul, Pool, ...), so
    a graph that holds them loads; nothing where that package is absent."""
    try:
        from ..rtl import install
    except ImportError:
        return
    install()


def run_child(job: dict) -> int:
    from .. import finn_compat

    out = Path(job["out"])
    prog = out / "progress.jsonl"

    def progress(msg: str) -> None:
        with open(prog, "a", encoding="utf-8") as f:
            f.write(json.dumps({"t": time.time(), "message": msg}) + "\n")

    t0 = time.time()
    result: dict = {}
    try:
        finn_compat.activate()
        _install_rtl_ops()
        from qonnx.core.modelwrapper import ModelWrapper

        from . import sizing
        from .design import simulate_graph
        from .stitch import StitchError

        finn_out = Path(job["finn_out"])
        folded = ModelWrapper(str(finn_out / "intermediate_models" / job["graph"]))
        images = np.load(job["images"]).astype(np.float32)
        x = partition_inputs(finn_out, images)
        try:
            res = simulate_graph(
                folded, x, job["part"], float(job["clock_ns"]), out,
                time_limit_s=float(job["time_limit_s"]), size_fifos=job.get("size", True),
                depths=job.get("depths"), ready_permille=int(job.get("ready_permille", 1000)),
                synth_family=job.get("synth_family"), progress=progress,
                jobs=int(os.environ.get("FPGASLIM_SIM_JOBS", min(2, os.cpu_count() or 1))))
        except StitchError as exc:
            result = {"error": "stitch", "message": str(exc)}
        except FileNotFoundError as exc:
            result = {"error": "tools", "message": str(exc)}
        else:
            cfg = None
            if len(res["runs"]) > 1:
                cfg = sizing.write_folding_config(folded, res["sides"], res["fifo_depths"],
                                                  out / "folding_config_sized_fifos.json")
            result = {"runs": [r.model_dump(mode="json") for r in res["runs"]],
                      "search": [{"label": r.label, "status": r.status,
                                  "cycles_per_frame": r.cycles_per_frame,
                                  "fifos": {f.name: f.depth for f in r.fifos}}
                                 for r in res["trials"]],
                      "fifo_depths": res["fifo_depths"], "sides": res["sides"],
                      "fifo_cost": [c.model_dump(mode="json") for c in res["fifo_cost"]],
                      "layers": res["layers"], "rtl_layers": res["rtl_layers"],
                      "perf": res["perf"], "folding_config": str(cfg) if cfg else None}
    except Exception as exc:  # noqa: BLE001  (reported to the parent, which raises it)
        result = {"error": "failed", "message": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-3000:]}
    result["seconds"] = round(time.time() - t0, 2)
    tmp = out / "result.json.part"
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(out / "result.json")
    return 0


def main() -> int:
    return run_child(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))


if __name__ == "__main__":
    sys.exit(main())
