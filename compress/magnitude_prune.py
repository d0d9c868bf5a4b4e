"""Magnitude pruning with Torch-Pruning's own pruner: the peer a user would pick instead.

Torch-Pruning's `BasePruner` (alias `MagnitudePruner`) ranks the channels of DepGraph groups
(a block's inner width; with `residual=True` also each residual stream, which couples the stem
or projection conv, every conv2 that writes it, the shortcut convs and the convs that read it)
by L1 magnitude (`MagnitudeImportance(p=1)`) or the group L2 norm (`GroupMagnitudeImportance`,
the importance of its GroupNormPruner), locally per group or globally, keeping a multiple of
`round_to` channels (FINN folding). The MACs target is reached in `steps` steps; each step
bisects the pruner's ratio until the pruned model (MACs counted with `compress.stats`:
Torch-Pruning's own counter undercounts Brevitas layers) is at or below the step's target,
then fine-tunes with `compress.train`. The fine-tuning budget `epochs` is the total over all
steps, so it can be set equal to another method's.

What is not Torch-Pruning's: the pruner only *selects* channels (`step(interactive=True)`
yields its groups, which are not pruned); `channel_surgery.remove_channels` cuts them, because
letting TP assign new `.weight` Parameters resets Brevitas' learned weight scales (FINN_NOTES,
"Torch-Pruning on Brevitas") and the model's `arch` record must follow the new widths.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from typing import Literal

import torch
import torch_pruning as tp
from pydantic import Field
from torch import nn

from fpgaslim.core.atomic import atomic_write_json

from .channel_surgery import prunable_groups, remove_channels
from .models.quant import non_channel_params
from .data import DataSplits
from .method_settings import MethodSettings
from .stats import count_macs
from .train import TrainSettings, evaluate, train
from .variants import (Accuracy, RunDir, Timer, Variant, describe, finished, load_checkpoint,
                       recorded_settings, save_checkpoint)

METHOD = "magnitude-prune"
#: what the method needs from a model that is not a zoo model: channel groups Torch-Pruning can trace
#: (compress/methods.py Method, checked by models/user.require_needs)
NEEDS = ("channels",)
TAG = "mp"
OUT_FNS = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)


class Settings(MethodSettings):
    """Magnitude pruning settings; field names are the CLI options (lr, batch_size, seed,
    device: MethodSettings). Presets: 'cpu': 3 steps, 12 epochs in all; 'full': 320 epochs
    (the dynamic-pruning budget of the paper), patience 20."""

    PRESETS = {"cpu": {}, "full": {"epochs": 320, "patience": 20, "batch_size": 128}}
    macs_reduction: float = Field(0.5, gt=0, lt=1, description="fraction of the parent's MACs "
                                  "to remove")
    steps: int = Field(3, ge=1, description="pruning steps to the target, each fine-tuned")
    importance: Literal["l1", "group-norm"] = Field(
        "l1", description="l1: MagnitudeImportance(p=1); group-norm: group L2 norm")
    global_pruning: bool = Field(True, description="rank channels across layers (else the "
                                 "same ratio in every group)")
    residual: bool = Field(True, description="also prune residual-stream channels (DepGraph "
                           "couples every conv on the stream)")
    round_to: int = Field(4, ge=1, description="keep a multiple of this many channels per "
                          "group (FINN folding)")
    max_layer_ratio: float = Field(0.9, gt=0, lt=1, description="at most this fraction of a "
                                   "group's channels is pruned")
    macs_tolerance: float = Field(0.01, gt=0, description="a step's MACs may undershoot its "
                                  "target by this fraction of the parent's MACs")
    epochs: int = Field(12, ge=0, description="fine-tuning epochs in total, split over steps")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    patience: int | None = Field(None, ge=1)

    def step_epochs(self) -> list[int]:
        """The fine-tuning epochs of each step (the remainder goes to the last)."""
        base = self.epochs // self.steps
        return [base] * (self.steps - 1) + [self.epochs - base * (self.steps - 1)]

    def train_settings(self, epochs: int) -> TrainSettings:
        return self.train_settings_for(epochs, momentum=self.momentum,
                                       weight_decay=self.weight_decay, patience=self.patience)


def _importance(settings: Settings) -> tp.importance.Importance:
    if settings.importance == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean")


def select_channels(model: nn.Module, ratio: float, settings: Settings) -> dict[str, list[int]]:
    """The channels Torch-Pruning's pruner removes at `ratio`, as a `remove_channels` plan
    (group name -> channel indices)."""
    work = copy.deepcopy(model).cpu().eval()
    groups = prunable_groups(work, settings.residual)
    mods = dict(work.named_modules())
    roots = {id(mods[g.root]): g.name for g in groups}
    # TP drops every group that cuts an ignored layer's outputs: ignoring the classifier
    # keeps the classes; ignoring the stream convs (stem, conv2, shortcuts) keeps the streams
    kinds = (nn.Linear,) if settings.residual else (nn.Conv2d, nn.Linear)
    ignored: list = [m for m in work.modules() if isinstance(m, kinds) and id(m) not in roots]
    ignored += non_channel_params(work)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(
            work, torch.zeros(1, *work.arch.in_shape), importance=_importance(settings),
            global_pruning=settings.global_pruning, pruning_ratio=ratio,
            max_pruning_ratio=settings.max_layer_ratio, round_to=settings.round_to,
            ignored_layers=ignored)
        plan: dict[str, list[int]] = {}
        for group in pruner.step(interactive=True):  # selected, not pruned
            for dep, idxs in group:
                name = roots.get(id(dep.target.module))
                if name is not None and dep.handler in OUT_FNS and idxs:
                    plan[name] = sorted(int(i) for i in idxs)
    return plan


def prune_to_macs(model: nn.Module, target_macs: float, floor_macs: float, settings: Settings,
                  iters: int = 14) -> tuple[nn.Module, dict[str, list[int]], float, int]:
    """Bisect the pruner's ratio for the fewest channels that reach `target_macs`; a ratio
    whose model falls below `floor_macs` is taken only if nothing lands in between. Returns
    (pruned model, plan, ratio, MACs)."""
    shape = model.arch.in_shape

    def at(r: float):
        plan = select_channels(model, r, settings)
        pruned = remove_channels(model, plan, settings.residual).model
        return pruned, plan, sum(count_macs(pruned, shape).values())

    lo, hi = 0.0, settings.max_layer_ratio
    best = None
    for _ in range(iters):
        mid = (lo + hi) / 2
        pruned, plan, macs = at(mid)
        if macs <= target_macs:
            best = (pruned, plan, mid, macs)
            if macs >= floor_macs:
                break
            hi = mid
        else:
            lo = mid
    if best is None:
        pruned, plan, macs = at(hi)
        best = (pruned, plan, hi, macs)
    return best


def run(run: RunDir, parent: str, data: DataSplits, settings: Settings, *,
        progress: bool | None = None) -> list[Variant]:
    """One variant `{parent}.mp{percent}` (`-s{seed}` for a seed other than 0): the parent
    pruned to (1 - macs_reduction) of its MACs in `steps` fine-tuned steps. A finished step
    is kept in the variant's `steps/` folder, so an interrupted run resumes there."""
    pct = round(100 * settings.macs_reduction)
    vid = f"{parent}.{TAG}{pct}" + (f"-s{settings.seed}" if settings.seed else "")
    rec = finished(run, vid, METHOD, settings)
    if rec is not None:
        return [rec]
    parent_rec = run.record(parent)
    model = run.load_model(parent)
    base_macs = sum(count_macs(model, model.arch.in_shape).values())
    work = run.variant_dir(vid) / "steps"
    key = settings.model_dump(mode="json")
    log_path = work / "steps.json"
    log: list[dict] = []
    if log_path.is_file():
        old = json.loads(log_path.read_text(encoding="utf-8"))
        if old.get("settings") == key and old.get("parent_macs") == base_macs:
            log = old["steps"]
    epochs = settings.step_epochs()
    parent_val = val = evaluate(model, data.val)  # `model` is the parent here
    with Timer() as t:
        for k in range(1, settings.steps + 1):
            done = next((s for s in log if s["step"] == k), None)
            if done is not None and (work / f"step{k}.pt").is_file():
                model, val = load_checkpoint(work / f"step{k}.pt"), done["val_accuracy"]
                continue
            target = base_macs * (1 - settings.macs_reduction * k / settings.steps)
            floor = target - settings.macs_tolerance * base_macs
            t0 = time.perf_counter()
            pruned, plan, ratio, macs = prune_to_macs(model, target, floor, settings)
            select_s = time.perf_counter() - t0
            res = None
            if epochs[k - 1]:
                ckpt = work / f"step{k}-train.pt"
                res = train(pruned, data.train, data.val,
                            settings.train_settings(epochs[k - 1]), checkpoint=ckpt,
                            desc=f"mp step {k}/{settings.steps}", progress=progress)
                ckpt.unlink(missing_ok=True)
            model = pruned.cpu().eval()
            val = res.best_val_accuracy if res else evaluate(model, data.val)
            log.append({"step": k, "ratio": ratio, "target_macs": target, "macs": macs,
                        "removed": {g: len(i) for g, i in plan.items()},
                        "val_accuracy": val, "epochs_run": res.epochs_run if res else 0,
                        "select_s": select_s, "finetune_s": res.seconds if res else 0.0})
            save_checkpoint(model, work / f"step{k}.pt")
            atomic_write_json(log_path, {"settings": key, "parent_macs": base_macs,
                                         "steps": log})
    log = sorted(log, key=lambda s: s["step"])
    record = Variant(
        id=vid, parent=parent, method=METHOD, settings=recorded_settings(settings),
        dataset=data.name,
        **describe(model),
        accuracy=Accuracy(val=val, test=evaluate(model, data.test), test_images=len(data.test)),
        timings={"prune_s": sum(s["select_s"] for s in log),
                 "finetune_s": sum(s["finetune_s"] for s in log),
                 "total_s": t.seconds},
        details={"parent_macs": base_macs, "macs_target": base_macs *
                 (1 - settings.macs_reduction), "steps": log,
                 "parent_val": parent_val,
                 "parent_record_accuracy": parent_rec.accuracy.model_dump(mode="json"),
                 "pruner": f"torch_pruning {tp.__version__} MagnitudePruner, "
                           f"{settings.importance} importance",
                 "macs_source": "counted on the model (compress.stats)",
                 "accuracy_source": "val: best fine-tuning epoch of the last step; test: "
                                    "reporting"})
    run.save(model, record)
    for f in sorted(work.glob("*")):
        f.unlink()
    work.rmdir()
    return [record]
