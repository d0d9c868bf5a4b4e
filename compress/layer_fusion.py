"""Layer fusion: remove thin residual blocks; a neighbouring carrier block takes over their work.

Li, Li & Meng 2023, section 3.3: blocks go one by one, each followed by distillation-driven
fine-tuning of the carrier only (short), and of the whole network every few removals (long).

Selection rules (METHODS.md section 2, with the choices the paper leaves open):
  * material = the present, removable block (equal input/output shape) with the smallest inner
    width `mid`; ties go to the earliest block, so the selection is deterministic and the larger
    (earlier) feature maps go first;
  * carrier = the nearest present block before the material if its output feature-map size is
    the material's, else the nearest present block after it under the same condition. A block
    with no such neighbour cannot be fused (no other block of its size could absorb it) and is
    skipped in favour of the next thinnest, so the method never fuses across a change of
    feature-map size. In this ResNet family a removable block keeps its input size, so the
    block before always qualifies when there is one; "the block after" applies to the first
    present block after the stem. Hence a ResNet-8 (one block per stage, the second one
    downsampling) has nothing to fuse; a ResNet-14 has three blocks.
Every `group_size` removals the whole network is fine-tuned ("long") and saved as a variant;
the method stops after the first variant whose validation accuracy is more than `stop_drop`
points below the teacher (that variant is still saved: the user chooses from the trade-off).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field
from torch import nn

from fpgaslim.core.atomic import atomic_write, atomic_write_json

from .block_surgery import BlockInfo, block_module, list_blocks, remove_blocks, require_blocks
from .data import DataSplits
from .method_settings import MethodSettings
from .train import KDSettings, TrainSettings, evaluate, train
from .variants import (Accuracy, RunDir, Timer, Variant, describe, finished, load_checkpoint,
                       recorded_settings, save_checkpoint)

TAG = "lf"
METHOD = "layer-fusion"
#: what the method needs from a model that is not a zoo model: residual blocks (models/blocks.py protocol)
#: (compress/methods.py Method, checked by models/user.require_needs)
NEEDS = ("blocks",)


def tag_for(settings: "Settings") -> str:
    """Variant-id tag; ablations get their own ("ce": no distillation, "ns": no short
    fine-tuning), so they sit beside the full method in one run without colliding."""
    return TAG + ("" if settings.kd else "ce") + ("" if settings.short_finetune else "ns")


class Settings(MethodSettings):
    """Layer-fusion recipe; top-level fields are the CLI options (lr, batch_size, seed, device:
    MethodSettings). Presets: "cpu": minutes on CPU; "full": the paper (50 short / 200 long
    epochs, SGD 0.01, cosine restarted half-way, early stop after 20 epochs without a new
    best)."""

    PRESETS = {"cpu": {}, "full": {"short_epochs": 50, "long_epochs": 200, "restart_every": 100,
                                   "patience": 20, "lr": 0.01, "batch_size": 64}}
    short_epochs: int = Field(2, ge=0, description="carrier-only fine-tuning epochs per removal")
    long_epochs: int = Field(5, ge=0, description="whole-network fine-tuning epochs per group")
    group_size: int = Field(4, ge=1, description="removals between long fine-tunings (saves)")
    temperature: float = Field(4.0, gt=0, description="distillation temperature T")
    stop_drop: float = Field(3.0, ge=0,
                             description="stop when val accuracy is this many points below the "
                                         "teacher")
    kd: bool = Field(True, description="distil from the parent (off: cross-entropy only)")
    short_finetune: bool = Field(True, description="fine-tune the carrier after each removal")
    max_removals: int | None = Field(None, ge=1, description="stop after this many removals")
    patience: int | None = Field(None, ge=1,
                                 description="early stop after epochs without a better val acc")
    restart_every: int = Field(0, ge=0, description="cosine restart period in epochs (0: none)")

    def train_settings(self, epochs: int) -> TrainSettings:
        return self.train_settings_for(
            epochs, patience=self.patience,
            restart_every=min(self.restart_every, epochs) if epochs else 0)


class FusionPick(BaseModel):
    material: int
    carrier: int
    material_mid: int
    feature_map: tuple[int, int]


def _carrier_for(blocks: list[BlockInfo], material: BlockInfo) -> int | None:
    before = [b for b in blocks if b.index < material.index and not b.removed]
    after = [b for b in blocks if b.index > material.index and not b.removed]
    for neighbour in (before[-1] if before else None, after[0] if after else None):
        if neighbour is not None and neighbour.out_hw == material.out_hw:
            return neighbour.index
    return None


def select_fusion(model_or_arch) -> FusionPick | None:
    """The next (material, carrier) pair, or None when no block can be fused."""
    blocks = list_blocks(model_or_arch)
    candidates = sorted((b for b in blocks if b.removable), key=lambda b: (b.width, b.index))
    for mat in candidates:
        carrier = _carrier_for(blocks, mat)
        if carrier is not None:
            return FusionPick(material=mat.index, carrier=carrier, material_mid=mat.width,
                              feature_map=mat.out_hw)
    return None


def freeze_all_but(model: nn.Module, index: int) -> Callable[[nn.Module], None]:
    """Make only block `index` trainable; returns the train-mode hook that keeps every other
    module (BatchNorm running statistics, activation-quantizer statistics) in eval mode."""
    carrier = block_module(model, index)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in carrier.parameters():
        p.requires_grad_(True)

    def set_mode(m: nn.Module) -> None:
        m.eval()
        block_module(m, index).train()
    return set_mode


def _unfreeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def _plot(path: Path, steps: list[dict[str, Any]], teacher_val: float, final_val: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [s["removal"] for s in steps]
    ax.plot(xs, [s["val_after_removal"] for s in steps], "x--", label="after removal")
    ax.plot(xs, [s["val_after_short"] for s in steps], "o-", label="after short fine-tuning")
    ax.plot([xs[-1]], [final_val], "s", label="after long fine-tuning")
    ax.axhline(teacher_val, color="grey", lw=0.8, label="teacher")
    ax.set_xlabel("blocks removed (cumulative)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Layer fusion (measured in PyTorch, validation split)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)


def _group(run: RunDir, vid: str, model: nn.Module, teacher: nn.Module | None,
           data: DataSplits, s: Settings, removals_done: int,
           progress: bool | None) -> tuple[nn.Module, list[dict[str, Any]], dict[str, float]]:
    """Up to `group_size` (remove, short fine-tune) steps, resumable from work snapshots."""
    work = run.variant_dir(vid) / "work"
    log_path = work / "steps.json"
    steps: list[dict[str, Any]] = []
    if log_path.is_file():
        steps = json.loads(log_path.read_text(encoding="utf-8"))
        if steps:
            model = load_checkpoint(work / f"step{len(steps)}.pt")
    kd = KDSettings(temperature=s.temperature)
    timings = {"short_ft_s": sum(st["short_ft_s"] for st in steps)}
    while len(steps) < s.group_size:
        if s.max_removals is not None and removals_done + len(steps) >= s.max_removals:
            break
        pick = select_fusion(model)
        if pick is None:
            break
        model = remove_blocks(model, [pick.material])
        val_removed = evaluate(model, data.val)
        history: list[dict[str, float]] = []
        with Timer() as t:
            if s.short_finetune and s.short_epochs > 0:
                set_mode = freeze_all_but(model, pick.carrier)
                res = train(model, data.train, data.val, s.train_settings(s.short_epochs),
                            checkpoint=work / "short-ft.pt", teacher=teacher, kd=kd,
                            set_train_mode=set_mode, desc=f"{vid} short {len(steps) + 1}",
                            progress=progress)
                _unfreeze(model)
                history, val_short = res.history, res.best_val_accuracy
                (work / "short-ft.pt").unlink(missing_ok=True)
            else:
                val_short = val_removed
        steps.append({**pick.model_dump(), "removal": removals_done + len(steps) + 1,
                      "conv_layers_removed": 2, "val_after_removal": val_removed,
                      "val_after_short": val_short, "short_ft_s": t.seconds,
                      "short_history": history})
        timings["short_ft_s"] += t.seconds
        save_checkpoint(model.cpu(), work / f"step{len(steps)}.pt")
        atomic_write_json(log_path, steps)
    return model, steps, timings


def run(run: RunDir, parent: str, data: DataSplits, settings: Settings, *,
        progress: bool | None = None) -> list[Variant]:
    """Fuse blocks of variant `parent` group by group; returns every saved variant
    (ids f"{parent}.lf1", ".lf2", ...; see `tag_for` for ablations). Finished variants are
    reused, so a rerun resumes."""
    parent_rec = run.record(parent)
    teacher = run.load_model(parent)
    require_blocks(teacher)  # a clear error for plain networks, before any work
    parent_depth = parent_rec.depth
    teacher_val = evaluate(teacher, data.val)
    model = copy.deepcopy(teacher)
    kd_teacher = teacher if settings.kd else None
    variants: list[Variant] = []
    removals = 0
    n = 0
    tag = tag_for(settings)
    while True:
        n += 1
        vid = f"{parent}.{tag}{n}"
        rec = finished(run, vid, METHOD, settings)
        if rec is not None:
            model = run.load_model(vid)
        else:
            model, steps, timings = _group(run, vid, model, kd_teacher, data, settings,
                                           removals, progress)
            if not steps:
                break
            _unfreeze(model)
            with Timer() as t:
                res = train(model, data.train, data.val, settings.train_settings(
                    settings.long_epochs), checkpoint=run.variant_dir(vid) / "work" / "long-ft.pt",
                    teacher=kd_teacher, kd=KDSettings(temperature=settings.temperature),
                    desc=f"{vid} long", progress=progress)
            model = model.cpu().eval()
            val = res.best_val_accuracy if res.history else evaluate(model, data.val)
            removed = [b.index for b in list_blocks(model) if b.removed]
            summary = describe(model)
            drop = teacher_val - val
            rec = Variant(
                id=vid, parent=parent if n == 1 else f"{parent}.{tag}{n - 1}", method=METHOD,
                settings=recorded_settings(settings), dataset=data.name, **summary,
                accuracy=Accuracy(val=val, test=evaluate(model, data.test),
                                  test_images=len(data.test)),
                timings={**timings, "long_ft_s": t.seconds},
                details={"source_variant": parent, "teacher_val_accuracy": teacher_val,
                         "val_drop": drop, "within_tolerance": drop <= settings.stop_drop,
                         "removed_blocks": removed,
                         "fused_blocks": [st["material"] for st in steps],
                         "carriers": [st["carrier"] for st in steps],
                         "fused_layers_total": parent_depth - summary["depth"],
                         "steps": steps, "long_history": res.history,
                         "accuracy_source": "measured in PyTorch (val: decisions, test: report)",
                         "ablation": {"kd": settings.kd,
                                      "short_finetune": settings.short_finetune}})
            run.save(model, rec)
            _plot(run.variant_dir(vid) / "fusion.png", steps, teacher_val, val)
            shutil.rmtree(run.variant_dir(vid) / "work", ignore_errors=True)
        variants.append(rec)
        removals += len(rec.details.get("fused_blocks", []))
        if not rec.details.get("within_tolerance", True):
            break
        if settings.max_removals is not None and removals >= settings.max_removals:
            break
    return variants

