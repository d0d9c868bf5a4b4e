"""Real finn-plus estimate builds of trained models, checked against values recomputed here.

Builds are shared per module (and the board-independent prefix is reused across boards), so
the whole file costs a few FINN builds: ResNet-8 and CNV on Pynq-Z1 and U250, plus an
untrained double-width CNV that does not fit a Pynq-Z1.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from qonnx.core.datatype import DataType

from fpgaslim.core.errors import BuildTimeoutError, UnsupportedLayerError
from fpgaslim.hw.api import BuildSettings, build_dir_for, build_variant, load_report
from fpgaslim.hw.boards import get_board
from fpgaslim.hw.build import build_estimate
from fpgaslim.hw.qonnx_export import export_qonnx
from fpgaslim.hw.report import FIT_RESOURCES, render

pytestmark = pytest.mark.slow
BOARDS = ("pynq-z1", "u250")
N_IMAGES = 10


@pytest.fixture(scope="module")
def builds(resnet8_run, cnv_run, digits):
    out = {}
    for name, run in (("resnet8", resnet8_run), ("cnv", cnv_run)):
        for board in BOARDS:
            out[name, board] = build_variant(run, "baseline", board, data=digits,
                                             verify_images=N_IMAGES)
    return out


@pytest.mark.parametrize("name", ["resnet8", "cnv"])
@pytest.mark.parametrize("board", BOARDS)
def test_bit_exact_on_real_images(builds, name, board):
    r = builds[name, board]
    v = r.verification
    assert v is not None and v.images == N_IMAGES
    assert v.integer_exact and v.mismatched_images == 0 and v.max_abs_int_diff == 0
    assert v.argmax_agreement == 1.0  # over the images without tied top logits
    # accuracies equal, up to the images whose top two reference logits tie (decided_images)
    tied = v.images - v.decided_images
    assert abs(v.hw_accuracy - v.brevitas_accuracy) <= 100 * tied / v.images
    assert v.hw_accuracy >= 80  # trained models, real digits
    assert r.finn_verification == {"finn_onnx_python": "SUCCESS",
                                   "initial_python": "SUCCESS",
                                   "streamlined_python": "SUCCESS"}


@pytest.mark.parametrize("name", ["resnet8", "cnv"])
@pytest.mark.parametrize("board", BOARDS)
def test_report_fields_recomputed(builds, resnet8_run, cnv_run, name, board):
    r = builds[name, board]
    run = resnet8_run if name == "resnet8" else cnv_run
    arch = run.record("baseline").arch
    b = get_board(board)
    assert r.board == b.name and r.part == b.part
    # input: UINT8 pixels of the model's input shape; output: one value per class
    assert r.offchip.input_bytes.value == math.prod(arch.in_shape) * 8 / 8
    out_bits = DataType[r.offchip.output_dtype].bitwidth()
    assert r.offchip.output_bytes.value == arch.num_classes * out_bits / 8
    assert r.offchip.weight_bytes.value == 0  # everything fits on-chip here
    assert r.offchip.total_bytes.value == r.offchip.input_bytes.value + \
        r.offchip.output_bytes.value
    # totals are sums of layers, percentages are of the board's datasheet capacity
    for k in FIT_RESOURCES:
        total = sum(getattr(layer, k) for layer in r.layers)
        assert r.resources[k].value == pytest.approx(total)
        assert r.resources[k].capacity == b.capacity(k)
        if b.capacity(k):
            assert r.resources[k].percent == pytest.approx(100 * total / b.capacity(k))
        assert "FINN estimate (finn-plus 1.6.1" in r.resources[k].source
    assert r.fits == all(r.resources[k].value <= b.capacity(k) for k in FIT_RESOURCES)
    assert r.status == ("fits" if r.fits else "does not fit") and r.fits
    # throughput: the slowest layer sets the rate at the clock
    slowest = max(r.layers, key=lambda layer: layer.cycles)
    assert r.throughput.bottleneck_cycles.value == slowest.cycles
    assert r.throughput.fps.value == pytest.approx(1e9 / (10.0 * slowest.cycles))
    assert r.offchip.bandwidth_needed.value == pytest.approx(
        r.offchip.total_bytes.value * r.throughput.fps.value / 1e9)
    assert r.offchip.bandwidth_needed.capacity == b.offchip_gbps
    onchip_bits = sum(layer.weight_bits for layer in r.layers if layer.mem_mode)
    assert r.memory.weight_bits_onchip.value == onchip_bits > 0
    assert sum(r.op_counts.values()) == len(r.layers)


def test_alveo_reaches_higher_throughput_than_pynq(builds):
    for name in ("resnet8", "cnv"):
        assert builds[name, "u250"].throughput.fps.value > \
            builds[name, "pynq-z1"].throughput.fps.value


def test_skip_connections_show_up_as_hardware(builds, resnet8_run):
    blocks = len(resnet8_run.record("baseline").arch.blocks)
    counts = builds["resnet8", "pynq-z1"].op_counts
    assert counts["DuplicateStreams"] == blocks and counts["ElementwiseAdd"] == blocks
    cnv = builds["cnv", "pynq-z1"].op_counts
    assert "DuplicateStreams" not in cnv and "ElementwiseAdd" not in cnv


def test_report_saved_with_schema_and_reused(builds, resnet8_run, digits):
    run = resnet8_run
    assert run.record("baseline").qonnx is not None  # the export was recorded
    bdir = build_dir_for(run, "baseline", BuildSettings(board="pynq-z1"))
    assert bdir.name == "pynq-z1"
    assert (bdir / "report.json").is_file() and (bdir / "report.schema.json").is_file()
    assert load_report(bdir) == builds["resnet8", "pynq-z1"]
    t = time.perf_counter()
    again = build_variant(run, "baseline", "pynq-z1", data=digits, verify_images=N_IMAGES)
    assert time.perf_counter() - t < 5 and again == builds["resnet8", "pynq-z1"]
    # the second board reused the streamlined prefix of the first
    assert builds["resnet8", "u250"].timings["prefix_reused"] == 1.0
    other = build_dir_for(run, "baseline", BuildSettings(board="pynq-z1", target_fps=500))
    assert other.name.startswith("pynq-z1-") and other != bdir
    text = render(builds["resnet8", "pynq-z1"])
    assert text.title and "FITS" in text.title


@pytest.fixture(scope="module")
def big_cnv_inputs(tmp_path_factory, digits):
    """An untrained double-width CNV: too large for a Pynq-Z1 at 10k fps (weights exceed
    its BRAM); accuracy is irrelevant for fit and bit-exactness. (folder, model, x, y)"""
    from fpgaslim.compress.models import create_model

    torch.manual_seed(0)
    model = create_model("cnv", (1, 8, 8), 10, None, 2.0).eval()
    root = tmp_path_factory.mktemp("big")
    export_qonnx(model, root / "big.onnx")
    return root, model, digits.test.tensors[0][:3], digits.test.tensors[1][:3]


@pytest.fixture(scope="module")
def big_cnv(big_cnv_inputs):
    root, model, x, y = big_cnv_inputs

    def build(weights: str):
        return build_estimate(root / "big.onnx", root / weights, BuildSettings(weights=weights),
                              model=model, images=x, labels=y, prefix_cache=root / "prefix")

    return {w: build(w) for w in ("onchip", "external", "auto")}


def test_prefer_rtl_build_resumes_from_the_streamlined_prefix(big_cnv, big_cnv_inputs):
    """prefer_rtl changes step_convert_to_hw, not streamlining: its build resumes from the
    streamlined graph the default builds stored (no second streamlining) and gives what a
    build from scratch gives."""
    root, model, x, y = big_cnv_inputs
    rtl = BuildSettings(weights="external", prefer_rtl=True)
    resumed = build_estimate(root / "big.onnx", root / "rtl", rtl, model=model, images=x,
                             labels=y, prefix_cache=root / "prefix")
    assert resumed.timings["prefix_reused"] == 1.0
    fresh = build_estimate(root / "big.onnx", root / "rtl-fresh", rtl, model=model, images=x,
                           labels=y)
    assert fresh.timings["prefix_reused"] == 0.0
    assert [layer.model_dump() for layer in resumed.layers] == [
        layer.model_dump() for layer in fresh.layers]
    assert any(layer.op_type.endswith("_rtl") for layer in resumed.layers)
    assert {k: f.value for k, f in resumed.resources.items()} == {
        k: f.value for k, f in fresh.resources.items()}
    assert resumed.verification.integer_exact and fresh.verification.integer_exact


def test_too_large_model_does_not_fit_with_overflow(big_cnv):
    r = big_cnv["onchip"]
    b = get_board("pynq-z1")
    assert r.status == "does not fit" and not r.fits
    assert r.resources["BRAM_18K"].value > b.BRAM_18K
    assert r.overflow["BRAM_18K"].value == r.resources["BRAM_18K"].value - b.BRAM_18K
    for k, f in r.overflow.items():
        if k in FIT_RESOURCES:
            assert f.value == r.resources[k].value - b.capacity(k) > 0
    assert r.verification.integer_exact  # a full report, verified, although it does not fit


def test_external_weights_move_to_offchip(big_cnv):
    r = big_cnv["external"]
    weight_layers = [layer for layer in r.layers if layer.mem_mode]
    assert weight_layers and all(layer.mem_mode == "external" for layer in weight_layers)
    assert sum(layer.BRAM_18K for layer in weight_layers) == 0
    assert r.memory.weight_bits_onchip.value == 0
    assert r.offchip.weight_bytes.value > 0
    for layer in weight_layers:  # weights re-streamed every cycle: PE x SIMD x bits per cycle
        bits = DataType[layer.weight_dtype].bitwidth()
        assert layer.offchip_weight_bytes_per_frame == layer.PE * layer.SIMD * bits * \
            layer.cycles / 8
        assert layer.offchip_weight_bytes_per_frame >= layer.weight_bits / 8
    assert r.offchip.weight_bytes.value == sum(
        layer.offchip_weight_bytes_per_frame for layer in weight_layers)
    # 10k fps of re-streamed weights is far beyond a Pynq-Z1's 2.1 GB/s DDR3
    assert "offchip_GBps" in r.overflow
    assert r.throughput.fps_bandwidth_limit.value < r.throughput.fps.value
    assert r.verification.integer_exact
    assert r.timings["prefix_reused"] == 1.0


def test_auto_placement_moves_the_largest_layers_off_chip(big_cnv):
    onchip, auto = big_cnv["onchip"], big_cnv["auto"]
    moved = [layer for layer in auto.layers if layer.mem_mode == "external"]
    kept = [layer for layer in auto.layers if layer.mem_mode == "internal_decoupled"]
    assert moved and kept
    assert auto.resources["BRAM_18K"].value <= get_board("pynq-z1").BRAM_18K
    before = {layer.name: layer.BRAM_18K for layer in onchip.layers}
    assert min(before[m.name] for m in moved) >= max(before[k.name] for k in kept)
    assert auto.verification.integer_exact


def _with_unsupported_op(src, dst):
    """The CNV graph with an ONNX Sin (which FINN has no HW layer for) right after its input
    quantizer (a Sin in front of it is refused earlier, before FINN: tests/test_byo_errors.py)."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    m = ModelWrapper(str(src))
    node = m.find_consumer(m.graph.input[0].name)
    while node.op_type != "Quant":  # the input's own quantizer (x/255 comes first)
        node = m.find_consumer(node.output[0])
    first_quant = list(m.graph.node).index(node)
    inp = node.output[0]
    for node in m.graph.node:
        for i, t in enumerate(node.input):
            if t == inp:
                node.input[i] = "sin_out"
    m.graph.node.insert(first_quant + 1,
                        helper.make_node("Sin", [inp], ["sin_out"], name="MySin"))
    m.save(str(dst))
    m = ModelWrapper(str(dst)).transform(InferShapes())
    m.save(str(dst))
    return dst


def _small_cnv_onnx(path):
    """An untrained quarter-width CNV: enough for mapping and time-limit checks."""
    from fpgaslim.compress.models import create_model

    torch.manual_seed(0)
    return export_qonnx(create_model("cnv", (1, 8, 8), 10, None, 0.25).eval(), path)


def test_unsupported_layer_names_the_node(digits, tmp_path):
    _small_cnv_onnx(tmp_path / "cnv.onnx")
    onnx = _with_unsupported_op(tmp_path / "cnv.onnx", tmp_path / "bad.onnx")
    with pytest.raises(UnsupportedLayerError, match=r"node 'Sin_0' \(op type Sin"):
        build_estimate(onnx, tmp_path / "b", BuildSettings(), images=digits.test.tensors[0][:1])


def test_timeout_kills_the_build_and_names_the_step(digits, tmp_path):
    import psutil

    _small_cnv_onnx(tmp_path / "cnv.onnx")
    t = time.perf_counter()
    with pytest.raises(BuildTimeoutError, match=r"in step (startup_import_finn|step_\w+)"):
        build_estimate(tmp_path / "cnv.onnx", tmp_path / "b", BuildSettings(timeout_s=3),
                       images=digits.test.tensors[0][:1])
    assert time.perf_counter() - t < 30
    job = str(tmp_path / "b" / "job.json")
    alive = [p for p in psutil.process_iter(["cmdline"]) if job in (p.info["cmdline"] or [])]
    assert not alive


def test_verification_detects_a_one_lsb_difference(builds, resnet8_run, digits, tmp_path):
    """Tamper with one accumulator of a real build's hardware outputs (and its logit, so the
    graph's output map stays consistent): strict mode raises, lenient mode counts it."""
    import numpy as np

    from fpgaslim.core.errors import VerificationError
    from fpgaslim.hw.verify import compare_outputs, output_map

    r = builds["resnet8", "pynq-z1"]
    data = dict(np.load(f"{r.build_dir}/hw_outputs.npz"))
    scale, bias = output_map(data["hw_int"], data["hw_out"], "x")
    data["hw_int"][3, 2] += 1
    data["hw_out"][3, 2] += scale
    np.savez(tmp_path / "t.npz", **data)
    model = resnet8_run.load_model("baseline")
    x, y = digits.test.tensors[0][:N_IMAGES], digits.test.tensors[1][:N_IMAGES]
    with pytest.raises(VerificationError, match="1/10 images"):
        compare_outputs(tmp_path / "t.npz", model, x, y, 1.0, "MVAU_rtl_0")
    v = compare_outputs(tmp_path / "t.npz", model, x, y, 1.0, "MVAU_rtl_0", strict=False)
    assert not v.integer_exact and v.mismatched_images == 1 and v.max_abs_int_diff == 1
