"""The float ResConv network of ResConv-Prune (papers/resconv-prune.txt, METHODS.md section 3).

Every Conv-BN-ReLU of a QAT model becomes a ResConv, y = ReLU(m * BN(conv x) + g * f(x)), with a
trainable layer scale m (the importance that sparse training drives to zero) and shortcut gain g.
The shortcut f is chosen from the layer's shapes: identity, a 1x1 conv when the channel count
changes, an average pool with the conv's kernel/stride/padding when it downsamples, and both
(pool, then 1x1 conv) when it does both, which the CNV's valid last conv and a ResNet's stride-2
stage entries do. Every kind is linear, so `resconv_fuse` folds it into one plain conv.

The network is float on purpose: fusion is exact only in float, and the fused result is
re-quantized with Brevitas afterwards. Its structure is a pydantic record (`ResConvSpec`) so that
the sparse-trained network can be saved and rebuilt (weights_only loading) when a run resumes.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from fpgaslim.core.errors import UnsupportedLayerError

from .models.arch import AvgPoolSpec, BitWidths, PoolSpec
from .models.blocks import plain_chain
from .models.plain import ConvBNAct, QuantPlainNet
from .models.resnet import BasicBlock, QuantResNet

ShortcutKind = Literal["identity", "conv1x1", "avgpool", "avgpool+conv1x1"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResConvLayer(_Strict):
    kind: Literal["resconv"] = "resconv"
    name: str  # where the conv came from in the source model, e.g. "blocks.1.conv1"
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    padding: int
    shortcut: ShortcutKind
    pruned: bool = False  # only g * f(x) is left

    @property
    def prunable(self) -> bool:
        """FINN's pool layer (QuantPlainNet's AvgPoolSpec) has no padding, so a pruned layer
        whose shortcut pool pads cannot be expressed; such a layer is always kept."""
        return not (self.shortcut.startswith("avgpool") and self.padding > 0)


class MaxPoolLayer(_Strict):
    kind: Literal["maxpool"] = "maxpool"
    size: int


class AvgPoolLayer(_Strict):
    kind: Literal["avgpool"] = "avgpool"
    kernel: int
    stride: int


Layer = Annotated[Union[ResConvLayer, MaxPoolLayer, AvgPoolLayer], Field(discriminator="kind")]


class ResConvSpec(_Strict):
    """The whole network: trunk layers plus the classifier head of the source model."""

    source: str  # the source architecture's name
    in_shape: tuple[int, int, int]
    num_classes: int
    bits: BitWidths  # what the fused network is re-quantized to
    layers: tuple[Layer, ...]
    hidden: tuple[int, ...] = ()
    head_bias: bool = False

    def resconvs(self) -> list[ResConvLayer]:
        return [s for s in self.layers if isinstance(s, ResConvLayer)]


def shortcut_kind(cin: int, cout: int, size_in: int, size_out: int) -> ShortcutKind:
    down = size_in != size_out
    if cin == cout:
        return "avgpool" if down else "identity"
    return "avgpool+conv1x1" if down else "conv1x1"


class ResConv(nn.Module):
    """y = ReLU(m * BN(conv x) + g * f(x)); pruned: y = ReLU(g * f(x))."""

    def __init__(self, spec: ResConvLayer) -> None:
        super().__init__()
        self.spec = spec
        if not spec.pruned:
            self.conv = nn.Conv2d(spec.in_ch, spec.out_ch, spec.kernel, spec.stride,
                                  spec.padding, bias=False)
            self.bn = nn.BatchNorm2d(spec.out_ch)
            self.m = nn.Parameter(torch.ones(()))
        self.g = nn.Parameter(torch.ones(()))
        # count_include_pad: the pool is then exactly a conv with 1/k^2 taps over zero padding
        self.pool = (nn.AvgPool2d(spec.kernel, spec.stride, spec.padding, count_include_pad=True)
                     if spec.shortcut.startswith("avgpool") else None)
        self.proj = (nn.Conv2d(spec.in_ch, spec.out_ch, 1, bias=True)
                     if spec.shortcut.endswith("conv1x1") else None)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        if self.proj is not None:
            x = self.proj(x)
        return x

    def strength(self) -> torch.Tensor:
        """|m| * mean|gamma|: the scale of the conv branch that BN cannot take over. With BN's
        affine weight free, an L1 penalty on m alone is paid by growing gamma (m stayed in
        0.79-1.23 after sparse training on Fashion-MNIST)."""
        return self.m.abs() * self.bn.weight.abs().mean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.g * self.shortcut(x)
        if self.spec.pruned:
            return torch.relu(s)
        return torch.relu(self.m * self.bn(self.conv(x)) + s)


class ResConvNet(nn.Module):
    """Float network of ResConv blocks and pools, with the source model's classifier head."""

    def __init__(self, spec: ResConvSpec) -> None:
        super().__init__()
        self.spec = spec
        mods: list[nn.Module] = []
        for layer in spec.layers:
            if isinstance(layer, ResConvLayer):
                mods.append(ResConv(layer))
            elif isinstance(layer, MaxPoolLayer):
                mods.append(nn.MaxPool2d(layer.size))
            else:
                mods.append(nn.AvgPool2d(layer.kernel, layer.stride))
        self.features = nn.Sequential(*mods)
        cin = _trunk_channels(spec)
        head: list[nn.Module] = []
        for width in spec.hidden:
            head += [nn.Linear(cin, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
            cin = width
        self.hidden = nn.Sequential(*head)
        self.fc = nn.Linear(cin, spec.num_classes, bias=spec.head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x * (1.0 / 255.0))
        return self.fc(self.hidden(torch.flatten(x, 1)))

    def blocks(self) -> list[ResConv]:
        return [m for m in self.features if isinstance(m, ResConv)]

    def scales(self) -> list[float]:
        """The layer scales m_i of the unpruned ResConvs, in network order."""
        return [float(b.m.detach()) for b in self.blocks() if not b.spec.pruned]


def _trunk_channels(spec: ResConvSpec) -> int:
    c, h, _ = spec.in_shape
    for layer in spec.layers:
        if isinstance(layer, ResConvLayer):
            c = layer.out_ch
            h = (h + 2 * layer.padding - layer.kernel) // layer.stride + 1
        elif isinstance(layer, MaxPoolLayer):
            h //= layer.size
        else:
            h = (h - layer.kernel) // layer.stride + 1
    return c * h * h


def sparsity_loss(net: ResConvNet, lam: float, penalty: str = "strength") -> torch.Tensor:
    """lambda * sum_i s_i, the L1 penalty that makes unimportant layers small: s_i = |m_i| *
    mean|gamma_i| (`penalty="strength"`, which BN cannot compensate) or |m_i| (`"m"`, the
    paper's eq. 11)."""
    live = [b for b in net.blocks() if not b.spec.pruned]
    if not live:
        return torch.zeros(())
    vals = [b.strength() if penalty == "strength" else b.m.abs() for b in live]
    return lam * torch.stack(vals).sum()


# ---------------------------------------------------------------- conversion from QAT models


class _Builder:
    """Collects layer records and the float weights to load, tracking channels and map size."""

    def __init__(self, in_shape: tuple[int, int, int]) -> None:
        self.c, self.h = in_shape[0], in_shape[1]
        self.layers: list[ResConvLayer | MaxPoolLayer | AvgPoolLayer] = []
        self.weights: list[tuple[int, nn.Conv2d, nn.Module | None]] = []

    def conv(self, name: str, conv: nn.Conv2d, bn: nn.Module | None) -> None:
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        h_out = (self.h + 2 * p - k) // s + 1
        spec = ResConvLayer(name=name, in_ch=self.c, out_ch=conv.out_channels, kernel=k,
                            stride=s, padding=p,
                            shortcut=shortcut_kind(self.c, conv.out_channels, self.h, h_out))
        self.weights.append((len(self.layers), conv, bn))
        self.layers.append(spec)
        self.c, self.h = conv.out_channels, h_out

    def maxpool(self, size: int) -> None:
        self.layers.append(MaxPoolLayer(size=size))
        self.h //= size

    def avgpool(self, kernel: int, stride: int) -> None:
        self.layers.append(AvgPoolLayer(kernel=kernel, stride=stride))
        self.h = (self.h - kernel) // stride + 1


@torch.no_grad()
def _load_conv(block: ResConv, conv: nn.Conv2d, bn: nn.Module | None) -> None:
    block.conv.weight.copy_(conv.weight.detach())
    if isinstance(bn, nn.BatchNorm2d):
        block.bn.load_state_dict(bn.state_dict())
        if conv.bias is not None:  # BN(Wx + b) with mean mu is BN(Wx) with mean mu - b
            block.bn.running_mean.sub_(conv.bias.detach())
    elif conv.bias is not None:  # a bias-carrying source conv (e.g. a fused variant): into beta
        block.bn.bias.add_(conv.bias.detach())


def to_resconv(model: nn.Module) -> ResConvNet:
    """Convert a QAT model into a float ResConv network initialised from its float weights.

    QuantPlainNet: every ConvBNAct becomes a ResConv, its max-pools stay. QuantResNet: the
    residual adds and projection shortcuts are dropped (the network is turned plain, as the paper
    does for VGG/MobileNet) and every conv of the stem and blocks becomes a ResConv; removed
    blocks stay removed, learned block scales omega are folded into bn2, and the global pool
    stays. Your own model (UserArch): the chain `models.blocks.plain_chain` reads off it, every
    conv a ResConv, the residual blocks' adds and named shortcuts dropped. The input model is
    not modified.
    """
    arch = model.arch
    b = _Builder(arch.in_shape)
    heads: list[tuple[nn.Linear, nn.Module | None]] = []
    fc, bits = None, arch.bits
    if getattr(arch, "kind", None) == "user":
        chain = plain_chain(model, arch.in_shape)
        for item in chain.trunk:
            if item[0] == "conv":
                b.conv(*item[1:])
            elif item[0] == "maxpool":
                b.maxpool(item[1])
            else:
                b.avgpool(item[1], item[2])
        heads, fc, bits = chain.hidden, chain.fc, chain.bits
        hidden = tuple(lin.out_features for lin, _ in heads)
        head_bias = fc.bias is not None
    elif isinstance(model, QuantPlainNet):
        for i, (spec, mod) in enumerate(zip(arch.layers, model.features)):
            if isinstance(spec, PoolSpec):
                b.maxpool(spec.size)
            elif isinstance(spec, AvgPoolSpec):
                b.avgpool(spec.kernel, spec.stride)
            elif isinstance(mod, ConvBNAct):
                b.conv(f"features.{i}", mod.conv, mod.bn)
        lin = list(model.hidden)
        heads = [(lin[j], lin[j + 1]) for j in range(0, len(lin), 3)]
        hidden, head_bias = tuple(arch.hidden), arch.head_bias
    elif isinstance(model, QuantResNet):
        from .models.fold import fold_omegas

        model = fold_omegas(model)
        b.conv("stem", model.stem, model.stem_bn)
        for i, block in enumerate(model.blocks):
            if isinstance(block, BasicBlock):
                b.conv(f"blocks.{i}.conv1", block.conv1, block.bn1)
                b.conv(f"blocks.{i}.conv2", block.conv2, block.bn2)
        b.avgpool(model.pool.kernel_size[0], model.pool.stride[0])
        hidden, head_bias = (), model.fc.bias is not None
    else:
        raise UnsupportedLayerError(
            f"ResConv-Prune converts QuantPlainNet (CNV), QuantResNet and your own models, not "
            f"{type(model).__name__}")
    fc = model.fc if fc is None else fc
    spec = ResConvSpec(source=arch.name, in_shape=arch.in_shape, num_classes=arch.num_classes,
                       bits=bits, layers=tuple(b.layers), hidden=hidden, head_bias=head_bias)
    net = ResConvNet(spec)
    for idx, conv, bn in b.weights:
        _load_conv(net.features[idx], conv, bn)
    with torch.no_grad():
        for j, (lin, bn1d) in enumerate(heads):
            net.hidden[3 * j].weight.copy_(lin.weight.detach())
            net.hidden[3 * j + 1].load_state_dict(bn1d.state_dict())
            if lin.bias is not None:  # your own model's biased hidden layer: into the mean
                net.hidden[3 * j + 1].running_mean.sub_(lin.bias.detach())
        net.fc.weight.copy_(fc.weight.detach())
        if head_bias:
            net.fc.bias.copy_(fc.bias.detach())
    return net


def save_resconv(net: ResConvNet, path) -> None:
    """Spec as JSON text plus tensors: loadable with torch.load(weights_only=True)."""
    from fpgaslim.core.atomic import atomic_write

    payload = {"spec": net.spec.model_dump_json(),
               "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    atomic_write(path, lambda p: torch.save(payload, p))


def load_resconv(path) -> ResConvNet:
    from .train import load_state

    state = load_state(path)
    net = ResConvNet(ResConvSpec.model_validate_json(state["spec"]))
    net.load_state_dict(state["state_dict"])
    return net.eval()


__all__ = ["AvgPoolLayer", "MaxPoolLayer", "ResConv", "ResConvLayer", "ResConvNet", "ResConvSpec",
           "load_resconv", "save_resconv", "shortcut_kind", "sparsity_loss", "to_resconv"]
