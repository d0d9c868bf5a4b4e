"""BNN-PYNQ's fully-connected networks as plain architectures without conv layers: the image is
flattened into QuantLinear + BatchNorm1d + activation layers and a classifier.

TFC: 3 x 64, SFC: 3 x 256, LFC: 3 x 1024 hidden units, as the installed
brevitas_examples/bnn_pynq cfg files (OUT_FEATURES) have them; "LFC 4x1024" in FINN's papers
counts the classifier as the fourth layer."""

from __future__ import annotations

from .arch import BitWidths, PlainArch

MLP_HIDDEN = {"tfc": (64, 64, 64), "sfc": (256, 256, 256), "lfc": (1024, 1024, 1024)}


def mlp_arch(name: str, in_shape: tuple[int, int, int], num_classes: int = 10,
             bits: BitWidths | None = None, width: float = 1.0) -> PlainArch:
    """A BNN-PYNQ MLP (`name` in MLP_HIDDEN) with its hidden widths x `width`."""
    hidden = tuple(max(1, int(round(n * width))) for n in MLP_HIDDEN[name])
    return PlainArch(name=name, in_shape=in_shape, num_classes=num_classes,
                     bits=bits or BitWidths(), layers=(), hidden=hidden)
