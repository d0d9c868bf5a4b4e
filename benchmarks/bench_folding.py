"""Folding side by side, same variants, same budget (85 % LUT, 100 % BRAM_18K/URAM/DSP):
(a) FINN's SetFolding at the user's target (the default build), (b) the folding search over
target_fps x mvau_wwidth_max (hw/folding_search.py), (c) the optimal folding
(hw/folding_run.py), on FINN's default layers, (c2) with prefer_rtl (RTL MVAUs: DSP-packed
MACs, standalone thresholds) and (c3) choosing HLS or RTL per layer (`maxfit`'s default);
(d)/(d2)/(d3) the fewest LUTs at (b)'s frame rate. Every fps/resource figure is a FINN estimate
(finn-plus, 10 ns) of a real estimate build; wall times are measured on this machine.

    .venv/bin/python benchmarks/bench_folding.py --run RUN [--variants a,b] [--board pynq-z1]
    .venv/bin/python benchmarks/bench_folding.py            # a ResNet-20 w4a4 on 28x28

Without --run it makes (once, in results/tmp/folding-cpu) a ResNet-20 w4a4 on Fashion-MNIST
28x28 trained for one epoch on 200 images: essentially untrained, which is fine here because
FINN's folding estimates depend on the layer shapes and bit widths, not on the weights' values.
Builds, searches and optimizations are cached per variant and board.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

from fpgaslim.compress.variants import RunDir  # noqa: E402
from fpgaslim.hw.api import build_variant  # noqa: E402
from fpgaslim.hw.folding_opt import RESOURCES, Budget  # noqa: E402
from fpgaslim.hw.folding_run import maxfit  # noqa: E402

COLUMNS = [("variant", "variant"), ("folding", "folding"), ("fps", "fps", ",.0f"),
           ("x search", "vs_search", ".2f"), ("LUT", "LUT", ",.0f"), ("LUT %", "LUT_pct", ".1f"),
           ("BRAM_18K", "BRAM_18K", ".0f"), ("DSP", "DSP", ".0f"),
           ("MVAU HLS/RTL", "mvau"),
           ("fits budget", "fits_budget"), ("wall s", "wall_s", ".1f"),
           ("CPU s", "cpu_s", ".1f")]
SOURCES = {"fps/LUT/BRAM_18K/URAM/DSP": "FINN estimate (finn-plus 1.6.1, clock 10 ns) of an "
           "estimate build: (a) SetFolding at the target, (b) the search's best probe "
           "(resources = its % of board x capacity), (c)..(d3) the build with the "
           "optimizer's folding config ((c3)/(d3): and its per-node HLS/RTL choice)", "dwc_LUT (JSON)": "FINN's DWC LUT estimate the optimizer charged "
           "(the estimate build inserts no converters)", "wall s": "measured on this machine when the result was made (optimal: stored with "
           "it; empty: a cached search result, whose time is not stored)", "CPU s": "CPU time of "
           "this process and its children for the row in this run (0: cached; the machine "
           "is shared, so CPU time is the steadier figure)"}


def _styles(impl: dict[str, int] | None) -> dict[str, Any]:
    """The confirming build's MVAU implementation styles, "HLS/RTL" counts."""
    if not impl:
        return {}
    return {"impl": impl, "mvau": f"{impl.get('MVAU_hls', 0)}/{impl.get('MVAU_rtl', 0)}"}


def cpu_s() -> float:
    return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF,
               resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))


def default_run(work: Path) -> RunDir:
    from fpgaslim.compress.baseline import BaselineSettings, train_baseline
    from fpgaslim.compress.data import load_dataset
    from fpgaslim.compress.train import TrainSettings

    run = RunDir(work)
    if not run.has("baseline"):
        data = load_dataset("fashion-mnist", limit_train=200, limit_test=20)
        train_baseline(run, data, BaselineSettings(model="resnet20", train=TrainSettings(
            epochs=1, lr=0.05, batch_size=64)), progress=False)
    return run


def rows_for(run: RunDir, vid: str, board: str, budget: Budget, target: int | None
             ) -> list[dict[str, Any]]:
    settings = {"target_fps": target} if target else {}
    t0, c0 = time.perf_counter(), cpu_s()
    from fpgaslim.hw.build import BuildSettings

    rep = build_variant(run, vid, board, settings=BuildSettings(**settings), verify_images=1)
    a_wall = time.perf_counter() - t0
    a = {"folding": f"(a) SetFolding at {rep.settings['target_fps']:,} fps",
         "fps": rep.throughput.fps.value,
         **{k: rep.resources[k].value for k in RESOURCES},
         "LUT_pct": rep.resources["LUT"].percent,
         "fits_budget": all((rep.resources[k].percent or 0) <= getattr(budget, k)
                            for k in RESOURCES), "wall_s": a_wall, "cpu_s": cpu_s() - c0}
    out = [a]
    runs = (("search", settings, "fixed", "(b) search target x wwidth"),
            ("optimal", settings, "fixed", "(c) optimal, FINN's default layers"),
            ("optimal", {**settings, "prefer_rtl": True}, "fixed", "(c2) optimal, prefer_rtl"),
            ("optimal", settings, "mix", "(c3) optimal, HLS/RTL per layer"))
    for method, build, styles, name in runs:
        t0, c0 = time.perf_counter(), cpu_s()
        m = maxfit(run, vid, board, method, build, budget, styles=styles)
        cached = Path(m["path"]).stat().st_mtime < time.time() - (time.perf_counter() - t0) - 1
        wall = m.get("timings", {}).get("total_s") or (None if cached else
                                                      time.perf_counter() - t0)
        out.append({"folding": name, "fps": m["fps"], **{k: m[k] for k in RESOURCES},
                    "LUT_pct": m["percent"].get("LUT"), "fits_budget": m["fits_budget"],
                    "wall_s": wall, "cpu_s": cpu_s() - c0, "source": m["source"],
                    **({"dwc_LUT": m["dwc_LUT"]} if "dwc_LUT" in m else {}),
                    **({"timings": m["timings"]} if "timings" in m else {}),
                    **_styles(m.get("impl"))})
    search_fps = out[1]["fps"]
    from fpgaslim.hw.folding_run import load_optfit, optimize_variant

    for build, styles, name in ((settings, "fixed", "(d) optimal, fewest LUTs at (b)'s fps"),
                                ({**settings, "prefer_rtl": True}, "fixed",
                                 "(d2) as (d), prefer_rtl"),
                                (settings, "mix", "(d3) as (d), HLS/RTL per layer")):
        if not search_fps:  # like for like: the optimizer's fewest LUTs at the search's fps
            break
        t0, c0 = time.perf_counter(), cpu_s()
        f = load_optfit(optimize_variant(run, vid, board, build, budget, at_fps=search_fps,
                                         styles=styles))
        out.append({"folding": name,
                    "fps": None if f.fps is None else f.fps.value,
                    **{k: (f.resources[k].value if k in f.resources else None)
                       for k in RESOURCES}, "LUT_pct": f.percent.get("LUT"),
                    "fits_budget": f.fits_budget,
                    "wall_s": f.timings.get("total_s") or time.perf_counter() - t0,
                    "cpu_s": cpu_s() - c0, "source": f.source, "timings": f.timings,
                    **_styles(f.impl)})
    for r in out:
        r["variant"] = vid
        r["vs_search"] = None if not (search_fps and r["fps"]) else r["fps"] / search_fps
    return out


def describe(run: RunDir, vids: list[str]) -> str:
    """What the variants are, and whether they are (essentially) untrained."""
    parts = []
    for vid in vids:
        rec = run.record(vid)
        acc = rec.accuracy.test
        shape = "x".join(map(str, rec.arch.in_shape))
        parts.append(f"{vid}: {rec.arch.name} {rec.arch.bits.tag} on {rec.dataset} {shape}, "
                     f"test accuracy {acc:.1f} %" + (" (essentially untrained: FINN's folding "
                     "estimates depend on the layer shapes and bit widths, not on the weights' "
                     "values)" if acc is not None and acc < 50 else ""))
    return f"{run.path}; " + "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a run folder (default: an untrained ResNet-20)")
    ap.add_argument("--variants", help="comma-separated variant ids (default: all)")
    ap.add_argument("--board", default="pynq-z1")
    ap.add_argument("--target", type=int, help="the user's target fps (default: the board's)")
    ap.add_argument("--budget-lut", type=float, default=85.0)
    ap.add_argument("--note", help="a line for the results (e.g. times of cached steps)")
    args = ap.parse_args()
    t0, c0 = time.perf_counter(), cpu_s()
    run = RunDir(args.run) if args.run else default_run(common.RESULTS / "tmp" / "folding-cpu")
    vids = args.variants.split(",") if args.variants else run.ids()
    budget = Budget(LUT=args.budget_lut)
    rows = [r for vid in vids for r in rows_for(run, vid, args.board, budget, args.target)]
    md = [f"# Folding side by side on {args.board}, budget {budget.model_dump()} % of the board",
          "", "Run: " + describe(run, vids), "",
          common.markdown_table(rows, COLUMNS), "", "Sources:", ""]
    md += [f"- **{k}**: {v}" for k, v in SOURCES.items()]
    if args.note:
        md += ["", args.note]
    meta = {"board": args.board, "budget": budget.model_dump(), "variants": vids,
            "run": describe(run, vids),
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(cpu_s() - c0, 1), "sources": SOURCES,
            "note": args.note}
    common.publish("folding-cpu", meta, rows, "\n".join(md))


if __name__ == "__main__":
    main()
