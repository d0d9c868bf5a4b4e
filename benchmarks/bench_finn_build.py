"""Benchmark: FINN estimate build wall time per variant and board, and verification speed.

    .venv/bin/python benchmarks/bench_finn_build.py [--run RUN_DIR ...] [--boards pynq-z1,u250]
                                                    [--images 50] [--epochs 3]

Without --run it trains ResNet-8 and quarter-width CNV baselines on digits into a temporary
run (training is not timed). Each variant is built cold on the first board (full flow,
including streamlining) and warm on the others (board-independent prefix reused), then
verified bit-exactly on real test images. Prints a table and writes
benchmarks/results/finn_build-<timestamp>.json with a machine description: these are
measured wall times on this machine, not FINN estimates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import psutil
    import torch

    from fpgaslim.hw.finn_compat import finn_version

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_avg_1m_at_start": os.getloadavg()[0], "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "finn_plus": finn_version()}


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

    info = machine()
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
                "variant": label, "board": board, "cold": i == 0,
                "prefix_reused": bool(r.timings.get("prefix_reused")),
                "api_wall_s": round(wall, 2), "build_wall_s": r.timings["build_wall_s"],
                "finn_steps_s": r.timings["finn_build_s"],
                "streamline_s": r.timings.get("step_fpgaslim_streamline_s"),
                "verify_images": v.images, "verify_images_per_s": round(v.images_per_s, 2),
                "bit_exact": v.integer_exact, "hw_accuracy": v.hw_accuracy,
                "est_fps": round(r.throughput.fps.value, 1), "fits": r.fits,
                "LUT": r.resources["LUT"].value, "BRAM_18K": r.resources["BRAM_18K"].value})
    tmp.cleanup()
    from rich.console import Console
    from rich.table import Table

    t = Table(title="FINN estimate builds (measured wall times on this machine)",
              caption=f"{info['cpu']}, {info['logical_cores']} cores, finn-plus "
                      f"{info['finn_plus']}; est_fps/LUT/BRAM: FINN estimates")
    cols = ("variant", "board", "prefix_reused", "build_wall_s", "finn_steps_s", "streamline_s",
            "verify_images_per_s", "bit_exact", "est_fps", "fits")
    for k in cols:
        t.add_column(k)
    for row in rows:
        t.add_row(*(str(row[k]) for k in cols))
    Console(width=max(160, Console().width)).print(t)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"finn_build-{stamp}.json"
    out.write_text(json.dumps({"benchmark": "finn_build", "created": stamp, "machine": info,
                               "source": "measured wall-clock (time.perf_counter); est_fps, "
                                         "LUT, BRAM_18K are FINN estimates",
                               "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
