"""Functional verification of the folded dataflow graph without hardware.

Specialized `*_hls`/`*_rtl` layers have no Python execution mode, and cppsim/rtlsim need
Vitis HLS/Vivado; so every HW layer is executed through its generic base op's Python model
(finn_compat.to_python_exec), inside FINN's own parent graph. The comparison is integer-exact:
the dataflow partition ends in the last MVAU's accumulator, and the Brevitas model's logits
divided by its output scale are the same integers (FINN_NOTES: bit-exact on real images).

`execute_dataflow` runs in the build child (it imports finn-plus); `brevitas_reference` and
`compare` run in the caller (they need the torch model, not FINN).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from fpgaslim.errors import VerificationError

from .qonnx_export import fold_omegas

LAST_STEP = "step_fpgaslim_layer_table"


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
    source: str = ("simulated: Python execution of the folded FINN dataflow graph (generic "
                   "base ops) vs Brevitas (PyTorch, CPU)")


def last_weight_layer(model) -> tuple[str, str]:
    """(node name, output tensor) of the last MVAU/VVAU: its output is the integer accumulator
    that FINN's trailing scale (host Mul or ElementwiseMul) turns into float logits."""
    nodes = [n for n in model.graph.node if n.op_type.split("_")[0] in ("MVAU", "VVAU")]
    if not nodes:
        raise VerificationError("the dataflow graph has no MVAU/VVAU layer to compare")
    return nodes[-1].name, nodes[-1].output[0]


def execute_dataflow(finn_out: Path, inputs_npy: Path, out_npz: Path) -> str:
    """(child) Execute the final folded graph image by image inside FINN's parent graph; save
    the last weight layer's integer output (hw_int) and the final output (hw_out). Returns the
    name of that layer."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.custom_op.registry import getCustomOp

    from .finn_compat import to_python_exec

    inter = finn_out / "intermediate_models"
    child = to_python_exec(ModelWrapper(str(inter / f"{LAST_STEP}.onnx")))
    last_name, last_out = last_weight_layer(child)
    child_path = inter / "fpgaslim_python_exec.onnx"
    child.save(str(child_path))
    parent = ModelWrapper(str(inter / "dataflow_parent.onnx"))
    sdp = parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]
    getCustomOp(sdp).set_nodeattr("model", str(child_path))
    getCustomOp(sdp).set_nodeattr("return_full_exec_context", 1)
    outs_of_child = [o.name for o in child.graph.output]
    int_key = (sdp.output[outs_of_child.index(last_out)] if last_out in outs_of_child
               else f"{sdp.name}_{last_out}")
    iname, oname = parent.graph.input[0].name, parent.graph.output[0].name
    images = np.load(inputs_npy)
    ints, outs = [], []
    for img in images:
        ctx = execute_onnx(parent, {iname: img[None].astype(np.float32)}, True)
        ints.append(np.asarray(ctx[int_key]).reshape(1, -1))
        outs.append(np.asarray(ctx[oname]).reshape(1, -1))
    np.savez(out_npz, hw_int=np.concatenate(ints), hw_out=np.concatenate(outs))
    return last_name


def brevitas_reference(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Float logits of the Brevitas model, with omegas folded exactly as for export (so the
    reference is the exported function)."""
    model = fold_omegas(copy.deepcopy(model)).cpu().eval()
    with torch.no_grad():
        return model(images).numpy()


def compare(hw_npz: Path, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
            exec_s: float, last_layer: str, strict: bool = True) -> Verification:
    """Compare the hardware graph's outputs to the Brevitas model's; strict -> raise on any
    integer mismatch."""
    data = np.load(hw_npz)
    hw_int, hw_out = data["hw_int"], data["hw_out"]
    ref_float = brevitas_reference(model, images)
    hw_int = hw_int.reshape(ref_float.shape)
    hw_out = hw_out.reshape(ref_float.shape)
    # The hardware's output scale: FINN multiplies the last accumulator by one constant after
    # the last layer (host Mul or ElementwiseMul). It may differ from Brevitas's own output
    # scale by a power of two (streamlining moves factors around), so take the graph's.
    nz = hw_int != 0
    scale = float(np.median(hw_out[nz] / hw_int[nz])) if nz.any() else 1.0
    if nz.any() and not np.allclose(hw_out[nz], hw_int[nz] * scale, rtol=1e-5, atol=0):
        raise VerificationError("the hardware graph's output is not one constant times its "
                                f"last layer's integers ({last_layer}); cannot compare exactly")
    ref_int = ref_float.astype(np.float64) / scale
    ref_int_r = np.round(ref_int)
    # float32 logits hold int * scale rounded to 24 bits: allow that much, relative
    if (np.abs(ref_int - ref_int_r) > 1e-3 + 1e-6 * np.abs(ref_int)).any():
        raise VerificationError(f"Brevitas logits / output scale are not integers (max off "
                                f"{np.abs(ref_int - ref_int_r).max():.3g}): the hardware graph "
                                "computes a different function")
    diff = np.abs(hw_int - ref_int_r)
    bad = int((diff.max(axis=1) > 0).sum())
    hw_pred = hw_out.argmax(1)
    acc = brev = None
    if labels is not None:
        lab = labels.numpy()
        acc = float((hw_pred == lab).mean() * 100)
        brev = float((ref_float.argmax(1) == lab).mean() * 100)
    n = len(images)
    result = Verification(
        images=n, integer_exact=bad == 0, mismatched_images=bad,
        max_abs_int_diff=float(diff.max()), argmax_agreement=float(
            (hw_pred == ref_float.argmax(1)).mean()), hw_accuracy=acc, brevitas_accuracy=brev,
        max_abs_logit_diff=float(np.abs(hw_out - ref_float).max()),
        images_per_s=n / exec_s if exec_s > 0 else 0.0,
        compared=f"integer output of the dataflow partition (last layer {last_layer}) vs "
                 f"Brevitas logits / the graph's output scale {scale:.6g}")
    if strict and bad:
        raise VerificationError(
            f"hardware graph differs from the Brevitas model on {bad}/{n} images (max integer "
            f"difference {result.max_abs_int_diff:g} at {last_layer})")
    return result
