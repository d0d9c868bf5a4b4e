"""The residual-block protocol: how a model shows the block methods (layer fusion, layer
importance, ResConv-Prune) its blocks.

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
(`apply_block_edits`), and loading the state dict.

ResConv-Prune (compress/resconv_net.py) turns the whole network plain: every conv becomes a
ResConv with its own shortcut, and the blocks' adds and shortcuts are dropped. `plain_chain`
reads that chain off the model by one forward pass of a zero image (the layers it runs, in
order): Conv2d (each with the BatchNorm2d that follows it, if any), MaxPool2d (kernel =
stride) and AvgPool2d (square, no padding; an adaptive pool to 1x1), then Linear layers (a
hidden one followed by a BatchNorm1d), the last the classifier; activations become ReLU. For that each
residual block's class names its shortcut S(x) in a class attribute, `residual_shortcut =
"shortcut"` (the submodule left out; None when S(x) is x itself and no module computes it); a
removed block (nn.Identity) needs nothing. What is left must be one chain: each layer reads what
the one before it wrote (shapes checked, and no two layers read the same tensor: a fork is an
undeclared branch). Bit widths come from the Brevitas quantizers: first conv, classifier, the
other weight layers (the most common), the QuantReLUs (the most common).

Why hand-written: Torch-Pruning removes channels, not whole blocks, and no library we use
describes residual blocks; the protocol is one method and two optional attributes. The chain
is read with forward hooks: it needs only which layers one forward pass runs, on what shapes.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from fpgaslim.core.errors import ConfigError

from ..stats import probe_forward
from .arch import BitWidths

#: where the docs explain the protocol (the errors point there)
DOC = "docs/bring-your-own.md, 'Bring your own' > 'Residual blocks'"
RESIDUAL_END = "residual_end"
SHORTCUT = "residual_shortcut"


@runtime_checkable
class ResidualBlocks(Protocol):
    """A model whose residual blocks the block methods (layer fusion, layer importance,
    ResConv-Prune) see."""

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


# ------------------------------------------------------------ ResConv-Prune: the plain chain
class PlainChain(NamedTuple):
    """The model as one chain (what ResConv-Prune converts): trunk items ("conv", name, conv,
    BatchNorm2d or None), ("maxpool", size), ("avgpool", kernel, stride); the hidden linear
    layers with their BatchNorm1d; the classifier; the bit widths to re-quantize to."""

    trunk: list[tuple]
    hidden: list[tuple[nn.Linear, nn.BatchNorm1d]]
    fc: nn.Linear
    bits: BitWidths


class _Call(NamedTuple):
    name: str
    kind: str | None  # None: a layer with no ResConv form
    module: nn.Module
    arg: object  # the input object itself (kept alive, so ids stay unique)
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


_RC = "ResConv-Prune"
_CHAIN = ("it turns the network into one chain of Conv2d(-BatchNorm2d)-ReLU layers, "
          "MaxPool2d/AvgPool2d and Linear(-BatchNorm1d) layers")


def _kind(m: nn.Module) -> str | None:
    from brevitas.nn import QuantIdentity, QuantReLU

    for kind, types in (("conv", nn.Conv2d), ("bn", nn.BatchNorm2d), ("bn1d", nn.BatchNorm1d),
                        ("linear", nn.Linear), ("maxpool", nn.MaxPool2d),
                        ("avgpool", (nn.AvgPool2d, nn.AdaptiveAvgPool2d)),
                        ("relu", (nn.ReLU, QuantReLU)),
                        ("pass", (QuantIdentity, nn.Identity, nn.Dropout, nn.Flatten))):
        if isinstance(m, types):
            return kind
    return None


def _skipped_shortcuts(model: nn.Module) -> set[str]:
    """The shortcut submodules of the model's residual blocks (left out of the chain)."""
    if not has_blocks(model):
        return set()
    skip = set()
    for name in block_names(model):
        block = model.get_submodule(name)
        if isinstance(block, nn.Identity):
            continue  # removed by layer fusion / importance
        attr = getattr(type(block), SHORTCUT, SHORTCUT)
        if attr == SHORTCUT:
            raise ConfigError(
                f"{_RC} needs each residual block to name its shortcut: block {name!r} "
                f"({type(block).__name__}) has no class attribute residual_shortcut = "
                f"'<its shortcut submodule>' (None when the shortcut is x itself) ({DOC})")
        if attr is None:
            continue
        sub = getattr(block, attr, None) if isinstance(attr, str) else None
        if not isinstance(sub, nn.Module):
            raise ConfigError(f"block {name!r}: residual_shortcut = {attr!r} must name a "
                              "submodule of the block (or be None when the shortcut is x)")
        skip.add(f"{name}.{attr}")
    return skip


def _calls(model: nn.Module, in_shape, skip: set[str]) -> list[_Call]:
    """The layers one forward pass runs, in order; Brevitas layers and modules without
    children are leaves, other containers are looked into; `skip` subtrees are left out."""
    leaves: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, mod: nn.Module) -> None:
        for n, child in mod.named_children():
            full = prefix + n
            if full in skip:
                continue
            if (_kind(child) or not next(child.children(), None)
                    or type(child).__module__.startswith("brevitas.")):
                leaves.append((full, child))
            else:
                walk(full + ".", child)

    walk("", model)
    calls: list[_Call] = []
    hooks = [m.register_forward_hook(
        lambda mod, args, out, n=n: calls.append(
            _Call(n, _kind(mod), mod, args[0] if args else None,
                  _shape(args[0]) if args else (), _shape(out))))
        for n, m in leaves]
    probe_forward(model, in_shape, hooks)
    return calls


def weight_bits(m: nn.Module) -> int | None:
    """The bit width of a Brevitas layer's weight quantizer (None: none, or disabled)."""
    wq = getattr(m, "weight_quant", None)
    if wq is None or not getattr(wq, "is_quant_enabled", False):
        return None
    try:
        return int(m.quant_weight().bit_width)
    except Exception:  # noqa: BLE001 (an odd quantizer: no width to read)
        return None


def act_bits(m: nn.Module) -> int | None:
    """The bit width of a Brevitas activation's quantizer (None: none, or disabled)."""
    aq = getattr(m, "act_quant", None)
    if aq is None or not getattr(aq, "is_quant_enabled", False) or not hasattr(aq, "bit_width"):
        return None
    try:
        return int(aq.bit_width())
    except Exception:  # noqa: BLE001
        return None


def _weight_bits(name: str, m: nn.Module) -> int:
    bits = weight_bits(m)
    if bits is None:
        raise ConfigError(f"{_RC} re-quantizes the fused network at the model's bit widths: "
                          f"layer {name!r} ({type(m).__name__}) has no weight quantizer; use "
                          "a Brevitas QuantConv2d / QuantLinear")
    return bits


def _pool(c: _Call) -> tuple:
    m, (_, h, w) = c.module, c.in_shape
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if c.out_shape[1:] != (1, 1) or h != w:
            raise ConfigError(f"{_RC}: pool {c.name!r} ({type(m).__name__}) must pool a square "
                              "map to 1x1 (or use AvgPool2d with kernel = stride)")
        return ("avgpool", h, h)
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    k, s, p = pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding)
    dil = pair(getattr(m, "dilation", 1))
    if (k[0] != k[1] or s[0] != s[1] or p != (0, 0) or m.ceil_mode or dil != (1, 1)
            or (c.kind == "maxpool" and k != s)):
        raise ConfigError(f"{_RC}: pool {c.name!r} ({type(m).__name__}, kernel {k}, stride "
                          f"{s}, padding {p}) has no plain form; use a square kernel, no "
                          "padding" + (", stride = kernel" if c.kind == "maxpool" else ""))
    return ("maxpool", k[0]) if c.kind == "maxpool" else ("avgpool", k[0], s[0])


def _check_conv(c: _Call) -> None:
    m = c.module
    ok = (m.groups == 1 and m.dilation == (1, 1) and m.padding_mode == "zeros"
          and isinstance(m.padding, tuple) and len(set(m.kernel_size)) == 1
          and len(set(m.stride)) == 1 and len(set(m.padding)) == 1)
    if not ok:
        raise ConfigError(f"{_RC}: conv {c.name!r} (kernel {m.kernel_size}, stride {m.stride}, "
                          f"padding {m.padding}, groups {m.groups}, dilation {m.dilation}) has "
                          "no ResConv form; it needs a square kernel, stride and zero padding, "
                          "groups 1, dilation 1")


def plain_chain(model: nn.Module, in_shape) -> PlainChain:
    """The model as ResConv-Prune's plain chain, read off a copy (hooked omegas folded into
    their BatchNorm), or a ConfigError naming the block or layer and what is missing."""
    import copy
    from collections import Counter

    in_shape = tuple(in_shape)
    if len(in_shape) != 3 or in_shape[1] != in_shape[2]:
        raise ConfigError(f"{_RC} needs square images (C x H x H); the data is {in_shape}")
    model = fold_hooked_omegas(copy.deepcopy(model))
    calls = _calls(model, in_shape, _skipped_shortcuts(model))
    odd = next((c for c in calls if c.kind is None), None)
    if odd is not None:
        raise ConfigError(f"{_RC}: layer {odd.name!r} ({type(odd.module).__name__}) has no "
                          f"ResConv form; {_CHAIN}. If it is inside a residual shortcut, "
                          f"name that with residual_shortcut ({DOC})")
    acts = Counter(b for c in calls if c.kind == "relu" and (b := act_bits(c.module)))
    chain = [c for c in calls if c.kind not in ("relu", "pass")]
    seen_mod: dict[int, str] = {}
    seen_arg: dict[int, str] = {}
    for c in chain:
        if id(c.module) in seen_mod:
            raise ConfigError(f"{_RC}: layer {c.name!r} runs twice in one forward pass; "
                              f"{_CHAIN}, each layer once")
        seen_mod[id(c.module)] = c.name
        if id(c.arg) in seen_arg:
            raise ConfigError(
                f"{_RC}: layers {seen_arg[id(c.arg)]!r} and {c.name!r} read the same tensor "
                f"(a branch); {_CHAIN}. If they are a residual block's branch and shortcut, "
                f"name the block in residual_blocks() and its shortcut with residual_shortcut "
                f"({DOC})")
        seen_arg[id(c.arg)] = c.name
    trunk: list[tuple] = []
    linears: list[list] = []  # [linear, its BatchNorm1d or None]
    shape, prev = in_shape, "the input"
    i = 0
    while i < len(chain):
        c = chain[i]
        flat = c.kind in ("linear", "bn1d")
        want = (math.prod(shape),) if flat and len(shape) == 3 else shape
        if c.in_shape != want:
            raise ConfigError(
                f"{_RC}: layer {c.name!r} reads a {c.in_shape} tensor, but {prev} gives "
                f"{shape}; {_CHAIN}, each layer reading what the one before it wrote (a "
                f"residual block's shortcut must be named with residual_shortcut, {DOC})")
        if linears and not flat:
            raise ConfigError(f"{_RC}: layer {c.name!r} ({type(c.module).__name__}) comes "
                              f"after the linear layer {linears[-1][0][0]!r}; {_CHAIN}")
        if c.kind == "conv":
            _check_conv(c)
            nxt = chain[i + 1] if i + 1 < len(chain) else None
            bn = None
            if nxt is not None and nxt.kind == "bn" and nxt.in_shape == c.out_shape:
                bn, i = nxt.module, i + 1
            trunk.append(("conv", c.name, c.module, bn))
        elif c.kind == "bn":
            raise ConfigError(f"{_RC}: BatchNorm2d {c.name!r} does not follow a conv; "
                              f"{_CHAIN}")
        elif c.kind in ("maxpool", "avgpool"):
            trunk.append(_pool(c))
        elif c.kind == "linear":
            linears.append([(c.name, c.module), None])
        elif linears and linears[-1][1] is None:  # bn1d after a linear
            linears[-1][1] = c.module
        else:
            raise ConfigError(f"{_RC}: BatchNorm1d {c.name!r} does not follow a linear layer; "
                              f"{_CHAIN}")
        shape, prev = chain[i].out_shape, f"{chain[i].name!r}"
        i += 1
    convs = [t for t in trunk if t[0] == "conv"]
    if not convs or not linears:
        raise ConfigError(f"{_RC}: the model runs {len(convs)} Conv2d and {len(linears)} Linear "
                          f"layers; {_CHAIN}, with at least one conv and a linear classifier")
    (fc_name, fc), fc_bn = linears[-1]
    if fc_bn is not None:
        raise ConfigError(f"{_RC}: the classifier {fc_name!r} is followed by a BatchNorm1d; "
                          "the last layer must be a plain Linear")
    hidden = []
    for (name, lin), bn in linears[:-1]:
        if bn is None:
            raise ConfigError(f"{_RC}: hidden linear layer {name!r} needs a BatchNorm1d after "
                              f"it (the head is Linear-BatchNorm1d-ReLU, then the classifier)")
        hidden.append((lin, bn))
    inner = Counter(_weight_bits(t[1], t[2]) for t in convs[1:])
    inner.update(_weight_bits(name, lin) for (name, lin), _ in linears[:-1])
    first = _weight_bits(convs[0][1], convs[0][2])
    if not acts:
        raise ConfigError(f"{_RC} re-quantizes the fused network at the model's bit widths: "
                          "the model has no quantized ReLU (brevitas.nn.QuantReLU) to take the "
                          "activation bits from")
    try:
        bits = BitWidths(weight=inner.most_common(1)[0][0] if inner else first,
                         act=acts.most_common(1)[0][0], first_weight=first,
                         last_weight=_weight_bits(fc_name, fc))
    except ValueError as exc:
        raise ConfigError(f"{_RC}: the model's bit widths do not fit: {exc}") from exc
    return PlainChain(trunk, hidden, fc, bits)


__all__ = ["DOC", "Omega", "PlainChain", "ResidualBlocks", "TracedBlock", "act_bits",
           "apply_block_edits", "block_names", "fold_hooked_omegas", "has_blocks", "install_omega",
           "plain_chain", "residual_end", "trace_blocks", "weight_bits"]
