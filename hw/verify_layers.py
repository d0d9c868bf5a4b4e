"""Per-layer verification: every HW activation layer's integers against the Brevitas reference.

The reference is the one hw/verify.py uses for the logits: the Brevitas model with omegas
folded, in float64, with the float32 integer weights and activation scales of the export.
Each activation quantizer of the reference (the act-quant proxy of every QuantReLU /
QuantIdentity, one event per call: a shared residual quantizer is called once per branch) is
observed through a forward hook: its pre-quantization value divided by its scale (`v`) and
its integer level.

1. Free run: the reference runs on the images by itself. Each HW activation layer (hw/verify.py
   `act_layers`: Thresholding, MVAU/VVAU with thresholds) is mapped to the reference event of
   the same shape whose levels agree with it most (at least half of the elements), in graph
   order; the element differences of this run are the end-to-end (cascading) ones.
2. Fed run: the reference runs again with every mapped event's output replaced by the
   hardware's own levels, so each reference layer sees the hardware's previous-layer integers
   and a difference is counted only where it is born. The last weight layer's accumulator is
   compared the same way, from the fed logits (hw/verify.py `int_diff`).

A difference is a near-tie when the fed reference's `v` lies within relative 1e-9 of a
rounding boundary (k + 1/2; 0 for a bipolar sign): float64 cannot say which side is right.
Anything else is an error. Verified = zero errors.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

TIE_REL = 1e-9  # near-tie: within this relative distance of a rounding boundary
# errors this close to a boundary are what float32 threshold arithmetic (FINN's streamlining
# absorbs BatchNorm and scales into the thresholds in float32) can place on the wrong side
FLOAT32_REL = 1e-6


class LayerCheck(BaseModel):
    """One HW layer against its reference quantizer, over the checked images."""

    model_config = ConfigDict(extra="forbid")
    layer: str  # HW node, e.g. "MVAU_hls_3"
    reference: str  # Brevitas quantizer and call, e.g. "blocks.0.add_quant#1"; or "logits"
    elements: int
    errors: int  # differing elements that are not near-ties (fed run)
    near_ties: int  # differing elements within TIE_REL of a rounding boundary (fed run)
    errors_in_float32_band: int = 0  # errors within FLOAT32_REL of a boundary
    images_with_errors: int
    images_with_near_ties: int
    max_level_diff: float
    min_tie_distance: float | None = None  # smallest relative distance of a near-tie
    first_difference: str | None = None  # image, element, hardware and reference levels
    end_to_end_diffs: int  # differing elements when the reference runs by itself


class LayerVerification(BaseModel):
    """The per-layer record (part of `Verification`)."""

    model_config = ConfigDict(extra="forbid")
    images: int
    layers: list[LayerCheck]
    unmapped: list[str]  # HW activation layers no reference quantizer matched
    errors: int
    near_ties: int
    first_error_layer: str | None
    verified: bool
    source: str = ("simulated: FINN dataflow graph (Python, generic base ops) vs Brevitas "
                   "float64 reference, each reference quantizer fed the hardware's integers")


def _act_proxies(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector

    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, ActQuantProxyFromInjector) and m.is_quant_enabled]


def _boundary_distance(v: np.ndarray, bipolar: bool) -> tuple[np.ndarray, np.ndarray]:
    """(distance to the nearest rounding boundary, that boundary) of v = x / scale."""
    b = np.zeros_like(v) if bipolar else np.floor(v) + 0.5
    return np.abs(v - b), b


def run_reference(reference: nn.Module, images: torch.Tensor,
                  feed: dict[int, np.ndarray] | None = None
                  ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Run the float64 reference; return its quantizer events (in call order) and logits.
    `feed` maps an event index to integer levels (NCHW / NC) that replace its output."""
    from brevitas.quant_tensor import IntQuantTensor

    events: list[dict[str, Any]] = []
    calls: dict[str, int] = {}
    handles = []

    def hook(name: str):
        def fn(module, args, out):
            x = args[0].value if hasattr(args[0], "value") else args[0]
            act = module.fused_activation_quant_proxy.activation_impl
            scale = out.scale
            v = (act(x) / scale).detach().numpy()
            levels = torch.round(out.value / scale).detach().numpy()
            idx = len(events)
            call = calls.get(name, 0)
            calls[name] = call + 1
            bipolar = float(out.bit_width) == 1 and bool(out.signed)
            events.append({"name": f"{name.removesuffix('.act_quant')}#{call}", "v": v,
                           "levels": levels, "bipolar": bipolar})
            if feed is not None and idx in feed:
                value = torch.from_numpy(feed[idx].astype(np.float64)).reshape(
                    out.value.shape) * scale
                return IntQuantTensor(value, scale, out.zero_point, out.bit_width,
                                      out.signed, False)
            return None
        return fn

    for name, proxy in _act_proxies(reference):
        handles.append(proxy.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            logits = reference(images.double()).numpy()
    finally:
        for h in handles:
            h.remove()
    return events, logits


def _nchw(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def _as_bipolar(h: np.ndarray, event: dict[str, Any]) -> np.ndarray:
    """Hardware levels of a bipolar quantizer in FINN's XNOR encoding (0 means -1, the BINARY
    datatype ConvertBipolarMatMulToXnorPopcount gives them) as the reference's -1/+1."""
    if event["bipolar"] and h.size and h.min() >= 0 and h.max() <= 1:
        return 2 * h - 1
    return h


def map_layers(hw: dict[str, np.ndarray], order: list[str], events: list[dict[str, Any]]
               ) -> dict[str, int]:
    """HW layer -> reference event index: same shape, most equal elements (>= half), each
    event used once, in graph order."""
    used: set[int] = set()
    mapping: dict[str, int] = {}
    for name in order:
        h = _nchw(hw[name])
        best, best_agree = None, 0.5
        for i, e in enumerate(events):
            if i in used or e["levels"].size != h.size:
                continue
            ref = e["levels"].reshape(h.shape) if e["levels"].shape != h.shape else e["levels"]
            if ref.shape != h.shape:
                continue
            agree = float((ref == _as_bipolar(h, e)).mean())
            if agree > best_agree or (best is None and agree >= best_agree):
                best, best_agree = i, agree
        if best is not None:
            used.add(best)
            mapping[name] = best
    return mapping


def _check(layer: str, ref_name: str, hw: np.ndarray, event: dict[str, Any],
           free_levels: np.ndarray) -> LayerCheck:
    ref = event["levels"].reshape(hw.shape)
    v = event["v"].reshape(hw.shape)
    diff = hw != ref
    dist, b = _boundary_distance(v, event["bipolar"])
    rel = dist / np.maximum(1.0, np.abs(b))
    tie = diff & (rel <= TIE_REL)
    err = diff & ~tie
    n = hw.shape[0]
    per_img_err = err.reshape(n, -1).any(axis=1)
    per_img_tie = tie.reshape(n, -1).any(axis=1)
    first = None
    if diff.any():
        where = np.argwhere(err if err.any() else tie)[0]
        idx = tuple(int(i) for i in where)
        first = (f"image {idx[0]}, element {idx[1:]} (channel first): hardware level "
                 f"{hw[idx]:g}, reference {ref[idx]:g} (reference x/scale = {v[idx]:.12g}, "
                 f"{rel[idx]:.2g} from the boundary {b[idx]:g} relative; "
                 f"{'near-tie' if tie[idx] else 'error'})")
    return LayerCheck(
        layer=layer, reference=ref_name, elements=int(hw.size), errors=int(err.sum()),
        near_ties=int(tie.sum()), errors_in_float32_band=int((err & (rel <= FLOAT32_REL)).sum()),
        images_with_errors=int(per_img_err.sum()),
        images_with_near_ties=int(per_img_tie.sum()),
        max_level_diff=float(np.abs(hw - ref).max()) if hw.size else 0.0,
        min_tie_distance=float(rel[tie].min()) if tie.any() else None, first_difference=first,
        end_to_end_diffs=int((free_levels.reshape(hw.shape) != hw).sum()))


def verify_layers(hw_npz: Path, reference: nn.Module, images: torch.Tensor,
                  logits_check: Any) -> LayerVerification:
    """Per-layer check of the hardware integers in `hw_npz` (hw_layers.npz + .json, written by
    hw/verify.py execute_dataflow) on the first images. `reference` is the float64 Brevitas
    reference; `logits_check(fed_logits, free_logits, k)` returns the last layer's LayerCheck."""
    meta = json.loads(hw_npz.with_suffix(".json").read_text(encoding="utf-8"))
    data = np.load(hw_npz)
    k = int(meta["images"])
    hw = {name: _nchw(data[name].reshape((k,) + data[name].shape[1:]))
          for name in meta["layers"]}
    x = images[:k]
    free_events, free_logits = run_reference(reference, x)
    mapping = map_layers({n: data[n] for n in meta["layers"]}, meta["layers"], free_events)
    hw = {name: _as_bipolar(h, free_events[mapping[name]]) if name in mapping else h
          for name, h in hw.items()}
    feed = {i: hw[name].reshape(free_events[i]["levels"].shape)
            for name, i in mapping.items()}
    fed_events, fed_logits = run_reference(reference, x, feed)
    checks = []
    for name in meta["layers"]:
        if name not in mapping:
            continue
        i = mapping[name]
        h = hw[name].reshape(fed_events[i]["levels"].shape)
        checks.append(_check(name, fed_events[i]["name"], h, fed_events[i],
                             free_events[i]["levels"]))
    checks.append(logits_check(fed_logits, free_logits, k))
    errors = sum(c.errors for c in checks)
    first = next((c.layer for c in checks if c.errors), None)
    unmapped = [n for n in meta["layers"] if n not in mapping]
    return LayerVerification(images=k, layers=checks, unmapped=unmapped, errors=errors,
                             near_ties=sum(c.near_ties for c in checks),
                             first_error_layer=first, verified=errors == 0 and not unmapped)


def reference_model(model: nn.Module) -> nn.Module:
    """The float64 reference of hw/verify.py: omegas folded, float32 integer weights (why:
    `verify.brevitas_reference`) and float32 activation scales (`_use_float32_act_scales`),
    float64 arithmetic around them."""
    from .qonnx_export import fold_omegas

    exported = fold_omegas(copy.deepcopy(model)).cpu().eval()
    reference = copy.deepcopy(exported).double()
    _use_exported_weights(exported, reference)
    _use_float32_act_scales(exported, reference)
    return reference


class _Float32Scale(nn.Module):
    """A float64 model's activation scale computed by its float32 twin's scaling module (the
    same parameters, float32 arithmetic, as the trained model and its export compute it)."""

    def __init__(self, twin: nn.Module) -> None:
        super().__init__()
        self._twin = [twin]  # a list: not a submodule, so reference.double() leaves it float32

    def forward(self, x: torch.Tensor, threshold: torch.Tensor | None = None) -> torch.Tensor:
        twin = self._twin[0]
        with torch.no_grad():
            scale = twin(x.float()) if threshold is None else twin(x.float(), threshold.float())
        return scale.double()


def _use_float32_act_scales(exported: nn.Module, reference: nn.Module) -> None:
    """Make every activation quantizer of the float64 `reference` use the scale that float32
    `exported` computes (the exported QONNX model's Quant scale, which FINN's thresholds are
    made from), instead of recomputing it in float64.

    Why: Brevitas computes a scale from float32 parameters (a learned threshold, or the input
    quantizer's constant 1.0) divided by 2**bits - 1; in float64 that quotient is a different
    number from the float32 one the model trains with and exports, by up to 6e-8 relative
    (the input quantizer's 1/255: 5.9e-8). Seen: on the digits ResNet-8 of the test suite one
    stem element of image 38 has accumulator 37902, exactly at or above the float64 boundary
    made from the exported scales (37901.99988), so the hardware level is 10; the reference with
    float64-recomputed input and stem scales put it at x / scale = 9.49999963825, level 9: a
    "difference" of the reference's own making, not of FINN's threshold arithmetic (FINN's
    integer thresholds equal the ceilings of the exact float64 ones on that layer)."""
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector

    twins = dict(exported.named_modules())
    for name, proxy in reference.named_modules():
        if not (isinstance(proxy, ActQuantProxyFromInjector) and proxy.is_quant_enabled):
            continue
        fused = proxy.fused_activation_quant_proxy
        twin = twins[name].fused_activation_quant_proxy
        tq, tq32 = getattr(fused, "tensor_quant", None), getattr(twin, "tensor_quant", None)
        if tq is None or tq32 is None or not hasattr(tq, "scaling_impl"):
            continue
        tq.scaling_impl = _Float32Scale(tq32.scaling_impl)


def describe_failure(lv: LayerVerification) -> str:
    """The message of a failed per-layer check: first layer, elements, images, levels."""
    if lv.first_error_layer is None:
        return f"HW layers with no matching reference quantizer: {', '.join(lv.unmapped)}"
    c = next(c for c in lv.layers if c.layer == lv.first_error_layer)
    band = (f"; {c.errors_in_float32_band} of them within float32 error of a rounding "
            "boundary (FINN's float32 threshold arithmetic)" if c.errors_in_float32_band else "")
    return (f"first diverging layer {c.layer} (reference {c.reference}): {c.errors} of "
            f"{c.elements} elements on {c.images_with_errors}/{lv.images} images differ, max "
            f"{c.max_level_diff:g} levels{band}; {c.first_difference}")


def _use_exported_weights(exported: nn.Module, reference: nn.Module) -> None:
    """Make every quantized layer of the float64 `reference` use the integer weights (and
    scale) that float32 `exported` quantizes to, instead of requantizing in float64."""
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer
    from brevitas.quant_tensor import IntQuantTensor

    layers = dict(exported.named_modules())
    for name, layer in reference.named_modules():
        if not (isinstance(layer, QuantWeightBiasInputOutputLayer)
                and layer.weight_quant.is_quant_enabled):
            continue
        with torch.no_grad():
            qt = layers[name].quant_weight()
        scale, zero = qt.scale.double(), qt.zero_point.double()
        frozen = IntQuantTensor((qt.int().double() - zero) * scale, scale, zero,
                                qt.bit_width.double(), qt.signed, False)
        layer.quant_weight = lambda *args, _qt=frozen, **kwargs: _qt  # type: ignore[method-assign]
