"""Writes the walkthrough notebooks (run from the repo root; outputs are never committed)."""
import nbformat as nbf
from pathlib import Path

def nb(cells):
    n = nbf.v4.new_notebook()
    n.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    n.cells = [nbf.v4.new_markdown_cell(c[3:]) if c.startswith("md:") else nbf.v4.new_code_cell(c.strip())
               for c in cells]
    return n

Q = [
"""md:# 01 · Quickstart: from a QAT model to a FINN hardware report

We train a small quantization-aware (Brevitas) ResNet-8 with 4-bit weights and activations on
scikit-learn's bundled 8×8 digits (no download), export it to QONNX, and let FINN (finn-plus)
build a dataflow accelerator for a Pynq-Z1 up to its **estimate reports**. Why estimates: they
take seconds instead of the hours of Vivado, and tell whether the design fits before synthesis.
Every figure below says where it came from.""",
"""
import os, tempfile
from pathlib import Path
import fpgaslim
from fpgaslim.compress.train import TrainSettings

RUN = Path(os.environ.get("FPGASLIM_NB_DIR", tempfile.mkdtemp())) / "quickstart"
job = fpgaslim.TrainJob(model="resnet8", train=TrainSettings(epochs=6, lr=0.05, batch_size=32))
record = fpgaslim.train_job(RUN, job, progress=False)
print(f"{record.id}: {record.arch.name} {record.arch.bits.tag}, test accuracy "
      f"{record.accuracy.test:.1f}% (measured in PyTorch), {record.macs:,} MACs")
""",
"""md:## Export to QONNX

The export is checked by running the ONNX file with qonnx's executor against the PyTorch model
on real test images: FINN starts from exactly this file, so a mismatch here would make every
later number meaningless.""",
"""
record = fpgaslim.export_variant(RUN, record.id)
record.details["export_check"]
""",
"""md:## FINN estimate build and verification

`build_job` streamlines the graph, maps it to FINN's hardware layers, folds it for a target
frame rate, writes FINN's estimate reports, and then executes the folded dataflow graph in
Python on real test images: its integer outputs must equal the Brevitas model's.""",
"""
report = fpgaslim.build_job(RUN, record.id, "pynq-z1", verify_images=10)
from rich.console import Console
from fpgaslim.hw.report import render
Console(width=110).print(render(report))
""",
"""md:## Reading the report

The fields are typed records; each figure carries its source.""",
"""
r = report
print("fits:", r.status)
print("BRAM_18K:", r.resources["BRAM_18K"].value, f"({r.resources['BRAM_18K'].percent:.1f}% of the board)")
print("LUT:", r.resources["LUT"].value, f"({r.resources['LUT'].percent:.1f}%)")
print("fps:", round(r.throughput.fps.value), "-", r.throughput.fps.source)
print("bottleneck:", r.throughput.bottleneck_layer)
print("off-chip bytes/frame:", r.offchip.total_bytes.value, "-", r.offchip.total_bytes.source)
print("bit-exact on", r.verification.images, "test images:", r.verification.integer_exact,
      "-", r.verification.source)
""",
]
Path("notebooks/01_quickstart.ipynb").write_text(nbf.writes(nb(Q)))

D = [
"""md:# 03 · Deploy: a bundle, the simulated board, and the commands for a real one

A deployment bundle is one archive with everything the board needs: the bitfile (when Vivado
built one), the driver settings (I/O shapes, datatypes, packing), the input preprocessing,
class labels, the variant record and a manifest with the SHA-256 of every file. This machine
has no FPGA, so we run the **same runner** with `--simulate`: it executes the bundle's dataflow
graph on the CPU, bit-exact with the hardware graph, and labels every result "simulated".""",
"""
import os, tempfile
from pathlib import Path
import numpy as np
import fpgaslim
from fpgaslim.compress.train import TrainSettings

WORK = Path(os.environ.get("FPGASLIM_NB_DIR", tempfile.mkdtemp()))
RUN = WORK / "deploy"
job = fpgaslim.TrainJob(model="resnet8", width=0.5, train=TrainSettings(epochs=4, batch_size=32))
record = fpgaslim.train_job(RUN, job, progress=False)
report = fpgaslim.build_job(RUN, record.id, "pynq-z1", verify_images=5)
print(record.id, f"{record.accuracy.test:.1f}% test (PyTorch)", "|", report.status,
      f"{report.throughput.fps.value:,.0f} fps ({report.throughput.fps.source})")
""",
"""md:## Bundle it

The estimate build has no bitfile (no Vivado here), so the bundle holds the graph and driver
settings; `fpgaslim build --bitfile` on a machine with Vivado adds the bitfile to the same
build folder and the next bundle includes it.""",
"""
from fpgaslim.deploy.bundle import bundle
archive = bundle(RUN, record.id, "pynq-z1", WORK / "resnet8-pynq-z1.tar.gz")
print(archive, f"{archive.stat().st_size / 1e6:.2f} MB")
""",
"""md:## Run it on the simulated board

The runner reads a dataset file (`.npz` with raw 0..255 images and labels), checks the
bundle's manifest, measures accuracy and a throughput test. On the simulated board the
throughput is the speed of the CPU simulation, not of the FPGA: the label says so.""",
"""
data = fpgaslim.load_dataset("digits")
npz = WORK / "digits-test.npz"
np.savez(npz, images=data.test.tensors[0].numpy()[:100].astype(np.uint8),
         labels=data.test.tensors[1].numpy()[:100])
from fpgaslim.deploy.board_runner import run as run_board
result = run_board(archive, npz, WORK / "result.json", simulate=True, batch_sizes=(1, 8),
                   iterations=2)
print(result["label"], "| accuracy:", result["accuracy"])
""",
"""md:## On a real board

On the PYNQ image (numpy < 2 there, plus `finn-plus-driver`), with fpgaslim installed with
`pip install --no-deps fpgaslim` for its runner only:

```bash
# on the host, with Vivado 2022.2+ installed
fpgaslim doctor                                   # which flows can run here
fpgaslim build runs/a --variant baseline --board pynq-z1 --bitfile
fpgaslim deploy bundle runs/a --variant baseline --board pynq-z1 --out resnet8.tar.gz
fpgaslim deploy push resnet8.tar.gz --host xilinx@pynq   # scp
# on the board
fpgaslim-board resnet8.tar.gz --data digits-test.npz --out result.json --batch-sizes 1,8,64
```

Alveo cards (U50/U250/U280) use the same commands with `--board u250`: the build runs
FINN's Vitis flow and the bundle holds an `.xclbin`.""",
]
Path("notebooks/03_deploy.ipynb").write_text(nbf.writes(nb(D)))

C = [
"""md:# 02 · Compress and compare on Fashion-MNIST

A user's question: *which compressed variant of my model is the best trade-off on my board?*
We train a ResNet-8 (4-bit weights and activations) on Fashion-MNIST, compress it with two
methods, build every variant with FINN for a Zynq (Pynq-Z1) and an Alveo (U250) board, and read
the comparison. The budget is tiny (a few thousand images, one or two epochs per step) so this
runs in minutes on 2 CPU cores: the accuracies are far from converged; the benchmarks in
`benchmarks/` hold the real numbers.""",
"""
import os, tempfile
from pathlib import Path
import fpgaslim
from fpgaslim.compress.train import TrainSettings

WORK = Path(os.environ.get("FPGASLIM_NB_DIR", tempfile.mkdtemp()))
RUN = fpgaslim.RunDir(WORK / "compare")
data = fpgaslim.DataSettings(dataset="fashion-mnist", limit_train=2000, limit_test=300).load()
job = fpgaslim.TrainJob(model="resnet8", width=0.5, train=TrainSettings(epochs=3, batch_size=64))
base = fpgaslim.train_job(RUN, job, data=data, progress=False)
print(f"baseline: {base.accuracy.test:.1f}% test (PyTorch, {base.accuracy.test_images} images), "
      f"{base.macs:,} MACs")
""",
"""md:## Two compression methods

*Dynamic channel pruning* removes the channels whose input feature maps are mostly zero,
with a binary-searched threshold; *ResConv-Prune* trains layer scales with an L1 penalty,
drops the least important convolutions and fuses the rest into a residual-free plain network,
which saves FINN the stream duplication and skip-path buffers of residual blocks.""",
"""
dp = fpgaslim.get_method("dynamic-prune")
pruned = fpgaslim.run_method(RUN, "dynamic-prune", base.id,
                             dp.Settings.preset("cpu", iterations=1, epochs=1, patience=1,
                                                tolerance=2.0, stop_gap=0.1), data=data, progress=False)
rc = fpgaslim.get_method("resconv")
rc_settings = rc.Settings.preset("cpu").model_copy(update={"sparse_epochs": 2,
                                                            "retrain_epochs": 0,
                                                            "finetune_epochs": 1})
fused = fpgaslim.run_method(RUN, "resconv", base.id, rc_settings, data=data, progress=False)
for v in [base, *pruned, *fused]:
    print(f"{v.id:28s} {v.method:14s} depth {v.depth:2d}  {v.macs:>10,} MACs  "
          f"{v.accuracy.test:5.1f}% test")
""",
"""md:## FINN builds for two boards

Each build is a FINN estimate build plus a bit-exact check of the folded dataflow graph on real
test images.""",
"""
for v in [base, *pruned, *fused]:
    for board in ("pynq-z1", "u250"):
        r = fpgaslim.build_job(RUN, v.id, board, verify_images=5, data=data)
        print(f"{v.id:28s} {board:8s} {r.status:13s} {r.throughput.fps.value:>10,.0f} fps  "
              f"BRAM_18K {r.resources['BRAM_18K'].value:>5.0f}  LUT {r.resources['LUT'].value:>7,.0f}")
""",
"""md:## The comparison

`compare_runs` reads only the saved records and reports, so it regenerates without rebuilding.""",
"""
from IPython.display import Image, display
from rich.console import Console
result = fpgaslim.compare_runs([RUN.path], WORK / "compare-report")
Console(width=160).print(result.table())
for name, path in result.files.items():
    if name.startswith("plot:accuracy"):
        display(Image(filename=str(path)))
print("HTML report:", result.files["html"])
""",
"""md:## Reading the Pareto front

A variant is on the front when no other variant is at least as accurate *and* at least as
cheap. Here cost is on-chip memory (BRAM_18K equivalents) on the Pynq-Z1.""",
"""
from fpgaslim.compare import pareto_front
rows = [r for r in result.rows if r.board == "pynq-z1"]
front = pareto_front([(r.accuracy, r.onchip_bram18k_equiv) for r in rows], maximize=(True, False))
for r, on in zip(rows, front):
    print(f"{'*' if on else ' '} {r.variant:28s} {r.accuracy:5.1f}%  {r.onchip_bram18k_equiv:6.1f} BRAM_18K-eq  "
          f"{r.fps:>10,.0f} fps")
print("* = on the Pareto front: the only variants worth choosing between for memory vs accuracy")
""",
]
Path("notebooks/02_compress_and_compare.ipynb").write_text(nbf.writes(nb(C)))
