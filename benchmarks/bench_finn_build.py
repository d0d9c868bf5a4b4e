"""Benchmark: FINN estimate build wall time per variant and board, and verification speed.

    .venv/bin/python benchmarks/bench_finn_build.py [--run RUN_DIR ...] [--boards pynq-z1,u250]
                                                    [--images 50] [--epochs 3]

Without --run it trains ResNet-8 and quarter-width CNV baselines on digits into a temporary
run (training is not timed). Each variant is built cold on the first board (full flow,
including streamlining) and warm on the others (board-independent prefix reused), then
verified bit-exactly on real test images. Prints a table and writes
benchmarks/results/finn_build-<timestamp>.json and .md with a machine description: the wall
times are measured on this machine; est_fps, LUT, BRAM_18K are FINN estimates.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

COLUMNS = [("variant", "variant"), ("board", "board"), ("prefix_reused", "prefix_reused"),
           ("build_wall_s", "build_wall_s", ".2f"), ("finn_steps_s", "finn_steps_s", ".2f"),
           ("streamline_s", "streamline_s", ".2f"),
           ("verify_images_per_s", "verify_images_per_s", ".2f"), ("bit_exact", "bit_exact"),
           ("est_fps", "est_fps", ",.1f"), ("fits", "fits")]


def trained_run(root: Path, epochs: int):
    from fpgaslim.compress.baseline import BaselineSettings, train_baseline
    from fpgaslim.compress.data import load_dataset
    from fpgaslim.compress.train import TrainSettings
    from fpgaslim.compress.variants import RunDir

    data = load_dataset("digits")
    runs = {}
    for name, width in (("resnet8", 1.0), ("cnv", 0.25)):
        run = RunDir(root / name)
        train_baseline(run, data, BaselineSettings(model=name, width=width, train=TrainSettings(
            epochs=epochs, lr=0.05, batch_size=32)), progress=False)
        runs[name] = run
    return runs, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append",
                    help="an existing run dir (benchmarks all its variants); repeatable")
    ap.add_argument("--boards", default="pynq-z1,u250")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    from fpgaslim.compress.data import load_dataset
    from fpgaslim.compress.variants import RunDir
    from fpgaslim.hw.api import build_variant

    info = common.machine()  # snapshot (load average) at the start
    tmp = tempfile.TemporaryDirectory(prefix="bench-finn-")
    if args.run:
        jobs = [(f"{p.name}/{vid}", RunDir(p), vid) for p in args.run for vid in RunDir(p).ids()]
        data = None
    else:
        runs, data = trained_run(Path(tmp.name), args.epochs)
        jobs = [(name, run, "baseline") for name, run in runs.items()]
    rows = []
    for label, run, vid in jobs:
        d = data or load_dataset(run.record(vid).dataset)
        for i, board in enumerate(args.boards.split(",")):
            t = time.perf_counter()
            r = build_variant(run, vid, board, data=d, verify_images=args.images)
            wall = time.perf_counter() - t
            v = r.verification
            rows.append({
                **common.variant_row(run.record(vid), r), "variant": label, "board": board,
                "cold": i == 0, "prefix_reused": bool(r.timings.get("prefix_reused")),
                "api_wall_s": round(wall, 2), "build_wall_s": r.timings["build_wall_s"],
                "finn_steps_s": r.timings["finn_build_s"],
                "streamline_s": r.timings.get("step_fpgaslim_streamline_s"),
                "verify_images": v.images, "verify_images_per_s": round(v.images_per_s, 2),
                "hw_accuracy": v.hw_accuracy})
    tmp.cleanup()
    md = "\n".join([
        "# FINN estimate builds (measured wall times on this machine)", "",
        f"{info['cpu']}, {info['logical_cores']} cores, finn-plus {info['finn_plus']}. "
        "Wall times: measured (time.perf_counter); est_fps/LUT/BRAM_18K: FINN estimates; "
        "bit_exact: simulated (Python execution of the FINN graph vs Brevitas).", "",
        common.markdown_table(rows, COLUMNS)])
    print(md)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    meta = {"benchmark": "finn_build", "created": stamp,
            "source": "measured wall-clock (time.perf_counter); est_fps, LUT, BRAM_18K are "
                      "FINN estimates",
            "sources": {**common.ROW_SOURCES,
                        "*_s, verify_images_per_s": "measured wall-clock (time.perf_counter)"}}
    paths = common.save_results(f"finn_build-{stamp}", meta, rows, md)
    print("saved " + " and ".join(map(str, paths)))


if __name__ == "__main__":
    main()
