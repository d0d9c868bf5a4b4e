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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

from fpgaslim.compress import resconv  # noqa: E402
from fpgaslim.compare import resconv as skip_paths  # noqa: E402
from fpgaslim.compare.resconv import SKIP_OPS  # noqa: E402
from fpgaslim.compress.variants import RunDir  # noqa: E402
from fpgaslim.core.errors import VerificationError  # noqa: E402
from fpgaslim.hw.api import build_variant  # noqa: E402

COLUMNS = [("variant", "variant"), ("lambda", "lambda", "g"),
           ("test acc %", "test_accuracy", ".2f"), ("weight layers", "depth", "d"),
           ("MACs", "macs", ","), ("BRAM_18K", "BRAM_18K", ".0f"), ("LUT", "LUT", ",.0f"),
           ("est. fps", "est_fps", ",.0f"), ("skip-path HW layers", "skip_layers", "d"),
           ("bit-exact", "bit_exact")]


def row(record, hw, lam: float | None) -> dict:
    return {**common.variant_row(record, hw), "lambda": lam,
            "skip_layers": sum(hw.op_counts.get(k, 0) for k in SKIP_OPS),
            "pruned_layers": record.details.get("pruned_layers"),
            "train_s": sum(v for k, v in record.timings.items() if k != "total_s")}


def markdown(rows: list[dict], reports: list[str], meta: dict) -> str:
    return "\n".join([
        f"# ResConv-Prune on {meta['dataset']} ({meta['recipe']})", "",
        f"Model {meta['model']} (width {meta['width']}), board {meta['board']}, rate "
        f"{meta['rate']}. Accuracy: measured on {meta['test_images']} test images (CPU); "
        "layers/MACs: counted on the model; BRAM_18K/LUT/fps: FINN estimate; bit-exact: "
        "simulated (Python execution of the FINN graph vs Brevitas).", "",
        common.markdown_table(rows, COLUMNS), "", *reports])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_recipe_args(ap, "resnet8")
    ap.add_argument("--lambdas", type=float, nargs=2, default=(1e-3, 1e-2))
    ap.add_argument("--rate", type=float, default=0.4)
    args = ap.parse_args(argv)
    tag, data = common.start(args)  # machine snapshot, 2 torch threads, the data
    settings = resconv.Settings.preset("cpu")
    epochs, verify = args.epochs, args.verify_images
    if args.smoke:
        settings = settings.model_copy(update=dict(sparse_epochs=1, retrain_epochs=0,
                                                   finetune_epochs=1, calibration_images=128))
        epochs, verify = 1, min(verify, 4)
    run = RunDir(common.work_dir(args))
    t0 = time.perf_counter()
    base = common.train_recipe_baseline(run, data, args.model, args.width, epochs)
    base_hw = build_variant(run, base.id, args.board, data=data, verify_images=verify)
    rows, reports = [row(base, base_hw, None)], []
    for lam in args.lambdas:
        s = settings.model_copy(update={"lambda_": lam, "rate": args.rate})
        (v,) = resconv.run(run, base.id, data, s, progress=False)
        try:
            hw = build_variant(run, v.id, args.board, data=data, verify_images=verify)
        except VerificationError as e:  # a result too: keep the row, say why it has no HW
            rows.append({**common.variant_row(v), "lambda": lam, "bit_exact": f"no: {e}"})
            continue
        rows.append(row(v, hw, lam))
        reports.append(skip_paths.skip_path_report(base, v, base_hw, hw).markdown())
    meta = common.recipe_meta(args, data, epochs, t0, rate=args.rate,
                              settings=settings.model_dump(mode="json", by_alias=True))
    common.publish(f"resconv-{tag}", meta, rows, markdown(rows, reports, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
