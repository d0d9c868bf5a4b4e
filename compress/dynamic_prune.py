"""Dynamic channel pruning: drop channels that are mostly zero, binary-searching the threshold.

The method of Li et al. (dynamic pruning and layer fusion, section 3.2), as specified in
METHODS.md section 1.

Per iteration: measure channel sparsity of the iteration's start model on the validation set;
binary-search the threshold P in [P_l, P_u] (channels with sparsity > P are removed,
the pruned copy is fine-tuned, accepted when its validation accuracy reaches
target = baseline - tolerance); the last accepted model is the iteration's result and the
next iteration's start. One variant per iteration that removed channels.

Bounds (`bounds`): "measured" (default, METHODS.md "Bounds on QAT networks"): P_l, P_u = the
lowest and highest measured sparsity of the iteration's prunable channels (P_u plus a hair, so
that it prunes nothing) and a stopping gap of `gap_fraction` x (P_u - P_l), since every channel
of a BN -> quantized-ReLU network is 50-72 % zeros and the paper's [0.5, 1] brackets the whole
population; "paper" (the `paper` preset): the fixed `p_low`, `p_high`, `stop_gap`.

The search (`binary_search`) only sees an `attempt(P) -> accuracy` callable, so tests script
it; `run` wires it to channel surgery and fine-tuning, logs every trial into the record and
resumes an interrupted search from its trial log.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from fpgaslim.core.atomic import atomic_write_json

from .channel_surgery import remove_channels, thin_layers
from .data import DataSplits
from .method_settings import MethodSettings
from .sparsity import SparsityReport, channel_sparsity, histogram, measured_bounds, \
    plot_sparsity, select_channels
from .train import TrainSettings, evaluate, train
from .variants import (Accuracy, RunDir, Timer, Variant, describe, finished, load_checkpoint,
                       recorded_settings, save_checkpoint)

METHOD = "dynamic-prune"
#: what the method needs from a model that is not a zoo model: channel groups Torch-Pruning can trace
#: (compress/methods.py Method, checked by models/user.require_needs)
NEEDS = ("channels",)
TAG = "dp"


_FULL = {"epochs": 320, "restart_every": 160, "patience": 20, "lr": 0.01, "batch_size": 128}


class Settings(MethodSettings):
    """Dynamic pruning settings; field names are the CLI options (lr, batch_size, seed,
    device: MethodSettings). Presets: 'cpu': a few epochs per trial (one cosine cycle), minutes
    on a laptop; 'full': the paper's fine-tuning (SGD lr 0.01, cosine annealing with one
    restart, up to 320 epochs, patience 20) with measured bounds; 'paper': 'full' with the
    paper's fixed bounds [0.5, 1.0] and gap 0.03."""

    PRESETS = {"cpu": {}, "full": _FULL,
               "paper": {**_FULL, "bounds": "paper", "p_low": 0.5, "p_high": 1.0,
                         "stop_gap": 0.03}}
    tolerance: float = Field(0.5, ge=0, description="target = baseline val accuracy - this (points)")
    iterations: int = Field(3, ge=1, description="outer iterations, each from the last result")
    bounds: Literal["measured", "paper"] = Field(
        "measured", description="threshold search bounds: the measured sparsity range of the "
        "prunable channels, or the paper's fixed p_low/p_high/stop_gap")
    gap_fraction: float = Field(0.06, gt=0, lt=1, description="measured bounds: stop when the "
                                "interval is this fraction of the measured range")
    p_low: float = Field(0.5, ge=0, le=1, description="paper bounds: lower end of the search")
    p_high: float = Field(1.0, ge=0, le=1, description="paper bounds: upper end of the search")
    stop_gap: float = Field(0.03, gt=0, description="paper bounds: stop when p_high - p_low "
                            "<= this")
    min_channels: int = Field(1, ge=1, description="channels every layer keeps at least")
    channel_multiple: int = Field(1, ge=1, description="keep a multiple of this many channels "
                                  "per layer (FINN folding; 1 = the paper)")
    thin_channels: int = Field(6, ge=1, description="a layer with fewer outputs is 'thin'")
    residual: bool = Field(False, description="also prune residual-stream channels (only where "
                           "sparse at every coupled ReLU)")
    calib_images: int | None = Field(None, ge=1, description="validation images for sparsity "
                                     "(default: all)")
    epochs: int = Field(4, ge=0, description="fine-tuning epoch budget per trial")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    restart_every: int = Field(0, ge=0, description="cosine restart period in epochs (0: "
                               "none; must divide epochs)")
    patience: int | None = Field(2, ge=1, description="early stop after this many epochs "
                                 "without a new best")

    @model_validator(mode="after")
    def _interval(self) -> "Settings":
        if self.p_low >= self.p_high:
            raise ValueError(f"p_low ({self.p_low}) must be below p_high ({self.p_high})")
        if self.restart_every and self.epochs % self.restart_every:
            raise ValueError(f"restart_every ({self.restart_every}) must divide epochs "
                             f"({self.epochs}): a warm restart to the full lr late in a "
                             "trial leaves it unfinished; use 0 for one cosine cycle")
        return self

    def search_bounds(self, report: SparsityReport) -> tuple[float, float, float]:
        """(P_l, P_u, stopping gap) of a search over the channels in `report`."""
        if self.bounds == "paper":
            return self.p_low, self.p_high, self.stop_gap
        lo, hi = measured_bounds(report)
        return lo, hi, self.gap_fraction * (hi - lo)

    def train_settings(self) -> TrainSettings:
        return self.train_settings_for(self.epochs, momentum=self.momentum,
                                       weight_decay=self.weight_decay,
                                       restart_every=self.restart_every, patience=self.patience)


class Trial(BaseModel):
    """One threshold tried: what it cut and how the fine-tuned copy did (validation)."""

    model_config = ConfigDict(extra="forbid")
    iteration: int
    index: int
    threshold: float
    interval: tuple[float, float]  # (p_low, p_high) when the trial was made
    removed: dict[str, int] = Field(default_factory=dict)
    removed_total: int = 0
    floored: list[str] = Field(default_factory=list)
    rounded: list[str] = Field(default_factory=list)
    accuracy: float
    accepted: bool
    fine_tuned: bool = False
    epochs_run: int = 0
    seconds: float = 0.0
    note: str = ""


@dataclass
class SearchStep:
    index: int
    threshold: float
    interval: tuple[float, float]
    accuracy: float
    accepted: bool


def binary_search(attempt: Callable[[float], float], target: float, p_low: float = 0.5,
                  p_high: float = 1.0, stop_gap: float = 0.03,
                  on_step: Callable[[SearchStep], None] | None = None
                  ) -> tuple[list[SearchStep], int | None]:
    """METHODS.md section 1 (the paper's text; its Algorithm 1 box has the test inverted).

    Returns the steps and the index of the kept step (the last accepted one), or None when no
    threshold reached `target`. `attempt(P)` prunes with P, fine-tunes, returns val accuracy.
    """
    steps: list[SearchStep] = []
    kept = None
    p_c = (p_high + p_low) / 2
    while p_high - p_low > stop_gap:
        acc = attempt(p_c)
        step = SearchStep(len(steps), p_c, (p_low, p_high), acc, acc >= target)
        steps.append(step)
        if step.accepted:  # good enough: keep it, try pruning more (lower P)
            kept = step.index
            p_high = p_c
            p_c = 0.75 * p_high + 0.25 * p_low
        else:  # too much cut: prune less (higher P)
            p_low = p_c
            p_c = (p_high + p_low) / 2
        if on_step is not None:
            on_step(step)
    return steps, kept


@dataclass
class IterationResult:
    model: nn.Module
    trials: list[Trial]
    kept: Trial | None
    sparsity: SparsityReport


def _trial_notes(sel: Any, p: float, settings: Settings) -> list[str]:
    notes = []
    if sel.floored:
        notes.append(f"P={p:.4f} would leave fewer than {settings.min_channels} "
                     f"channel(s) in {', '.join(sel.floored)}: kept the least sparse")
    if sel.rounded:
        notes.append(f"kept extra channels in {', '.join(sel.rounded)} to leave a multiple "
                     f"of {settings.channel_multiple}")
    return notes


class _Search:
    """The trials of one binary search: `attempt` prunes and fine-tunes (or replays a trial
    of the log), `on_step` records the decision, saves an accepted model and the log."""

    def __init__(self, start: nn.Module, data: DataSplits, settings: Settings, iteration: int,
                 workdir: Path, start_accuracy: float, sparsity: SparsityReport, key: str,
                 target: float, progress: bool | None) -> None:
        self.start, self.data, self.settings, self.iteration = start, data, settings, iteration
        self.workdir, self.start_accuracy, self.sparsity = workdir, start_accuracy, sparsity
        self.key, self.target, self.progress = key, target, progress
        self.log_path, self.best_path = workdir / "trials.json", workdir / "kept.pt"
        self.done = self._replayable()
        self.trials: list[Trial] = []
        self.current: nn.Module | None = None
        self.kept_model: nn.Module | None = None

    def _replayable(self) -> dict[int, Trial]:
        """The logged trials of this same search (settings, target, start model)."""
        if self.log_path.is_file():
            old = json.loads(self.log_path.read_text(encoding="utf-8"))
            if old.get("key") == self.key:
                return {t["index"]: Trial.model_validate(t) for t in old["trials"]}
        return {}

    def attempt(self, p: float) -> float:
        s, index = self.settings, len(self.trials)
        cached = self.done.get(index)
        if cached is not None and abs(cached.threshold - p) < 1e-12:
            self.trials.append(cached)
            self.current = None  # on disk (kept.pt) if it was accepted
            return cached.accuracy
        sel = select_channels(self.sparsity, p, s.min_channels, s.channel_multiple)
        trial = Trial(iteration=self.iteration, index=index, threshold=p, interval=(0.0, 0.0),
                      removed=sel.counts(), removed_total=sel.total, floored=sel.floored,
                      rounded=sel.rounded,
                      accuracy=self.start_accuracy, accepted=False)
        notes = _trial_notes(sel, p, s)
        t0 = time.perf_counter()
        if sel.total == 0:
            model = self.start
            notes.append("prunes nothing: fine-tuning skipped, start model's accuracy used")
        else:
            model = remove_channels(self.start, sel.remove, s.residual).model
            ckpt = self.workdir / f"trial{index}-train.pt"
            res = train(model, self.data.train, self.data.val, s.train_settings(),
                        checkpoint=ckpt, desc=f"dp it{self.iteration} P={p:.3f}",
                        progress=self.progress)
            ckpt.unlink(missing_ok=True)
            model = model.cpu().eval()
            trial.accuracy, trial.fine_tuned = res.best_val_accuracy, True
            trial.epochs_run = res.epochs_run
        trial.seconds = time.perf_counter() - t0
        trial.note = "; ".join(notes)
        self.trials.append(trial)
        self.current = model
        return trial.accuracy

    def on_step(self, step: SearchStep) -> None:
        trial = self.trials[step.index]
        fresh = step.index not in self.done or self.done[step.index] is not trial
        trial.interval, trial.accepted = step.interval, step.accepted
        if step.accepted:
            self.kept_model = self.current
            if fresh:
                save_checkpoint(self.current, self.best_path)
        atomic_write_json(self.log_path, {
            "key": self.key, "target": self.target,
            "trials": [t.model_dump(mode="json") for t in self.trials]})


def prune_iteration(start: nn.Module, data: DataSplits, settings: Settings, target: float,
                    iteration: int, workdir: Path, start_accuracy: float,
                    progress: bool | None = None) -> IterationResult:
    """One binary search from `start`. `workdir` keeps the trial log and the current kept
    model, so a rerun replays finished trials instead of fine-tuning them again."""
    sparsity = channel_sparsity(start, data.val, residual=settings.residual,
                                limit=settings.calib_images)
    # a log is only replayed for the same search: settings, target and start model (whose
    # sparsity measurement fingerprints it)
    key = hashlib.sha256(json.dumps([settings.model_dump(mode="json"), target, iteration,
                                     sparsity.layers]).encode()).hexdigest()
    search = _Search(start, data, settings, iteration, workdir, start_accuracy, sparsity, key,
                     target, progress)
    p_low, p_high, gap = settings.search_bounds(sparsity)
    _, kept = binary_search(search.attempt, target, p_low, p_high, gap, search.on_step)
    if kept is None:
        return IterationResult(start, search.trials, None, sparsity)
    model = search.kept_model
    if model is None:  # the kept trial was replayed from the log: its model is on disk
        model = load_checkpoint(search.best_path)
    return IterationResult(model, search.trials, search.trials[kept], sparsity)


def run(run: RunDir, parent: str, data: DataSplits, settings: Settings, *,
        progress: bool | None = None) -> list[Variant]:
    """Up to `settings.iterations` variants `{parent}.dp1`, `.dp2`, ...; stops early when an
    iteration finds no threshold that removes channels and reaches the target."""
    parent_rec = run.record(parent)
    parent_model = run.load_model(parent)
    baseline_val = evaluate(parent_model, data.val)
    target = baseline_val - settings.tolerance
    start, start_id, start_acc = parent_model, parent, baseline_val
    variants: list[Variant] = []
    for it in range(1, settings.iterations + 1):
        vid = f"{parent}.{TAG}{it}"
        rec = finished(run, vid, METHOD, settings)
        if rec is not None:
            variants.append(rec)
            start, start_id, start_acc = run.load_model(vid), vid, rec.accuracy.val
            continue
        vdir = run.variant_dir(vid)
        with Timer() as t:
            res = prune_iteration(start, data, settings, target, it, vdir / "search", start_acc,
                                  progress)
        if res.kept is None or res.kept.removed_total == 0:
            break  # the trial log stays in vdir/search to show why
        model = res.model
        thin = thin_layers(model, settings.thin_channels)
        before, after = start.arch, model.arch
        plot = plot_sparsity(res.sparsity, vdir / "sparsity.png", res.kept.threshold,
                             f"{vid}: channel sparsity of {start_id}, accepted P = "
                             f"{res.kept.threshold:.4f}")
        record = Variant(
            id=vid, parent=start_id, method=METHOD, settings=recorded_settings(settings),
            dataset=data.name, **describe(model),
            accuracy=Accuracy(val=res.kept.accuracy, test=evaluate(model, data.test),
                              test_images=len(data.test)),
            timings={"search_s": t.seconds,
                     "finetune_s": sum(tr.seconds for tr in res.trials)},
            details={
                "iteration": it, "root": parent, "start": start_id,
                "baseline_val": baseline_val, "target_val": target,
                "tolerance": settings.tolerance, "threshold": res.kept.threshold,
                "removed": res.kept.removed, "removed_total": res.kept.removed_total,
                "widths_before": _group_widths(before), "widths_after": _group_widths(after),
                "thin_layers": len(thin), "thin_layer_names": thin,
                "trials": [tr.model_dump(mode="json") for tr in res.trials],
                "sparsity": res.sparsity.model_dump(mode="json"),
                "sparsity_summary": res.sparsity.summary(),
                "sparsity_plot": plot.name,
                "sparsity_histogram": histogram(res.sparsity),
                "search_bounds": dict(zip(("p_low", "p_high", "stop_gap"),
                                          settings.search_bounds(res.sparsity))),
                "accuracy_source": "val: best fine-tuning epoch (decisions); test: reporting",
                "parent_record_accuracy": parent_rec.accuracy.model_dump(mode="json"),
            })
        run.save(model, record)
        for f in (vdir / "search").glob("*"):
            f.unlink()
        (vdir / "search").rmdir()
        variants.append(record)
        start, start_id, start_acc = model, vid, res.kept.accuracy
    return variants


def _group_widths(arch) -> dict[str, int]:
    if arch.kind == "user":  # your own model: the cuts its record replays, per layer
        cut: dict[str, int] = {}
        for name, idxs in arch.pruned:
            cut[name] = cut.get(name, 0) + len(idxs)
        return {f"{name} (removed)": n for name, n in cut.items()}
    if arch.kind == "resnet":
        return {f"blocks.{i}.mid": b.mid for i, b in enumerate(arch.blocks) if not b.removed}
    return {f"layer{i}": s.out_ch for i, s in enumerate(arch.layers) if s.kind == "conv"}
