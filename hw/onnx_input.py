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
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from fpgaslim.core.errors import CheckpointError, ConfigError, UnsupportedLayerError

_SHAPE_OPS = {"Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze"}
INT_INPUT = "fpgaslim_int_input"
FLOAT_INPUT_HELP = (
    "FINN needs an integer input stream. If the model takes images, say what the pixels are "
    "and fpgaslim prepends the pre-processing as FINN's flow does: `--input uint8 --scale "
    "1/255` for 0..1 input (Brevitas's bnn_pynq CNV/TFC/LFC), plus `--mean M,M,M --std "
    "S,S,S` for normalised input (e.g. MobileNet-v1: --mean 0.485,0.456,0.406 --std "
    "0.226,0.226,0.226); `input:` in a config, input= in Python. Otherwise put an input "
    "quantizer in front (Brevitas QuantIdentity, or x/255 into a UINT8 quantizer as "
    "fpgaslim's models do)")


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
    # --input before a zero-padded conv: the exact integer form the hardware graph takes
    hardware_form: str | None = None


class InputSpec(BaseModel):
    """Pixels in, whatever the model expects (`--input uint8 --scale 1/255 [--mean M,M,M
    --std S,S,S]`; `input:` in a config): the accelerator reads `dtype` integers p and the
    file's input is (p * scale - mean) / std, per channel. As FINN's own flow does for
    Brevitas's example networks, this pre-processing is prepended to the file as a QONNX graph
    (qonnx's MergeONNXModels) and streamlining absorbs it (into the first thresholds, or past
    the first layer); the verification runs against the file plus this pre-processing."""

    model_config = ConfigDict(extra="forbid")
    dtype: Literal["uint8"] = "uint8"
    scale: float = 1.0 / 255.0
    mean: list[float] | None = None  # one value, or one per channel
    std: list[float] | None = None

    @field_validator("scale", mode="before")
    @classmethod
    def _fraction(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return _number(v)
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"{v!r} is not a number or a fraction such as 1/255") from None
        return v

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _values(cls, v: Any) -> Any:
        if isinstance(v, (int, float)):
            return [float(v)]
        if isinstance(v, str):
            try:
                return [_number(t) for t in v.split(",") if t.strip()]
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"{v!r} is not a comma-separated list of numbers "
                                 "(e.g. 0.485,0.456,0.406)") from None
        return v

    @model_validator(mode="after")
    def _check(self) -> "InputSpec":
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale:g}")
        if self.std is not None and any(not s > 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        if (self.std is None) != (self.mean is None):
            raise ValueError("give mean and std together (std 1 for a plain offset)")
        return self

    def per_channel(self, channels: int, where: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), one value per channel of a C-channel input."""
        out = []
        for name, v in (("mean", self.mean or [0.0]), ("std", self.std or [1.0])):
            if len(v) not in (1, channels):
                raise ConfigError(f"{where}: --{name} has {len(v)} values, the model's input "
                                  f"has {channels} channels: give 1 or {channels}")
            out.append(np.broadcast_to(np.asarray(v, np.float32), (channels,)).copy())
        return out[0], out[1]

    def formula(self) -> str:
        f = f"p * {Fraction(self.scale).limit_denominator(100000)}"
        if self.mean is not None:
            f = f"({f} - {_short(self.mean)}) / {_short(self.std)}"
        return f"{self.dtype.upper()} pixels p; the file's input is {f}"


def _number(text: str) -> float:
    """'0.5', '1/255' or '1/57.6': a number or a quotient of two."""
    a, slash, b = text.strip().partition("/")
    return float(a) / float(b) if slash else float(a)


def _short(v: list[float]) -> str:
    return ",".join(f"{x:g}" for x in v) if len(v) > 1 else f"{v[0]:g}"


def preprocessing_graph(spec: InputSpec, shape: list[int], where: str, opset: int = 13):
    """The pre-processing as a QONNX graph: pixels (1 x shape) -> Mul(scale) [-> Sub(mean) ->
    Div(std)], the form FINN's end-to-end tests prepend (ToTensor / NormalizePreProc)."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper

    full = [1, *shape]
    nodes, inits = [], []

    def const(name: str, v: np.ndarray) -> str:
        v = np.asarray(v, dtype=np.float32)
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, v.shape, v.reshape(-1)))
        return name

    last = "pre_scaled"
    nodes.append(helper.make_node("Mul", ["pixels", const("pre_scale", np.float32(spec.scale))],
                                  [last], name="pre_scale_mul"))
    if spec.mean is not None:
        mean, std = spec.per_channel(shape[0], where)
        bshape = (1, shape[0], *([1] * (len(shape) - 1)))
        # one value for every channel: a scalar, which FINN moves past a conv
        mean, std = (v[:1] if np.all(v == v[0]) else v for v in (mean, std))
        mshape, sshape = ((1,) * len(bshape) if v.size == 1 else bshape for v in (mean, std))
        nodes.append(helper.make_node("Sub", [last, const("pre_mean", mean.reshape(mshape))],
                                      ["pre_centred"], name="pre_mean_sub"))
        nodes.append(helper.make_node("Div", ["pre_centred",
                                              const("pre_std", std.reshape(sshape))],
                                      ["pre_normalised"], name="pre_std_div"))
        last = "pre_normalised"
    graph = helper.make_graph(
        nodes, "fpgaslim_preprocessing",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, full)],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, full)], inits)
    return ModelWrapper(helper.make_model(graph, producer_name="fpgaslim",
                                          opset_imports=[helper.make_opsetid("", opset)]))


def external_data_files(path: Path, proto: Any) -> list[Path]:
    """The files next to `path` that hold the weights of an ONNX file saved with external data
    (`FILE.onnx` + `FILE.onnx.data`, as torch's exporter writes them), in order of use."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    seen: list[Path] = []
    for t in _get_all_tensors(proto):
        if uses_external_data(t):
            loc = Path(path).parent / {e.key: e.value for e in t.external_data}["location"]
            if loc not in seen:
                seen.append(loc)
    return seen


def sha256_file(path: Path) -> str:
    """The content hash of an ONNX file and, when it keeps its weights outside, of its
    external data files too (a changed `.data` is a changed model)."""
    with open(path, "rb") as f:
        h = hashlib.file_digest(f, "sha256")
    if Path(path).suffix == ".onnx":
        try:
            import onnx

            extra = external_data_files(path, onnx.load(str(path), load_external_data=False))
        except Exception:  # not parseable: open_onnx says why
            extra = []
        if extra:
            for data in extra:
                with open(data, "rb") as f:
                    h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def _load_proto(path: Path):
    """The ONNX protobuf of `path` with its external data (if any) loaded inline."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CheckpointError(
            f"{path} is not a valid (Q)ONNX model: it does not parse as an ONNX protobuf "
            f"({type(exc).__name__}); the file is truncated or not ONNX. Export it again "
            "(e.g. brevitas.export.export_qonnx) and check that the copy is complete") from exc
    data = external_data_files(path, proto)
    missing = [d for d in data if not d.is_file()]
    if missing:
        raise CheckpointError(
            f"{path} keeps its weights in {', '.join(str(d) for d in missing)}, which does not "
            "exist: copy it next to the .onnx file (same folder, same name), or export again "
            "with brevitas.export.export_qonnx(..., dynamo=False), which writes one "
            "self-contained file")
    if data:
        try:
            load_external_data_for_model(proto, str(Path(path).parent))
        except Exception as exc:
            raise CheckpointError(f"{path}: its external data ({', '.join(map(str, data))}) "
                                  f"cannot be read ({type(exc).__name__}: {exc}); the .data "
                                  "file is truncated or belongs to another export") from exc
    return proto


def open_onnx(path: str | Path):
    """A qonnx ModelWrapper of a user's file (its external data, if any, loaded inline), or a
    CheckpointError naming the file and what is wrong with it (missing, truncated, not ONNX,
    missing external data, no graph, several inputs/outputs)."""
    from qonnx.core.modelwrapper import ModelWrapper

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX file {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty: not a (Q)ONNX model")
    proto = _load_proto(path)
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
                f"input quantizer in front: its input is float. {FLOAT_INPUT_HELP}")
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
            f"before any quantizer: its input is float. {FLOAT_INPUT_HELP}")
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


def prepare_onnx(src: str | Path, dst: str | Path, where: str | None = None,
                 input_spec: InputSpec | None = None, exact_offset: bool = False
                 ) -> InputQuant:
    """Write the graph the build starts from (input = the integers the accelerator reads,
    annotated); returns what the input stream carries. qonnx's cleanup runs first (shapes,
    constant folding, unique names), as for fpgaslim's own exports. With `input_spec` the
    pre-processing is prepended (InputSpec) and the input is its pixels; `exact_offset`: in
    the integer form FINN can build where a mean offset meets a padded conv (the hardware
    graph; the reference keeps the file's own form)."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.util.cleanup import cleanup_model

    where = where or str(src)
    model = open_onnx(src)
    try:
        model = cleanup_model(model)
    except Exception as exc:
        raise CheckpointError(f"{where}: qonnx cannot process this graph "
                              f"({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if input_spec is not None:
        model, iq = _prepend(model, input_spec, where, exact_offset)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        model.save(str(dst))
        return iq
    iq = read_input_quant(model, where)
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


MAX_OFFSET_FACTOR = 4096  # the largest K tried for the integer form of a mean offset


def padded_conv_after_offset(model: Any, spec: InputSpec) -> Any | None:
    """The zero-padded Conv that the input feeds directly when the pre-processing subtracts a
    mean: FINN cannot move that offset past the conv (finn-plus's MoveAddPastConv refuses
    padding, rightly: the padded border would be -mean/std in the file, 0 after the move), so
    the hardware graph needs the integer form (`integer_offset`). None when there is none."""
    if spec.mean is None or not any(spec.mean):
        return None
    consumers = model.find_consumers(model.graph.input[0].name)
    if len(consumers) != 1 or consumers[0].op_type != "Conv":
        return None
    pads = next((list(a.ints) for a in consumers[0].attribute if a.name == "pads"), [])
    return consumers[0] if any(pads) else None


def integer_offset(spec: InputSpec, channels: int, where: str
                   ) -> tuple[int, np.ndarray, float]:
    """(K, c, a) with (p * scale - mean) / std == a * (K * p - c) for every pixel p, c integer
    per channel: the pre-processing as an integer affine map (exact, so zero padding of K*p - c
    is zero padding of the file's input) and one scalar a, which moves past the first conv.
    ConfigError, with the reason, when there is none: std differs between channels (a
    per-channel scale cannot pass a conv's integer weights), or no K <= MAX_OFFSET_FACTOR
    makes every mean / scale an integer multiple of 1/K."""
    spec.per_channel(channels, where)  # the counts checked
    # the values as given (float64: 0.485 * 255 * 200 is 24735, its float32 copy is not)
    mean = np.broadcast_to(np.asarray(spec.mean or [0.0], np.float64), (channels,))
    std = np.broadcast_to(np.asarray(spec.std or [1.0], np.float64), (channels,))
    if not np.all(std == std[0]):
        raise UnsupportedLayerError(
            f"{where}: the pre-processing subtracts a mean before a zero-padded first conv and "
            f"divides by a different std per channel ({_short(list(map(float, std)))}); FINN "
            "cannot move that offset past the padding, and the exact integer form needs one std "
            "for all channels. Export the model with the normalisation inside (a Brevitas input "
            "quantizer in front), or give one --std")
    mu = mean.astype(np.float64) / spec.scale  # the mean in pixel units
    for k in range(1, MAX_OFFSET_FACTOR + 1):
        c = np.round(k * mu)
        if np.all(np.abs(k * mu - c) <= 1e-9 * np.maximum(1.0, np.abs(k * mu))):
            return k, c, float(spec.scale / (k * float(std[0])))
    raise UnsupportedLayerError(
        f"{where}: the pre-processing subtracts mean {_short(list(map(float, mean)))} (in pixel "
        f"units {_short(list(map(float, mu)))}) before a zero-padded first conv; FINN's rewrite "
        "moves the offset past the conv, which changes every border pixel, and no exact integer "
        f"form K*p - c exists for K <= {MAX_OFFSET_FACTOR}. Round the mean to a multiple of "
        "scale / K (e.g. --mean with 1/255 steps), or export with the normalisation inside")


def _integer_preprocessing(model: Any, spec: InputSpec, conv: Any, shape: list[int],
                           where: str, opset: int):
    """The model with its first conv's output scaled by a, and the pre-processing graph
    pixels -> Mul(K) -> Sub(c) (integers) that feeds it (`integer_offset`)."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper

    k, c, a = integer_offset(spec, shape[0], where)
    out = conv.output[0]
    scaled = f"{out}_fpgaslim_unscaled"
    conv.output[0] = scaled
    aname = f"{conv.name or 'conv'}_fpgaslim_prescale"
    model.set_initializer(aname, np.asarray(a, dtype=np.float32))
    idx = list(model.graph.node).index(conv)
    model.graph.node.insert(idx + 1, helper.make_node("Mul", [scaled, aname], [out],
                                                      name=f"{aname}_mul"))
    if len(conv.input) > 2 and model.get_initializer(conv.input[2]) is not None:
        model.set_initializer(conv.input[2], (model.get_initializer(conv.input[2]) / a)
                              .astype(np.float32))  # conv(q) + b / a, then times a
    bshape = (1, shape[0], *([1] * (len(shape) - 1)))
    inits = [helper.make_tensor("pre_factor", TensorProto.FLOAT, [], [float(k)]),
             helper.make_tensor("pre_offset", TensorProto.FLOAT, bshape,
                                c.astype(np.float32).tolist())]
    nodes = [helper.make_node("Mul", ["pixels", "pre_factor"], ["pre_kp"], name="pre_factor_mul"),
             helper.make_node("Sub", ["pre_kp", "pre_offset"], ["pre_int"],
                              name="pre_offset_sub")]
    full = [1, *shape]
    graph = helper.make_graph(
        nodes, "fpgaslim_integer_preprocessing",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, full)],
        [helper.make_tensor_value_info("pre_int", TensorProto.FLOAT, full)], inits)
    pre = ModelWrapper(helper.make_model(graph, producer_name="fpgaslim",
                                         opset_imports=[helper.make_opsetid("", opset)]))
    from qonnx.core.datatype import DataType

    # integer constants, so that qonnx infers integer tensors (FINN then maps the two ops and
    # the conv's Im2Col reads integers)
    pre.set_tensor_datatype("pre_factor", DataType.get_smallest_possible(k))
    pre.set_tensor_datatype("pre_offset", DataType.get_smallest_possible(-int(c.max()) - 1))
    return model, pre, (k, c, a)


def _prepend(model: Any, spec: InputSpec, where: str, exact_offset: bool = False
             ) -> tuple[Any, InputQuant]:
    """`model` with `spec`'s pre-processing merged in front (qonnx MergeONNXModels) and its
    input annotated UINT8. `exact_offset`: where the input feeds a zero-padded conv and the
    pre-processing subtracts a mean, the integer form (`integer_offset`) for the hardware."""
    from qonnx.core.datatype import DataType
    from qonnx.transformation.merge_onnx_models import MergeONNXModels
    from qonnx.util.cleanup import cleanup_model

    iname = model.graph.input[0].name
    shape = [int(d) for d in model.get_tensor_shape(iname)]
    if len(shape) < 2 or shape[0] != 1:
        raise ConfigError(f"{where}: input {iname!r} has shape {shape}; export it with batch "
                          "size 1 (e.g. a 1 x C x H x W example input)")
    annotated = model.get_tensor_datatype(iname)
    if annotated is not None and annotated != DataType["FLOAT32"]:
        raise ConfigError(f"{where}: input {iname!r} is already integer ({annotated.name}); "
                          "--input is for a float input: leave it out")
    opsets = list(model.model.opset_import)
    default = next((o.version for o in opsets if o.domain in ("", "ai.onnx")), 13)
    conv = padded_conv_after_offset(model, spec) if exact_offset else None
    form = ""
    if conv is not None:
        model, pre, (k, c, a) = _integer_preprocessing(model, spec, conv, shape[1:], where,
                                                       default)
        form = (f"{k} * p - [{_short(list(map(float, c)))}] into conv {conv.name!r}, its "
                f"output times {a:.6g} (exact: the padding stays zero)")
    else:
        pre = preprocessing_graph(spec, shape[1:], where, opset=default)
    try:
        merged = model.transform(MergeONNXModels(pre))
        # qonnx 1.0.0's merge keeps only the default domain's opset; the file's own (e.g.
        # qonnx.custom_op.general 2: Trunc v2, which FINN's avg-pool conversion reads) go back
        del merged.model.opset_import[:]
        merged.model.opset_import.extend(opsets)
        merged = cleanup_model(merged)
    except Exception as exc:
        raise CheckpointError(f"{where}: qonnx cannot prepend the pre-processing "
                              f"({type(exc).__name__}: {exc})") from exc
    merged.set_tensor_datatype(merged.graph.input[0].name, DataType["UINT8"])
    return merged, InputQuant(dtype="UINT8", bits=8, signed=False, low=0, high=255, step=1.0,
                              shape=shape[1:], found=f"--input: {spec.formula()} (prepended)",
                              hardware_form=form or None)


def insert_topk(src: str | Path, dst: str | Path, k: int, where: str) -> None:
    """`--topk K`: the graph at `src` with FINN's top-k appended (qonnx InsertTopK, which
    FINN maps to LabelSelect), so that the accelerator returns the K best class indices, as
    finn-examples' boards do."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.insert_topk import InsertTopK

    model = ModelWrapper(str(src))
    classes = int(np.prod(model.get_tensor_shape(model.graph.output[0].name)[1:]))
    if not 1 <= k <= classes:
        raise ConfigError(f"{where}: --topk {k}: the model has {classes} outputs; give 1.."
                          f"{classes}")
    from qonnx.util.cleanup import cleanup_model

    cleanup_model(model.transform(InsertTopK(k=k))).save(str(dst))  # shapes of the new tail


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
