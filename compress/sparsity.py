"""Channel sparsity: how often a channel's quantized activation is exactly zero.

The paper's importance measure (dynamic pruning, section 3.2): a conv whose input channel is
mostly zero contributes little through it, so the channel can go. We measure, for every
prunable channel group (compress.channel_surgery), the fraction of exact zeros of the output
of the quantized ReLU that feeds the group's consumers, over all pixels of all images of a
calibration set (the validation split: decisions never look at the test split). Because the
ReLU is quantized, "zero" is the hardware's zero, not a float below some epsilon.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .channel_surgery import ChannelGroup, prunable_groups


class SparsityReport(BaseModel):
    """Per group, per channel: the fraction of exact zeros, in [0, 1]."""

    model_config = ConfigDict(extra="forbid")
    images: int
    source: str = "measured: exact zeros of the quantized ReLU outputs (Brevitas, eval mode)"
    layers: dict[str, list[float]]
    points: dict[str, list[str]] = Field(default_factory=dict)  # group -> ReLUs measured

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, vals in self.layers.items():
            t = torch.tensor(vals)
            out[name] = {"channels": len(vals), "mean": float(t.mean()), "min": float(t.min()),
                         "max": float(t.max())}
        return out


def measured_bounds(report: SparsityReport, hair: float = 1e-6) -> tuple[float, float]:
    """METHODS.md section 1, bounds on QAT networks: (the lowest, the highest measured
    sparsity of the prunable channels plus `hair`, so that P_u prunes nothing)."""
    vals = [v for vs in report.layers.values() for v in vs]
    if not vals:
        raise ValueError("no prunable channels were measured")
    return min(vals), max(vals) + hair


def histogram(report: SparsityReport, bins: int = 20) -> dict[str, list[float] | list[int]]:
    """The distribution of every prunable channel's sparsity: `bins` equal bins over [0, 1]
    (edges and counts), for the record of an iteration."""
    vals = torch.tensor([v for vs in report.layers.values() for v in vs], dtype=torch.float64)
    counts = torch.histc(vals, bins=bins, min=0.0, max=1.0) if len(vals) else torch.zeros(bins)
    return {"edges": [i / bins for i in range(bins + 1)],
            "counts": [int(c) for c in counts.tolist()]}


class Selection(BaseModel):
    """Channels a threshold selects. `floored`: groups where fewer than `min_channels` would
    remain, so the least sparse were kept (the network stays connected); `rounded`: groups
    where channels were kept to reach a multiple of `channel_multiple`."""

    model_config = ConfigDict(extra="forbid")
    threshold: float
    remove: dict[str, list[int]]
    floored: list[str] = Field(default_factory=list)
    rounded: list[str] = Field(default_factory=list)  # groups rounded to a channel multiple

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.remove.values())

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.remove.items() if v}


def _value(out: object) -> torch.Tensor:
    return out.value if hasattr(out, "value") else out  # Brevitas QuantTensor or Tensor


@torch.no_grad()
def channel_sparsity(model: nn.Module, data: TensorDataset, *, residual: bool = False,
                     limit: int | None = None, batch_size: int = 256,
                     groups: list[ChannelGroup] | None = None) -> SparsityReport:
    """Measure channel sparsity on `data` (first `limit` images); the model is not changed.

    A group measured at several ReLUs (a residual stream) takes, per channel, the minimum:
    the channel is only as removable as it is at the place where it matters most.
    """
    groups = groups if groups is not None else prunable_groups(model, residual)
    mods = dict(model.named_modules())
    zeros: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str):
        def fn(_mod: nn.Module, _inp: object, out: object) -> None:
            v = _value(out)
            dims = [d for d in range(v.ndim) if d != 1]  # all but the channel axis
            z = (v == 0).sum(dim=dims).double().cpu()
            zeros[name] = zeros.get(name, 0) + z
            counts[name] = counts.get(name, 0) + v.numel() // v.shape[1]
        return fn

    points = sorted({a for g in groups for a in g.acts})
    for name in points:
        hooks.append(mods[name].register_forward_hook(hook(name)))
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(data) if limit is None else min(limit, len(data))
    subset = TensorDataset(*(t[:n] for t in data.tensors))
    try:
        for x, _ in DataLoader(subset, batch_size=batch_size, shuffle=False):
            model(x.to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    layers = {}
    for g in groups:
        per_point = torch.stack([zeros[a] / counts[a] for a in g.acts])
        layers[g.name] = [float(v) for v in per_point.min(dim=0).values]
    return SparsityReport(images=n, layers=layers, points={g.name: list(g.acts) for g in groups})


def select_channels(report: SparsityReport, threshold: float, min_channels: int = 1,
                    channel_multiple: int = 1) -> Selection:
    """Channels with sparsity > `threshold` (strictly, as the paper), keeping at least
    `min_channels` in every group and, with `channel_multiple` k > 1, a multiple of k
    (FINN folds a layer by PE/SIMD factors of its channel count: a prime width such as 59
    forces tiny factors and can cost more BRAM/LUT than the unpruned layer). Channels put
    back are always the least sparse of those the threshold selected."""
    remove, floored, rounded = {}, [], []
    for name, vals in report.layers.items():
        n = len(vals)
        idx = [i for i, s in enumerate(vals) if s > threshold]
        left = n - len(idx)
        keep = max(left, min(max(1, min_channels), n))
        if keep > left:
            floored.append(name)
        keep = min(n, -(-keep // channel_multiple) * channel_multiple)
        if keep > left and name not in floored:
            rounded.append(name)
        if keep > left:
            order = sorted(idx, key=lambda i: (vals[i], i))  # least sparse first
            idx = sorted(order[keep - left:])
        remove[name] = idx
    return Selection(threshold=threshold, remove=remove, floored=floored, rounded=rounded)


def plot_sparsity(report: SparsityReport, path: str | Path, threshold: float | None = None,
                  title: str = "") -> Path:
    """Per-layer distribution of channel sparsity (one dot per channel), the threshold as a
    line, channels above it (pruned) in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.layers)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 4.2))
    gen = torch.Generator().manual_seed(0)
    for i, name in enumerate(names):
        vals = torch.tensor(report.layers[name])
        x = i + (torch.rand(len(vals), generator=gen) - 0.5) * 0.5
        cut = vals > threshold if threshold is not None else torch.zeros_like(vals, dtype=bool)
        ax.scatter(x[~cut], vals[~cut], s=10, c="tab:blue", label="kept" if i == 0 else None)
        ax.scatter(x[cut], vals[cut], s=10, c="tab:red", label="removed" if i == 0 else None)
    ax.boxplot([report.layers[n] for n in names], positions=range(len(names)), widths=0.7,
               showfliers=False, medianprops={"color": "k"})
    if threshold is not None:
        ax.axhline(threshold, ls="--", c="tab:red", lw=1, label=f"threshold P = {threshold:.4f}")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("channel sparsity (fraction of exact zeros)")
    ax.set_xlabel("prunable channel group")
    ax.set_title(title or "Channel sparsity per layer")
    ax.text(0.0, -0.02, f"Source: measured, quantized ReLU outputs over {report.images} "
            "validation images (Brevitas, CPU)", transform=fig.transFigure, fontsize=7,
            va="bottom")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
