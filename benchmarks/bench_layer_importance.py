"""Learned layer importance / recursive reduction benchmark on Fashion-MNIST (CPU recipe):
ResNet-20 w4a4, accuracy vs depth and the FINN hardware report of every kept variant.

The paper (Ling et al. 2021) is retracted, so its claims are checked, not quoted:
  * "layers can be removed without losing accuracy": the kept variants and the first rejected
    step (the accuracy floor is the step-0 validation accuracy);
  * "|omega| ranks units like the norm of omega * F(x)" (its section 4.2.5): Spearman rank
    correlation of |omega| with the measured mean L2 norm at step 0;
  * "inference time falls": forward/backward time per batch on this CPU, and FINN's estimated
    latency, per kept variant.
Prints a table and saves JSON + Markdown under benchmarks/results/.

Labels: accuracy "measured" (CPU, Brevitas); depth/MACs/params counted on the model;
forward/backward ms "measured on this CPU"; BRAM_18K, LUT, fps, latency "FINN estimate";
bit-exact "simulated" (Python execution of the FINN graph vs Brevitas).

    .venv/bin/python benchmarks/bench_layer_importance.py           # the CPU recipe (long)
    .venv/bin/python benchmarks/bench_layer_importance.py --smoke   # a few hundred images
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from fpgaslim.atomic import atomic_write_json, atomic_write_text
from fpgaslim.compress import layer_importance
from fpgaslim.compress.baseline import BaselineSettings, train_baseline
from fpgaslim.compress.data import load_dataset
from fpgaslim.compress.train import TrainSettings
from fpgaslim.compress.variants import RunDir
from fpgaslim.hw.api import build_variant

HERE = Path(__file__).resolve().parent


def row(record, hw) -> dict:
    return {
        "variant": record.id, "step": record.details.get("step"),
        "removed_blocks": record.details.get("removed_blocks", []),
        "test_accuracy": record.accuracy.test, "val_accuracy": record.accuracy.val,
        "depth": record.depth, "macs": record.macs, "params": record.params,
        "forward_ms_per_batch": record.timings.get("forward_ms_per_batch"),
        "backward_ms_per_batch": record.timings.get("backward_ms_per_batch"),
        "BRAM_18K": hw.resources["BRAM_18K"].value, "LUT": hw.resources["LUT"].value,
        "offchip_bytes_per_frame": hw.offchip.total_bytes.value,
        "est_fps": hw.throughput.fps.value, "est_latency_us": hw.throughput.latency_us.value,
        "hw_layers": len(hw.layers), "fits": hw.fits,
        "bit_exact": None if hw.verification is None else hw.verification.integer_exact,
    }


def claims(variants, log: dict) -> dict:
    """The paper's claims as measured numbers."""
    first, last = variants[0], variants[-1]
    w = first.details["omegas"]
    norms = first.details["residual_norms"]
    keys = sorted(w)
    rho = (float(spearmanr([abs(w[k]) for k in keys], [norms[k] for k in keys]).statistic)
           if len(keys) > 2 else None)
    rejected = [r for r in log.get("steps", []) if not r["kept"]]
    return {
        "start_val_accuracy": first.accuracy.val,
        "kept_depths": [v.depth for v in variants],
        "layers_removed_fraction": 1 - last.depth / first.depth,
        "rejected_step": rejected[0] if rejected else None,
        "stop_reason": log.get("stop_reason"),
        "spearman_abs_omega_vs_residual_norm_step0": rho,
        "forward_ms_change": (last.timings["forward_ms_per_batch"]
                              / first.timings["forward_ms_per_batch"] - 1),
    }


def markdown(rows: list[dict], meta: dict, c: dict) -> str:
    lines = [f"# Layer importance (recursive reduction) on {meta['dataset']} ({meta['recipe']})",
             "", f"Model {meta['model']} (width {meta['width']}) w4a4, board {meta['board']}. "
             f"Accuracy: measured on {meta['test_images']} test images (CPU, Brevitas); "
             "fwd/bwd ms: measured on this CPU (one training batch); BRAM_18K/LUT/fps/latency: "
             "FINN estimate; bit-exact: simulated (Python execution of the FINN graph).", "",
             "| variant | removed | val % | test % | depth | MACs | params | fwd ms | bwd ms "
             "| BRAM_18K | LUT | est. fps | est. latency us | bit-exact |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        fwd = "-" if r["forward_ms_per_batch"] is None else f"{r['forward_ms_per_batch']:.1f}"
        bwd = "-" if r["backward_ms_per_batch"] is None else f"{r['backward_ms_per_batch']:.1f}"
        lines.append(f"| {r['variant']} | {r['removed_blocks']} | {r['val_accuracy']:.2f} "
                     f"| {r['test_accuracy']:.2f} | {r['depth']} | {r['macs']:,} "
                     f"| {r['params']:,} | {fwd} | {bwd} | {r['BRAM_18K']:.0f} "
                     f"| {r['LUT']:,.0f} | {r['est_fps']:,.0f} | {r['est_latency_us']:.1f} "
                     f"| {r['bit_exact']} |")
    lines += ["", "## The retracted paper's claims, measured", "",
              "```json", json.dumps(c, indent=2, default=str), "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny data and 1 epoch: proves it runs")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--board", default="pynq-z1")
    ap.add_argument("--epochs", type=int, default=15, help="baseline training epochs")
    ap.add_argument("--verify-images", type=int, default=20)
    ap.add_argument("--work", type=Path, default=None, help="run folder (default under results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    tag = "smoke" if args.smoke else "cpu"
    out_dir = HERE / "results"
    work = args.work or out_dir / "tmp" / f"layer-importance-{tag}"  # git-ignored
    data = load_dataset("fashion-mnist", **(dict(limit_train=400, limit_test=200)
                                             if args.smoke else {}))
    settings = layer_importance.Settings.preset("cpu")
    epochs, verify = args.epochs, args.verify_images
    if args.smoke:
        settings = settings.model_copy(update=dict(train_epochs=1, retrain_epochs=1,
                                                   target_units=7, tolerance=100.0,
                                                   timing_repeats=2))
        epochs, verify = 1, min(verify, 4)
    run = RunDir(work)
    t0 = time.perf_counter()
    base = train_baseline(run, data, BaselineSettings(
        model=args.model, width=args.width,
        train=TrainSettings(epochs=epochs, lr=0.05, batch_size=64)), progress=False)
    base_hw = build_variant(run, base.id, args.board, data=data, verify_images=verify)
    base_row = row(base, base_hw)
    variants = layer_importance.run(run, base.id, data, settings, progress=False)
    rows = [base_row] + [row(v, build_variant(run, v.id, args.board, data=data,
                                              verify_images=verify)) for v in variants]
    log_path = run.path / "methods" / f"{layer_importance.METHOD}-{base.id}.json"
    log = json.loads(log_path.read_text(encoding="utf-8")) if log_path.is_file() else {}
    c = claims(variants, log)
    recipe = "fpgaslim CPU recipe" + (" (smoke: not a result)" if args.smoke else "")
    meta = {"dataset": data.name, "recipe": recipe, "model": args.model, "width": args.width,
            "board": args.board, "test_images": len(data.test), "baseline_epochs": epochs,
            "settings": settings.model_dump(mode="json"), "plots": [
                str(run.variant_dir(variants[-1].id) / n)
                for n in ("omega.png", "accuracy_vs_depth.png")],
            "wall_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()}
    stem = out_dir / f"layer-importance-{tag}"
    atomic_write_json(stem.with_suffix(".json"), {"meta": meta, "rows": rows, "claims": c,
                                                  "steps": log.get("steps")})
    md = markdown(rows, meta, c)
    atomic_write_text(stem.with_suffix(".md"), md)
    print(md)
    print(f"saved {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
