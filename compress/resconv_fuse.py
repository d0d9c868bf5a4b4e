"""Pruning and fusion of a trained ResConv network, and its re-quantization with Brevitas.

`prune` keeps only g * f(x) of the layers with the smallest |m| (METHODS.md section 3);
`fuse` folds BN, m and the shortcut of every remaining ResConv into one plain conv with bias
(W' = m*gamma*W/sigma + g*W_s, b' = m*(beta - gamma*mu/sigma) + g*b_s) and folds the gain of a
pruned identity/pool layer into the next weight layer. Every input of a ResConv is non-negative
(the input pixels or a ReLU output), so ReLU(g*x) = max(g, 0)*x and those folds are exact.
The result is a PlainArch plus a float state dict with QuantPlainNet's key names: `FloatPlainNet`
runs it in float (the exactness check), `requantize` loads it into a QuantPlainNet.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel
from torch import nn

from fpgaslim.core.errors import CheckpointError, ConfigError

from .models.arch import AvgPoolSpec, ConvSpec, PlainArch, PoolSpec
from .models.plain import QuantPlainNet
from .resconv_net import (AvgPoolLayer, MaxPoolLayer, ResConv, ResConvLayer, ResConvNet,
                          ResConvSpec)


class PruneDecision(BaseModel):
    """Which layers went, and why: the record of one pruning step."""

    rate: float
    # the score: "ratio" (measured rms(m*BN(conv x)) / rms(g*f(x))), "strength"
    # (|m| * mean|gamma|) or "m" (|m|)
    by: str = "strength"
    threshold: float  # a score below this was pruned
    layers: list[dict]  # per ResConv: name, shortcut, m, g, pruned, prunable


def dead_if_pruned(b: ResConv) -> bool:
    """Whether pruning `b` would leave a layer that outputs zero everywhere: pruned, it is
    ReLU(g * f(x)), and with an identity or average-pool shortcut f(x) is a ReLU's output,
    non-negative, so g <= 0 makes every output 0 and cuts the network in two. Such a layer is
    kept (the next-smallest score is pruned instead). Seen on the Fashion-MNIST ResNet-20
    benchmark (issue 20's recipe, seed 0): sparse training left blocks.6.conv2 with g = -0.009
    and the smallest score. Keeping it did not cure that run's collapse, though: pruned without
    it the network is still at chance (9.8 % validation accuracy, 91.8 % before pruning), so
    the collapse has another cause: ranking by the penalty instead of the measured branch ratio
    (docs/compression.md, `prune_by`)."""
    return b.spec.shortcut in ("identity", "avgpool") and float(b.g.detach()) <= 0


@torch.no_grad()
def branch_ratios(net: ResConvNet, images: torch.Tensor, batch_size: int = 128
                  ) -> dict[str, float]:
    """Per unpruned ResConv (by layer name): rms(m * BN(conv x)) / rms(g * f(x)) over
    `images`, in eval mode: how much of the layer's output pruning would take away, relative
    to what it leaves.

    Why measured and not |m| * mean|gamma|: the conv branch is normalised by its BN, the
    shortcut is not, so the branch's share depends on the scale of the layer's input, which
    the scores of the parameters do not see. Seen on issue 20's benchmark (Fashion-MNIST
    ResNet-20, seed 0): sparse training shrank every m (0.02-0.15) and the shortcuts of
    blocks.6 to g = +-0.009, so blocks.7.conv1 carried the signal through its conv branch (28x
    its shortcut) with the 9th-smallest strength; pruned, the signal downstream fell to
    ~3e-4, below BN's eps, and the network sat at chance through retraining (loss ln 10).
    Pruned by this ratio, the same network retrains to 86.3 % in 2 epochs."""
    sums: dict[str, list[float]] = {}

    def hook(mod: ResConv, inp: tuple[torch.Tensor], _out: torch.Tensor) -> None:
        x = inp[0]
        conv = mod.m * mod.bn(mod.conv(x))
        short = mod.g * mod.shortcut(x)
        acc = sums.setdefault(mod.spec.name, [0.0, 0.0])
        acc[0] += float(conv.pow(2).sum())
        acc[1] += float(short.pow(2).sum())

    was_training = net.training
    hooks = [b.register_forward_hook(hook) for b in net.blocks() if not b.spec.pruned]
    try:
        net.eval()
        for x in images.split(batch_size):
            net(x)
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    return {k: (c / s) ** 0.5 if s > 0 else float("inf") for k, (c, s) in sums.items()}


def prune(net: ResConvNet, rate: float, by: str = "strength",
          images: torch.Tensor | None = None) -> tuple[ResConvNet, PruneDecision]:
    """A new network in which round(rate * #ResConvs) layers with the smallest score keep only
    their shortcut (fewer if too few layers are prunable; a layer that would output zero once
    pruned, `dead_if_pruned`, is not a candidate). The score: the measured branch ratio
    `branch_ratios` on `images` (`by="ratio"`), or what the sparsity penalty acted on,
    |m| * mean|gamma| (`"strength"`) or |m| (`"m"`, the paper). The input network is not
    modified."""
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"rate {rate}: the pruning rate must be in [0, 1)")
    if by not in ("ratio", "strength", "m"):
        raise ConfigError(f"pruning score {by!r}: one of ratio, strength, m")
    if by == "ratio" and (images is None or not len(images)):
        raise ConfigError("pruning by the measured branch ratio needs calibration images")
    blocks = net.blocks()
    live = [b for b in blocks if not b.spec.pruned]
    ratios = branch_ratios(net, images) if by == "ratio" else {}

    def score(b: ResConv) -> float:
        if by == "ratio":
            return ratios[b.spec.name]
        return float(b.strength().detach()) if by == "strength" else abs(float(b.m.detach()))

    cands = sorted((b for b in live if b.spec.prunable and not dead_if_pruned(b)), key=score)
    k = min(int(round(rate * len(blocks))), len(cands))
    chosen = {id(b) for b in cands[:k]}
    if k == 0:
        threshold = min((score(b) for b in cands), default=0.0)
    elif k < len(cands):
        threshold = 0.5 * (score(cands[k - 1]) + score(cands[k]))
    else:
        threshold = score(cands[-1]) * (1 + 1e-6) + 1e-12
    layers, table = [], []
    for layer, mod in zip(net.spec.layers, net.features):
        if isinstance(mod, ResConv):
            gone = mod.spec.pruned or id(mod) in chosen
            layer = layer.model_copy(update={"pruned": gone})
            table.append({"name": layer.name, "shortcut": layer.shortcut,
                          "m": None if mod.spec.pruned else float(mod.m.detach()),
                          "strength": None if mod.spec.pruned
                          else float(mod.strength().detach()),
                          "score": None if mod.spec.pruned else score(mod),
                          **({"ratio": ratios.get(layer.name)} if ratios else {}),
                          "g": float(mod.g.detach()), "pruned": gone, "prunable": layer.prunable})
        layers.append(layer)
    new = ResConvNet(net.spec.model_copy(update={"layers": tuple(layers)}))
    keep = new.state_dict().keys()
    new.load_state_dict({k: v for k, v in net.state_dict().items() if k in keep})
    decision = PruneDecision(rate=rate, by=by, threshold=threshold, layers=table)
    return new.train(net.training), decision


@torch.no_grad()
def fold_resconv(block: ResConv) -> tuple[torch.Tensor, torch.Tensor]:
    """W_f, b_f of one unpruned ResConv (BN in inference form, i.e. running statistics)."""
    spec, bn = block.spec, block.bn
    std = torch.sqrt(bn.running_var + bn.eps)
    m, g = block.m.detach(), block.g.detach()
    w = (m * bn.weight / std).view(-1, 1, 1, 1) * block.conv.weight
    b = m * (bn.bias - bn.weight * bn.running_mean / std)
    ws, bs = torch.zeros_like(w), torch.zeros_like(b)
    k, p = spec.kernel, spec.padding
    eye = torch.arange(spec.out_ch)
    if spec.shortcut == "identity":  # 1 at the centre tap, channel j -> j
        ws[eye, eye, p, p] = 1.0
    elif spec.shortcut == "conv1x1":  # the 1x1 kernel, zero-padded to k x k
        ws[:, :, p, p] = block.proj.weight[:, :, 0, 0]
        bs = block.proj.bias.detach().clone()
    elif spec.shortcut == "avgpool":  # 1/k^2 on every tap, channel j -> j
        ws[eye, eye] = 1.0 / (k * k)
    else:  # pool then 1x1 conv = the 1x1 weight spread over every tap / k^2
        ws[:] = block.proj.weight[:, :, :1, :1] / (k * k)
        bs = block.proj.bias.detach().clone()
    return w + g * ws, b + g * bs


@torch.no_grad()
def fuse(net: ResConvNet, name: str | None = None) -> tuple[PlainArch, dict[str, torch.Tensor]]:
    """The residual-free plain network equal (in float) to `net`, in eval mode semantics."""
    spec: ResConvSpec = net.spec
    layers: list[ConvSpec | PoolSpec | AvgPoolSpec] = []
    state: dict[str, torch.Tensor] = {}
    scale = torch.ones(())  # pending gain: the original tensor = scale * the fused tensor

    def conv(layer: ResConvLayer, w: torch.Tensor, b: torch.Tensor, full: bool) -> None:
        i = len(layers)
        layers.append(ConvSpec(out_ch=layer.out_ch, kernel=layer.kernel if full else 1,
                               stride=layer.stride if full else 1,
                               padding=layer.padding if full else 0, bias=True, bn=False))
        state[f"features.{i}.conv.weight"] = (scale * w).clone()
        state[f"features.{i}.conv.bias"] = b.clone()

    for layer, mod in zip(spec.layers, net.features):
        if isinstance(layer, MaxPoolLayer):  # max(c*x) = c*max(x) for c >= 0
            layers.append(PoolSpec(size=layer.size))
        elif isinstance(layer, AvgPoolLayer):
            layers.append(AvgPoolSpec(kernel=layer.kernel, stride=layer.stride))
        elif not layer.pruned:
            w, b = fold_resconv(mod)
            conv(layer, w, b, full=True)
            scale = torch.ones(())
        else:
            g = mod.g.detach()
            if layer.shortcut.startswith("avgpool"):
                if layer.padding:
                    raise ConfigError(f"ResConv {layer.name}: a pruned layer's padded pool has "
                                      "no plain-network form; keep it unpruned")
                layers.append(AvgPoolSpec(kernel=layer.kernel, stride=layer.stride))
            if layer.shortcut.endswith("conv1x1"):
                conv(layer, g * mod.proj.weight, g * mod.proj.bias, full=False)
                scale = torch.ones(())
            else:  # ReLU(g*x) = max(g, 0)*x: carried into the next weight layer
                scale = scale * torch.clamp(g, min=0.0)
    hidden = net.hidden.state_dict()
    for key, val in hidden.items():
        state[f"hidden.{key}"] = val.clone()
    first = "hidden.0.weight" if spec.hidden else "fc.weight"
    state["fc.weight"] = net.fc.weight.detach().clone()
    if spec.head_bias:
        state["fc.bias"] = net.fc.bias.detach().clone()
    state[first] = scale * state[first]
    arch = PlainArch(name=name or f"{spec.source}-resconv", in_shape=spec.in_shape,
                     num_classes=spec.num_classes, bits=spec.bits, layers=tuple(layers),
                     hidden=spec.hidden, head_bias=spec.head_bias)
    return arch, state


class _FloatConvAct(nn.Module):
    def __init__(self, cin: int, spec: ConvSpec) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, spec.out_ch, spec.kernel, spec.stride, spec.padding,
                              bias=spec.bias)
        self.bn = nn.BatchNorm2d(spec.out_ch) if spec.bn else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class FloatPlainNet(nn.Module):
    """A PlainArch in float, with QuantPlainNet's parameter names: the fused network before
    re-quantization, so that fusion can be checked to float tolerance."""

    def __init__(self, arch: PlainArch) -> None:
        super().__init__()
        self.arch = arch
        cin, mods = arch.in_shape[0], []
        for spec in arch.layers:
            if isinstance(spec, PoolSpec):
                mods.append(nn.MaxPool2d(spec.size))
            elif isinstance(spec, AvgPoolSpec):
                mods.append(nn.AvgPool2d(spec.kernel, spec.stride))
            else:
                mods.append(_FloatConvAct(cin, spec))
                cin = spec.out_ch
        self.features = nn.Sequential(*mods)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *arch.in_shape)).numel()
        head: list[nn.Module] = []
        for width in arch.hidden:
            head += [nn.Linear(flat, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
            flat = width
        self.hidden = nn.Sequential(*head)
        self.fc = nn.Linear(flat, arch.num_classes, bias=arch.head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x * (1.0 / 255.0))
        return self.fc(self.hidden(torch.flatten(x, 1)))


def float_plain(arch: PlainArch, state: dict[str, torch.Tensor]) -> FloatPlainNet:
    net = FloatPlainNet(arch)
    net.load_state_dict(state)
    return net.eval()


@torch.no_grad()
def with_channel_bn(arch: PlainArch, state: dict[str, torch.Tensor],
                    calibration: torch.Tensor, batch_size: int = 128
                    ) -> tuple[PlainArch, dict[str, torch.Tensor]]:
    """The fused network with a BatchNorm after every fused conv, equal to it in float.

    Why (the issue's finding): an identity-fused kernel carries g ~ 1 on its centre tap while
    the folded conv weights are 0.03-0.1, so a per-tensor 4-bit max-abs scale rounds most of
    them to zero. Each output channel's weights are divided by their max-abs a_c and the BN
    takes a_c back: the per-tensor weight quantizer then acts per output channel, and FINN
    absorbs the BN (like any per-channel scale) into the next MultiThreshold. Its running
    statistics are the measured mean mu_c and std sigma_c of the normalised conv output on
    `calibration`, with gamma = a_c sigma_c and beta = a_c mu_c + b_c: eval mode is exact and a
    train-mode batch starts close to it, so QAT fine-tuning starts where the fused net is
    (a BN-free fused ResNet's QAT fine-tune diverged on Fashion-MNIST)."""
    convs = [i for i, spec in enumerate(arch.layers) if isinstance(spec, ConvSpec)
             and not spec.bn]
    new_state = dict(state)
    scale = {}
    for i in convs:
        w = state[f"features.{i}.conv.weight"]
        a = w.abs().amax(dim=(1, 2, 3))
        scale[i] = torch.where(a > 0, a, torch.ones_like(a))
        new_state[f"features.{i}.conv.weight"] = w / scale[i].view(-1, 1, 1, 1)
    net = float_plain(arch, state)
    sums: dict[int, list[torch.Tensor]] = {i: [] for i in convs}
    hooks = [net.features[i].conv.register_forward_hook(
        lambda _m, _inp, out, i=i: sums[i].append(
            ((out - state[f"features.{i}.conv.bias"].view(1, -1, 1, 1))
             / scale[i].view(1, -1, 1, 1)).transpose(0, 1).flatten(1)))
        for i in convs]
    try:
        for x in calibration.split(batch_size):
            net(x)
    finally:
        for h in hooks:
            h.remove()
    layers = list(arch.layers)
    for i in convs:
        z = torch.cat(sums[i], dim=1)
        mu, var = z.mean(dim=1), z.var(dim=1, unbiased=False)
        var = torch.clamp(var, min=1e-4)
        eps = 1e-5
        sigma = torch.sqrt(var + eps)
        b = new_state.pop(f"features.{i}.conv.bias")
        new_state.update({
            f"features.{i}.bn.weight": scale[i] * sigma,
            f"features.{i}.bn.bias": scale[i] * mu + b,
            f"features.{i}.bn.running_mean": mu, f"features.{i}.bn.running_var": var,
            f"features.{i}.bn.num_batches_tracked": torch.zeros((), dtype=torch.long)})
        layers[i] = layers[i].model_copy(update={"bias": False, "bn": True})
    return arch.model_copy(update={"layers": tuple(layers)}), new_state


@torch.no_grad()
def requantize(arch: PlainArch, state: dict[str, torch.Tensor],
               calibration: torch.Tensor | None = None, batch_size: int = 128) -> QuantPlainNet:
    """A QuantPlainNet at `arch.bits` holding the fused float weights. Weight scales follow
    from the weights (max-abs statistics); activation scales are calibrated on `calibration`
    images (Brevitas calibration_mode) so that QAT fine-tuning starts from a sensible point."""
    from brevitas.graph.calibrate import calibration_mode

    model = QuantPlainNet(arch)
    missing, unexpected = model.load_state_dict(state, strict=False)
    absent = [k for k in state if k not in model.state_dict()]
    if unexpected or absent:
        raise CheckpointError(f"fused weights do not fit the plain architecture: "
                              f"{sorted(set(unexpected) | set(absent))[:5]}")
    model.eval()
    if calibration is not None and len(calibration):
        with calibration_mode(model):
            for x in calibration.split(batch_size):
                model(x)
    return model.eval()
