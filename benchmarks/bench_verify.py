"""Benchmark: batched execution of the folded FINN graph (hw/fast_exec.py), the engine of the
bit-exact verification, on a Fashion-MNIST-shaped ResNet-20.

    .venv/bin/python benchmarks/bench_verify.py [--images 2000] [--build FINN_OUT]

The model is the seeded, untrained zoo ResNet-20 w4a4 at 1x28x28 (random weights: the speed
does not depend on training), FINN-estimate-built for Pynq-Z1 through hw/build.py (about a
minute; `--build` reuses the `work/finn` folder of any finished build instead). The dataflow
graph is then executed on Fashion-MNIST test images (seeded random 0..255 pixels where the
data is not installed) as `fpgaslim verify` does: in a child process with FINN's environment
(one BLAS thread), keeping every activation layer's integers and the last accumulator, with 1
and with 2 executor threads. Before timing, the batched result is checked equal to qonnx's
per-image `execute_onnx` on the first images (every tensor kept by verification).

Figures: images/s of wall time and images per CPU-second (process CPU time of all threads:
the machine is shared, so the CPU figure is the one that compares across loads), measured
with time.perf_counter / time.process_time; the machine, the date and the load average before
and after are saved with them in benchmarks/results/verify-cpu.json/.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

COLUMNS = [("executor", "executor"), ("threads", "threads", "d"), ("images", "images", ","),
           ("wall s", "wall_s", ".2f"), ("CPU s", "cpu_s", ".2f"),
           ("images/s (wall)", "images_per_s", ",.1f"),
           ("images per CPU-s", "images_per_cpu_s", ",.1f"),
           ("load 1m before", "load_before", ".1f"), ("load 1m after", "load_after", ".1f")]
TARGET = 100.0  # images/s on 2 cores (issue 16)


def build(root: Path) -> Path:
    """The seeded zoo ResNet-20 w4a4 1x28x28 built for Pynq-Z1; returns its work/finn."""
    import torch

    from fpgaslim.compress.models import create_model
    from fpgaslim.hw.build import BuildSettings, build_estimate
    from fpgaslim.hw.qonnx_export import export_qonnx

    torch.manual_seed(0)
    model = create_model("resnet20", (1, 28, 28), 10, None, 1.0).eval()
    onnx_path = export_qonnx(model, root / "resnet20.onnx")
    x = torch.randint(0, 256, (2, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    # not strict: an untrained model on random pixels may have near-ties; speed is measured
    build_estimate(onnx_path, root / "work", BuildSettings(board="pynq-z1", strict=False),
                   model=model, images=x.float(), labels=torch.zeros(2, dtype=torch.long),
                   variant="resnet20")
    return root / "work" / "finn"


def images(n: int) -> tuple[object, str]:
    import numpy as np

    try:
        from fpgaslim.compress.data import load_dataset

        data = load_dataset("fashion-mnist", limit_train=1)
        x = data.test.tensors[0][:n].numpy().astype(np.float32)
        return x, f"{len(x)} Fashion-MNIST test images"
    except Exception as exc:  # noqa: BLE001 - data not installed: seeded random pixels
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (n, 1, 28, 28)).astype(np.float32),
                f"{n} seeded random 0..255 images (Fashion-MNIST not loaded: {exc})")


def measure(finn_out: Path, inputs: Path, out_json: Path, baseline: str | None) -> None:
    """(child, FINN's environment) Equality check, then the timed runs."""
    import numpy as np

    from fpgaslim.hw import fast_exec, finn_compat

    finn_compat.activate()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fpgaslim.hw.verify import LAST_STEP, _execute_per_image, act_layers, last_weight_layer

    inter = finn_out / "intermediate_models"
    child = finn_compat.to_python_exec(ModelWrapper(str(inter / f"{LAST_STEP}.onnx")))
    child_path = inter / "fpgaslim_python_exec.onnx"
    child.save(str(child_path))
    parent = ModelWrapper(str(inter / "dataflow_parent.onnx"))
    sdp = parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]
    getCustomOp(sdp).set_nodeattr("model", str(child_path))
    keep = {t for _, t in act_layers(child)} | {last_weight_layer(child)[1]}
    x = np.load(inputs)
    oname = parent.graph.output[0].name
    fast = fast_exec.run_parent(parent, child, x[:3], keep)
    slow = _execute_per_image(parent, sdp, child, x[:3], keep)
    equal = all(np.array_equal(fast[t], slow[t].reshape(fast[t].shape)) for t in keep | {oname})
    executors = [("fpgaslim (this tree)", fast_exec)]
    if baseline:  # another version of fast_exec.py (e.g. an older commit's), same graph
        spec = importlib.util.spec_from_file_location("fast_exec_baseline", baseline)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        executors.append((f"baseline {Path(baseline).name}", mod))
    rows = []
    for threads in (1, 2):
        os.environ["FPGASLIM_EXEC_THREADS"] = str(threads)
        for label, mod in executors:
            mod.run_parent(parent, child, x[:16], keep)  # warm
            load0 = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), time.process_time()
            mod.run_parent(parent, child, x, keep)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows.append({"executor": label, "threads": threads, "images": len(x),
                         "wall_s": wall, "cpu_s": cpu, "images_per_s": len(x) / wall,
                         "images_per_cpu_s": len(x) / cpu, "load_before": load0,
                         "load_after": os.getloadavg()[0]})
            print(json.dumps(rows[-1]), flush=True)
    out_json.write_text(json.dumps({"equal_to_per_image": equal, "rows": rows,
                                    "hw_layers": len(child.graph.node)}), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--build", type=Path, help="work/finn of a finished build to reuse")
    ap.add_argument("--baseline", help="another fast_exec.py to time on the same graph")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        measure(Path(args.child[0]), Path(args.child[1]), Path(args.child[2]), args.baseline)
        return 0
    import numpy as np

    from fpgaslim.hw.finn_compat import child_environment

    machine = common.machine()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_verify_") as tmp:
        root = Path(tmp)
        finn_out = args.build or build(root)
        build_s = time.perf_counter() - t0
        x, label = images(args.images)
        np.save(root / "inputs.npy", x)
        env = child_environment(root / "child")
        cmd = [sys.executable, __file__, "--child", str(finn_out), str(root / "inputs.npy"),
               str(root / "result.json")] + (["--baseline", args.baseline] if args.baseline
                                             else [])
        subprocess.run(cmd, env=env, check=True)
        res = json.loads((root / "result.json").read_text(encoding="utf-8"))
    rows = res["rows"]
    best2 = max(r["images_per_s"] for r in rows if r["threads"] == 2
                and r["executor"].startswith("fpgaslim"))
    meta = {"model": "zoo resnet20 w4a4 1x28x28, seeded, untrained (random weights)",
            "board": "pynq-z1", "inputs": label, "hw_nodes": res["hw_layers"],
            "build": str(args.build) if args.build else "fresh FINN estimate build",
            "build_s": None if args.build else build_s,
            "equal_to_per_image": res["equal_to_per_image"], "target_images_per_s": TARGET,
            "wall_s": time.perf_counter() - t0,
            "source": "measured: hw/fast_exec.py run_parent in a child with FINN's environment "
                      "(OMP_NUM_THREADS=1), time.perf_counter (wall) and time.process_time "
                      "(CPU of all threads) on this machine"}
    md = "\n".join([
        "# Verification engine speed (hw/fast_exec.py)", "",
        f"{meta['model']}, Pynq-Z1 build, {label}; {res['hw_layers']} HW nodes. Batched "
        f"result equal to qonnx's per-image execution on the first 3 images: "
        f"{res['equal_to_per_image']}. Measured on {machine['cpu']} "
        f"({machine['logical_cores']} logical cores, shared; 1-minute load at start "
        f"{machine['load_avg_1m_at_start']}). Best 2-thread wall rate {best2:,.1f} images/s "
        f"(target {TARGET:g}).", "", common.markdown_table(rows, COLUMNS), ""])
    common.publish("verify-cpu", meta, rows, md)
    return 0 if res["equal_to_per_image"] else 1


if __name__ == "__main__":
    sys.exit(main())
