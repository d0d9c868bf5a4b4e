"""Whole-block surgery on residual networks, shared by layer fusion and layer importance.

Both methods delete residual blocks: a removed block becomes x -> x (BlockSpec.removed, built
as nn.Identity), which is exact only for blocks whose input and output shapes are equal. The
surgery never edits a model in place: it writes a new architecture record, builds a fresh model
from it and copies every surviving tensor bit for bit, so the result is exactly what
`load_checkpoint` rebuilds from the saved record.

Why a module of its own: the methods must not import each other, and the bookkeeping that
decides *which* blocks may go (stage, feature-map size, shape equality, first unit of a stage)
is the same for both.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from fpgaslim.core.errors import ConfigError

from .models import BlockSpec, ResNetArch, build_model


class BlockInfo(BaseModel):
    """Where one residual block sits and what may be done to it."""

    model_config = ConfigDict(frozen=True)
    index: int
    stage: int
    spec: BlockSpec
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]  # output feature-map size: fusion never crosses a change of it
    first_of_stage: bool  # a new representation starts here (downsampling or width change)

    @property
    def removed(self) -> bool:
        return self.spec.removed

    @property
    def removable(self) -> bool:
        """Equal input and output shapes (stride 1, in == out) and still present."""
        return self.spec.removable and not self.spec.removed

    @property
    def width(self) -> int:
        """Inner width: what dynamic pruning shrinks and what fusion ranks blocks by."""
        return self.spec.mid


def resnet_arch_of(model_or_arch: nn.Module | ResNetArch) -> ResNetArch:
    """The ResNetArch of a model (or the record itself); other families are a user error."""
    arch = model_or_arch if isinstance(model_or_arch, ResNetArch) else getattr(
        model_or_arch, "arch", None)
    if not isinstance(arch, ResNetArch):
        kind = getattr(arch, "kind", type(model_or_arch).__name__)
        raise ConfigError(f"block surgery needs a residual network (arch kind 'resnet'); got "
                          f"{kind!r}. Plain networks have no blocks to remove.")
    return arch


def list_blocks(model_or_arch: nn.Module | ResNetArch) -> list[BlockInfo]:
    """Every block of the architecture in order, removed ones included."""
    arch = resnet_arch_of(model_or_arch)
    h, w = arch.in_shape[1], arch.in_shape[2]
    infos: list[BlockInfo] = []
    for i, (spec, stage) in enumerate(zip(arch.blocks, arch.stage_of)):
        out_h, out_w = (h, w) if spec.stride == 1 else ((h + 1) // 2, (w + 1) // 2)
        first = i == 0 or arch.stage_of[i - 1] != stage
        infos.append(BlockInfo(index=i, stage=stage, spec=spec, in_hw=(h, w),
                               out_hw=(out_h, out_w), first_of_stage=first))
        h, w = out_h, out_w
    return infos


def present_blocks(model_or_arch: nn.Module | ResNetArch) -> list[BlockInfo]:
    return [b for b in list_blocks(model_or_arch) if not b.removed]


def _check_indices(arch: ResNetArch, indices: Iterable[int]) -> list[int]:
    idx = sorted(set(int(i) for i in indices))
    infos = list_blocks(arch)
    for i in idx:
        if not 0 <= i < len(infos):
            raise ConfigError(f"block {i} does not exist; {arch.name} has blocks "
                              f"0..{len(infos) - 1}")
        b = infos[i]
        if b.removed:
            raise ConfigError(f"block {i} of {arch.name} is already removed")
        if not b.removable:
            raise ConfigError(
                f"block {i} of {arch.name} cannot become x -> x: its input and output shapes "
                f"differ (in_ch={b.spec.in_ch}, out_ch={b.spec.out_ch}, stride={b.spec.stride}); "
                f"removable blocks: {[x.index for x in infos if x.removable]}")
    return idx


def rebuild(model: nn.Module, arch: ResNetArch,
            fresh: Callable[[str], bool] = lambda key: False) -> nn.Module:
    """A new model for `arch` holding `model`'s tensors, copied exactly.

    Every key of the new model must come from the old one, except keys for which `fresh(key)`
    is true (new parameters keep their constructor init, e.g. omega = 1). Old keys that the new
    model lacks are allowed only under removed blocks. Anything else means the two records
    disagree, which is a bug worth an error rather than a silently half-loaded model; the
    copy is checked tensor by tensor afterwards.
    """
    new = build_model(arch)
    removed = tuple(f"blocks.{i}." for i, b in enumerate(arch.blocks) if b.removed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()
             if not k.startswith(removed)}
    state.update({k: v for k, v in new.state_dict().items() if fresh(k) and k not in state})
    # Brevitas adopts learned quantizer scales ("...scaling_impl.value") at load time; a model
    # that never trained has none yet, and the new one then stays uninitialised like it.
    result = new.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("scaling_impl.value")]
    if missing or result.unexpected_keys:
        raise ConfigError(f"architecture change of {arch.name} does not map the weights: "
                          f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    got = new.state_dict()
    differ = [k for k, v in state.items() if k in got and not torch.equal(got[k], v)]
    if differ:
        raise ConfigError(f"architecture change of {arch.name} altered tensors {differ[:5]}")
    new.train(model.training)
    return new.to(next(model.parameters()).device)


def remove_blocks(model: nn.Module, indices: Iterable[int]) -> nn.Module:
    """A new model with blocks `indices` replaced by identities; `model` is left untouched."""
    arch = resnet_arch_of(model)
    idx = _check_indices(arch, indices)
    blocks = [b.model_copy(update={"removed": True}) if i in idx else b
              for i, b in enumerate(arch.blocks)]
    return rebuild(model, arch.with_blocks(blocks))


def set_omegas(model: nn.Module, indices: Iterable[int]) -> nn.Module:
    """A new model whose blocks `indices` compute x + omega * F(x) (omega = 1: same outputs)."""
    arch = resnet_arch_of(model)
    want = set(int(i) for i in indices)
    infos = list_blocks(arch)
    bad = sorted(i for i in want if not 0 <= i < len(infos) or infos[i].removed)
    if bad:
        raise ConfigError(f"blocks {bad} of {arch.name} do not exist or are removed")
    blocks = [b.model_copy(update={"omega": True}) if i in want else b
              for i, b in enumerate(arch.blocks)]
    return rebuild(model, arch.with_blocks(blocks), fresh=lambda k: k.endswith(".omega"))


def block_module(model: nn.Module, index: int) -> nn.Module:
    return model.blocks[index]  # type: ignore[index]
