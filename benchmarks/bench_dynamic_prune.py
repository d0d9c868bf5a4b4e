"""Dynamic channel pruning benchmark on Fashion-MNIST (CPU recipe): ResNet-20 w4a4 baseline
against the variants of each pruning iteration.

Trains (or resumes) the baseline, runs `fpgaslim.compress.dynamic_prune` (preset "cpu"),
then FINN estimate-builds every model for the board and verifies it bit-exactly on real test
images. Prints a table and saves JSON + Markdown under benchmarks/results/.

Labels: accuracy "measured" (CPU, Brevitas; decisions on val, test reported); params/MACs
counted on the model; BRAM_18K, LUT, fps "FINN estimate"; bit-exact "simulated" (Python
execution of the folded FINN graph vs Brevitas).

    .venv/bin/python benchmarks/bench_dynamic_prune.py             # the CPU recipe (long)
    .venv/bin/python benchmarks/bench_dynamic_prune.py --smoke     # a few hundred images, 1 epoch
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from fpgaslim.atomic import atomic_write_json, atomic_write_text
from fpgaslim.compress import dynamic_prune as dp
from fpgaslim.compress.baseline import BaselineSettings, train_baseline
from fpgaslim.compress.data import load_dataset
from fpgaslim.compress.train import TrainSettings
from fpgaslim.compress.variants import RunDir
from fpgaslim.hw.api import build_variant

HERE = Path(__file__).resolve().parent


def row(record, hw, base) -> dict:
    d = record.details
    out = {
        "variant": record.id, "parent": record.parent, "threshold": d.get("threshold"),
        "channels_removed": d.get("removed_total", 0),
        "test_accuracy": record.accuracy.test, "val_accuracy": record.accuracy.val,
        "accuracy_drop": base.accuracy.test - record.accuracy.test,
        "params": record.params, "macs": record.macs,
        "macs_reduction_pct": 100.0 * (1 - record.macs / base.macs),
        "thin_layers": d.get("thin_layers", 0), "trials": len(d.get("trials", [])),
        "search_s": record.timings.get("search_s", record.timings.get("train_s")),
    }
    if hw is not None:
        out.update({"BRAM_18K": hw.resources["BRAM_18K"].value, "LUT": hw.resources["LUT"].value,
                    "weight_bits_onchip": hw.memory.weight_bits_onchip.value,
                    "est_fps": hw.throughput.fps.value, "fits": hw.fits,
                    "bit_exact": None if hw.verification is None
                    else hw.verification.integer_exact})
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    hw = "BRAM_18K" in rows[0]
    head = ("| variant | P | ch. removed | test acc % | drop | params | MACs | MACs -% | thin "
            + ("| BRAM_18K | LUT | est. fps | bit-exact " if hw else "") + "|")
    lines = [f"# Dynamic channel pruning on {meta['dataset']} ({meta['recipe']})", "",
             f"Model {meta['model']} w4a4, board {meta['board']}. Accuracy: measured on "
             f"{meta['test_images']} test images (CPU, Brevitas); params/MACs: counted on the "
             "model; BRAM_18K/LUT/fps: FINN estimate; bit-exact: simulated (Python execution "
             "of the folded FINN graph vs Brevitas).", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p = "-" if r["threshold"] is None else f"{r['threshold']:.4f}"
        line = (f"| {r['variant']} | {p} | {r['channels_removed']} | {r['test_accuracy']:.2f} "
                f"| {r['accuracy_drop']:+.2f} | {r['params']:,} | {r['macs']:,} "
                f"| {r['macs_reduction_pct']:.1f} | {r['thin_layers']} |")
        if hw:
            line += (f" {r['BRAM_18K']:.0f} | {r['LUT']:,.0f} | {r['est_fps']:,.0f} "
                     f"| {r['bit_exact']} |")
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny data and 1 epoch: proves it runs")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--board", default="pynq-z1")
    ap.add_argument("--epochs", type=int, default=15, help="baseline training epochs")
    ap.add_argument("--tolerance", type=float, default=0.5)
    ap.add_argument("--channel-multiple", type=int, default=4,
                    help="keep a multiple of this many channels per layer (FINN folding)")
    ap.add_argument("--verify-images", type=int, default=20)
    ap.add_argument("--no-build", action="store_true", help="skip the FINN builds")
    ap.add_argument("--work", type=Path, default=None, help="run folder (default under results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    tag = "smoke" if args.smoke else "cpu"
    out_dir = HERE / "results"
    work = args.work or out_dir / "tmp" / f"dynamic_prune-{tag}"  # git-ignored
    limits = dict(limit_train=400, limit_test=200) if args.smoke else {}
    data = load_dataset("fashion-mnist", **limits)
    settings = dp.Settings.preset("cpu", tolerance=args.tolerance,
                                  channel_multiple=args.channel_multiple)
    epochs, verify = args.epochs, args.verify_images
    if args.smoke:  # one short search: proves the pipeline, says nothing about quality
        settings = settings.model_copy(update=dict(epochs=1, iterations=1, stop_gap=0.2,
                                                   patience=None, restart_every=0,
                                                   tolerance=max(args.tolerance, 5.0)))
        epochs, verify = 1, min(verify, 4)
    run = RunDir(work)
    t0 = time.perf_counter()
    base = train_baseline(run, data, BaselineSettings(
        model=args.model, train=TrainSettings(epochs=epochs, lr=0.05, batch_size=64)),
        progress=False)
    variants = dp.run(run, base.id, data, settings, progress=False)
    rows = []
    for rec in [base, *variants]:
        hw = None if args.no_build else build_variant(run, rec.id, args.board, data=data,
                                                      verify_images=verify)
        rows.append(row(rec, hw, base))
    recipe = "fpgaslim CPU recipe" + (" (smoke: not a result)" if args.smoke else "")
    meta = {"dataset": data.name, "recipe": recipe, "model": args.model, "board": args.board,
            "test_images": len(data.test), "baseline_epochs": epochs,
            "settings": settings.model_dump(mode="json"),
            "wall_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads(),
            "sources": {"accuracy": "measured (CPU, Brevitas)", "params/macs": "counted",
                        "BRAM_18K/LUT/est_fps": "FINN estimate (finn-plus, estimate-only)",
                        "bit_exact": "simulated (Python execution of the FINN graph)"}}
    stem = out_dir / f"dynamic_prune-{tag}"
    atomic_write_json(stem.with_suffix(".json"), {"meta": meta, "rows": rows})
    md = markdown(rows, meta)
    atomic_write_text(stem.with_suffix(".md"), md)
    print(md)
    print(f"saved {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
