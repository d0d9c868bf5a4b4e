"""Per-layer verification and batched execution on a real FINN build (the digits ResNet-8 of
conftest, built for Pynq-Z1 with the same settings as test_hw_build, so in a full run the
build is shared)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fpgaslim.core.errors import VerificationError
from fpgaslim.hw.api import build_variant
from fpgaslim.hw.verify import compare_outputs
from fpgaslim.hw.verify_layers import LayerCheck, _check

pytestmark = pytest.mark.slow
N_IMAGES = 10  # as test_hw_build: the same cached build


@pytest.fixture(scope="module")
def built(resnet8_run, digits):
    report = build_variant(resnet8_run, "baseline", "pynq-z1", data=digits,
                           verify_images=N_IMAGES)
    return report, Path(report.build_dir)


def test_every_activation_layer_checked_and_verified(built):
    report, work = built
    v = report.verification
    lv = v.layers
    assert lv is not None and v.verified and lv.verified
    assert lv.images == N_IMAGES and lv.errors == 0 and not lv.unmapped
    names = json.loads((work / "hw_layers.json").read_text())["layers"]
    assert [c.layer for c in lv.layers[:-1]] == names and len(names) >= 10
    assert lv.layers[-1].reference.startswith("logits")
    refs = [c.reference for c in lv.layers[:-1]]
    assert len(set(refs)) == len(refs)  # one quantizer call per layer
    assert any("add_quant" in r for r in refs) and any("relu_out" in r for r in refs)


def test_batched_execution_equals_per_image(built):
    """fast_exec (batched, FINN's own op code where it is batch-safe) gives every tensor of
    the dataflow graph exactly as qonnx's per-image execute_onnx does."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fpgaslim.hw import fast_exec
    from fpgaslim.hw.finn_compat import to_python_exec
    from fpgaslim.hw.verify import LAST_STEP, _execute_per_image

    _, work = built
    inter = work / "finn" / "intermediate_models"
    child = to_python_exec(ModelWrapper(str(inter / f"{LAST_STEP}.onnx")))
    parent = ModelWrapper(str(inter / "dataflow_parent.onnx"))
    sdp = parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]
    getCustomOp(sdp).set_nodeattr("model", str(inter / "fpgaslim_python_exec.onnx"))
    x = np.load(work / "exec_input.npy")[:6].astype(np.float32)
    keep = {o for n in child.graph.node for o in n.output}
    fast = fast_exec.run_parent(parent, child, x, keep, batch=4)  # two batches, one partial
    slow = _execute_per_image(parent, sdp, child, x, keep)
    assert len(keep) > 30
    for t in keep:
        assert np.array_equal(fast[t], slow[t].reshape(fast[t].shape)), t
    oname = parent.graph.output[0].name
    assert np.array_equal(fast[oname], slow[oname].reshape(fast[oname].shape))
    # as verification runs it: only the activation layers and the last accumulator kept
    from fpgaslim.hw.verify import act_layers, last_weight_layer

    some = {t for _, t in act_layers(child)} | {last_weight_layer(child)[1]}
    part = fast_exec.run_parent(parent, child, x, some, batch=5)
    for t in some | {oname}:
        assert np.array_equal(part[t], fast[t]), t


def test_a_one_level_difference_names_its_layer(built, resnet8_run, digits, tmp_path):
    """One element of a middle layer changed by one level: the per-layer check names that
    layer first, with 1 element on 1 image; strict mode raises with that layer's name."""
    _, work = built
    for f in ("hw_outputs.npz", "hw_layers.npz", "hw_layers.json"):
        shutil.copy(work / f, tmp_path / f)
    names = json.loads((work / "hw_layers.json").read_text())["layers"]
    target = names[len(names) // 2]
    data = dict(np.load(tmp_path / "hw_layers.npz"))
    flat = data[target].reshape(len(data[target]), -1)
    j = int(np.argmax(flat[2] > 0))  # a non-zero element of image 2
    flat[2, j] -= 1
    data[target] = flat.reshape(data[target].shape)
    np.savez(tmp_path / "hw_layers.npz", **data)
    model = resnet8_run.load_model("baseline")
    x, y = digits.test.tensors[0][:N_IMAGES], digits.test.tensors[1][:N_IMAGES]
    last = json.loads((work / "hw_layers.json").read_text())["last_layer"]
    v = compare_outputs(tmp_path / "hw_outputs.npz", model, x, y, 1.0, last, strict=False)
    lv = v.layers
    assert not v.verified and lv.first_error_layer == target
    c = next(c for c in lv.layers if c.layer == target)
    assert (c.errors, c.images_with_errors, c.max_level_diff) == (1, 1, 1.0)
    assert c.first_difference.startswith("image 2")
    assert all(c.errors == 0 for c in lv.layers[:names.index(target)])
    with pytest.raises(VerificationError, match=f"first diverging layer {target}"):
        compare_outputs(tmp_path / "hw_outputs.npz", model, x, y, 1.0, last)


def test_near_tie_or_error():
    """A difference is a near-tie only within relative 1e-9 of a rounding boundary."""
    hw = np.array([[3.0, 3.0, 3.0, 5.0]])
    ref = np.array([[2.0, 2.0, 3.0, 4.0]])
    v = np.array([[2.5 - 1e-12, 2.5 - 1e-6, 3.1, 4.4]])
    ev = {"levels": ref, "v": v, "bipolar": False}
    c = _check("L", "q#0", hw, ev, ref)
    assert isinstance(c, LayerCheck)
    assert (c.near_ties, c.errors, c.images_with_errors) == (1, 2, 1)
    assert c.errors_in_float32_band == 1  # 2.5 - 1e-6: float32 could miss it, float64 not
    assert c.min_tie_distance == pytest.approx(1e-12 / 2.5, rel=1e-3)
    assert c.end_to_end_diffs == 3 and "error" in c.first_difference


def test_cli_verify(built, resnet8_run):
    from fpgaslim.cli import main

    res = CliRunner().invoke(main, ["verify", str(resnet8_run.path), "--variant", "baseline",
                                    "--board", "pynq-z1", "--images", "12", "--json"])
    assert res.exit_code == 0, res.output
    v = json.loads(res.output)
    assert v["images"] == 12 and v["verified"] and v["layers"]["errors"] == 0
    assert v["images_per_s"] > 0
    res = CliRunner().invoke(main, ["verify", str(resnet8_run.path), "--board", "zcu104"])
    assert res.exit_code == 2 and "no finished build" in res.output


def test_cli_verify_all_test_images(built, resnet8_run, digits):
    """--images all: every test image of the split (digits: a few hundred, seconds), and the
    report says how many."""
    from fpgaslim.cli import main
    from fpgaslim.hw.report import load_report, render

    report, work = built
    path = Path(report.build_dir).parent / "report.json"
    kept = path.read_bytes()  # the shared build's report, as the other tests expect it
    try:
        res = CliRunner().invoke(main, ["verify", str(resnet8_run.path), "--images", "all",
                                        "--json"])
        saved = load_report(path)
    finally:
        path.write_bytes(kept)
    v = json.loads(res.output)
    assert v["images"] == len(digits.test) > 300
    # zero errors on every test image: one stem element of image 38 (hardware 10, reference
    # x/scale 9.49999963825) was the reference's float64-recomputed activation scales, not
    # FINN's; the reference now uses the exported float32 scales
    # (tests/test_exact_thresholds_reference.py)
    assert res.exit_code == 0 and v["verified"] and v["integer_exact"], res.output
    assert v["layers"]["errors"] == 0 and v["mismatched_images"] == 0, res.output
    assert saved.settings["verify_images"] == "all"
    line = saved.verification.accuracy_line()
    assert line.startswith("hardware accuracy (simulated)") and f"on {len(digits.test)} " in line
    from rich.console import Console

    con = Console(record=True, width=200)
    con.print(render(saved))
    assert "hardware accuracy (simulated)" in con.export_text()
    bad = CliRunner().invoke(main, ["verify", str(resnet8_run.path), "--images", "many"])
    assert bad.exit_code == 2 and "'all'" in bad.output


def test_image_count():
    from fpgaslim.core.errors import ConfigError
    from fpgaslim.hw.verify import image_count

    assert image_count("all", 359) == 359 and image_count("ALL", 7) == 7
    assert image_count(20, 359) == 20 and image_count(500, 359) == 359
    assert image_count(0, 359) == 0
    for bad in (-1, "twenty", 2.5, True):
        with pytest.raises(ConfigError, match="or 'all'"):
            image_count(bad, 359)
