"""Dependency-aware, physical channel removal on Brevitas QAT models.

Which tensors must be cut together is answered by Torch-Pruning's DependencyGraph: it traces
Brevitas QuantConv2d/QuantLinear as conv/linear, BatchNorm as norm, and the quantizers as
elementwise ops, so a block's inner group is exactly conv1.out + bn1 + conv2.in and a residual
channel pulls in every conv that reads or writes the stream (FINN_NOTES, "Torch-Pruning on
Brevitas"). What it cannot do is written here by hand, for the reasons given inline:
  * which groups are prunable and where their sparsity is measured (model knowledge: the
    ReLU whose output feeds the consumers of the group);
  * keeping Brevitas quantizer state right (TP would re-create weights and reset learned
    per-channel scales; we slice them ourselves);
  * updating `model.arch`, then rebuilding the model from it so that a checkpoint of the pruned
    model reloads exactly (`compress.variants.load_checkpoint`).
The input model is never modified.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch_pruning as tp
from brevitas.nn import QuantConv2d, QuantLinear
from torch import nn

from fpgaslim.core.errors import ConfigError, UnsupportedLayerError

from .models import BlockSpec, ConvSpec, PlainArch, ResNetArch, build_model
from .models.quant import non_channel_params

GroupKind = Literal["inner", "residual", "conv", "hidden"]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are removed together.

    `root`: the layer whose output channels define the group (module name); `acts`: the
    quantized ReLUs whose outputs carry these channels to their consumers; a channel is only as
    unimportant as it is at the *least* sparse of them (residual streams have several).
    """

    name: str
    kind: GroupKind
    root: str
    acts: tuple[str, ...]
    size: int


@dataclass
class SurgeryResult:
    model: nn.Module
    removed: dict[str, list[int]] = field(default_factory=dict)  # group -> removed channel idxs


def prunable_groups(model: nn.Module, residual: bool = False) -> list[ChannelGroup]:
    """The groups whose removal keeps every shape consistent.

    ResNet: each live block's inner width (`blocks.i.mid`); with `residual=True` also each
    stage's residual stream (stem/block outputs), which is only cut when every coupled tensor
    is. Plain (CNV): every conv's output channels and every hidden FC width.
    """
    arch = model.arch
    mods = dict(model.named_modules())
    groups: list[ChannelGroup] = []
    if isinstance(arch, ResNetArch):
        for i, spec in enumerate(arch.blocks):
            if not spec.removed:
                groups.append(ChannelGroup(f"blocks.{i}.mid", "inner", f"blocks.{i}.conv1",
                                           (f"blocks.{i}.relu1",), spec.mid))
        if residual:
            groups += _residual_groups(arch)
    elif isinstance(arch, PlainArch):
        for i, layer in enumerate(model.features):
            if hasattr(layer, "conv"):
                groups.append(ChannelGroup(f"features.{i}", "conv", f"features.{i}.conv",
                                           (f"features.{i}.act",), layer.conv.out_channels))
        for j in range(len(arch.hidden)):
            groups.append(ChannelGroup(f"hidden.{j}", "hidden", f"hidden.{3 * j}",
                                       (f"hidden.{3 * j + 2}",), arch.hidden[j]))
    elif getattr(arch, "kind", None) == "user":  # your own model: groups traced by DepGraph
        from .models.user import user_channel_groups

        groups += [ChannelGroup(root, kind, root, (act,), width)
                   for root, kind, act, width in user_channel_groups(model)]
        if not groups:
            raise UnsupportedLayerError(
                f"channel pruning found no prunable channel group in {arch.name!r}: it needs "
                "quantized conv/linear layers each followed by a quantized activation (QuantReLU"
                "/QuantIdentity) whose channels Torch-Pruning's DependencyGraph can cut")
    else:  # pragma: no cover - Arch is a closed union
        raise UnsupportedLayerError(f"channel pruning does not know architecture {arch.kind!r}")
    for g in groups:
        for name in (g.root, *g.acts):
            if name not in mods:
                raise UnsupportedLayerError(f"group {g.name}: the model has no layer {name!r}")
    return groups


def _residual_groups(arch: ResNetArch) -> list[ChannelGroup]:
    """One group per residual stream: the stem starts one, and so does every block with a
    projection shortcut (its conv2 writes the new stream); identity blocks read and re-write
    the current stream, so their outputs join its group."""
    streams: list[tuple[str, list[str], int]] = [("stem", ["stem_relu"], arch.stem)]
    for i, spec in enumerate(arch.blocks):
        if spec.removed:
            continue
        if spec.stride != 1 or spec.in_ch != spec.out_ch:
            streams.append((f"blocks.{i}.conv2", [], spec.out_ch))
        streams[-1][1].append(f"blocks.{i}.relu_out")
    return [ChannelGroup(f"residual.{k}", "residual", root, tuple(acts), size)
            for k, (root, acts, size) in enumerate(streams)]


def _quant_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}


def _out_channels(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def _updated_arch(model: nn.Module):
    """The architecture record that describes the (pruned) modules."""
    arch = model.arch
    if isinstance(arch, ResNetArch):
        blocks = []
        for spec, block in zip(arch.blocks, model.blocks):
            if spec.removed:
                blocks.append(spec)
                continue
            blocks.append(spec.model_copy(update={"in_ch": block.conv1.in_channels,
                                                  "mid": block.conv1.out_channels,
                                                  "out_ch": block.conv2.out_channels}))
        _check_shortcuts(arch.blocks, blocks)
        return arch.model_copy(update={"stem": model.stem.out_channels,
                                       "blocks": tuple(blocks)})
    layers, convs = [], iter(m.conv for m in model.features if hasattr(m, "conv"))
    for spec in arch.layers:
        layers.append(spec.model_copy(update={"out_ch": next(convs).out_channels})
                      if isinstance(spec, ConvSpec) else spec)
    hidden = tuple(m.out_features for m in model.hidden if isinstance(m, nn.Linear))
    return arch.model_copy(update={"layers": tuple(layers), "hidden": hidden})


def _check_shortcuts(old: Sequence[BlockSpec], new: Sequence[BlockSpec]) -> None:
    """A block's shortcut type follows from its spec (identity iff stride 1 and in == out); a
    cut that changed that would rebuild a different network, so refuse it."""
    for i, (a, b) in enumerate(zip(old, new)):
        if a.removed:
            continue
        if (a.stride == 1 and a.in_ch == a.out_ch) != (b.stride == 1 and b.in_ch == b.out_ch):
            raise ConfigError(f"block {i}: cut changes its shortcut type ({a} -> {b})")


def remove_channels(model: nn.Module, plan: Mapping[str, Sequence[int]],
                    residual: bool = False) -> SurgeryResult:
    """Return a physically smaller copy of `model` without the channels in `plan`
    (group name -> channel indices), with `model.arch` describing the new widths."""
    groups = {g.name: g for g in prunable_groups(model, residual)}
    plan = {k: sorted(set(int(i) for i in v)) for k, v in plan.items() if len(v)}
    for name, idxs in plan.items():
        if name not in groups:
            raise ConfigError(f"no prunable channel group {name!r}; valid: {', '.join(groups)}")
        size = groups[name].size
        if idxs[0] < 0 or idxs[-1] >= size:
            raise ConfigError(f"group {name}: channel index out of range 0..{size - 1}")
        if len(idxs) >= size:
            raise ConfigError(f"group {name}: removing all {size} channels would cut the network")
    work = copy.deepcopy(model).cpu().eval()
    if not plan:
        return SurgeryResult(work, {})
    quant = _quant_layers(work)
    names = {m: n for n, m in quant.items()}
    # Saved before TP touches anything: assigning a new `.weight` Parameter makes Brevitas
    # re-create the weight quantizer, which silently resets learned scales (FINN_NOTES).
    saved = {n: (_out_channels(m), copy.deepcopy(m.weight_quant.state_dict()))
             for n, m in quant.items()}
    dg = tp.DependencyGraph()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg.build_dependency(work, example_inputs=torch.zeros(1, *work.arch.in_shape),
                            ignored_params=non_channel_params(work), verbose=False)
    out_cut: dict[str, list[int]] = {}
    mods = dict(work.named_modules())
    for name, idxs in plan.items():
        root = mods[groups[name].root]
        fn = tp.prune_conv_out_channels if isinstance(root, nn.Conv2d) else \
            tp.prune_linear_out_channels
        group = dg.get_pruning_group(root, fn, idxs=idxs)
        if not dg.check_pruning_group(group):
            raise UnsupportedLayerError(f"Torch-Pruning refuses to cut group {name} "
                                        f"(channels {idxs}): it would empty a layer")
        for dep, dep_idxs in group:
            target = dep.target.module
            if target in names and dep.handler in (tp.prune_conv_out_channels,
                                                   tp.prune_linear_out_channels):
                out_cut.setdefault(names[target], []).extend(int(i) for i in dep_idxs)
        group.prune()
    state = work.state_dict()
    for lname, (old_out, qstate) in saved.items():
        cut = set(out_cut.get(lname, ()))
        keep = torch.tensor([c for c in range(old_out) if c not in cut], dtype=torch.long)
        for key, value in qstate.items():
            if cut and value.ndim and value.shape[0] == old_out:
                value = value.index_select(0, keep)  # a per-output-channel scale
            state[f"{lname}.weight_quant.{key}"] = value
    # Rebuild from the record: the pruned model is then exactly what a checkpoint reloads.
    if getattr(work.arch, "kind", None) == "user":  # the record replays the cuts on the factory's
        work.arch = work.arch.model_copy(update={"pruned": work.arch.pruned + tuple(
            (groups[name].root, tuple(idxs)) for name, idxs in plan.items())})
    else:
        work.arch = _updated_arch(work)
    rebuilt = build_model(work.arch)
    missing, unexpected = rebuilt.load_state_dict(state, strict=False)
    # Brevitas keeps a runtime-statistics scale out of the state_dict until it has been
    # calibrated; the same key is then missing from the source model too, and both stay
    # uncalibrated alike. Anything else missing is a surgery bug.
    bad = [k for k in missing if not k.endswith("scaling_impl.value")] + list(unexpected)
    if bad:
        raise UnsupportedLayerError(f"pruned weights do not fit the rebuilt model: {bad[:5]}")
    return SurgeryResult(rebuilt.eval(), plan)


def thin_layers(model: nn.Module, thin_channels: int = 6) -> list[str]:
    """Conv layers left with fewer than `thin_channels` output channels (the paper's 'thin
    layers', which layer fusion then removes)."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.out_channels < thin_channels]
