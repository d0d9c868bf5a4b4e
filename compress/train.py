"""QAT trainer shared by baseline training and every compression method's fine-tuning.

One function, `train`, with its settings as data. It checkpoints after every epoch (atomically)
and resumes from that checkpoint, so an interrupted training loses at most one epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from fpgaslim.core.atomic import atomic_write
from fpgaslim.core.errors import CheckpointError, TrainingDivergedError


class TrainSettings(BaseModel):
    """SGD + cosine schedule. `restart_every` > 0 restarts the cosine cycle (the paper's
    'cosine annealing with a restart'); `patience` stops after that many epochs without a new
    best validation accuracy."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(10, ge=0)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: int = Field(64, ge=1)
    restart_every: int = Field(0, ge=0)
    patience: int | None = Field(None, ge=1)
    warmup_epochs: int = Field(0, ge=0)  # linear learning-rate ramp over the first epochs
    clip_grad_norm: float | None = Field(None, gt=0)  # clip the gradients' global L2 norm
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


def defaults_for(weight_bits: int, act_bits: int) -> dict[str, float | int]:
    """Training settings that differ from TrainSettings' defaults at low bit widths (measured
    on digits / MNIST CNV and TFC; at 4 bits and more nothing changes).

    * 1-bit weights: the float weights behind bipolar ones are clipped to +-0.1, so a larger
      step (lr 0.2) flips signs often enough, and no weight decay (it only pulls the latent
      weights to 0, where the sign flips at random). CNV w1a1 on digits, 4 epochs: 82.5 %
      at lr 0.05 -> 88.6 % at lr 0.2, 95.0 % after 8 epochs at lr 0.2 without decay.
    * 2-3 bits (weights or activations): one warm-up epoch and gradient clipping at norm 5,
      against the early divergence seen at lr 0.05 (Fashion-MNIST ResNet-20 w2a2).
    """
    out: dict[str, float | int] = {}
    if min(weight_bits, act_bits) <= 3:
        out.update(warmup_epochs=1, clip_grad_norm=5.0)
    if weight_bits == 1:
        out.update(lr=0.2, weight_decay=0.0)
    return out


def with_defaults_for(settings: TrainSettings, weight_bits: int, act_bits: int) -> TrainSettings:
    """`settings` with the bit-width defaults filled in for every field not set explicitly."""
    update = {k: v for k, v in defaults_for(weight_bits, act_bits).items()
              if k not in settings.model_fields_set}
    return settings.model_copy(update=update) if update else settings


def near_chance_warning(val_acc: float, num_classes: int, epoch: int = 1) -> str | None:
    """A warning when a validation accuracy is below twice chance level (e.g. 20 % for ten
    classes): the model has learnt (almost) nothing."""
    chance = 100.0 / max(num_classes, 1)
    if num_classes < 2 or val_acc >= 2 * chance:
        return None
    return (f"validation accuracy {val_acc:.1f}% after epoch {epoch} is near chance "
            f"({chance:.1f}% for {num_classes} classes): the model is not learning. Try another "
            "learning rate (--lr: lower if the loss jumps, higher if it barely moves), more bits "
            "(e.g. --bits w4a4 or --first-bits 8) or more epochs")


class KDSettings(BaseModel):
    """Distillation: T^2-scaled KL on softened logits plus hard-label cross-entropy."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(4.0, gt=0)
    soft_weight: float = Field(1.0, ge=0)
    hard_weight: float = Field(1.0, ge=0)


class TrainResult(BaseModel):
    best_val_accuracy: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]]
    resumed_from_epoch: int = 0
    warnings: list[str] = []


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
            kd: KDSettings) -> torch.Tensor:
    t = kd.temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1),
                    reduction="batchmean") * (t * t)
    return kd.soft_weight * soft + kd.hard_weight * F.cross_entropy(student, target)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def predict(model: nn.Module, data: TensorDataset, batch_size: int = 256,
            device: torch.device | None = None) -> torch.Tensor:
    """Logits for every image, in dataset order (eval mode; the caller's mode is restored)."""
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    outs = [model(x.to(device)).float().cpu()
            for x, _ in DataLoader(data, batch_size=batch_size, shuffle=False)]
    model.train(was)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, data: TensorDataset, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent."""
    logits = predict(model, data, batch_size)
    return float((logits.argmax(1) == data.tensors[1]).float().mean() * 100) if len(logits) else 0.0


def _fingerprint(settings: TrainSettings, tag: str) -> str:
    return hashlib.sha256((settings.model_dump_json() + tag).encode()).hexdigest()[:16]


def load_state(path: Path) -> dict:
    """Load a torch file safely (tensors and plain data only)."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's pickle-protocol notice
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for truncated / foreign files
        # torch's own text is not repeated: it advises weights_only=False, which is wrong
        # advice for a damaged file and unsafe for a foreign one
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError) and "eights only" in text:
            what = ("it holds Python objects besides tensors and plain data, which fpgaslim "
                    "never writes and does not load (loading them could run code): it was not "
                    "written by fpgaslim, or it is damaged")
        elif "zip archive" in text or "central directory" in text or isinstance(exc, EOFError):
            what = "it is truncated or corrupt (not a complete torch archive)"
        else:
            what = f"it is not a torch checkpoint ({type(exc).__name__})"
        raise CheckpointError(f"{path} is not a readable checkpoint: {what}. Restore it from a "
                              "backup, or delete it and run the command that wrote it again."
                              ) from exc


def _stats_state(model: nn.Module) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Brevitas' activation scales collect running statistics for their first training steps;
    neither the step counters nor the running statistics are in a state_dict, so without them
    a resume inside that phase would start the statistics over."""
    counters, buffers = {}, {}
    for n, m in model.named_modules():
        if isinstance(getattr(m, "counter", None), int):
            counters[n] = int(m.counter)
            buf = getattr(m, "buffer", None)
            if isinstance(buf, torch.Tensor):
                buffers[n] = buf.detach().cpu().clone()
    return counters, buffers


def _set_stats_state(model: nn.Module, counters: dict[str, int],
                     buffers: dict[str, torch.Tensor]) -> None:
    for n, m in model.named_modules():
        if n in counters:
            m.counter = counters[n]
        if n in buffers:
            m.buffer = buffers[n].to(m.buffer.device if isinstance(m.buffer, torch.Tensor)
                                     else "cpu").clone()


@dataclass
class _Loop:
    """Where a training stands after an epoch (what a checkpoint resumes)."""

    start: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_acc: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    since_best: int = 0


def lr_schedule(settings: TrainSettings) -> Callable[[int], float]:
    """The learning rate of each epoch: a linear warm-up ramp (lr/(w+1), 2 lr/(w+1), ...),
    then cosine annealing, restarted every `restart_every` epochs."""
    cycle = settings.restart_every or max(1, settings.epochs)

    def lr_at(epoch: int) -> float:
        if epoch < settings.warmup_epochs:
            return settings.lr * (epoch + 1) / (settings.warmup_epochs + 1)
        return settings.lr * 0.5 * (1 + math.cos(math.pi * (epoch % cycle) / cycle))
    return lr_at


def _resume(model: nn.Module, settings: TrainSettings, checkpoint: Path | None, fp: str
            ) -> tuple[torch.optim.SGD, list[nn.Parameter], _Loop]:
    """The optimizer and loop state: from `checkpoint` when it holds this training (same
    fingerprint), else fresh (and the seed set)."""
    state = load_state(checkpoint) if checkpoint is not None and checkpoint.is_file() else None
    if state is not None and state.get("fingerprint") != fp:
        state = None  # a checkpoint of other settings: start over (it is overwritten)
    if state is not None:
        # before the optimizer exists: Brevitas may swap scale Parameters on load
        model.load_state_dict(state["model"])
        _set_stats_state(model, json.loads(state.get("stats_counters", "{}")),
                         state.get("stats_buffers", {}))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay)
    if state is None:
        torch.manual_seed(settings.seed)
        return opt, params, _Loop()
    # momentum by parameter name, not position: Brevitas registers activation-scale
    # Parameters when their statistics phase ends, so the order of the (scalar) scales
    # differs between a model that trained into them and one that loaded them
    named = dict(model.named_parameters())
    for name, buf in state["momentum"].items():
        if name in named and named[name].requires_grad:
            opt.state[named[name]]["momentum_buffer"] = buf.clone()
    torch.set_rng_state(state["rng"])
    return opt, params, _Loop(start=state["epoch"], history=json.loads(state["history"]),
                              best_acc=state["best_acc"], best_state=state["best_model"],
                              since_best=state["since_best"])


def _save_progress(checkpoint: Path, fp: str, epoch: int, model: nn.Module,
                   opt: torch.optim.SGD, loop: _Loop) -> None:
    """The per-epoch checkpoint (atomic) that `_resume` reads."""
    counters, stat_buffers = _stats_state(model)
    snapshot = {"fingerprint": fp, "epoch": epoch + 1, "model": model.state_dict(),
                "momentum": {n: opt.state[p]["momentum_buffer"]
                             for n, p in model.named_parameters()
                             if "momentum_buffer" in opt.state.get(p, {})},
                "history": json.dumps(loop.history),
                "best_acc": loop.best_acc, "best_model": loop.best_state,
                "since_best": loop.since_best, "rng": torch.get_rng_state(),
                "stats_counters": json.dumps(counters),
                "stats_buffers": stat_buffers}
    atomic_write(checkpoint, lambda p: torch.save(snapshot, p))


def _train_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.SGD,
                 params: list[nn.Parameter], settings: TrainSettings, device: torch.device,
                 teacher: nn.Module | None, kd: KDSettings,
                 extra_loss: Callable[[nn.Module], torch.Tensor] | None, lr: float,
                 bar_desc: str, desc: str, epoch: int,
                 progress: bool | None) -> tuple[int, int, float]:
    """One pass over `loader`: (images, correct, summed loss). A non-finite loss stops
    before the step is taken."""
    total, correct, loss_sum = 0, 0, 0.0
    bar = tqdm(loader, desc=bar_desc, leave=False, disable=progress is False
               if progress is not None else None)
    for x, y in bar:
        x, y = x.to(device), y.to(device)
        out = model(x)
        if teacher is not None:
            with torch.no_grad():
                t_out = teacher(x)
            loss = kd_loss(out, t_out, y, kd)
        else:
            loss = F.cross_entropy(out, y)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        step_loss = loss.item()
        if not math.isfinite(step_loss):
            # a NaN step poisons every weight; stop before it is stepped in or saved
            raise TrainingDivergedError(
                f"{desc or 'training'}: the loss became {step_loss} in epoch {epoch + 1} "
                f"(after {total} images) at learning rate {lr:g}; lower the "
                "learning rate (low bit widths such as w2a2 need a smaller one) and run "
                "again: the checkpoint of the last finished epoch is kept")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, settings.clip_grad_norm)
        opt.step()
        total += len(y)
        correct += int((out.argmax(1) == y).sum())
        loss_sum += step_loss * len(y)
        bar.set_postfix(loss=f"{loss_sum / total:.3f}", acc=f"{100 * correct / total:.1f}")
    return total, correct, loss_sum


def train(
    model: nn.Module,
    train_data: TensorDataset,
    val_data: TensorDataset,
    settings: TrainSettings,
    *,
    checkpoint: Path | None = None,
    teacher: nn.Module | None = None,
    kd: KDSettings | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    set_train_mode: Callable[[nn.Module], None] | None = None,
    desc: str = "train",
    progress: bool | None = None,
) -> TrainResult:
    """Train `model` in place; at the end it holds the best-validation weights.

    Only parameters with requires_grad are optimised. `set_train_mode` runs after
    model.train() each epoch, e.g. to keep frozen BatchNorm layers in eval mode.
    `checkpoint`: a file rewritten after every epoch; if it exists with the same settings the
    run resumes from it.
    """
    device = pick_device(settings.device)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    kd = kd or KDSettings()
    epochs = settings.epochs
    lr_at = lr_schedule(settings)
    tag = json.dumps({"teacher": teacher is not None, "kd": kd.model_dump(),
                      "n": len(train_data)})
    fp = _fingerprint(settings, tag)
    opt, params, loop = _resume(model, settings, checkpoint, fp)

    t0 = time.perf_counter()
    g = torch.Generator()
    loader = DataLoader(train_data, batch_size=settings.batch_size, shuffle=True, generator=g,
                        drop_last=len(train_data) > settings.batch_size)
    for epoch in range(loop.start, epochs):
        if settings.patience is not None and loop.since_best >= settings.patience:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch)
        g.manual_seed(settings.seed * 100_003 + epoch)  # same shuffle whether resumed or not
        model.train()
        if set_train_mode is not None:
            set_train_mode(model)
        total, correct, loss_sum = _train_epoch(
            model, loader, opt, params, settings, device, teacher, kd, extra_loss,
            lr_at(epoch), f"{desc} {epoch + 1}/{epochs}", desc, epoch, progress)
        val_acc = evaluate(model, val_data)
        loop.history.append({"epoch": epoch + 1, "loss": loss_sum / max(total, 1),
                             "train_acc": 100 * correct / max(total, 1), "val_acc": val_acc,
                             "lr": lr_at(epoch)})
        if val_acc > loop.best_acc:
            loop.best_acc, loop.since_best = val_acc, 0
            loop.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            loop.since_best += 1
        if checkpoint is not None:
            _save_progress(checkpoint, fp, epoch, model, opt, loop)
    best_acc = loop.best_acc
    if loop.best_state is not None:
        model.load_state_dict(loop.best_state)
    else:  # no epoch ran
        best_acc = evaluate(model, val_data)
    history = loop.history
    num_classes = int(val_data.tensors[1].max()) + 1 if len(val_data) else 0
    first = near_chance_warning(history[0]["val_acc"], num_classes) if history else None
    return TrainResult(best_val_accuracy=best_acc, epochs_run=len(history),
                       seconds=time.perf_counter() - t0, history=history,
                       resumed_from_epoch=loop.start, warnings=[first] if first else [])
