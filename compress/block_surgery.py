"""Whole-block surgery on residual networks, shared by layer fusion and layer importance.

Both methods delete residual blocks: a removed block becomes x -> x (BlockSpec.removed, built
as nn.Identity), which is exact only for blocks whose input and output shapes are equal. The
surgery never edits a model in place: it writes a new architecture record, builds a fresh model
from it and copies every surviving tensor bit for bit, so the result is exactly what
`load_checkpoint` rebuilds from the saved record.

Two kinds of model, one interface: the zoo ResNets (the blocks come from their ResNetArch
record) and any model with the residual-block protocol of compress/models/blocks.py (a
`residual_blocks()` method; shapes and widths measured by one forward pass, the edits kept in
its UserArch record and replayed when it is rebuilt). The methods call only the functions
here (list_blocks, remove_blocks, set_omegas, block_module, block_omegas, residual_end_of).

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

from .models import BlockSpec, ResNetArch, UserArch, build_model
from .models.blocks import DOC, block_names, has_blocks, residual_end, trace_blocks


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


def _protocol_model(model_or_arch) -> bool:
    """A user model (UserArch) with residual_blocks(): the traced path."""
    return (isinstance(model_or_arch, nn.Module) and isinstance(
        getattr(model_or_arch, "arch", None), UserArch) and has_blocks(model_or_arch))


def require_blocks(model_or_arch) -> None:
    """A clear error unless the block methods can see this model's residual blocks."""
    if _protocol_model(model_or_arch):
        block_names(model_or_arch)  # checks the names
        return
    arch = model_or_arch if not isinstance(model_or_arch, nn.Module) else getattr(
        model_or_arch, "arch", None)
    if isinstance(arch, UserArch):
        raise ConfigError(f"block surgery needs the residual blocks of model {arch.name!r}: "
                          f"give it a residual_blocks() method ({DOC})")
    resnet_arch_of(model_or_arch)


def _hw(shape: tuple[int, ...]) -> tuple[int, int]:
    hw = tuple(shape[1:3])
    return (*hw, *(1,) * (2 - len(hw)))  # type: ignore[return-value]


def traced_blocks(model: nn.Module, removed: Iterable[int] = (),
                  omegas: Iterable[int] = ()) -> list[BlockInfo]:
    """Every block of a protocol model, from one forward pass: a block that changes the shape
    (or the first one) starts a stage; `removed` / `omegas` are the record's edits. For a zoo
    ResNet this gives the same list as its record (tested)."""
    removed, omegas = set(removed), set(omegas)
    infos: list[BlockInfo] = []
    stage = -1
    for i, t in enumerate(trace_blocks(model, model.arch.in_shape)):
        first = i == 0 or t.in_shape != t.out_shape
        stage += first
        (h, w), (oh, ow) = _hw(t.in_shape), _hw(t.out_shape)
        stride = max(1, -(-h // oh)) if oh else 1
        spec = BlockSpec(in_ch=t.in_shape[0], mid=t.width, out_ch=t.out_shape[0],
                         stride=stride, removed=i in removed, omega=i in omegas)
        infos.append(BlockInfo(index=i, stage=stage, spec=spec, in_hw=(h, w), out_hw=(oh, ow),
                               first_of_stage=first))
    return infos


def list_blocks(model_or_arch: nn.Module | ResNetArch) -> list[BlockInfo]:
    """Every block of the architecture in order, removed ones included."""
    if _protocol_model(model_or_arch):
        arch = model_or_arch.arch
        return traced_blocks(model_or_arch, arch.removed_blocks, arch.omega_blocks)
    require_blocks(model_or_arch)
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


def _check_indices(name: str, infos: list[BlockInfo], indices: Iterable[int]) -> list[int]:
    idx = sorted(set(int(i) for i in indices))
    for i in idx:
        if not 0 <= i < len(infos):
            raise ConfigError(f"block {i} does not exist; {name} has blocks "
                              f"0..{len(infos) - 1}")
        b = infos[i]
        if b.removed:
            raise ConfigError(f"block {i} of {name} is already removed")
        if not b.removable:
            raise ConfigError(
                f"block {i} of {name} cannot become x -> x: its input and output shapes "
                f"differ (in_ch={b.spec.in_ch}, out_ch={b.spec.out_ch}, stride={b.spec.stride}); "
                f"removable blocks: {[x.index for x in infos if x.removable]}")
    return idx


def _removed_prefixes(new: nn.Module, arch: ResNetArch | UserArch) -> tuple[str, ...]:
    if isinstance(arch, UserArch):
        names = block_names(new)
        return tuple(f"{names[i]}." for i in arch.removed_blocks)
    return tuple(f"blocks.{i}." for i, b in enumerate(arch.blocks) if b.removed)


def rebuild(model: nn.Module, arch: ResNetArch | UserArch,
            fresh: Callable[[str], bool] = lambda key: False) -> nn.Module:
    """A new model for `arch` holding `model`'s tensors, copied exactly.

    Every key of the new model must come from the old one, except keys for which `fresh(key)`
    is true (new parameters keep their constructor init, e.g. omega = 1). Old keys that the new
    model lacks are allowed only under removed blocks. Anything else means the two records
    disagree, which is a bug worth an error rather than a silently half-loaded model; the
    copy is checked tensor by tensor afterwards. A user model is rebuilt like its checkpoint
    is loaded: the factory, the recorded channel cuts, then the block edits.
    """
    new = build_model(arch)
    removed = _removed_prefixes(new, arch)
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
    infos = list_blocks(model)
    arch = model.arch
    idx = _check_indices(arch.name, infos, indices)
    if isinstance(arch, UserArch):
        return rebuild(model, arch.model_copy(update={
            "removed_blocks": tuple(sorted({*arch.removed_blocks, *idx})),
            "omega_blocks": tuple(i for i in arch.omega_blocks if i not in idx)}))
    blocks = [b.model_copy(update={"removed": True}) if i in idx else b
              for i, b in enumerate(arch.blocks)]
    return rebuild(model, arch.with_blocks(blocks))


def set_omegas(model: nn.Module, indices: Iterable[int]) -> nn.Module:
    """A new model whose blocks `indices` compute x + omega * F(x) (omega = 1: same outputs)."""
    want = set(int(i) for i in indices)
    infos = list_blocks(model)
    arch = model.arch if isinstance(model, nn.Module) else model
    bad = sorted(i for i in want if not 0 <= i < len(infos) or infos[i].removed)
    if bad:
        raise ConfigError(f"blocks {bad} of {arch.name} do not exist or are removed")
    if isinstance(arch, UserArch):
        names = block_names(model)
        for i in sorted(want):
            residual_end(model, names[i])  # a clear error before the rebuild
        return rebuild(model, arch.model_copy(update={
            "omega_blocks": tuple(sorted({*arch.omega_blocks, *want}))}),
            fresh=lambda k: k.endswith(".omega.value"))
    blocks = [b.model_copy(update={"omega": True}) if i in want else b
              for i, b in enumerate(arch.blocks)]
    return rebuild(model, arch.with_blocks(blocks), fresh=lambda k: k.endswith(".omega"))


def block_module(model: nn.Module, index: int) -> nn.Module:
    """Block `index` (nn.Identity once removed), through the model's residual_blocks()."""
    return model.get_submodule(block_names(model)[index])


def residual_end_of(model: nn.Module, index: int) -> nn.BatchNorm2d:
    """The BatchNorm ending block `index`'s residual branch (the zoo's bn2); a hook on it
    sees F(x) before omega when registered with prepend=True."""
    return residual_end(model, block_names(model)[index])


def block_omegas(model: nn.Module) -> dict[int, float]:
    """Current omega of every present omega unit, by block index."""
    arch = model.arch
    if isinstance(arch, UserArch):
        names = block_names(model)
        return {i: float(residual_end(model, names[i]).omega.value.detach())
                for i in arch.omega_blocks if i not in arch.removed_blocks}
    return {i: float(model.blocks[i].omega.detach())  # type: ignore[index]
            for i, b in enumerate(arch.blocks) if b.omega and not b.removed}
