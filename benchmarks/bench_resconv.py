"""ResConv-Prune benchmark on Fashion-MNIST (CPU recipe): fused plain variants at two lambda
values against their residual ResNet baseline.

For each lambda: sparse-train the ResConv form of the baseline, prune `--rate` of its layers,
fuse, re-quantize and QAT fine-tune (`fpgaslim.compress.resconv`, preset "cpu"), then FINN
estimate-build every model for the board and verify it bit-exactly on real test images.
Prints a table and saves JSON + Markdown (with the skip-path side-by-side of each variant)
under benchmarks/results/.

Labels: accuracy "measured" (CPU, Brevitas); layers/MACs counted on the model; BRAM_18K, LUT,
fps "FINN estimate"; verification "simulated" (Python execution of the FINN graph).

    .venv/bin/python benchmarks/bench_resconv.py                # the CPU recipe (long)
    .venv/bin/python benchmarks/bench_resconv.py --smoke        # a few hundred images, 1 epoch
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from fpgaslim.atomic import atomic_write_json, atomic_write_text
from fpgaslim.compress import resconv
from fpgaslim.compress.baseline import BaselineSettings, train_baseline
from fpgaslim.compress.data import load_dataset
from fpgaslim.compress.resconv_report import SKIP_OPS
from fpgaslim.compress.train import TrainSettings
from fpgaslim.compress.variants import RunDir
from fpgaslim.hw.api import build_variant

HERE = Path(__file__).resolve().parent


def row(record, hw, lam: float | None) -> dict:
    ops = hw.op_counts
    return {
        "variant": record.id, "lambda": lam, "method": record.method,
        "test_accuracy": record.accuracy.test, "val_accuracy": record.accuracy.val,
        "weight_layers": record.depth, "macs": record.macs, "params": record.params,
        "BRAM_18K": hw.resources["BRAM_18K"].value, "LUT": hw.resources["LUT"].value,
        "est_fps": hw.throughput.fps.value, "est_latency_us": hw.throughput.latency_us.value,
        "hw_layers": len(hw.layers),
        "skip_layers": sum(ops.get(k, 0) for k in SKIP_OPS),
        "bit_exact": None if hw.verification is None else hw.verification.integer_exact,
        "fits": hw.fits,
        "pruned_layers": record.details.get("pruned_layers"),
        "train_s": sum(v for k, v in record.timings.items() if k != "total_s"),
    }


def markdown(rows: list[dict], reports: list[str], meta: dict) -> str:
    head = ("| variant | lambda | test acc % | weight layers | MACs | BRAM_18K | LUT | est. fps "
            "| skip-path HW layers | bit-exact |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    lines = [f"# ResConv-Prune on {meta['dataset']} ({meta['recipe']})", "",
             f"Model {meta['model']} (width {meta['width']}), board {meta['board']}, rate "
             f"{meta['rate']}. Accuracy: measured on {meta['test_images']} test images (CPU); "
             "layers/MACs: counted on the model; BRAM_18K/LUT/fps: FINN estimate; bit-exact: "
             "simulated (Python execution of the FINN graph vs Brevitas).", "", head]
    for r in rows:
        lam = "-" if r["lambda"] is None else f"{r['lambda']:g}"
        lines.append(f"| {r['variant']} | {lam} | {r['test_accuracy']:.2f} "
                     f"| {r['weight_layers']} | {r['macs']:,} | {r['BRAM_18K']:.0f} "
                     f"| {r['LUT']:,.0f} | {r['est_fps']:,.0f} | {r['skip_layers']} "
                     f"| {r['bit_exact']} |")
    return "\n".join(lines + ["", *reports])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny data and 1 epoch: proves it runs")
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--lambdas", type=float, nargs=2, default=(1e-3, 1e-2))
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--board", default="pynq-z1")
    ap.add_argument("--epochs", type=int, default=15, help="baseline training epochs")
    ap.add_argument("--verify-images", type=int, default=20)
    ap.add_argument("--work", type=Path, default=None, help="run folder (default under results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    tag = "smoke" if args.smoke else "cpu"
    out_dir = HERE / "results"
    work = args.work or out_dir / "tmp" / f"resconv-{tag}"  # git-ignored
    limits = dict(limit_train=400, limit_test=200) if args.smoke else {}
    data = load_dataset("fashion-mnist", **limits)
    settings = resconv.Settings.preset("cpu")
    epochs = args.epochs
    verify = args.verify_images
    if args.smoke:
        settings = settings.model_copy(update=dict(sparse_epochs=1, retrain_epochs=0,
                                                   finetune_epochs=1, calibration_images=128))
        epochs, verify = 1, min(verify, 4)
    run = RunDir(work)
    t0 = time.perf_counter()
    base = train_baseline(run, data, BaselineSettings(
        model=args.model, width=args.width,
        train=TrainSettings(epochs=epochs, lr=0.05, batch_size=64)), progress=False)
    base_hw = build_variant(run, base.id, args.board, data=data, verify_images=verify)
    rows, reports = [row(base, base_hw, None)], []
    for lam in args.lambdas:
        s = settings.model_copy(update={"lambda_": lam, "rate": args.rate})
        (v,) = resconv.run(run, base.id, data, s, progress=False)
        hw = build_variant(run, v.id, args.board, data=data, verify_images=verify)
        rows.append(row(v, hw, lam))
        reports.append(resconv.skip_path_report(base, v, base_hw, hw).markdown())
    recipe = "fpgaslim CPU recipe" + (" (smoke: not a result)" if args.smoke else "")
    meta = {"dataset": data.name, "recipe": recipe,
            "model": args.model, "width": args.width, "board": args.board, "rate": args.rate,
            "test_images": len(data.test), "baseline_epochs": epochs,
            "settings": settings.model_dump(mode="json", by_alias=True),
            "wall_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()}
    stem = out_dir / f"resconv-{tag}"
    atomic_write_json(stem.with_suffix(".json"), {"meta": meta, "rows": rows})
    md = markdown(rows, reports, meta)
    atomic_write_text(stem.with_suffix(".md"), md)
    print(md)
    print(f"saved {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
