"""Comparison benchmark: how long regenerating the comparison of existing runs takes (reading
records and reports, writing CSV/Markdown/JSON, rendering the plots and the HTML page), and
what it produced. Nothing is trained or built: point it at run directories that have builds.

Every time is "measured (this CPU)": wall time of fpgaslim's own code. The table it prints is
the comparison itself (FINN estimates and PyTorch-measured accuracy, as labelled there).

    .venv/bin/python benchmarks/bench_compare.py RUN [RUN ...] --out /tmp/compare
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py)

from fpgaslim.compare import collect, compare_runs  # noqa: E402

HERE = common.HERE
METRICS = ("rows", "skipped", "read_records_and_reports_s", "compare_with_plots_s",
           "compare_tables_only_s", "html_bytes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("compare-out"))
    ap.add_argument("--detail", default=None, help="variant of the per-layer plots")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "compare.json")
    args = ap.parse_args()
    common.machine()  # snapshot (load average) at the start

    t0 = time.perf_counter()
    rows, _, skipped = collect(args.runs)
    read_s = time.perf_counter() - t0
    full, tables = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = compare_runs(args.runs, args.out, detail_variant=args.detail)
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        compare_runs(args.runs, args.out / "tables-only", detail_variant=args.detail,
                     plots=False)
        tables.append(time.perf_counter() - t0)
    console = Console(width=220)
    console.print(result.table())
    out = {
        "source": "measured (this CPU): wall time of fpgaslim.compare, best of --repeat",
        "runs": [str(r) for r in args.runs], "rows": len(rows), "skipped": len(skipped),
        "variants": len({(r.run, r.variant) for r in rows}),
        "boards": sorted({r.board for r in rows}),
        "read_records_and_reports_s": read_s, "compare_with_plots_s": min(full),
        "compare_tables_only_s": min(tables),
        "html_bytes": result.files["html"].stat().st_size,
        "files": {k: str(v) for k, v in result.files.items()},
    }
    md = "\n".join(["# Comparison regeneration time", "",
                     f"Runs: {', '.join(out['runs'])}. {out['source']}.", "",
                     common.markdown_table([out], [(k, k, ".3f" if k.endswith("_s") else ",")
                                                   for k in METRICS])])
    js, _ = common.save_results(args.json.stem, {"source": out["source"],
                                                      "sources": {"*_s": out["source"]}},
                                [out], md,
                                results_dir=args.json.parent)
    for k in METRICS:
        console.print(f"{k}: {out[k]:.3f}" if isinstance(out[k], float) else f"{k}: {out[k]}")
    console.print(f"saved {js}; report: {result.files['html']}")


if __name__ == "__main__":
    main()
