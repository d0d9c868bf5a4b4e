"""Deployment benchmark: bundle -> unpack -> simulated board, for small trained models.

For each model: train a baseline on real data (digits by default), FINN estimate build for a
board, bundle it, then run the board runner with --simulate over the whole test split and
compare its predictions with the QAT (Brevitas) model's. Prints a table and saves JSON.

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

from fpgaslim.atomic import atomic_write_json
from fpgaslim.compress.baseline import BaselineSettings, train_baseline
from fpgaslim.compress.data import load_dataset
from fpgaslim.compress.train import TrainSettings
from fpgaslim.compress.variants import RunDir
from fpgaslim.deploy.board_runner import run as run_board
from fpgaslim.deploy.bundle import bundle
from fpgaslim.deploy.manifest import unpack
from fpgaslim.hw.api import build_variant

HERE = Path(__file__).resolve().parent


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
    atomic_write_json(args.out, {"dataset": args.dataset, "board": args.board,
                                 "python": sys.version.split()[0], "results": rows})
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
