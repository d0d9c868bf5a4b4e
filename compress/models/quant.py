"""Quantizer presets shared by every model: one-attribute overrides of Brevitas presets, the
Brevitas way, chosen so that FINN can map the exported graph (see FINN_NOTES).

Which quantizer a layer gets depends on its bit width (`weight_quant`, `act_quant_layer`):
  * 1-bit weights: bipolar {-s, +s} with a constant scale and in-place clipping to it
    (Brevitas' SignedBinaryWeightPerTensorConst, as BNN-PYNQ clips to its constant scale);
    FINN sees BIPOLAR weights and, with bipolar inputs, makes an XNOR-popcount MVAU.
  * 2- and 3-bit weights: narrow-range signed, per-output-channel scale from the weight
    statistics mean|w| + k*std|w|. Max-abs scaling at 2 bits gives the levels {-max, 0, +max}
    and nearly every weight rounds to 0 (FINN_NOTES: training collapsed to chance); k puts the
    top level near the optimal uniform-quantizer step for a Gaussian (about 1.2 sigma for three
    levels, 2 sigma for seven). Statistics, not learned scales: channel surgery cannot reset
    them, and FINN folds a per-channel scale into the thresholds of the next layer.
  * 4..8-bit weights: per-tensor max-abs (unchanged from the w4a4 recipe).
  * 1-bit activations: bipolar {-1, +1} QuantIdentity after BatchNorm (BNN-PYNQ's sign
    activation; FINN converts it into a BIPOLAR MultiThreshold).
  * 2..8-bit activations: unsigned QuantReLU, scale initialised from runtime statistics; at 2
    and 3 bits from a lower percentile, so the few levels cover the bulk of the activations
    instead of their rare maximum.
"""

from __future__ import annotations

from brevitas.inject.enum import FloatToIntImplType, ScalingImplType, ScalingPerOutputType
from brevitas.inject.enum import StatsOp
from brevitas.nn import QuantIdentity, QuantReLU
from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerTensorFloat, TruncTo8bit
from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
from brevitas.quant import Uint8ActPerTensorFloat
from torch import nn

SUPPORTED_BITS = (1, 2, 3, 4, 5, 6, 7, 8)


class WeightQuant(Int8WeightPerTensorFloat):
    """Per-tensor, max-abs statistics scale: no learned scale that channel surgery could reset."""


class BipolarWeightQuant(SignedBinaryWeightPerTensorConst):
    """1-bit weights {-0.1, +0.1}: FINN's BIPOLAR type (XNOR-popcount with bipolar inputs).
    Brevitas clips the float weights in place to the scale, as BNN-PYNQ clips to [-1, 1]."""


class TernaryWeightQuant(WeightQuant):
    """2-bit narrow range {-s, 0, +s} per output channel, s = mean|w| + 0.67 std|w| (about
    1.2 sigma of a Gaussian weight)."""

    scaling_per_output_type = ScalingPerOutputType.CHANNEL
    scaling_stats_op = StatsOp.MEAN_SIGMA_STD
    sigma = 0.67


class Int3WeightQuant(TernaryWeightQuant):
    """3-bit narrow range (7 levels) per output channel, top level about 2 sigma."""

    sigma = 2.0


def weight_quant(bits: int) -> type:
    """The weight quantizer preset for a bit width (see the module docstring)."""
    if bits == 1:
        return BipolarWeightQuant
    if bits in (2, 3):
        return TernaryWeightQuant if bits == 2 else Int3WeightQuant
    return WeightQuant


class InputQuant(Uint8ActPerTensorFloat):
    """Unsigned 8-bit with the constant scale 1/255: models see x/255 of raw 0..255 pixels, so
    the quantizer is exact on real images and the accelerator's input is plain UINT8 pixels
    (FINN needs an unsigned input quantizer; signed ones trip its Thresholding)."""

    scaling_impl_type = ScalingImplType.CONST
    scaling_const = 1.0
    max_val = 1.0


class FloorTrunc(TruncTo8bit):
    """FINN's Trunc conversion only accepts FLOOR rounding (FINN_NOTES)."""

    float_to_int_impl_type = FloatToIntImplType.FLOOR


class LowBitActQuant(Uint8ActPerTensorFloat):
    """2-3 bit ReLU: the scale starts at the 99th percentile of the first batches' activations
    (Brevitas' default, 99.999, spends the few levels on outliers)."""

    high_percentile_q = 99.0


class BipolarActQuant(SignedBinaryActPerTensorConst):
    """Sign activation {-1, +1} (BNN-PYNQ's 1-bit activation, after BatchNorm)."""


def act_relu(bits: int, return_quant_tensor: bool = False) -> QuantReLU:
    quant = LowBitActQuant if bits <= 3 else Uint8ActPerTensorFloat
    return QuantReLU(act_quant=quant, bit_width=bits, return_quant_tensor=return_quant_tensor)


def act_layer(bits: int, return_quant_tensor: bool = False) -> nn.Module:
    """The activation after a BatchNorm: bipolar sign at 1 bit, a quantized ReLU otherwise."""
    if bits == 1:
        return QuantIdentity(act_quant=BipolarActQuant, return_quant_tensor=return_quant_tensor)
    return act_relu(bits, return_quant_tensor=return_quant_tensor)


def residual_quant(act_bits: int) -> QuantIdentity:
    """The ONE quantizer both inputs of a residual Add go through: one shared scale is what
    lets FINN fuse the add into integer hardware (two scales -> FLOAT32 adders, none -> crash)."""
    bits = max(act_bits, min(act_bits + 2, 8))
    return QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=bits)


def input_quant() -> QuantIdentity:
    return QuantIdentity(act_quant=InputQuant, return_quant_tensor=False)


def non_channel_params(model: nn.Module) -> list[nn.Parameter]:
    """Parameters TP must leave alone: quantizer scales and omegas are per-tensor scalars
    here (TP would otherwise guess a dimension to cut, see its 'unwrapped parameters')."""
    owned = {id(p) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d))
             for p in m.parameters(recurse=False)}
    return [p for p in model.parameters() if id(p) not in owned]
