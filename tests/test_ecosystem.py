"""FINN's own tutorial networks build as Brevitas exports them (issue 30): float-pixel input
with the pre-processing prepended (`--input uint8 --scale 1/255`), class indices out (`--topk`),
external-data ONNX files, and the clear errors around them. Brevitas's own
`brevitas_examples.bnn_pynq` TFC-W1A1 and CNV-W1A1 (untrained: resources and verification do
not need trained weights), exported with `export_qonnx(..., dynamo=False)` as FINN's tutorials
do; only the image count is small."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fpgaslim.cli import main
from fpgaslim.core.errors import CheckpointError, ConfigError


def cli(*args: str):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in res.output, res.output
    return res


def _export(name: str, shape: tuple[int, ...], path: Path, **kw) -> Path:
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq import models

    torch.manual_seed(0)
    model = getattr(models, name)(pretrained=False).eval()
    export_qonnx(model, torch.rand(shape), str(path), **kw)
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("brevitas_examples")
    return {"tfc": _export("tfc_1w1a", (1, 1, 28, 28), d / "tfc_1w1a.onnx", dynamo=False),
            "cnv": _export("cnv_1w1a", (1, 3, 32, 32), d / "cnv_1w1a.onnx", dynamo=False)}


def _report(out: Path, board: str = "pynq-z1") -> dict:
    return json.loads((out / "variants" / "baseline" / "builds" / board / "report.json")
                      .read_text(encoding="utf-8"))


def test_a_float_input_names_the_flag(exports, tmp_path):
    res = cli("build", exports["cnv"], "--board", "pynq-z1", "--out", tmp_path / "r")
    assert res.exit_code != 0
    assert "before any quantizer: its input is float" in res.output
    assert "--input uint8 --scale 1/255" in res.output
    assert not (tmp_path / "r" / "variants" / "baseline" / "builds").exists()


@pytest.mark.slow
def test_tfc_w1a1_builds_from_pixels_and_verifies_on_fashion_mnist(exports, tmp_path):
    out = tmp_path / "tfc"
    res = cli("build", exports["tfc"], "--board", "pynq-z1", "--out", out, "--input", "uint8",
              "--scale", "1/255", "--data", "fashion-mnist", "--verify-images", "30")
    assert res.exit_code == 0, res.output
    v = _report(out)["verification"]
    assert v["images"] == 30 and v["integer_exact"] and v["verified"], v
    assert "QONNX" in v["compared"] and "of fashion-mnist (as UINT8 pixels" in v["source"]
    rec = json.loads((out / "variants" / "baseline" / "record.json").read_text())
    assert rec["settings"]["input"] == {"dtype": "uint8", "scale": 1 / 255, "mean": None,
                                        "std": None}
    assert rec["details"]["input_quant"]["dtype"] == "UINT8"
    assert "p * 1/255" in rec["details"]["preprocessing"]
    # the same settings again, from a config file, are the finished build (nothing redone)
    built = (out / "variants" / "baseline" / "builds" / "pynq-z1" / "build.json").stat()
    cfg = tmp_path / "build.yaml"
    cfg.write_text("input: {dtype: uint8, scale: 1/255}\n", encoding="utf-8")
    assert cli("build", exports["tfc"], "--board", "pynq-z1", "--out", out, "--config", cfg,
               "--data", "fashion-mnist", "--verify-images", "30").exit_code == 0
    assert (out / "variants" / "baseline" / "builds" / "pynq-z1" / "build.json"
            ).stat().st_mtime == built.st_mtime


@pytest.mark.slow
def test_readme_cnv_w1a1_with_top1_builds_compares_bundles_and_returns_indices(tmp_path,
                                                                               monkeypatch):
    """docs/bring-your-own.md: Brevitas's CNV-W1A1 as exported there, through build (pixels
    in, top-1 out), compare (which runs the optimal folding), bundle and the simulated board."""
    from test_byo_readme import readme_blocks, run_python, run_shell_block

    blocks = readme_blocks()
    (tmp_path / "export_cnv.py").write_text(blocks["export_cnv.py"], encoding="utf-8")
    run_python("export_cnv.py", tmp_path)
    out = run_shell_block(blocks["cli_cnv.sh"], tmp_path, monkeypatch)
    run = tmp_path / "runs" / "cnv"
    report = _report(run)
    v = report["verification"]
    assert v["images"] == 8 and v["verified"] and v["integer_exact"] and v["topk"] == 1, v
    assert v["topk_mismatched_images"] == 0 and "seeded random inputs" in v["source"]
    ops = [row["op_type"] for row in report["layers"]]
    assert ops[-1].startswith("LabelSelect"), ops
    # the file's x/255 and CNV's own 2x - 1 are absorbed into the thresholds of its input
    # quantizer, which now read the UINT8 pixels
    assert ops[0].startswith("Thresholding"), ops
    import csv

    row = next(csv.DictReader((run / "report" / "comparison.csv").read_text().splitlines()))
    assert float(row["maxfit_fps"]) >= float(row["fps"]) > 0, row
    board = json.loads(out[3])
    assert board["label"] == "simulated" and board["accuracy"]["images"] == 8
    # the board returns indices; each is a best class of the file's own logits on its pixels
    from fpgaslim.hw.qonnx_export import execute_qonnx, load_onnx

    with np.load(tmp_path / "pixels.npz") as f:
        x = f["images"].astype(np.float32)
    logits = execute_qonnx(load_onnx(run / "variants" / "baseline" / "model.qonnx.onnx"), x)
    for img, pred in enumerate(board["accuracy"]["predictions"]):
        assert logits[img, pred] == logits[img].max()


def test_topk_agreement_accepts_any_order_among_equal_logits():
    from fpgaslim.hw.verify import topk_agreement, topk_indices

    ref = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 1.0, 0.0, 5.0]])
    assert topk_indices(ref, 2).tolist() == [[1, 2], [3, 0]]
    assert topk_agreement(ref, np.array([[2, 1], [3, 0]])).tolist() == [True, True]
    assert topk_agreement(ref, np.array([[1, 0], [0, 3]])).tolist() == [False, False]
    assert topk_agreement(ref, np.array([[1, 1], [3, 9]])).tolist() == [False, False]


def test_input_settings_are_validated():
    from fpgaslim.hw.onnx_input import InputSpec

    s = InputSpec.model_validate({"scale": "1/255", "mean": "0.485,0.456,0.406",
                                  "std": 0.226})
    assert s.scale == 1 / 255 and s.mean == [0.485, 0.456, 0.406] and s.std == [0.226]
    for bad in ({"scale": "one"}, {"scale": 0}, {"mean": "0.5"}, {"mean": "a,b", "std": 1},
                {"mean": 0.5, "std": -1}, {"dtype": "int4"}, {"sclae": 1}):
        with pytest.raises(ValueError):
            InputSpec.model_validate(bad)
    with pytest.raises(ConfigError, match="--mean has 2 values, the model's input has 3"):
        InputSpec(mean=[0.1, 0.2], std=[1.0]).per_channel(3, "m.onnx")


def test_cli_input_flags_need_input_and_a_file(exports, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("input: {dtype: uint8}\ntop_k: 1\n", encoding="utf-8")
    res = cli("build", exports["tfc"], "--config", cfg, "--out", tmp_path / "r")
    assert res.exit_code == 2 and "unknown key(s) ['top_k']" in res.output
    res = cli("build", exports["tfc"], "--scale", "1/255")
    assert res.exit_code == 2 and "add --input uint8" in res.output
    res = cli("build", exports["tfc"], "--input", "uint8", "--mean", "0.1,0.2", "--std", "1",
              "--out", tmp_path / "r")
    assert res.exit_code != 0 and "--mean has 2 values, the model's input has 1" in res.output


def test_external_data_loads_and_a_missing_data_file_is_named(exports, tmp_path):
    import onnx

    from fpgaslim.hw.onnx_input import open_onnx, sha256_file

    proto = onnx.load(str(exports["tfc"]))
    ext = tmp_path / "tfc_ext.onnx"
    onnx.save(proto, str(ext), save_as_external_data=True, all_tensors_to_one_file=True,
              location="tfc_ext.onnx.data", size_threshold=1024)
    assert (tmp_path / "tfc_ext.onnx.data").is_file()
    m = open_onnx(ext)
    assert len(m.graph.initializer) == len(proto.graph.initializer)
    digest = sha256_file(ext)
    data = (tmp_path / "tfc_ext.onnx.data").read_bytes()
    (tmp_path / "tfc_ext.onnx.data").write_bytes(data[:-4] + b"\0\0\0\1")
    assert sha256_file(ext) != digest  # the weights are part of the model's identity
    (tmp_path / "tfc_ext.onnx.data").unlink()
    with pytest.raises(CheckpointError, match=r"tfc_ext\.onnx\.data, which does not exist"):
        open_onnx(ext)
    res = cli("build", ext, "--input", "uint8", "--out", tmp_path / "r")
    assert res.exit_code != 0 and "tfc_ext.onnx.data, which does not exist" in res.output


PADDED_FIRST_CONV = '''
import torch, brevitas.nn as qnn
from torch import nn
from brevitas.export import export_qonnx
from brevitas.quant import Int8WeightPerTensorFloat


class W4(Int8WeightPerTensorFloat):
    bit_width = 4


torch.manual_seed(0)
net = nn.Sequential(
    qnn.QuantConv2d(3, 8, 3, padding=1, bias=False, weight_quant=W4), nn.BatchNorm2d(8),
    qnn.QuantReLU(bit_width=4), nn.MaxPool2d(2),
    qnn.QuantConv2d(8, 8, 4, bias=False, weight_quant=W4), nn.BatchNorm2d(8),
    qnn.QuantReLU(bit_width=4), nn.Flatten(), qnn.QuantLinear(8, 10, bias=False, weight_quant=W4))
net.train()
with torch.no_grad():  # activation statistics on normalised inputs
    for _ in range(4):
        net((torch.rand(16, 3, 8, 8) - 0.5) / 0.5)
export_qonnx(net.eval(), torch.rand(1, 3, 8, 8), "padconv.onnx", dynamo=False)
'''


@pytest.mark.slow
def test_a_mean_offset_before_a_padded_conv_builds_in_its_exact_integer_form(tmp_path):
    """A normalised float input straight into a zero-padded conv (MobileNet's shape of the
    problem): FINN cannot move the offset past the padding; the hardware graph takes K*p - c
    and verifies bit-exactly against the file plus its pre-processing as given."""
    import subprocess
    import sys

    (tmp_path / "make.py").write_text(PADDED_FIRST_CONV, encoding="utf-8")
    subprocess.run([sys.executable, "make.py"], cwd=tmp_path, check=True, capture_output=True)
    out = tmp_path / "run"
    res = cli("build", tmp_path / "padconv.onnx", "--input", "uint8", "--mean",
              "0.5,0.25,0.125", "--std", "0.5", "--out", out, "--verify-images", "16")
    assert res.exit_code == 0, res.output
    v = _report(out)["verification"]
    assert v["integer_exact"] and v["verified"] and v["images"] == 16, v
    rec = json.loads((out / "variants" / "baseline" / "record.json").read_text())
    assert rec["qonnx"] == "model.hw.qonnx.onnx"
    assert rec["details"]["reference_qonnx"] == "model.qonnx.onnx"  # the file's own form
    assert rec["details"]["input_quant"]["hardware_form"].startswith("8 * p - [1020,510,255]")
    # the padding stays on the accelerator, after the integer offset
    ops = [row["op_type"] for row in _report(out)["layers"]]
    assert ops[:3] == ["ElementwiseMul_hls", "ElementwiseAdd_hls", "FMPadding_rtl"], ops
    # no exact form with a std per channel: refused, with the reason, before any build
    res = cli("build", tmp_path / "padconv.onnx", "--input", "uint8", "--mean",
              "0.5,0.25,0.125", "--std", "0.5,0.25,0.5", "--out", tmp_path / "r2")
    assert res.exit_code != 0 and "different std per channel" in res.output, res.output
