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

from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

from fpgaslim.compress import layer_importance  # noqa: E402
from fpgaslim.compress.variants import RunDir  # noqa: E402
from fpgaslim.hw.api import build_variant  # noqa: E402

COLUMNS = [("variant", "variant"), ("removed", "removed_blocks"),
           ("val %", "val_accuracy", ".2f"), ("test %", "test_accuracy", ".2f"),
           ("depth", "depth", "d"), ("MACs", "macs", ","), ("params", "params", ","),
           ("fwd ms", "forward_ms_per_batch", ".1f"), ("bwd ms", "backward_ms_per_batch", ".1f"),
           ("BRAM_18K", "BRAM_18K", ".0f"), ("LUT", "LUT", ",.0f"),
           ("est. fps", "est_fps", ",.0f"), ("est. latency us", "est_latency_us", ".1f"),
           ("bit-exact", "bit_exact")]


def row(record, hw) -> dict:
    return {**common.variant_row(record, hw), "step": record.details.get("step"),
            "removed_blocks": record.details.get("removed_blocks", []),
            "forward_ms_per_batch": record.timings.get("forward_ms_per_batch"),
            "backward_ms_per_batch": record.timings.get("backward_ms_per_batch")}


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
    return "\n".join([
        f"# Layer importance (recursive reduction) on {meta['dataset']} ({meta['recipe']})",
        "", f"Model {meta['model']} (width {meta['width']}) w4a4, board {meta['board']}. "
        f"Accuracy: measured on {meta['test_images']} test images (CPU, Brevitas); "
        "fwd/bwd ms: measured on this CPU (one training batch); BRAM_18K/LUT/fps/latency: "
        "FINN estimate; bit-exact: simulated (Python execution of the FINN graph).", "",
        common.markdown_table(rows, COLUMNS), "",
        "## The retracted paper's claims, measured", "",
        "```json", json.dumps(c, indent=2, default=str), "```"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_recipe_args(ap, "resnet20")
    args = ap.parse_args(argv)
    tag, data = common.start(args)  # machine snapshot, 2 torch threads, the data
    settings = layer_importance.Settings.preset("cpu")
    epochs, verify = args.epochs, args.verify_images
    if args.smoke:
        settings = settings.model_copy(update=dict(train_epochs=1, retrain_epochs=1,
                                                   target_units=7, tolerance=100.0,
                                                   timing_repeats=2))
        epochs, verify = 1, min(verify, 4)
    run = RunDir(common.work_dir(args))
    t0 = time.perf_counter()
    base = common.train_recipe_baseline(run, data, args.model, args.width, epochs)
    base_hw = build_variant(run, base.id, args.board, data=data, verify_images=verify)
    base_row = row(base, base_hw)
    variants = layer_importance.run(run, base.id, data, settings, progress=False)
    rows = [base_row] + [row(v, build_variant(run, v.id, args.board, data=data,
                                              verify_images=verify)) for v in variants]
    log_path = run.path / "methods" / f"{layer_importance.METHOD}-{base.id}.json"
    log = json.loads(log_path.read_text(encoding="utf-8")) if log_path.is_file() else {}
    c = claims(variants, log)
    meta = common.recipe_meta(
        args, data, epochs, t0, settings=settings.model_dump(mode="json"),
        plots=[str(run.variant_dir(variants[-1].id) / n)
               for n in ("omega.png", "accuracy_vs_depth.png")],
        sources={**common.ROW_SOURCES,
                 "forward_ms_per_batch/backward_ms_per_batch": "measured on this CPU"})
    common.publish(f"layer-importance-{tag}", meta, rows, markdown(rows, meta, c),
                   extra={"claims": c, "steps": log.get("steps")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
