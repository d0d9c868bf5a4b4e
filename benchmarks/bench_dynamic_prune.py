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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

from fpgaslim.compress import dynamic_prune as dp  # noqa: E402
from fpgaslim.compress.variants import RunDir  # noqa: E402
from fpgaslim.hw.api import build_variant  # noqa: E402

COLUMNS_MODEL = [("variant", "variant"), ("P", "threshold", ".4f"),
                 ("ch. removed", "channels_removed", "d"), ("test acc %", "test_accuracy", ".2f"),
                 ("drop", "accuracy_drop", "+.2f"), ("params", "params", ","),
                 ("MACs", "macs", ","), ("MACs -%", "macs_reduction_pct", ".1f"),
                 ("thin", "thin_layers", "d")]
COLUMNS_HW = [("BRAM_18K", "BRAM_18K", ".0f"), ("LUT", "LUT", ",.0f"),
              ("est. fps", "est_fps", ",.0f"), ("bit-exact", "bit_exact")]


def row(record, hw, base) -> dict:
    d = record.details
    return {**common.variant_row(record, hw, base), "threshold": d.get("threshold"),
            "channels_removed": d.get("removed_total", 0),
            "thin_layers": d.get("thin_layers", 0), "trials": len(d.get("trials", [])),
            "search_s": record.timings.get("search_s", record.timings.get("train_s"))}


def markdown(rows: list[dict], meta: dict) -> str:
    hw = rows[0].get("BRAM_18K") is not None
    return "\n".join([
        f"# Dynamic channel pruning on {meta['dataset']} ({meta['recipe']})", "",
        f"Model {meta['model']} w4a4, board {meta['board']}. Accuracy: measured on "
        f"{meta['test_images']} test images (CPU, Brevitas); params/MACs: counted on the "
        "model; BRAM_18K/LUT/fps: FINN estimate; bit-exact: simulated (Python execution "
        "of the folded FINN graph vs Brevitas).", "",
        common.markdown_table(rows, COLUMNS_MODEL + (COLUMNS_HW if hw else []))])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_recipe_args(ap, "resnet20", width=False)
    ap.add_argument("--no-build", action="store_true", help="skip the FINN builds")
    args = ap.parse_args(argv)
    tag, data = common.start(args)  # machine snapshot, 2 torch threads, the data
    settings = common.dynamic_prune_settings(args.smoke)
    epochs, verify = args.epochs, args.verify_images
    if args.smoke:  # one short search: proves the pipeline, says nothing about quality
        epochs, verify = 1, min(verify, 4)
    run = RunDir(common.work_dir(args))
    t0 = time.perf_counter()
    base = common.train_recipe_baseline(run, data, args.model, 1.0, epochs)
    variants = dp.run(run, base.id, data, settings, progress=False)
    rows = []
    for rec in [base, *variants]:
        hw = None if args.no_build else build_variant(run, rec.id, args.board, data=data,
                                                      verify_images=verify)
        rows.append(row(rec, hw, base))
    meta = common.recipe_meta(args, data, epochs, t0, settings=settings.model_dump(mode="json"))
    meta["sources"] = {"accuracy": "measured (CPU, Brevitas)", "params/macs": "counted",
                        "BRAM_18K/LUT/est_fps": "FINN estimate (finn-plus, estimate-only)",
                        "bit_exact": "simulated (Python execution of the FINN graph)"}
    common.publish(f"dynamic_prune-{tag}", meta, rows, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
