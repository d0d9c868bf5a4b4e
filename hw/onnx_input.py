"""A QONNX (or FINN-ONNX) file from elsewhere: validation, its input quantizer, preparation.

FINN needs to know the datatype of the accelerator's input stream, and that stream must carry
integers (FINN_NOTES: with non-integer input FINN's conversion stops with "Rounding error is
too high to match set QONNX datatype"). fpgaslim's own models quantize x/255 with a UINT8
quantizer of scale exactly 1/255, so there the stream is the raw pixels; a file from elsewhere
says what it expects through its *input quantizer*: the first Quant node the graph input
reaches through scalar Muls and shape-only ops (bit width, signedness, narrow range, scale),
or, in a FINN-ONNX file, the input tensor's datatype annotation.

`prepare_onnx` writes the file the build starts from: the same graph whose input is the
quantizer's integers k, annotated INT<b>/UINT<b>. When the quantizer's scale seen from the
input (scale / product of the Muls in front) is not exactly 1, a Mul by that step is put in
front, so the prepared graph on k computes exactly what the original graph computes on
k * step (the quantizer rounds k * step back to k). Data in the original input domain maps to
k = clip(round(x / step)) (`to_integers`), which is what the quantizer computes anyway.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from fpgaslim.core.errors import CheckpointError, ConfigError, UnsupportedLayerError

_SHAPE_OPS = {"Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze"}
INT_INPUT = "fpgaslim_int_input"


class InputQuant(BaseModel):
    """What the accelerator's input stream carries, read from the graph."""

    model_config = ConfigDict(extra="forbid")
    dtype: str  # qonnx DataType name, e.g. UINT8, INT4, BIPOLAR
    bits: int
    signed: bool
    low: int  # the integer range of the stream
    high: int
    step: float  # model input = integer * step (1.0: the integers are the model's input)
    shape: list[int]  # one input, without the batch dimension
    found: str  # where the datatype came from (node name / annotation)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def open_onnx(path: str | Path):
    """A qonnx ModelWrapper of a user's file, or a CheckpointError naming the file and what is
    wrong with it (missing, truncated, not ONNX, no graph, several inputs/outputs)."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX file {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty: not a (Q)ONNX model")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CheckpointError(
            f"{path} is not a valid (Q)ONNX model: it does not parse as an ONNX protobuf "
            f"({type(exc).__name__}); the file is truncated or not ONNX. Export it again "
            "(e.g. brevitas.export.export_qonnx) and check that the copy is complete") from exc
    graph = proto.graph
    if len(graph.node) == 0:
        raise CheckpointError(f"{path} is not a valid (Q)ONNX model: its graph has no nodes")
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise CheckpointError(f"{path}: the graph has {len(inputs)} inputs and "
                              f"{len(graph.output)} outputs; fpgaslim builds single-input, "
                              "single-output classifiers")
    try:
        return ModelWrapper(proto)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a usable (Q)ONNX model ({type(exc).__name__}: "
                              f"{exc})") from exc


def _scalar(model: Any, name: str) -> float | None:
    v = model.get_initializer(name)
    return float(np.asarray(v).reshape(-1)[0]) if v is not None and np.asarray(v).size == 1 \
        else None


def read_input_quant(model: Any, where: str = "the graph") -> InputQuant:
    """The input stream's datatype and the input step, from the graph (see the module doc)."""
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.general.intquant import max_int, min_int

    iname = model.graph.input[0].name
    shape = [int(d) for d in model.get_tensor_shape(iname)]
    if not shape or shape[0] != 1:
        raise ConfigError(f"{where}: input {iname!r} has shape {shape}; export it with batch "
                          "size 1 (e.g. a 1 x C x H x W example input)")
    annotated = model.get_tensor_datatype(iname)
    if annotated is not None and annotated != DataType["FLOAT32"]:
        if not annotated.is_integer():
            raise ConfigError(f"{where}: input {iname!r} is annotated {annotated.name}; the "
                              "accelerator's input must be an integer type")
        return InputQuant(dtype=annotated.name, bits=annotated.bitwidth(),
                          signed=annotated.signed(), low=int(annotated.min()),
                          high=int(annotated.max()), step=1.0, shape=shape[1:],
                          found=f"datatype annotation of input {iname!r}")
    tensor, mul = iname, 1.0
    while True:
        consumers = model.find_consumers(tensor)
        if len(consumers) != 1:
            first = consumers[0] if consumers else None
            raise UnsupportedLayerError(
                f"{where}: the input {iname!r} feeds {len(consumers)} nodes"
                f"{f' (first {first.name!r}, {first.op_type})' if first else ''} without one "
                "input quantizer in front; FINN needs an integer input: quantize the input "
                "first (a Brevitas QuantIdentity, or x/255 into a UINT8 quantizer)")
        node = consumers[0]
        if node.op_type in _SHAPE_OPS:
            tensor = node.output[0]
            continue
        if node.op_type == "Mul" and _scalar(model, node.input[1]) is not None:
            mul *= _scalar(model, node.input[1])
            tensor = node.output[0]
            continue
        if node.op_type == "Div" and _scalar(model, node.input[1]):
            mul /= _scalar(model, node.input[1])
            tensor = node.output[0]
            continue
        break
    if node.op_type == "BipolarQuant":
        return InputQuant(dtype="BIPOLAR", bits=1, signed=True, low=-1, high=1, step=1.0,
                          shape=shape[1:], found=f"BipolarQuant node {node.name!r}")
    if node.op_type != "Quant":
        raise UnsupportedLayerError(
            f"{where}: the input {iname!r} reaches node {node.name!r} (op type {node.op_type}) "
            "before any quantizer; FINN needs an integer input stream: put an input quantizer "
            "in front (Brevitas QuantIdentity, or x/255 into a UINT8 quantizer as fpgaslim's "
            "models do)")
    scale, zero, bits = (_scalar(model, node.input[i]) for i in (1, 2, 3))
    if scale is None or zero is None or bits is None:
        raise UnsupportedLayerError(
            f"{where}: input quantizer {node.name!r} has a per-channel or computed scale/zero "
            "point; FINN's input stream needs one scalar scale: use a per-tensor input "
            "quantizer")
    if zero != 0:
        raise UnsupportedLayerError(
            f"{where}: input quantizer {node.name!r} has zero point {zero:g}; use a "
            "zero-point-free (symmetric or unsigned) input quantizer")
    attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
    signed, narrow, b = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)), int(bits)
    dtype = ("INT" if signed else "UINT") + str(b)
    return InputQuant(dtype=dtype, bits=b, signed=signed, low=int(min_int(signed, narrow, b)),
                      high=int(max_int(signed, narrow, b)), step=float(np.float32(scale / mul)),
                      shape=shape[1:], found=f"Quant node {node.name!r}")


def prepare_onnx(src: str | Path, dst: str | Path, where: str | None = None) -> InputQuant:
    """Write the graph the build starts from (input = the quantizer's integers, annotated);
    returns the input quantizer it found. qonnx's cleanup runs first (shapes, constant
    folding, unique names), as for fpgaslim's own exports."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.util.cleanup import cleanup_model

    model = open_onnx(src)
    try:
        model = cleanup_model(model)
    except Exception as exc:
        raise CheckpointError(f"{where or src}: qonnx cannot process this graph "
                              f"({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    iq = read_input_quant(model, where or str(src))
    iname = model.graph.input[0].name
    if iq.step != 1.0:
        old = model.graph.input[0]
        new = helper.make_tensor_value_info(INT_INPUT, TensorProto.FLOAT, [1, *iq.shape])
        model.graph.input.remove(old)
        model.graph.input.insert(0, new)
        model.graph.value_info.append(old)
        step = f"{INT_INPUT}_step"
        model.set_initializer(step, np.asarray(iq.step, dtype=np.float32))
        model.graph.node.insert(0, helper.make_node("Mul", [INT_INPUT, step], [iname],
                                                    name="fpgaslim_input_step"))
        iname = INT_INPUT
    model.set_tensor_datatype(iname, DataType[iq.dtype])
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    model.save(str(dst))
    return iq


def to_integers(iq: InputQuant, images: np.ndarray) -> np.ndarray:
    """Data in the model's input domain -> the integers the input quantizer makes of them."""
    x = np.asarray(images, dtype=np.float64)
    if list(x.shape[1:]) != iq.shape:
        raise ConfigError(f"the data's images are {tuple(x.shape[1:])}, the model's input is "
                          f"{tuple(iq.shape)}")
    return np.clip(np.round(x / iq.step), iq.low, iq.high).astype(np.float32)


def random_integers(iq: InputQuant, n: int, seed: int = 0) -> np.ndarray:
    """Seeded random inputs on the quantizer's integer grid, inside its range."""
    rng = np.random.default_rng(seed)
    if iq.dtype == "BIPOLAR":
        return rng.choice([-1.0, 1.0], size=(n, *iq.shape)).astype(np.float32)
    return rng.integers(iq.low, iq.high + 1, size=(n, *iq.shape)).astype(np.float32)
