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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

from fpgaslim.compress import layer_fusion  # noqa: E402
from fpgaslim.compress.methods import get_method  # noqa: E402
from fpgaslim.compress.variants import RunDir  # noqa: E402
from fpgaslim.hw.api import build_variant  # noqa: E402

COLUMNS = [("arm", "arm"), ("variant", "variant"), ("test acc %", "test_accuracy", ".2f"),
           ("depth", "depth", "d"), ("fused layers", "fused_layers_total", "d"),
           ("MACs", "macs", ","), ("BRAM_18K", "BRAM_18K", ".0f"),
           ("off-chip B/frame", "offchip_bytes_per_frame", ",.0f"),
           ("est. fps", "est_fps", ",.0f"), ("HW layers", "hw_layers", "d"),
           ("bit-exact", "bit_exact")]


def row(record, hw, arm: str) -> dict:
    return {"arm": arm, **common.variant_row(record, hw),
            "removed_blocks": record.details.get("removed_blocks", []),
            "fused_layers_total": record.details.get("fused_layers_total", 0),
            "train_s": sum(record.timings.values())}


def markdown(rows: list[dict], meta: dict) -> str:
    return "\n".join([
        f"# Layer fusion on {meta['dataset']} ({meta['recipe']})", "",
        f"Model {meta['model']} (width {meta['width']}), board {meta['board']}. Accuracy: "
        f"measured on {meta['test_images']} test images (CPU, Brevitas); depth/MACs: "
        "counted on the model; BRAM_18K/off-chip bytes/fps: FINN estimate (finn-plus); "
        "bit-exact: simulated (Python execution of the FINN graph vs Brevitas).", "",
        common.markdown_table(rows, COLUMNS)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_recipe_args(ap, "resnet20")
    ap.add_argument("--no-prune", action="store_true",
                    help="fuse the baseline directly instead of the dynamically pruned model")
    ap.add_argument("--no-ablations", action="store_true",
                    help="skip the no-KD and no-short-fine-tuning arms")
    args = ap.parse_args(argv)
    tag, data = common.start(args)  # machine snapshot, 2 torch threads, the data
    fusion = layer_fusion.Settings.preset("cpu")
    epochs, verify = args.epochs, args.verify_images
    prune = None
    if not args.no_prune:
        prune = common.dynamic_prune_settings(args.smoke)
    if args.smoke:
        fusion = fusion.model_copy(update=dict(short_epochs=1, long_epochs=1, max_removals=2,
                                               group_size=2))
        epochs, verify = 1, min(verify, 4)
    run = RunDir(common.work_dir(args))
    t0 = time.perf_counter()
    base = common.train_recipe_baseline(run, data, args.model, args.width, epochs)

    def built(v, arm: str) -> dict:
        return row(v, build_variant(run, v.id, args.board, data=data, verify_images=verify), arm)

    rows = [built(base, "baseline")]
    if prune is not None:
        chain = get_method("dynamic-prune+fuse")  # the registered composite method
        main_arm = chain.run(run, base.id, data, chain.Settings(
            **{"dynamic-prune": prune, "layer-fusion": fusion}), progress=False)
        pruned = [v for v in main_arm if v.method != layer_fusion.METHOD]
        fused = [v for v in main_arm if v.method == layer_fusion.METHOD]
        rows += [built(v, "dynamic-prune") for v in pruned]
        fuse_from = pruned[-1].id
    else:
        fused = layer_fusion.run(run, base.id, data, fusion, progress=False)
        fuse_from = base.id
    arms = [("fusion (KD + short/long)", fused)]
    for name, update in () if args.no_ablations else (
            ("ablation: no KD", {"kd": False}), ("ablation: no short FT", {"short_finetune": False})):
        arms.append((name, layer_fusion.run(run, fuse_from, data,
                                            fusion.model_copy(update=update), progress=False)))
    rows += [built(v, name) for name, variants in arms for v in variants]
    meta = common.recipe_meta(
        args, data, epochs, t0, fused_from=fuse_from,
        fusion_settings=fusion.model_dump(mode="json"),
        prune_settings=None if prune is None else prune.model_dump(mode="json"))
    common.publish(f"layer-fusion-{tag}", meta, rows, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
