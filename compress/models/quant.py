"""Quantizer presets shared by every model: one-attribute overrides of Brevitas presets, the
Brevitas way, chosen so that FINN can map the exported graph (see FINN_NOTES)."""

from __future__ import annotations

from brevitas.inject.enum import FloatToIntImplType, ScalingImplType
from brevitas.nn import QuantIdentity, QuantReLU
from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerTensorFloat, TruncTo8bit
from brevitas.quant import Uint8ActPerTensorFloat

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)


class WeightQuant(Int8WeightPerTensorFloat):
    """Per-tensor, max-abs statistics scale: no learned scale that channel surgery could reset."""


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


def act_relu(bits: int, return_quant_tensor: bool = False) -> QuantReLU:
    return QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=bits,
                     return_quant_tensor=return_quant_tensor)


def residual_quant(act_bits: int) -> QuantIdentity:
    """The ONE quantizer both inputs of a residual Add go through: one shared scale is what
    lets FINN fuse the add into integer hardware (two scales -> FLOAT32 adders, none -> crash)."""
    bits = max(act_bits, min(act_bits + 2, 8))
    return QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=bits)


def input_quant() -> QuantIdentity:
    return QuantIdentity(act_quant=InputQuant, return_quant_tensor=False)
