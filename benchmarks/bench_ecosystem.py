"""FINN's own tutorial networks, from the files as Brevitas exports them (issue 30): estimate
fidelity against published builds.

    python benchmarks/bench_ecosystem.py                  # all five networks
    python benchmarks/bench_ecosystem.py --only cnv-w1a1 tfc-w1a1
    python benchmarks/bench_ecosystem.py --no-maxfit      # published foldings only

Each network is exported from `brevitas_examples` (untrained weights: FINN's resource and
throughput estimates depend on shapes, bit widths and folding only) with
`export_qonnx(model, torch.rand(shape), path, dynamo=False)`, and built with
`fpgaslim build FILE.onnx --input uint8 --scale 1/255 [--mean --std] --topk 1` through the Python
API: with finn-examples' published folding config where one exists (benchmarks/finn_examples/,
clock as published: 100 MHz for the BNN-PYNQ figures), and with fpgaslim's optimal folding
(`maxfit`). Every build is verified against the file plus its pre-processing executed by qonnx:
28x28 networks on Fashion-MNIST test images (real), 3x32x32 and 3x224x224 networks on seeded
random pixels (labelled as such: no CIFAR-10/ImageNet installs offline). FINN's estimates are
put beside the published figures (each with its source).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, markdown_table, publish  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "finn_examples"
BNN = {"scale": "1/255"}  # bnn_pynq models take 0..1 floats (ToTensor) and compute 2x - 1
CALIBRATION_BATCHES = 4
IMAGENET = {"scale": "1/255", "mean": [0.485, 0.456, 0.406], "std": [0.226, 0.226, 0.226]}

#: name -> (brevitas_examples factory, input shape, input spec, verification data, builds);
#: builds: (board, published folding config or None, clock ns)
NETWORKS: dict[str, dict[str, Any]] = {
    "cnv-w1a1": {"factory": ("bnn_pynq", "cnv_1w1a"), "shape": (1, 3, 32, 32), "input": BNN,
                 "data": None, "builds": [("pynq-z1", "cnv-w1a1_folding_config.json", 10.0)]},
    "cnv-w2a2": {"factory": ("bnn_pynq", "cnv_2w2a"), "shape": (1, 3, 32, 32), "input": BNN,
                 "data": None, "builds": [("pynq-z1", "cnv-w2a2_folding_config.json", 10.0)]},
    "tfc-w1a1": {"factory": ("bnn_pynq", "tfc_1w1a"), "shape": (1, 1, 28, 28), "input": BNN,
                 "data": "fashion-mnist",
                 "builds": [("pynq-z1", "tfc-w1a1_folding_config.json", 10.0)]},
    "lfc-w1a1": {"factory": ("bnn_pynq", "lfc_1w1a"), "shape": (1, 1, 28, 28), "input": BNN,
                 "data": "fashion-mnist", "builds": [("pynq-z1", None, 10.0)]},
    # finn-examples builds MobileNet-v1 at 5.4 ns on ZCU104 and 3.0 ns on U250 (build.py)
    "mobilenet-v1-w4a4": {"factory": ("imagenet_classification", "quant_mobilenet_v1_4b"),
                          "shape": (1, 3, 224, 224), "input": IMAGENET, "data": None,
                          # its classifier adds a float per-class bias after the last
                          # accumulator: no integer scores for LabelSelect (argmax on the host)
                          "topk": None,
                          # finn-examples' ZCU104 config names the nodes of its own graph
                          # (separate thresholds, the mean as a ChannelwiseOp); applied to ours
                          # it gives a depthwise SWG a SIMD its VVAU cannot take: FINN's own
                          # folding then builds the verified graph the optimal folding starts at
                          "builds": [("zcu104", None, 5.4),
                                     ("zcu104", "mobilenet-v1_ZCU104_folding_config.json", 5.4),
                                     ("u250", "mobilenet-v1_U250_folding_config.json", 3.0)]},
}

#: published figures to compare with, each with its source
PUBLISHED: dict[str, list[dict[str, Any]]] = {
    "cnv-w1a1": [
        {"figure": "throughput", "value": 3020, "unit": "img/s", "board": "pynq-z1",
         "source": "finn-examples README (Pynq-Z1, 100 MHz, cnv-w1a1: 84.19 %, 3,020 img/s)"},
        {"figure": "LUT", "value": 21135, "unit": "LUT", "board": "pynq-z1",
         "source": "FINN compiler CNV-W1A1 post-synthesis, Xilinx/finn PR #209"},
        {"figure": "BRAM_18K", "value": 98 * 2 + 9, "unit": "BRAM_18K", "board": "pynq-z1",
         "source": "FINN compiler CNV-W1A1 post-synthesis, Xilinx/finn PR #209 (98 BRAM36 + 9 "
                   "BRAM18)"},
        {"figure": "LUT", "value": 26072, "unit": "LUT", "board": "pynq-z1",
         "source": "BNN-PYNQ README (Vivado 2018.2, its own HLS design, 9,150 img/s)"},
    ],
    "cnv-w2a2": [
        {"figure": "LUT", "value": 37302, "unit": "LUT", "board": "pynq-z1",
         "source": "BNN-PYNQ README (Vivado 2018.2, its own HLS design)"},
        {"figure": "BRAM_18K", "value": 140 * 2, "unit": "BRAM_18K", "board": "pynq-z1",
         "source": "BNN-PYNQ README (140 BRAM36)"},
        {"figure": "throughput", "value": 2580, "unit": "img/s", "board": "pynq-z1",
         "source": "BNN-PYNQ README"},
    ],
    "tfc-w1a1": [
        {"figure": "throughput", "value": 837019, "unit": "img/s", "board": "pynq-z1",
         "source": "finn-examples README (Pynq-Z1, 100 MHz, tfc-w1a1: 92.96 %, 837,019 img/s)"},
    ],
    "lfc-w1a1": [],
    "mobilenet-v1-w4a4": [
        {"figure": "throughput", "value": 1600, "unit": "img/s", "board": "u250",
         "source": "Xilinx/finn issue #252 (~1,600 fps on U250; 70.4 % top-1)"},
    ],
}


def export(name: str, out: Path) -> Path:
    """The network as Brevitas exports it (seeded, untrained)."""
    import importlib

    import torch
    from brevitas.export import export_qonnx

    spec = NETWORKS[name]
    pkg, fn = spec["factory"]
    models = importlib.import_module(f"brevitas_examples.{pkg}.models")
    path = out / f"{name}.onnx"
    if not path.is_file():
        torch.manual_seed(0)
        model = getattr(models, fn)(pretrained=False)
        # untrained weights, but BatchNorm and activation-scale statistics from a few random
        # batches (as after training): with the initial statistics a deep untrained network's
        # activations all quantize to 0 and its outputs are constant
        model.train()
        with torch.no_grad():
            for _ in range(CALIBRATION_BATCHES):
                model(torch.rand(8, *spec["shape"][1:]))
        export_qonnx(model.eval(), torch.rand(spec["shape"]), str(path), dynamo=False)
    return path


def _fold_coverage(config: Path, report: Any) -> dict[str, Any]:
    """How many of the published config's layer entries name a node of our graph."""
    entries = {k for k in json.loads(config.read_text()) if k != "Defaults"}
    ours = {row.name for row in report.layers}
    return {"entries": len(entries), "matched": len(entries & ours),
            "unmatched": sorted(entries - ours)[:12]}


def build_row(name: str, path: Path, board: str, config: str | None, clock_ns: float,
              work: Path, images: int) -> dict[str, Any]:
    from fpgaslim.hw.api import build_onnx
    from fpgaslim.hw.build import BuildSettings

    spec = NETWORKS[name]
    cfg = CONFIGS / config if config else None
    t0 = time.time()
    report = build_onnx(path, board, work / name, data=spec["data"],
                        settings=BuildSettings(board=board, clock_ns=clock_ns, strict=False,
                                               timeout_s=3600),
                        verify_images=images, input=spec["input"], topk=spec.get("topk", 1),
                        folding_config=cfg)
    v = report.verification
    perf = report.throughput
    row = {"network": name, "board": board, "kind": "published" if config else "setfolding",
           "folding": f"finn-examples {config}" if config
           else "FINN SetFolding (target fps: board default)", "clock_ns": clock_ns,
           "fps": perf.fps.value if perf and perf.fps else None,
           "fps_source": perf.fps.source if perf and perf.fps else None,
           "LUT": report.resources["LUT"].value, "BRAM_18K": report.resources["BRAM_18K"].value,
           "DSP": report.resources["DSP"].value,
           "resource_source": report.resources["LUT"].source,
           "hw_layers": len(report.layers),
           "verified": v.verified if v else None,
           "verification": v.summary() if v else "not verified",
           "verify_images": v.images if v else 0,
           "verify_data": report.settings.get("verify_data"),
           # the build's own wall time (a finished build is read back, not rebuilt)
           "build_s": (report.timings or {}).get("build_wall_s"),
           "this_run_s": round(time.time() - t0, 1)}
    if cfg is not None:
        row["folding_coverage"] = _fold_coverage(cfg, report)
    return row


def maxfit_row(name: str, board: str, clock_ns: float, work: Path) -> dict[str, Any]:
    from fpgaslim.compress.variants import RunDir
    from fpgaslim.hw.folding_run import maxfit

    t0 = time.time()
    run = RunDir(work / name)
    m = maxfit(run, "baseline", board, build={"clock_ns": clock_ns})
    # the verified build the optimal folding starts from (FINN's own folding, this clock)
    return {"network": name, "board": board, "kind": "optimal",
            "folding": "fpgaslim optimal (maxfit, 85 % LUT)",
            "clock_ns": clock_ns, "fps": m["fps"], "fps_source": m["source"],
            "LUT": m.get("LUT"), "BRAM_18K": m.get("BRAM_18K"), "DSP": m.get("DSP"),
            "resource_source": m["source"], "fits_budget": m.get("fits_budget"),
            "verified": None,
            "verification": "folding only (no value changes): see the verified build row",
            "build_s": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(NETWORKS), help="networks to run")
    ap.add_argument("--images", type=int, default=20, help="verification images per build")
    ap.add_argument("--no-maxfit", action="store_true", help="published foldings only")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "fpgaslim-bench"
                    / "ecosystem", help="exports and run folders")
    args = ap.parse_args()
    machine()
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    t_all = time.time()
    for name in args.only or list(NETWORKS):
        path = export(name, args.work)
        done: set[tuple[str, str]] = set()  # one optimal folding per board
        for board, config, clock in NETWORKS[name]["builds"]:
            for kind in ("build", "maxfit"):
                if kind == "maxfit" and (args.no_maxfit or (board, "maxfit") in done):
                    continue
                print(f"== {name} on {board}: {kind}", flush=True)
                try:
                    row = (build_row(name, path, board, config, clock, args.work, args.images)
                           if kind == "build" else maxfit_row(name, board, clock, args.work))
                except Exception as exc:  # a failure is a row, with what stopped it
                    row = {"network": name, "board": board,
                           "kind": ("published" if config else "setfolding") if kind == "build"
                           else "optimal", "folding": kind, "fps": None,
                           "verified": False, "error": f"{type(exc).__name__}: {exc}"[:600],
                           "trace": traceback.format_exc()[-1500:]}
                print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
                rows.append(row)  # a failed build is a row; the optimal folding still runs
                if kind == "maxfit":
                    done.add((board, "maxfit"))
    comparisons = []  # ours / published, one flat record each (what the docs quote)
    for row in rows:
        pub = [p for p in PUBLISHED[row["network"]] if p["board"] == row["board"]]
        for p in pub:
            ours = row.get("fps") if p["figure"] == "throughput" else row.get(p["figure"])
            ratio = round(ours / p["value"], 3) if ours else None
            p.setdefault("ratio", {})[row["folding"]] = ratio
            comparisons.append({"network": row["network"], "board": row["board"],
                                "kind": row.get("kind"), "figure": p["figure"],
                                "published": p["value"], "ours": ours, "ratio": ratio,
                                "published_source": p["source"],
                                "ours_source": row.get("fps_source")})
    columns = [("network", "network"), ("board", "board"), ("folding", "folding"),
               ("fps (FINN estimate)", "fps", ",.0f"), ("LUT", "LUT", ",.0f"),
               ("BRAM_18K", "BRAM_18K", ",.0f"), ("DSP", "DSP", ",.0f"),
               ("verification", "verification"), ("error", "error")]
    md = ["# FINN's tutorial networks from Brevitas's files: estimates beside published builds",
          "", "fps, LUT, BRAM_18K, DSP: FINN estimates (finn-plus 1.6.1) of the build; "
          "verification: the folded graph (Python execution) against the file plus its "
          "pre-processing executed by qonnx.", "",
          markdown_table(rows, columns), "", "## Published figures", ""]
    for net, pubs in PUBLISHED.items():
        for p in pubs:
            md.append(f"- {net} {p['board']} {p['figure']} {p['value']:,} {p['unit']} "
                      f"({p['source']}); ours / published: {p.get('ratio', {})}")
    meta = {"networks": args.only or list(NETWORKS), "verify_images": args.images,
            "wall_s": round(time.time() - t_all, 1),
            "exported_with": "brevitas.export.export_qonnx(model, torch.rand(shape), path, "
                             "dynamo=False), untrained (torch.manual_seed(0)), BatchNorm and "
                             f"activation statistics from {CALIBRATION_BATCHES} random batches "
                             "of 8 in train mode",
            "finn_examples_commit": "810a1e7759163ac313cb7739743da4184fb9135d"}
    publish("ecosystem-cpu", meta, rows, "\n".join(md), extra={"published": PUBLISHED, "comparisons": comparisons},
            results_dir=RESULTS)


if __name__ == "__main__":
    main()
