"""Learned layer importance: drop the residual units with the smallest learned |omega|, recursively.

Ling et al. 2021 (RETRACTED; METHODS.md section 4). The paper's claims are treated as
hypotheses: every step records what it costs and what it keeps, so the benchmark can check
them rather than quote them.

Method: every residual unit except the first of each stage computes x + omega * F(x) with a
trainable scalar omega (the first unit after a downsampling/width change keeps x + F(x) and is
never removed). Step 0 learns the omegas with the network (variant f"{parent}.li0"), starting
from the trained parent at a fine-tuning learning rate (`omega_lr`): at the baseline's initial
lr (0.05) this step alone cost 5.6 points on Fashion-MNIST ResNet-20. Then the loop removes the
`k` units with the smallest |omega| (ties: the earliest), retrains `retrain_epochs` at `lr`,
and keeps the result as a variant while its validation accuracy stays at or above the
reference accuracy minus `tolerance` and more than `target_units` units remain. The first step
that falls below is logged, not kept.

The reference (`reference`) is the parent by default, so every step's drop is what a user
loses against the model they started from (each step row records val and test accuracy and
the drop against the parent); "step0" is the paper's comparison (the model trained with
omegas).
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fpgaslim.core.atomic import atomic_write, atomic_write_json
from fpgaslim.core.errors import ConfigError

from .block_surgery import (block_omegas, list_blocks, present_blocks, remove_blocks,
                            residual_end_of, set_omegas)
from .data import DataSplits
from .method_settings import MethodSettings
from .train import TrainSettings, evaluate, train
from .variants import (Accuracy, RunDir, Timer, Variant, describe, finished,
                       recorded_settings, settings_differ)

TAG = "li"
#: settings that only steer the reduction loop after step 0: step 0 (the omegas learned,
#: `.li0`) made with other values is the same variant
LOOP_ONLY = frozenset({"k", "retrain_epochs", "target_units", "tolerance"})
METHOD = "layer-importance"
#: what the method needs from a model that is not a zoo model: residual blocks, each naming the BatchNorm that ends its branch
#: (compress/methods.py Method, checked by models/user.require_needs)
NEEDS = ("units",)


class Settings(MethodSettings):
    """Recursive-reduction recipe; top-level fields are the CLI options (lr: of each retrain
    after a removal; batch_size, seed, device: MethodSettings). Presets: "cpu": minutes on
    CPU, fine-tuning lr 0.01; "full": the paper's retraining (SGD lr 0.1, batch 128, n = 200
    retraining epochs, the same as the original training), with 200 epochs of step 0 at the
    fine-tuning lr (it starts from a trained parent)."""

    PRESETS = {"cpu": {}, "full": {"train_epochs": 200, "retrain_epochs": 200, "lr": 0.1,
                                   "batch_size": 128}}
    #: timing_repeats only sets how long the timing columns are measured: same variant
    UNKEYED = MethodSettings.UNKEYED | {"timing_repeats"}
    k: int = Field(1, ge=1, description="units removed per step (smallest |omega| first)")
    retrain_epochs: int = Field(2, ge=0, description="retraining epochs n after each removal")
    train_epochs: int = Field(2, ge=0, description="epochs that learn the omegas (step 0)")
    target_units: int | None = Field(None, ge=1,
                                     description="stop when this many residual units remain")
    tolerance: float = Field(0.0, ge=0, description="accepted val-accuracy loss (points) "
                                                    "below the starting accuracy")
    omega_lr: float = Field(0.01, gt=0, description="fine-tuning learning rate of step 0 "
                            "(omegas learnt on the trained parent)")
    reference: Literal["parent", "step0"] = Field(
        "parent", description="accuracy a step is judged against: the parent, or step 0")
    timing_repeats: int = Field(5, ge=1, description="batches timed for forward/backward time")

    def train_settings(self, epochs: int, lr: float | None = None) -> TrainSettings:
        return self.train_settings_for(epochs, lr=lr or self.lr)


def omega_units(model_or_arch) -> list[int]:
    """Blocks that get a learned omega: present, shape-preserving, not first of their stage."""
    return [b.index for b in present_blocks(model_or_arch)
            if b.removable and not b.first_of_stage]


def omegas(model: nn.Module) -> dict[int, float]:
    """Current omega of every present omega unit, by block index."""
    return block_omegas(model)


def pick_units(model: nn.Module, k: int) -> list[int]:
    """The k present omega units with the smallest |omega| (ties: the earliest)."""
    ranked = sorted(omegas(model).items(), key=lambda kv: (abs(kv[1]), kv[0]))
    return sorted(i for i, _ in ranked[:k])


def with_importance(model: nn.Module) -> nn.Module:
    """A copy whose removable non-first units compute x + omega * F(x), omega = 1."""
    units = omega_units(model)
    if not units:
        arch = model.arch
        raise ConfigError(
            f"{arch.name} has no residual unit that layer importance may remove: the first "
            "unit of each stage is kept, so a network needs at least two units in a stage "
            "(e.g. resnet14 or deeper; resnet8 has one per stage)")
    return set_omegas(model, units)


def residual_norms(model: nn.Module, images: torch.Tensor) -> dict[int, float]:
    """Mean L2 norm of omega * F(x) per omega unit over `images` (the paper's section 4.2.5
    claim is that |omega| ranks units like this norm; the benchmark checks it)."""
    norms: dict[int, float] = {}
    hooks = []
    for i, w in omegas(model).items():
        def hook(_m, _inp, out, i=i, w=w) -> None:
            norms[i] = float((out.flatten(1) * w).norm(dim=1).mean())
        hooks.append(residual_end_of(model, i).register_forward_hook(hook, prepend=True))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return norms


def time_batch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               repeats: int) -> dict[str, float]:
    """Median forward and backward wall time of one training batch, in milliseconds.
    Runs on a copy: a training-mode pass would move the BatchNorm statistics of the model."""
    model = copy.deepcopy(model).train()
    fwd, bwd = [], []
    for r in range(repeats + 1):  # the first pass warms caches and is not counted
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        if r:
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
    return {"forward_ms_per_batch": statistics.median(fwd),
            "backward_ms_per_batch": statistics.median(bwd), "timing_batch": len(labels),
            "timing_threads": torch.get_num_threads()}


def _plots(folder: Path, model: nn.Module, table: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list_blocks(model)
    w = omegas(model)
    fig, ax = plt.subplots(figsize=(6, 3))
    for b in blocks:
        if b.index in w:
            ax.bar(b.index, abs(w[b.index]), color="tab:blue")
        elif b.removed:
            ax.plot(b.index, 0, "rx")
        else:
            ax.bar(b.index, 0.02, color="lightgrey")
    ax.set_xlabel("residual unit (blue: |omega|, x: removed, grey: first of stage, fixed)")
    ax.set_ylabel("|omega| (learned)")
    ax.set_title("Learned unit importance (trained parameters of this variant)", fontsize=9)
    fig.tight_layout()
    atomic_write(folder / "omega.png", lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    kept = [r for r in table if r["kept"]]
    ax.plot([r["depth"] for r in kept], [r["val_accuracy"] for r in kept], "o-", label="val")
    ax.plot([r["depth"] for r in kept], [r["test_accuracy"] for r in kept], "s--", label="test")
    for r in table:
        if not r["kept"]:
            ax.plot(r["depth"], r["val_accuracy"], "rx", label="rejected step (val)")
    ref = table[0].get("reference_val_accuracy", table[0]["val_accuracy"])
    ax.axhline(ref - table[0].get("tolerance", 0.0), color="grey",
               lw=0.8, label="reference val accuracy - tolerance")
    ax.set_xlabel("depth (conv + linear layers on the main path)")
    ax.set_ylabel("accuracy (%)")
    ax.invert_xaxis()
    ax.set_title("Recursive reduction: accuracy vs depth (measured in PyTorch)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(folder / "accuracy_vs_depth.png", lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)


def _row(model: nn.Module, data: DataSplits, s: Settings, step: int, removed: list[int],
         val: float, kept: bool, parent_acc: dict[str, float]) -> dict[str, Any]:
    summary = describe(model)
    x, y = data.train.tensors[0][: s.batch_size], data.train.tensors[1][: s.batch_size]
    test = evaluate(model, data.test)
    return {"step": step, "removed_units": removed, "units": len(present_blocks(model)),
            "depth": summary["depth"], "macs": summary["macs"], "params": summary["params"],
            "val_accuracy": val, "test_accuracy": test, "kept": kept,
            "parent_val_accuracy": parent_acc["val"], "parent_test_accuracy": parent_acc["test"],
            "drop_vs_parent_val": parent_acc["val"] - val,
            "drop_vs_parent_test": parent_acc["test"] - test,
            "tolerance": s.tolerance, "omegas": {str(i): v for i, v in omegas(model).items()},
            "residual_norms": {str(i): v for i, v in residual_norms(
                model, data.val.tensors[0][:256]).items()},
            **time_batch(model, x, y, s.timing_repeats)}


def _save(run: RunDir, vid: str, parent: str, model: nn.Module, data: DataSplits, s: Settings,
          row: dict[str, Any], table: list[dict[str, Any]], seconds: float,
          source: str) -> Variant:
    rec = Variant(
        id=vid, parent=parent, method=METHOD, settings=recorded_settings(s),
        dataset=data.name, **describe(model),
        accuracy=Accuracy(val=row["val_accuracy"], test=row["test_accuracy"],
                          test_images=len(data.test)),
        timings={"train_s": seconds, "forward_ms_per_batch": row["forward_ms_per_batch"],
                 "backward_ms_per_batch": row["backward_ms_per_batch"]},
        details={"source_variant": source, "step": row["step"],
                 "removed_units": row["removed_units"],
                 "removed_blocks": [b.index for b in list_blocks(model) if b.removed],
                 "omegas": row["omegas"], "residual_norms": row["residual_norms"],
                 "steps": list(table), "accuracy_source": "measured in PyTorch (val: decisions, "
                 "test: report)", "timing_source": "measured on this machine's CPU, "
                 f"{row['timing_threads']} threads, batch {row['timing_batch']}"})
    run.save(model.cpu(), rec)
    _plots(run.variant_dir(vid), model, table)
    return rec


def run(run: RunDir, parent: str, data: DataSplits, settings: Settings, *,
        progress: bool | None = None) -> list[Variant]:
    """Learn omegas on `parent`, then reduce recursively; returns the kept variants
    (f"{parent}.li0" = omegas learned, ".li1", ... = units removed)."""
    s = settings
    log_path = run.path / "methods" / f"{METHOD}-{parent}.json"
    vid0 = f"{parent}.{TAG}0"
    base = run.load_model(parent)
    parent_acc = {"val": evaluate(base, data.val), "test": evaluate(base, data.test)}
    rec0 = finished(run, vid0, METHOD, s, ignore=LOOP_ONLY)
    if rec0 is not None:
        model = run.load_model(vid0)
        variants = [rec0]
    else:
        model = with_importance(base)
        ckpt = run.variant_dir(vid0) / "train-state.pt"
        with Timer() as t:
            res = train(model, data.train, data.val,
                        s.train_settings(s.train_epochs, s.omega_lr),
                        checkpoint=ckpt, desc=f"{vid0} omega", progress=progress)
        model = model.cpu().eval()
        val = res.best_val_accuracy
        table = [_row(model, data, s, 0, [], val, True, parent_acc)]
        table[0]["reference_val_accuracy"] = parent_acc["val"] if s.reference == "parent" \
            else val
        variants = [_save(run, vid0, parent, model, data, s, table[0], table, t.seconds, parent)]
        ckpt.unlink(missing_ok=True)
    table = list(variants[0].details["steps"])
    ref_name = "parent" if s.reference == "parent" else "step 0"
    start_val = parent_acc["val"] if s.reference == "parent" else table[0]["val_accuracy"]
    step = 0
    while True:
        step += 1
        vid = f"{parent}.{TAG}{step}"
        rec = finished(run, vid, METHOD, s)
        if rec is not None:
            model = run.load_model(vid)
            variants.append(rec)
            table = list(rec.details["steps"])
            continue
        if log_path.is_file():  # a finished loop left its stop reason; nothing to redo
            log = _read_log(log_path)
            if log.get("last_kept") == variants[-1].id and isinstance(
                    log.get("settings"), dict) and not settings_differ(log["settings"], s):
                break
        units = len(present_blocks(model))
        room = units - s.target_units if s.target_units is not None else s.k
        picks = pick_units(model, min(s.k, room)) if room > 0 else []
        if not picks:
            reason = "target reached" if room <= 0 else "no removable unit left"
            _write_log(log_path, variants[-1].id, s, table, reason)
            break
        model = remove_blocks(model, picks)
        ckpt = run.variant_dir(vid) / "train-state.pt"
        with Timer() as t:
            res = train(model, data.train, data.val, s.train_settings(s.retrain_epochs),
                        checkpoint=ckpt, desc=f"{vid} retrain", progress=progress)
        model = model.cpu().eval()
        val = res.best_val_accuracy
        kept = val >= start_val - s.tolerance
        row = _row(model, data, s, step, picks, val, kept, parent_acc)
        table.append(row)
        if not kept:
            _write_log(log_path, variants[-1].id, s, table,
                       f"val accuracy {val:.2f} < starting ({ref_name}) {start_val:.2f} - "
                       f"{s.tolerance}")
            ckpt.unlink(missing_ok=True)
            break
        variants.append(_save(run, vid, variants[-1].id, model, data, s, row, table,
                              t.seconds, parent))
        ckpt.unlink(missing_ok=True)
    return variants


def _read_log(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_log(path: Path, last_kept: str, s: Settings, table: list[dict[str, Any]],
               reason: str) -> None:
    """The loop's end, so a rerun with the same settings does not retrain a rejected step."""
    atomic_write_json(path, {"method": METHOD, "last_kept": last_kept, "stop_reason": reason,
                             "settings": s.model_dump(mode="json"), "steps": table})
