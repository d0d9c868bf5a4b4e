"""The residual-block protocol: how a model shows layer fusion and layer importance its blocks.

A model (the zoo's QuantResNet, or your own) exposes its residual blocks with one method:

    def residual_blocks(self) -> list[str]:
        return [f"blocks.{i}" for i in range(len(self.blocks))]

the names (as in `model.named_modules()`) of its residual blocks, in forward order; the same
list whatever a method removed (a removed block's name then holds an `nn.Identity`). Each block
is one module computing y = act(F(x) + S(x)) from the previous block's output only. What the
block methods take from it, measured on the model by one forward pass of a zero image:

  * a block whose input and output shapes are equal may be removed: layer fusion and layer
    importance put `nn.Identity` (x -> x) in its place; a block that changes the shape
    (stride, width) starts a new stage and is never removed, nor fused across;
  * the inner width by which layer fusion ranks blocks: the fewest output channels of any
    conv inside the block (a basic block's first conv, which dynamic pruning narrows);
  * layer importance only: the block's class names the BatchNorm that ends F(x) in a class
    attribute, `residual_end = "bn2"`. The learned omega of x + omega * F(x) is then a scalar
    (`<block>.<residual_end>.omega.value`) applied by a forward hook on that BatchNorm, and
    folded into its weight and bias (exact) before export.

A user model's record (UserArch) keeps which blocks are removed and which carry an omega; a
checkpoint is rebuilt by calling the factory, replaying the channel cuts, then these edits
(`apply_block_edits`), and loading the state dict. ResConv-Prune is not covered: it rebuilds
the whole network (stem, pools, head) from a zoo architecture record (compress/resconv_net.py).

Why hand-written: Torch-Pruning removes channels, not whole blocks, and no library we use
describes residual blocks; the protocol is one method and one optional attribute.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from fpgaslim.core.errors import ConfigError

from ..stats import probe_forward

#: where the README documents the protocol (the errors point there)
DOC = "README 'Bring your own' > 'Residual blocks'"
RESIDUAL_END = "residual_end"


@runtime_checkable
class ResidualBlocks(Protocol):
    """A model whose residual blocks the block methods (layer fusion, layer importance) see."""

    def residual_blocks(self) -> list[str]: ...


class TracedBlock(NamedTuple):
    name: str
    in_shape: tuple[int, ...]  # C, H, W of the block's input
    out_shape: tuple[int, ...]
    width: int  # inner width: the fewest output channels of a conv inside (in_ch if none)


def has_blocks(model: nn.Module) -> bool:
    return callable(getattr(model, "residual_blocks", None))


def block_names(model: nn.Module) -> list[str]:
    """The model's `residual_blocks()`, checked: unique names of submodules."""
    label = getattr(getattr(model, "arch", None), "name", type(model).__name__)
    if not has_blocks(model):
        raise ConfigError(f"model {label!r} has no residual_blocks() method: the block methods "
                          f"need its residual blocks ({DOC})")
    names = model.residual_blocks()
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"model {label!r}: residual_blocks() must return a list of module "
                          f"names (e.g. ['blocks.0', 'blocks.1']), got {names!r}")
    names = list(names)
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods or not n]
    if missing or len(set(names)) != len(names):
        raise ConfigError(f"model {label!r}: residual_blocks() names {missing or names}, which "
                          f"{'are not submodules' if missing else 'repeat'}; give each block's "
                          "name as in model.named_modules()")
    nested = [(a, b) for a in names for b in names if a != b and b.startswith(a + ".")]
    if nested:
        raise ConfigError(f"model {label!r}: residual block {nested[0][1]!r} lies inside "
                          f"block {nested[0][0]!r}; blocks must not nest")
    return names


def _shape(t) -> tuple[int, ...]:
    return tuple(getattr(t, "value", t).shape[1:])


def trace_blocks(model: nn.Module, in_shape: Iterable[int]) -> list[TracedBlock]:
    """Input/output shape and inner width of every block, from one forward pass of zeros."""
    names = block_names(model)
    mods = dict(model.named_modules())
    seen: dict[str, tuple] = {}
    widths: dict[str, int] = {}
    hooks = []
    for n in names:
        def hook(_m, args, out, n=n) -> None:
            seen.setdefault(n, (_shape(args[0]), _shape(out)))
        hooks.append(mods[n].register_forward_hook(hook))
        convs = [m.out_channels for m in mods[n].modules() if isinstance(m, nn.Conv2d)]
        if convs:
            widths[n] = min(convs)
    probe_forward(model, in_shape, hooks)
    unused = [n for n in names if n not in seen]
    if unused:
        raise ConfigError(f"model {getattr(model.arch, 'name', '?')!r}: residual block(s) "
                          f"{unused} never run in the forward pass; residual_blocks() must name "
                          "the blocks the model calls")
    return [TracedBlock(n, seen[n][0], seen[n][1], widths.get(n, seen[n][0][0])) for n in names]


def residual_end(model: nn.Module, name: str) -> nn.BatchNorm2d:
    """The BatchNorm that ends block `name`'s residual branch F(x) (its `residual_end`)."""
    block = model.get_submodule(name)
    end = getattr(type(block), RESIDUAL_END, None)
    if not isinstance(end, str):
        raise ConfigError(f"layer-importance needs each residual block to name the BatchNorm "
                          f"that ends its residual branch: block {name!r} "
                          f"({type(block).__name__}) has no class attribute "
                          f"residual_end = '<its BatchNorm2d>' ({DOC})")
    try:
        bn = block.get_submodule(end)
    except AttributeError:
        bn = None
    if not isinstance(bn, nn.BatchNorm2d):
        raise ConfigError(f"block {name!r}: residual_end = {end!r} must name a BatchNorm2d of "
                          f"the block (omega is folded into it), got {type(bn).__name__}")
    return bn


class Omega(nn.Module):
    """The learned scalar omega of x + omega * F(x), 1 at the start (outputs unchanged)."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.value


def _omega_hook(module: nn.Module, _args, output):
    # a module-level function reading its module: deep copies keep working on their own omega
    return module.omega(output)


def install_omega(bn: nn.BatchNorm2d) -> None:
    if not isinstance(getattr(bn, "omega", None), Omega):
        bn.add_module("omega", Omega())
        bn.register_forward_hook(_omega_hook)


def fold_hooked_omegas(model: nn.Module) -> nn.Module:
    """Fold every hooked omega into its BatchNorm (weight and bias times omega: exact) and
    drop the hook, in place; export then sees a plain BatchNorm."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and isinstance(getattr(m, "omega", None), Omega):
            with torch.no_grad():
                w = m.omega.value.detach()
                m.weight.mul_(w)
                m.bias.mul_(w)
            for key, fn in list(m._forward_hooks.items()):
                if fn is _omega_hook:
                    del m._forward_hooks[key]
            del m.omega
    return model


def apply_block_edits(model: nn.Module, removed: Iterable[int], omegas: Iterable[int]) -> None:
    """Replay a record's block edits on a freshly built model, in place: blocks `removed`
    become nn.Identity, blocks `omegas` get a hooked omega on their residual_end."""
    names = block_names(model)
    bad = [i for i in (*removed, *omegas) if not 0 <= i < len(names)]
    if bad:
        raise ConfigError(f"the record edits residual blocks {bad}, but residual_blocks() of "
                          f"the factory's model lists {len(names)}; was the factory edited?")
    for i in omegas:
        install_omega(residual_end(model, names[i]))
    for i in removed:
        parent, _, leaf = names[i].rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())


__all__ = ["DOC", "Omega", "ResidualBlocks", "TracedBlock", "apply_block_edits", "block_names",
           "fold_hooked_omegas", "has_blocks", "install_omega", "residual_end", "trace_blocks"]
