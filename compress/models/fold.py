"""What a model needs before export: learned residual scales folded into the graph. It lives with
the models (not with the exporter in hw/) so that a compression method can prepare a model for
export without looking up into the hardware layer."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .blocks import fold_hooked_omegas


def fold_omegas(model: nn.Module) -> nn.Module:
    """Return a copy with learned residual scales (x + w*F(x)) folded into the block's last BN,
    which is exact and leaves no extra Mul for FINN to streamline."""
    model = copy.deepcopy(model)
    for m in model.modules():
        omega = getattr(m, "omega", None)
        if isinstance(omega, nn.Parameter) and hasattr(m, "bn2"):
            with torch.no_grad():
                m.bn2.weight.mul_(omega)
                m.bn2.bias.mul_(omega)
            m.omega = None
    return fold_hooked_omegas(model)  # your own model's omegas (the residual-block protocol)
