"""Parameter and MAC counts measured on the real modules (Torch-Pruning's counter undercounts
Brevitas layers, FINN_NOTES), by forward hooks on one real-shaped input."""

from __future__ import annotations

import torch
from torch import nn

COUNTED = (nn.Conv2d, nn.Linear)  # Brevitas QuantConv2d / QuantLinear subclass these


def count_params(model: nn.Module) -> int:
    """Learnable weights of conv, linear and norm layers (quantizer scales excluded)."""
    return sum(p.numel() for m in model.modules()
               if isinstance(m, (*COUNTED, nn.BatchNorm1d, nn.BatchNorm2d))
               for p in m.parameters(recurse=False))


def count_macs(model: nn.Module, in_shape: tuple[int, int, int]) -> dict[str, int]:
    """Multiply-accumulates per image, by layer name."""
    macs: dict[str, int] = {}
    hooks = []

    def hook(name: str):
        def fn(mod: nn.Module, _inp, out) -> None:
            out = out.value if hasattr(out, "value") else out
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                macs[name] = int(out[0].numel() * k)
            else:
                macs[name] = int(mod.in_features * mod.out_features)
        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, COUNTED):
            hooks.append(mod.register_forward_hook(hook(name)))
    probe_forward(model, in_shape, hooks)
    return macs


def probe_forward(model: nn.Module, in_shape: tuple[int, ...], hooks: list) -> None:
    """One eval-mode, no-grad forward pass of a zero image through `model` for the forward
    `hooks` already registered on it; the hooks are removed and the training mode restored
    afterwards, also on an error."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def conv_depth(model: nn.Module) -> int:
    """Weight layers on the main path (convs + linears, projection shortcuts excluded)."""
    return sum(1 for name, m in model.named_modules()
               if isinstance(m, COUNTED) and "shortcut" not in name)


def layer_widths(model: nn.Module) -> dict[str, int]:
    return {name: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for name, m in model.named_modules() if isinstance(m, COUNTED)}
