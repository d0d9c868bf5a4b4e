"""Deployment benchmark: bundle -> unpack -> simulated board, for small trained models.

For each model: train a baseline on real data (digits by default), FINN estimate build for a
board, bundle it, then run the board runner with --simulate over the whole test split and
compare its predictions with the QAT (Brevitas) model's. Prints a table and saves JSON +
Markdown (--out and the same name with .md).

Every number is labelled: "measured (this CPU)" for wall times of fpgaslim's own steps,
"simulated" for the runner's CPU execution of the dataflow graph (not FPGA speed), and
"FINN estimate" for the accelerator's throughput copied from the build.

    .venv/bin/python benchmarks/bench_deploy.py --models cnv,resnet8 --epochs 6
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

from fpgaslim.compress.baseline import BaselineSettings, train_baseline  # noqa: E402
from fpgaslim.compress.data import load_dataset  # noqa: E402
from fpgaslim.compress.train import TrainSettings  # noqa: E402
from fpgaslim.compress.variants import RunDir  # noqa: E402
from fpgaslim.deploy.board_runner import run as run_board  # noqa: E402
from fpgaslim.deploy.bundle import bundle  # noqa: E402
from fpgaslim.deploy.manifest import unpack  # noqa: E402
from fpgaslim.hw.api import build_variant  # noqa: E402

HERE = common.HERE
COLUMNS = [("model", "model"), ("width", "width", "g"), ("params", "params", ","),
           ("QAT test acc %", "qat_test_accuracy_percent", ".2f"),
           ("simulated acc %", "simulated_accuracy_percent", ".2f"),
           ("simulated vs QAT agreement", "simulated_vs_qat_agreement", ".3f"),
           ("bundle bytes", "bundle_bytes", ","),
           ("simulated fps, batch 1 (CPU)", "simulated_fps_batch1", ",.1f"),
           ("FINN est. fps", "finn_estimate_fps", ",.0f"), ("bit-exact", "bit_exact"),
           ("bundle s", "bundle_s", ".2f")]


def bench_model(model: str, width: float, data, board: str, epochs: int, work: Path,
                batch_sizes: list[int], iterations: int) -> dict:
    run = RunDir(work / f"run-{model}")
    t0 = time.perf_counter()
    rec = train_baseline(run, data, BaselineSettings(
        model=model, width=width, train=TrainSettings(epochs=epochs, lr=0.05, batch_size=32)),
        progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = build_variant(run, "baseline", board, data=data, verify_images=20)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    archive = bundle(run, "baseline", board, work / f"{model}-{board}.tar.gz")
    bundle_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    unpack(archive, work / f"unpack-{model}")
    unpack_s = time.perf_counter() - t0
    x, y = data.test.tensors
    npz = work / "test.npz"
    np.savez(npz, images=x.numpy().astype(np.uint8), labels=y.numpy())
    t0 = time.perf_counter()
    result = run_board(archive, npz, work / f"result-{model}.json", simulate=True,
                       batch_sizes=batch_sizes, iterations=iterations, workdir=work)
    runner_s = time.perf_counter() - t0
    with torch.no_grad():
        qat = run.load_model("baseline")(x).argmax(1).numpy()
    pred = np.asarray(result["accuracy"]["predictions"])
    return {
        **common.variant_row(rec, report),
        "model": model, "width": width, "board": board, "params": rec.params,
        "qat_test_accuracy_percent": float((qat == y.numpy()).mean() * 100),
        "simulated_accuracy_percent": result["accuracy"]["accuracy_percent"],
        "simulated_vs_qat_agreement": float((pred == qat).mean()),
        "test_images": int(len(y)),
        "bundle_bytes": archive.stat().st_size,
        "finn_estimate_fps": report.throughput.fps.value,
        "finn_estimate_source": report.throughput.fps.source,
        "simulated_throughput": result["throughput"],
        "timings_s": {"train": train_s, "estimate_build": build_s, "bundle": bundle_s,
                      "unpack_verify": unpack_s, "simulated_runner_total": runner_s,
                      "simulated_accuracy_pass": result["accuracy"]["seconds"]},
        "sources": {"timings_s": "measured (this CPU, wall clock)",
                    "simulated_*": "simulated: Python execution of the bundle's dataflow "
                                   "graph on this CPU, not FPGA performance",
                    "finn_estimate_fps": "FINN estimate"},
    }


def main(argv: list[str] | None = None) -> int:
    common.machine()  # snapshot (load average) at the start
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="cnv,resnet8")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--board", default="pynq-z1")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results" / "deploy.json"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    data = load_dataset(args.dataset)
    work = HERE / "results" / "tmp" / "deploy"
    work.mkdir(parents=True, exist_ok=True)
    widths = {"cnv": 0.25}
    rows = []
    for model in args.models.split(","):
        row = bench_model(model, widths.get(model, 1.0), data, args.board, args.epochs, work,
                          [int(b) for b in args.batch_sizes.split(",")], args.iterations)
        rows.append(row)
        b1 = row["simulated_throughput"][0]
        print(f"{model:8s} QAT {row['qat_test_accuracy_percent']:.2f}%  simulated "
              f"{row['simulated_accuracy_percent']:.2f}%  agreement "
              f"{row['simulated_vs_qat_agreement']:.3f}  bundle {row['bundle_bytes']:,} B  "
              f"sim batch {b1['batch_size']}: {b1['fps']:.1f} fps (CPU)  FINN est. "
              f"{row['finn_estimate_fps']:,.0f} fps  bundle {row['timings_s']['bundle']:.2f} s")
    for row in rows:  # flat copies of two nested figures for the table
        row["simulated_fps_batch1"] = row["simulated_throughput"][0]["fps"]
        row["bundle_s"] = row["timings_s"]["bundle"]
    out = Path(args.out)
    md = "\n".join([
        f"# Deployment on {args.dataset}, board {args.board}", "",
        "Accuracy: QAT measured (CPU, Brevitas); simulated = the board runner's CPU execution "
        "of the bundle's dataflow graph (not FPGA speed); FINN est. fps: FINN estimate; "
        "bundle s: measured (this CPU, wall clock).", "",
        common.markdown_table(rows, COLUMNS)])
    paths = common.save_results(out.stem, {"dataset": args.dataset, "board": args.board,
                                           "python": sys.version.split()[0]},
                                rows, md, results_dir=out.parent)
    print("saved " + " and ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
