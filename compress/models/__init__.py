"""Model zoo: `create_model(name, ...)` (timm style) and `build_model(arch)` for saved records."""

from __future__ import annotations

from typing import Callable

from pydantic import TypeAdapter
from torch import nn

from fpgaslim.core.errors import UnknownNameError

from .arch import (Arch, BitWidths, BlockSpec, ConvSpec, PlainArch, PoolSpec, ResNetArch,
                   UserArch)
from .mlp import MLP_HIDDEN, mlp_arch
from .plain import QuantPlainNet, cnv_arch
from .resnet import QuantResNet, resnet_arch

_REGISTRY: dict[str, Callable[..., ResNetArch | PlainArch]] = {}


def register_model(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


for _depth in (8, 14, 20, 32, 56, 110):
    register_model(f"resnet{_depth}")(
        lambda in_shape, num_classes=10, bits=None, width=1.0, _d=_depth:
        resnet_arch(_d, in_shape, num_classes, bits, width))
register_model("cnv")(cnv_arch)
for _mlp in MLP_HIDDEN:
    register_model(_mlp)(
        lambda in_shape, num_classes=10, bits=None, width=1.0, _n=_mlp:
        mlp_arch(_n, in_shape, num_classes, bits, width))


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def make_arch(name: str, in_shape: tuple[int, int, int], num_classes: int = 10,
              bits: BitWidths | None = None, width: float = 1.0) -> ResNetArch | PlainArch:
    if name not in _REGISTRY:
        raise UnknownNameError("model", name, list_models())
    return _REGISTRY[name](tuple(in_shape), num_classes, bits, width)


def build_model(arch: ResNetArch | PlainArch | dict) -> nn.Module:
    """Instantiate the Brevitas model an architecture record describes."""
    if isinstance(arch, dict):
        arch = TypeAdapter(Arch).validate_python(arch)
    if isinstance(arch, UserArch):  # your own model: its factory re-creates it
        from .user import build_user_model

        return build_user_model(arch)
    return QuantResNet(arch) if isinstance(arch, ResNetArch) else QuantPlainNet(arch)


def create_model(name: str, in_shape: tuple[int, int, int], num_classes: int = 10,
                 bits: BitWidths | None = None, width: float = 1.0) -> nn.Module:
    return build_model(make_arch(name, in_shape, num_classes, bits, width))


__all__ = ["Arch", "BitWidths", "BlockSpec", "ConvSpec", "PlainArch", "PoolSpec", "ResNetArch",
           "QuantPlainNet", "QuantResNet", "build_model", "create_model", "list_models",
           "make_arch", "register_model"]
