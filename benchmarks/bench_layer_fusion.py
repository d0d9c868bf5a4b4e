"""Layer-fusion benchmark on Fashion-MNIST (CPU recipe): the paper's chain (dynamic pruning,
then layer fusion of the pruned model) and the two ablations (no distillation, no short
fine-tuning), every saved variant FINN estimate-built and verified bit-exactly.

Per variant: depth (conv + linear layers on the main path), MACs, BRAM_18K, off-chip
bytes/frame, est. fps and accuracy. Prints a table and saves JSON + Markdown under
benchmarks/results/.

Labels: accuracy "measured" (CPU, Brevitas, test split; decisions were taken on validation);
depth/MACs counted on the model; BRAM_18K, fps, off-chip bytes "FINN estimate" (off-chip bytes
computed from FINN's stream shapes and folding); bit-exact "simulated" (Python execution of
the FINN graph vs Brevitas).

    .venv/bin/python benchmarks/bench_layer_fusion.py            # the CPU recipe (long)
    .venv/bin/python benchmarks/bench_layer_fusion.py --smoke    # a few hundred images, 1 epoch
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from fpgaslim.atomic import atomic_write_json, atomic_write_text
from fpgaslim.compress import layer_fusion
from fpgaslim.compress.baseline import BaselineSettings, train_baseline
from fpgaslim.compress.data import load_dataset
from fpgaslim.compress.train import TrainSettings
from fpgaslim.compress.variants import RunDir
from fpgaslim.hw.api import build_variant

HERE = Path(__file__).resolve().parent


def row(record, hw, arm: str) -> dict:
    return {
        "arm": arm, "variant": record.id, "parent": record.parent, "method": record.method,
        "test_accuracy": record.accuracy.test, "val_accuracy": record.accuracy.val,
        "depth": record.depth, "macs": record.macs, "params": record.params,
        "removed_blocks": record.details.get("removed_blocks", []),
        "fused_layers_total": record.details.get("fused_layers_total", 0),
        "BRAM_18K": hw.resources["BRAM_18K"].value, "LUT": hw.resources["LUT"].value,
        "offchip_bytes_per_frame": hw.offchip.total_bytes.value,
        "est_fps": hw.throughput.fps.value, "est_latency_us": hw.throughput.latency_us.value,
        "hw_layers": len(hw.layers), "fits": hw.fits,
        "bit_exact": None if hw.verification is None else hw.verification.integer_exact,
        "train_s": sum(record.timings.values()),
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Layer fusion on {meta['dataset']} ({meta['recipe']})", "",
             f"Model {meta['model']} (width {meta['width']}), board {meta['board']}. Accuracy: "
             f"measured on {meta['test_images']} test images (CPU, Brevitas); depth/MACs: "
             "counted on the model; BRAM_18K/off-chip bytes/fps: FINN estimate (finn-plus); "
             "bit-exact: simulated (Python execution of the FINN graph vs Brevitas).", "",
             "| arm | variant | test acc % | depth | fused layers | MACs | BRAM_18K "
             "| off-chip B/frame | est. fps | HW layers | bit-exact |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['variant']} | {r['test_accuracy']:.2f} | {r['depth']} "
                     f"| {r['fused_layers_total']} | {r['macs']:,} | {r['BRAM_18K']:.0f} "
                     f"| {r['offchip_bytes_per_frame']:,.0f} | {r['est_fps']:,.0f} "
                     f"| {r['hw_layers']} | {r['bit_exact']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny data and 1 epoch: proves it runs")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--board", default="pynq-z1")
    ap.add_argument("--epochs", type=int, default=15, help="baseline training epochs")
    ap.add_argument("--no-prune", action="store_true",
                    help="fuse the baseline directly instead of the dynamically pruned model")
    ap.add_argument("--verify-images", type=int, default=20)
    ap.add_argument("--work", type=Path, default=None, help="run folder (default under results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    tag = "smoke" if args.smoke else "cpu"
    out_dir = HERE / "results"
    work = args.work or out_dir / "tmp" / f"layer-fusion-{tag}"  # git-ignored
    data = load_dataset("fashion-mnist", **(dict(limit_train=400, limit_test=200)
                                             if args.smoke else {}))
    fusion = layer_fusion.Settings.preset("cpu")
    epochs, verify = args.epochs, args.verify_images
    prune = None
    if not args.no_prune:
        from fpgaslim.compress import dynamic_prune

        prune = dynamic_prune.Settings.preset("cpu")
    if args.smoke:
        fusion = fusion.model_copy(update=dict(short_epochs=1, long_epochs=1, max_removals=2,
                                               group_size=2))
        if prune is not None:
            prune = prune.model_copy(update=dict(epochs=1, iterations=1, stop_gap=0.3,
                                                 calib_images=64))
        epochs, verify = 1, min(verify, 4)
    run = RunDir(work)
    t0 = time.perf_counter()
    base = train_baseline(run, data, BaselineSettings(
        model=args.model, width=args.width,
        train=TrainSettings(epochs=epochs, lr=0.05, batch_size=64)), progress=False)
    rows = [row(base, build_variant(run, base.id, args.board, data=data, verify_images=verify),
                "baseline")]
    if prune is not None:
        main_arm = layer_fusion.run_chain(run, base.id, data, prune, fusion, progress=False)
        pruned = [v for v in main_arm if v.method != layer_fusion.METHOD]
        fused = [v for v in main_arm if v.method == layer_fusion.METHOD]
        for v in pruned:
            rows.append(row(v, build_variant(run, v.id, args.board, data=data,
                                             verify_images=verify), "dynamic-prune"))
        fuse_from = pruned[-1].id
    else:
        fused = layer_fusion.run(run, base.id, data, fusion, progress=False)
        fuse_from = base.id
    arms = [("fusion (KD + short/long)", fused)]
    for name, update in (("ablation: no KD", {"kd": False}),
                         ("ablation: no short FT", {"short_finetune": False})):
        arms.append((name, layer_fusion.run(run, fuse_from, data,
                                            fusion.model_copy(update=update), progress=False)))
    for name, variants in arms:
        for v in variants:
            rows.append(row(v, build_variant(run, v.id, args.board, data=data,
                                             verify_images=verify), name))
    recipe = "fpgaslim CPU recipe" + (" (smoke: not a result)" if args.smoke else "")
    meta = {"dataset": data.name, "recipe": recipe, "model": args.model, "width": args.width,
            "board": args.board, "test_images": len(data.test), "baseline_epochs": epochs,
            "fused_from": fuse_from, "fusion_settings": fusion.model_dump(mode="json"),
            "prune_settings": None if prune is None else prune.model_dump(mode="json"),
            "wall_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()}
    stem = out_dir / f"layer-fusion-{tag}"
    atomic_write_json(stem.with_suffix(".json"), {"meta": meta, "rows": rows})
    md = markdown(rows, meta)
    atomic_write_text(stem.with_suffix(".md"), md)
    print(md)
    print(f"saved {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
