"""Functional verification of the folded dataflow graph without hardware.

Specialized `*_hls`/`*_rtl` layers have no Python execution mode, and cppsim/rtlsim need
Vitis HLS/Vivado; so every HW layer is executed through its generic base op's Python model
(finn_compat.to_python_exec), inside FINN's own parent graph. The comparison is integer-exact:
the dataflow partition ends in the last MVAU's accumulator, and the Brevitas model's logits
divided by its output scale are the same integers (FINN_NOTES: bit-exact on real images).

`execute_dataflow` runs in the build child (it imports finn-plus); `brevitas_reference` and
`compare_outputs` run in the caller (they need the torch model, not FINN).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from fpgaslim.core.errors import ConfigError, VerificationError

from .qonnx_export import decided_images
from .verify_layers import (LayerCheck, LayerVerification, describe_failure, reference_model,
                            verify_layers)

LAST_STEP = "step_fpgaslim_layer_table"
ALL_IMAGES = "all"  # verify_images / --images: every test image of the dataset


def is_all(requested: int | str) -> bool:
    """Whether a verify_images / --images value means every test image ("all", any case)."""
    return isinstance(requested, str) and requested.strip().lower() == ALL_IMAGES


def parse_image_count(text: int | str) -> int | str:
    """A verify_images / --images value as typed: "all" (any case), or a number of images
    >= 0. ValueError, saying what is wrong, otherwise (the CLI and the benchmarks word it as
    their own option's error)."""
    if is_all(str(text)):
        return ALL_IMAGES
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a number of images nor 'all'") from None
    if n < 0:
        raise ValueError(f"needs 0 or more images, got {n}")
    return n


def image_count(requested: int | str, available: int, what: str = "verify_images") -> int:
    """How many test images to verify on: `requested` (an integer >= 0, or "all": every one
    of the `available` test images), at most `available`."""
    if is_all(requested):
        return available
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ConfigError(f"{what} must be a number of images (0 or more) or 'all', got "
                          f"{requested!r}")
    return min(requested, available)


class Verification(BaseModel):
    """Hardware graph vs Brevitas model on real test images."""

    model_config = ConfigDict(extra="forbid")
    images: int
    integer_exact: bool  # every integer output identical on every image
    mismatched_images: int
    max_abs_int_diff: float
    argmax_agreement: float  # fraction of images with the same predicted class
    hw_accuracy: float | None  # % of images the hardware graph classifies correctly
    brevitas_accuracy: float | None
    max_abs_logit_diff: float
    images_per_s: float
    compared: str  # what was compared, e.g. "integer accumulators of MVAU_rtl_3"
    topk: int | None = None  # the graph returns the top-k class indices (--topk)
    topk_mismatched_images: int | None = None  # images whose indices are not a top-k of the
    # reference logits (any order among equal logits is a valid top-k)
    decided_images: int | None = None  # images whose top two reference logits are not tied
    layers: LayerVerification | None = None  # per-layer check (hw/verify_layers.py)
    verified: bool | None = None  # zero per-layer errors and every difference explained
    source: str = ("simulated: Python execution of the folded FINN dataflow graph (generic "
                   "base ops) vs Brevitas (PyTorch, CPU)")

    def accuracy_line(self) -> str:
        """'hardware accuracy (simulated) 97.50 % on 360 images; PyTorch 97.22 %' (PyTorch:
        the Brevitas reference on the same images); without labels, says so."""
        if self.hw_accuracy is None:
            return f"no labels: agreement only, on {self.images} images"
        torch_acc = ("" if self.brevitas_accuracy is None else
                     f"; PyTorch (Brevitas) {self.brevitas_accuracy:.2f} % on the same images")
        return (f"hardware accuracy (simulated) {self.hw_accuracy:.2f} % on {self.images} "
                f"images{torch_acc}")

    def summary(self) -> str:
        """One line for tables: 'bit-exact 20/20', 'verified 19/20, 1 near-tie' (every
        difference within float64 error of a rounding boundary) or 'MISMATCH 17/20 (first:
        layer)'. The one place that decides how a verification reads, for every table."""
        ok = self.images - self.mismatched_images
        lv = self.layers
        ties = lv.near_ties if lv is not None else 0
        note = f", {ties} near-tie{'s' * (ties != 1)}" if ties else ""
        passed = self.verified if self.verified is not None else self.integer_exact
        if passed:
            return f"{'bit-exact' if self.integer_exact else 'verified'} {ok}/{self.images}{note}"
        first = f" (first: {lv.first_error_layer})" if lv and lv.first_error_layer else ""
        return f"MISMATCH {ok}/{self.images}{first}"


def last_weight_layer(model) -> tuple[str, str]:
    """(node name, output tensor) of the last MVAU/VVAU: its output is the integer accumulator
    that FINN's trailing scale (host Mul or ElementwiseMul) turns into float logits."""
    nodes = [n for n in model.graph.node if n.op_type.split("_")[0] in ("MVAU", "VVAU")]
    if not nodes:
        raise VerificationError("the dataflow graph has no MVAU/VVAU layer to compare")
    return nodes[-1].name, nodes[-1].output[0]


LAYER_IMAGES = 200  # per-layer data is kept for at most this many images (memory)


def act_layers(model) -> list[tuple[str, str]]:
    """(node name, output tensor) of every HW layer whose output is a quantized activation:
    Thresholding, and MVAU/VVAU with embedded thresholds (noActivation == 0)."""
    from qonnx.custom_op.registry import getCustomOp

    out = []
    for n in model.graph.node:
        base = n.op_type.split("_")[0]
        if base == "Thresholding" or (base in ("MVAU", "VVAU") and
                                      getCustomOp(n).get_nodeattr("noActivation") == 0):
            out.append((n.name, n.output[0]))
    return out


def execute_dataflow(finn_out: Path, inputs_npy: Path, out_npz: Path,
                     layer_images: int = LAYER_IMAGES) -> str:
    """(child) Execute the final folded graph inside FINN's parent graph, batched
    (hw/fast_exec.py; image by image through qonnx if the parent holds a node it does not
    execute); save the last weight layer's integer output (hw_int) and the final output
    (hw_out) for every image, and every activation layer's integer output for the first
    `layer_images` images (hw_layers.npz, with hw_layers.json naming the layers). Returns the
    name of the last weight layer."""
    import json

    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from . import fast_exec
    from .finn_compat import to_python_exec

    inter = finn_out / "intermediate_models"
    child = to_python_exec(ModelWrapper(str(inter / f"{LAST_STEP}.onnx")))
    last_name, last_out = last_weight_layer(child)
    layers = act_layers(child)
    child_path = inter / "fpgaslim_python_exec.onnx"
    child.save(str(child_path))
    parent = ModelWrapper(str(inter / "dataflow_parent.onnx"))
    sdp = parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]
    getCustomOp(sdp).set_nodeattr("model", str(child_path))
    oname = parent.graph.output[0].name
    images = np.load(inputs_npy).astype(np.float32)
    k = min(len(images), layer_images)
    keep = {last_out} | {t for _, t in layers}
    try:
        got = fast_exec.run_parent(parent, child, images[:k], keep)
        rest = (fast_exec.run_parent(parent, child, images[k:], {last_out})
                if k < len(images) else None)
    except NotImplementedError:
        got = _execute_per_image(parent, sdp, child, images[:k], keep)
        rest = (_execute_per_image(parent, sdp, child, images[k:], {last_out})
                if k < len(images) else None)
    ints = [got[last_out].reshape(k, -1)]
    outs = [got[oname].reshape(k, -1)]
    if rest is not None:
        ints.append(rest[last_out].reshape(len(images) - k, -1))
        outs.append(rest[oname].reshape(len(images) - k, -1))
    np.savez(out_npz, hw_int=np.concatenate(ints), hw_out=np.concatenate(outs))
    layer_npz = out_npz.with_name("hw_layers.npz")
    np.savez(layer_npz, **{name: _small_int(got[t]) for name, t in layers})
    layer_npz.with_suffix(".json").write_text(json.dumps(
        {"images": k, "layers": [name for name, _ in layers], "last_layer": last_name}),
        encoding="utf-8")
    return last_name


def _small_int(a: np.ndarray) -> np.ndarray:
    """Integer levels in the narrowest of int8/int16/int32 that holds them (memory)."""
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    for t in (np.int8, np.int16):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return a.astype(t)
    return a.astype(np.int32)


def _execute_per_image(parent, sdp, child, images: np.ndarray, keep: set[str]
                       ) -> dict[str, np.ndarray]:
    """qonnx's execute_onnx image by image (the reference path of fast_exec)."""
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.custom_op.registry import getCustomOp

    getCustomOp(sdp).set_nodeattr("return_full_exec_context", 1)
    outs_of_child = [o.name for o in child.graph.output]
    iname, oname = parent.graph.input[0].name, parent.graph.output[0].name
    parts: dict[str, list] = {}
    for img in images:
        ctx = execute_onnx(parent, {iname: img[None].astype(np.float32)}, True)
        for t in keep - {oname}:
            key = sdp.output[outs_of_child.index(t)] if t in outs_of_child else f"{sdp.name}_{t}"
            parts.setdefault(t, []).append(np.asarray(ctx[key]))
        parts.setdefault(oname, []).append(np.asarray(ctx[oname]))  # the parent's output
    return {t: np.concatenate(v) for t, v in parts.items()}


def brevitas_reference(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Logits of the Brevitas model, with omegas folded exactly as for export (so the
    reference is the exported function), computed in float64 with the float32 integer
    weights and activation scales (why the scales: verify_layers._use_float32_act_scales).

    Why float64: in float32 the model's accumulations carry rounding errors of ~1e-7, and an
    activation that lands that close to a quantization boundary rounds to the other level,
    while FINN's integer hardware is exact. Seen on a trained CNV: float32 Brevitas differed
    from the hardware graph on 1 of 10 digits images (one level, 68 at the output); the same
    model in float64 matched the hardware on all 10.

    Why the weights stay float32: the export (and so the hardware) quantizes the weights in
    float32, and a weight that lands on a rounding boundary there rounds differently in
    float64. Seen on a pruned ResNet-14: one 8-bit fc weight one level off moved the last
    accumulator by up to 17 on 14 of 20 images, while the float32 model, the QONNX export and
    the hardware graph all agreed."""
    key = _reference_key(model, images)
    if key in _REFERENCES:
        _REFERENCES.move_to_end(key)
        return _REFERENCES[key].copy()
    reference = reference_model(model)
    with torch.no_grad():
        out = np.concatenate([reference(images[i:i + REFERENCE_BATCH].double()).numpy()
                              for i in range(0, len(images), REFERENCE_BATCH)])
    _REFERENCES[key] = out
    while len(_REFERENCES) > REFERENCE_CACHE:
        _REFERENCES.popitem(last=False)
    return out.copy()


# Why batches: one float64 forward of the whole test set holds ~1 GB per activation tensor
# (ResNet-20, 10,000 images: 12 GB resident) and ran about twice as slowly as batches do.
# Why the cache: the reference depends on the model and the images only, not on the board, and
# a variant is usually verified on several boards one after another (a sweep, the compression
# benchmark); float64 convolution is ~5x slower than float32 on CPU, so it was most of a
# 10,000-image verification's time. Keyed by content, so a retrained model never hits.
# A few entries, not one: each build also asks for its first image's logits (FINN's own
# verification pair), which would evict the whole test set's between two boards. An entry is
# the logits only (10,000 x 10 float64: 0.8 MB).
REFERENCE_BATCH = 500
REFERENCE_CACHE = 4
_REFERENCES: OrderedDict[str, np.ndarray] = OrderedDict()


def _reference_key(model: nn.Module, images: torch.Tensor) -> str:
    """The model's parameters and buffers, its layer types and every enabled quantizer's bit
    width, and the images. Why the bit widths: they are not in the state dict. Seen: CNV
    w1a1 and w2a2 from one seed have equal state dicts (equal weights, constant scales), so
    the benchmark's w2a2 anchor build got the w1a1 model's logits and failed ("no layer
    explains the output difference")."""
    import hashlib

    from brevitas.proxy.quant_proxy import QuantProxyFromInjector

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for name, m in model.named_modules():
        h.update(f"{name}:{type(m).__module__}.{type(m).__qualname__}".encode())
        if isinstance(m, QuantProxyFromInjector) and m.is_quant_enabled:
            bits = m.bit_width()
            h.update(repr(None if bits is None else float(bits)).encode())
    h.update(str(tuple(images.shape)).encode())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def output_map(hw_int: np.ndarray, hw_out: np.ndarray, last_layer: str
               ) -> tuple[float, np.ndarray]:
    """(scale, per-class bias) with hw_out = scale * hw_int + bias, read off the hardware
    graph's own outputs. FINN turns the last accumulator into logits with one constant (host
    Mul or ElementwiseMul) and, for a classifier with a bias, a per-class Add; streamlining may
    move power-of-two factors between them and the accumulator, so Brevitas's own output scale
    is not necessarily the hardware's. The map is exact: any residual is an error."""
    cols = []
    for j in range(hw_int.shape[1]):
        hi, lo = int(hw_int[:, j].argmax()), int(hw_int[:, j].argmin())
        if hw_int[hi, j] != hw_int[lo, j]:
            cols.append((hw_out[hi, j] - hw_out[lo, j]) / (hw_int[hi, j] - hw_int[lo, j]))
    if cols:
        scale = float(np.median(cols))
    else:  # one image: assume no bias
        nz = hw_int != 0
        scale = float(np.median(hw_out[nz] / hw_int[nz])) if nz.any() else 1.0
    bias = np.median(hw_out - scale * hw_int, axis=0) if cols else np.zeros(hw_int.shape[1])
    tol = 1e-5 * max(1.0, float(np.abs(hw_out).max()))
    if not cols and len(hw_int) > 1 and np.all(hw_int == hw_int[0]) \
            and np.all(hw_out == hw_out[0]):
        # every image gives the same accumulators and outputs (e.g. an untrained network
        # whose activations all quantize to 0): the scale cannot be read off; outputs that
        # are constant too compare as they are (scale 1, bias = output - integers)
        return 1.0, (hw_out[0] - hw_int[0]).astype(np.float64)
    if scale != 0 and np.abs(hw_out - (scale * hw_int + bias)).max() <= tol:
        return scale, bias
    # one scale per class: a per-class affine layer after the last accumulator (BNN-PYNQ's
    # TensorNorm: FINN keeps its Mul as an ElementwiseMul); columns with one value keep the
    # common scale
    per = np.full(hw_int.shape[1], scale, dtype=np.float64)
    for j in range(hw_int.shape[1]):
        hi, lo = int(hw_int[:, j].argmax()), int(hw_int[:, j].argmin())
        if hw_int[hi, j] != hw_int[lo, j]:
            per[j] = (hw_out[hi, j] - hw_out[lo, j]) / (hw_int[hi, j] - hw_int[lo, j])
    bias = np.median(hw_out - per * hw_int, axis=0)
    if len(hw_int) < 3 or (per == 0).any() or \
            np.abs(hw_out - (per * hw_int + bias)).max() > tol:
        raise VerificationError("the hardware graph's output is not an affine map of its last "
                                f"layer's integers ({last_layer}); cannot compare exactly")
    return per, bias


def scale_text(scale: float | np.ndarray) -> str:
    """The output map's scale for a message: one number, or 'per class'."""
    return f"{float(scale):.6g}" if np.ndim(scale) == 0 else "(per class)"


def topk_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """The k best class indices per image, best first; equal values in index order (the
    rule of ONNX TopK)."""
    return np.argsort(-np.asarray(logits, np.float64).reshape(len(logits), -1), axis=1,
                      kind="stable")[:, :k]


def topk_agreement(ref_float: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per image: are `indices` (N x k) a top-k of the reference logits? Their reference
    values, in order, must be the k largest, each index once; which of several equal logits
    comes first is the hardware's choice (LabelSelect and TopK break ties differently)."""
    k = indices.shape[1]
    idx = indices.astype(np.int64)
    if idx.min(initial=0) < 0 or idx.max(initial=0) >= ref_float.shape[1]:
        return np.zeros(len(idx), dtype=bool)
    best = -np.sort(-ref_float, axis=1)[:, :k]
    got = np.take_along_axis(ref_float, idx, axis=1)
    unique = np.array([len(set(r)) == k for r in idx.tolist()])
    return np.all(got == best, axis=1) & unique


def compare_outputs(hw_npz: Path, model: nn.Module | None, images: torch.Tensor,
            labels: torch.Tensor | None, exec_s: float, last_layer: str, strict: bool = True,
            reference: np.ndarray | None = None, reference_source: str | None = None,
            topk: int | None = None) -> Verification:
    """Compare the hardware graph's outputs to the Brevitas model's (or, for a QONNX file
    without a PyTorch model, to `reference`: the file's logits executed by qonnx, labelled
    `reference_source`); strict -> raise on any integer mismatch."""
    data = np.load(hw_npz)
    hw_int, hw_out = data["hw_int"], data["hw_out"]
    ref_float = (np.asarray(reference, dtype=np.float64).reshape(len(images), -1)
                 if reference is not None else brevitas_reference(model, images))
    hw_int = hw_int.reshape(ref_float.shape)
    if topk is not None:
        return _compare_topk(hw_int, hw_out.reshape(len(ref_float), -1), ref_float, labels,
                             exec_s, last_layer, strict, topk, reference_source)
    hw_out = hw_out.reshape(ref_float.shape)
    scale, bias = output_map(hw_int, hw_out, last_layer)
    diff = int_diff(ref_float, hw_int, scale, bias)
    bad = int((diff.max(axis=1) > 0).sum())
    hw_pred = hw_out.argmax(1)
    decided = decided_images(ref_float)  # argmax only where the reference has no tie
    acc = brev = None
    if labels is not None:
        lab = labels.numpy()
        acc = float((hw_pred == lab).mean() * 100)
        brev = float((ref_float.argmax(1) == lab).mean() * 100)
    n = len(images)
    result = Verification(
        images=n, integer_exact=bad == 0, mismatched_images=bad,
        max_abs_int_diff=float(diff.max()), argmax_agreement=float(
            (hw_pred == ref_float.argmax(1))[decided].mean()) if decided.any() else 1.0,
        decided_images=int(decided.sum()), hw_accuracy=acc, brevitas_accuracy=brev,
        max_abs_logit_diff=float(np.abs(hw_out - ref_float).max()),
        images_per_s=n / exec_s if exec_s > 0 else 0.0,
        compared=f"integer output of the dataflow partition (last layer {last_layer}) vs "
                 f"Brevitas logits mapped back through the graph's output scale {scale_text(scale)} "
                 "(and bias)")
    if reference_source:
        result.source = reference_source
        result.compared = result.compared.replace("Brevitas logits", "QONNX model's logits")
    layer_npz = Path(hw_npz).with_name("hw_layers.npz")
    if model is not None and reference is None and layer_npz.is_file():
        result.layers = _check_layers(layer_npz, model, images, hw_int, scale, bias,
                                      last_layer)
        lv = result.layers
        beyond = int((diff[lv.images:].max(axis=1) > 0).sum()) if n > lv.images else 0
        explained = bad == 0 or lv.near_ties > 0
        result.verified = lv.verified and beyond == 0 and explained
        if strict and not result.verified:

            why = (describe_failure(lv) if not lv.verified else
                   f"{beyond} images beyond the {lv.images} checked per layer differ"
                   if beyond else "no layer explains the output difference")
            raise VerificationError(
                f"hardware graph differs from the Brevitas model: {why} (end to end: "
                f"{bad}/{n} images, max integer difference {result.max_abs_int_diff:g} at "
                f"{last_layer})")
        return result
    result.verified = bad == 0
    if strict and bad:
        what = "the QONNX model" if reference is not None else "the Brevitas model"
        raise VerificationError(
            f"hardware graph differs from {what} on {bad}/{n} images (max integer "
            f"difference {result.max_abs_int_diff:g} at {last_layer})")
    return result


def _compare_topk(hw_int: np.ndarray, indices: np.ndarray, ref_float: np.ndarray,
                  labels: torch.Tensor | None, exec_s: float, last_layer: str, strict: bool,
                  k: int, reference_source: str | None) -> Verification:
    """compare_outputs for a graph that ends in top-k: the last weight layer's integers
    against the reference logits (the graph has no logits output, so the map between them is
    read off the reference: exact when every image agrees), and the indices against the
    reference's top-k."""
    try:
        scale, bias = output_map(hw_int, ref_float, last_layer)
    except VerificationError:  # not affine: some images differ; the medians still map most
        scale, bias = _median_map(hw_int, ref_float)
    diff = int_diff(ref_float, hw_int, scale, bias)
    bad = int((diff.max(axis=1) > 0).sum())
    ok_k = topk_agreement(ref_float, indices[:, :k])
    bad_k = int((~ok_k).sum())
    n = len(ref_float)
    acc = brev = None
    if labels is not None:
        lab = labels.numpy()
        acc = float((indices[:, 0] == lab).mean() * 100)
        brev = float((ref_float.argmax(1) == lab).mean() * 100)
    decided = decided_images(ref_float)
    result = Verification(
        images=n, integer_exact=bad == 0, mismatched_images=bad,
        max_abs_int_diff=float(diff.max()),
        argmax_agreement=float((indices[:, 0] == ref_float.argmax(1))[decided].mean())
        if decided.any() else 1.0, decided_images=int(decided.sum()),
        hw_accuracy=acc, brevitas_accuracy=brev, max_abs_logit_diff=float(
            np.abs(scale * hw_int + bias - ref_float).max()),
        images_per_s=n / exec_s if exec_s > 0 else 0.0,
        compared=f"integer output of the last weight layer {last_layer} vs the QONNX model's "
                 f"logits (map {scale_text(scale)} x + bias, read off the reference), and the "
                 f"top-{k} class indices (LabelSelect) vs the reference's top-{k}",
        topk=k, topk_mismatched_images=bad_k)
    if reference_source:
        result.source = reference_source
    result.verified = bad == 0 and bad_k == 0
    if strict and not result.verified:
        raise VerificationError(
            f"hardware graph differs from the QONNX model: {bad}/{n} images at {last_layer} "
            f"(max integer difference {result.max_abs_int_diff:g}), {bad_k}/{n} images whose "
            f"top-{k} indices are not the reference's")
    return result


def _median_map(hw_int: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """A robust (scale, bias) with target ~ scale * hw_int + bias: per-column slopes between
    each column's extremes, their median; the bias per column as the median residual."""
    cols = [(target[hi, j] - target[lo, j]) / (hw_int[hi, j] - hw_int[lo, j])
            for j in range(hw_int.shape[1])
            for hi, lo in [(int(hw_int[:, j].argmax()), int(hw_int[:, j].argmin()))]
            if hw_int[hi, j] != hw_int[lo, j]]
    scale = float(np.median(cols)) if cols else 1.0
    return scale, np.median(target - scale * hw_int, axis=0)


def int_diff(ref_float: np.ndarray, hw_int: np.ndarray, scale: float, bias: np.ndarray
             ) -> np.ndarray:
    """Per-element integer difference between the hardware's last accumulator and reference
    logits mapped back through the graph's output map (0 where equal)."""
    ref_int = (ref_float.astype(np.float64) - bias) / scale
    # float32 logits hold int * scale (+ bias) rounded to 24 bits: equal within that much
    tol = 1e-3 + 1e-5 * np.abs(ref_int) + 1e-5 * np.abs(bias) / scale
    ref_r = np.round(ref_int)
    on_grid = np.abs(ref_int - ref_r) <= tol  # an off-grid Brevitas value is a mismatch
    return np.where(on_grid, np.abs(hw_int - ref_r), np.maximum(np.abs(hw_int - ref_int), tol))


def _check_layers(layer_npz: Path, model: nn.Module, images: torch.Tensor, hw_int: np.ndarray,
                  scale: float, bias: np.ndarray, last_layer: str) -> LayerVerification:
    """hw/verify_layers.py's per-layer check, with the last accumulator compared like the
    logits above (fed: from the hardware's own last activations)."""

    def logits_check(fed: np.ndarray, free: np.ndarray, k: int) -> LayerCheck:
        d = int_diff(fed.reshape(k, -1), hw_int[:k], scale, bias)
        d_free = int_diff(free.reshape(k, -1), hw_int[:k], scale, bias)
        first = None
        if (d > 0).any():
            i, j = (int(a) for a in np.argwhere(d > 0)[0])
            first = (f"image {i}, class {j}: hardware accumulator {hw_int[i, j]:g}, "
                     f"reference {(fed[i, j] - bias[j]) / np.broadcast_to(scale, bias.shape)[j]:.6f}")
        return LayerCheck(layer=last_layer, reference="logits (accumulator)",
                          elements=int(d.size), errors=int((d > 0).sum()), near_ties=0,
                          images_with_errors=int((d.max(axis=1) > 0).sum()),
                          images_with_near_ties=0, max_level_diff=float(d.max()),
                          first_difference=first, end_to_end_diffs=int((d_free > 0).sum()))

    return verify_layers(layer_npz, reference_model(model), images, logits_check)
