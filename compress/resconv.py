"""ResConv-Prune: layer pruning with fusible residual convs, ending in a residual-free network.

Paper: papers/resconv-prune.txt; spec: METHODS.md section 3.

Steps, each recorded in the variant: convert the parent's Conv-BN-ReLU layers to float ResConv
blocks (`resconv_net`), sparse-train with task loss + lambda * sum|m_i|, prune the layers whose
conv branch has the smallest share of their output (threshold from the requested rate),
optionally retrain, fuse every ResConv into one plain conv (`resconv_fuse`, exact in float),
re-quantize to the parent's bit widths and QAT fine-tune.

What makes it survive quantization (the issue's findings on Fashion-MNIST ResNet-20 w4a4):
  * `penalty="strength"`: the L1 penalty acts on |m| * mean|gamma|, so BN cannot pay it by
    growing gamma (with the paper's |m| alone, m stayed in 0.79-1.23);
  * `prune_by="ratio"`: layers are pruned by the measured share of their conv branch in
    their output (`resconv_fuse.branch_ratios`), not by a parameter score that misses the
    input's scale: on the benchmark the strength score pruned the layer carrying the signal
    and the network stayed at chance through retraining;
  * `channel_bn`: a BatchNorm after each fused conv carries a per-output-channel weight scale
    (FINN absorbs it into the next MultiThreshold), set up so the float network is unchanged
    and QAT fine-tuning is stable (`resconv_fuse.with_channel_bn`);
  * the QAT fine-tune warms up (`finetune_warmup` epochs), clips gradients
    (`finetune_clip`) at a low lr.
For a FINN dataflow accelerator the fused network needs no DuplicateStreams, no
elementwise adds and no skip-path FIFOs; `fpgaslim.compare.resconv.skip_path_report` shows
what that saves.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field

from .data import DataSplits
from .method_settings import Device, MethodSettings
from .resconv_fuse import FloatPlainNet, float_plain, fuse, prune, requantize, with_channel_bn
from .resconv_net import ResConvNet, load_resconv, save_resconv, sparsity_loss, to_resconv
from .resconv_report import plot_scales
from .train import TrainResult, TrainSettings, evaluate, train
from .variants import (Accuracy, RunDir, Timer, Variant, describe, find_finished,
                       recorded_settings)

METHOD = "resconv"
#: what the method needs from a model that is not a zoo model: a network that turns into one plain chain of layers
#: (compress/methods.py Method, checked by models/user.require_needs)
NEEDS = ("chain",)
TAG = "rc"


class Settings(MethodSettings):
    """Settings of one ResConv-Prune run: one (lambda, rate) pair gives one variant. Presets:
    'cpu': minutes on a laptop CPU. 'full': the paper's CIFAR recipe (SGD lr 0.1, batch 256,
    weight decay 5e-4, 300 epochs of sparse training and of retraining; the cosine schedule
    replaces its step schedule); the QAT fine-tune length is ours."""

    model_config = ConfigDict(populate_by_name=True)  # `lambda` is a keyword: lambda_ in Python
    PRESETS = {
        "cpu": dict(sparse_epochs=8, lr=0.02, retrain_epochs=2, finetune_epochs=3),
        "full": dict(sparse_epochs=300, lr=0.1, batch_size=256, retrain_epochs=300,
                     finetune_epochs=30, finetune_lr=0.01, calibration_images=1024),
    }
    lambda_: float = Field(1e-2, alias="lambda", ge=0, le=1,
                           description="sparsity factor on sum|m_i| (paper: 1e-4 .. 1e-1)")
    rate: float = Field(0.4, ge=0, lt=1, description="fraction of ResConv layers to prune")
    sparse_epochs: int = Field(8, ge=0, description="sparse training of the float ResConv net")
    lr: float = Field(0.02, gt=0, description="learning rate of sparse training and retraining")
    retrain_epochs: int = Field(0, ge=0, description="retraining after pruning (0: none)")
    finetune_epochs: int = Field(3, ge=0, description="QAT fine-tuning of the fused network")
    finetune_lr: float = Field(0.005, gt=0, description="learning rate of the QAT fine-tune")
    finetune_warmup: int = Field(1, ge=0, description="warm-up epochs of the QAT fine-tune")
    finetune_clip: float | None = Field(2.0, gt=0, description="gradient-norm clipping of the "
                                        "QAT fine-tune (none: off)")
    penalty: Literal["strength", "m"] = Field(
        "strength", description="L1 penalty: |m|*mean|gamma| (BN cannot compensate it) or "
        "|m| (the paper); also the pruning score with --prune-by penalty")
    prune_by: Literal["ratio", "penalty"] = Field(
        "ratio", description="pruning score: the measured share of each layer's conv branch, "
        "rms(m*BN(conv x)) / rms(g*f(x)) on the calibration images (ratio), or the penalty's "
        "own quantity (penalty: |m|*mean|gamma| or |m|)")
    channel_bn: bool = Field(True, description="per-output-channel weight scales for the "
                             "fused convs (a BN after each; FINN absorbs it)")
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay")
    calibration_images: int = Field(256, ge=0,
                                    description="images for activation-scale calibration")
    # not in the record (exclude): the records of resconv variants predate the field, and a
    # rerun finds its finished variant by comparing the recorded settings
    device: Device = Field("auto", exclude=True,
                           description="where to train (auto: a GPU when present)")

    def train_settings(self, epochs: int, lr: float, finetune: bool = False) -> TrainSettings:
        more = ({"warmup_epochs": min(self.finetune_warmup, max(epochs - 1, 0)),
                 "clip_grad_norm": self.finetune_clip} if finetune else {})
        return self.train_settings_for(epochs, lr=lr, weight_decay=self.weight_decay, **more)


def _fingerprint(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _existing(run: RunDir, parent: str, settings: "Settings") -> tuple[Variant | None, int]:
    """A finished variant of this parent with the same settings (variants.find_finished),
    and the next free index."""
    pat = re.compile(rf"^{re.escape(parent)}\.{TAG}(\d+)$")
    ours = [vid for vid in run.ids() if pat.match(vid)]
    last = max((int(pat.match(vid).group(1)) for vid in ours), default=0)
    return find_finished(run, ours, METHOD, settings), last + 1


def sparse_train(run: RunDir, parent: str, data: DataSplits, settings: Settings,
                 progress: bool | None = None) -> tuple[ResConvNet, dict]:
    """The parent converted to ResConv and sparse-trained; cached per (parent, lambda,
    training settings) under run/work/resconv, so several rates share one training and an
    interrupted training resumes from its per-epoch checkpoint."""
    key = {"parent": parent, "dataset": data.name, "lambda": settings.lambda_,
           **({"penalty": settings.penalty} if settings.penalty != "m" else {}),
           "epochs": settings.sparse_epochs, "lr": settings.lr, "batch": settings.batch_size,
           "wd": settings.weight_decay, "seed": settings.seed, "n": len(data.train)}
    work = run.path / "work" / "resconv" / f"{parent}-{_fingerprint(key)}"
    done, info = work / "sparse.pt", work / "sparse.json"
    if done.is_file() and info.is_file():
        return load_resconv(done), json.loads(info.read_text(encoding="utf-8"))
    torch.manual_seed(settings.seed)  # the new 1x1 shortcut convs are randomly initialised
    net = to_resconv(run.load_model(parent))
    init_val = evaluate(net, data.val)
    with Timer() as t:
        result = train(net, data.train, data.val,
                       settings.train_settings(settings.sparse_epochs, settings.lr),
                       checkpoint=work / "sparse-state.pt", progress=progress,
                       extra_loss=lambda m: sparsity_loss(m, settings.lambda_,
                                                          settings.penalty),
                       desc=f"{parent} resconv sparse")
    net.cpu().eval()
    meta = {"init_val": init_val, "val": evaluate(net, data.val), "seconds": t.seconds,
            "history": result.history, "scales": net.scales()}
    save_resconv(net, done)
    from fpgaslim.core.atomic import atomic_write_json

    atomic_write_json(info, meta)
    (work / "sparse-state.pt").unlink(missing_ok=True)
    return net, meta


def _fusion_error(net: ResConvNet, fused: FloatPlainNet, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net.eval()(images) - fused.eval()(images)).abs().max())


def _retrain(pruned: ResConvNet, data: DataSplits, settings: Settings, vdir, vid: str,
             steps: dict, timings: dict, progress: bool | None) -> TrainResult | None:
    """Optional retraining of the pruned float ResConv net (`retrain_epochs`)."""
    if not settings.retrain_epochs:
        return None
    with Timer() as t:
        retrain = train(pruned, data.train, data.val,
                        settings.train_settings(settings.retrain_epochs, settings.lr),
                        checkpoint=vdir / "retrain-state.pt", progress=progress,
                        desc=f"{vid} retrain")
    timings["retrain_s"] = t.seconds
    pruned.cpu()
    steps["retrained_val"] = retrain.best_val_accuracy
    return retrain


def _fuse_and_requantize(pruned: ResConvNet, data: DataSplits, settings: Settings, name: str,
                         steps: dict, timings: dict) -> tuple[Any, float]:
    """The pruned net fused to plain convs (checked in float), with a per-channel BN scale
    when `channel_bn`, re-quantized with Brevitas; returns (model, fusion error)."""
    with Timer() as t:
        arch, state = fuse(pruned.eval(), name=name)
        fused = float_plain(arch, state)
    timings["fuse_s"] = t.seconds
    fusion_err = _fusion_error(pruned, fused, data.val.tensors[0][:256])
    steps["fused_float_val"] = evaluate(fused, data.val)
    steps["fused_float_test"] = evaluate(fused, data.test)  # the quantization check
    calib = data.train.tensors[0][:settings.calibration_images]
    if settings.channel_bn and len(calib):
        arch, state = with_channel_bn(arch, state, calib)
        steps["channel_bn_max_abs_diff"] = _fusion_error(
            fused, float_plain(arch, state), data.val.tensors[0][:256])
    model = requantize(arch, state, calib)
    steps["quantized_val"] = evaluate(model, data.val)
    return model, fusion_err


def _qat_finetune(model: Any, data: DataSplits, settings: Settings, vdir, vid: str,
                  steps: dict, timings: dict, progress: bool | None) -> tuple[Any, TrainResult]:
    """QAT fine-tune of the re-quantized net; the model before it when it got worse."""
    before = copy.deepcopy(model)
    with Timer() as t:
        ft = train(model, data.train, data.val,
                   settings.train_settings(settings.finetune_epochs, settings.finetune_lr,
                                           finetune=True),
                   checkpoint=vdir / "finetune-state.pt", progress=progress,
                   desc=f"{vid} QAT fine-tune")
    timings["finetune_s"] = t.seconds
    model.cpu().eval()
    steps["finetuned_val"] = ft.best_val_accuracy
    if ft.best_val_accuracy < steps["quantized_val"]:
        # seen on Fashion-MNIST ResNet-8: the BN-free fused net's QAT fine-tune blew up
        # (loss 4.6 in epoch 1, then chance); never hand on a model worse than its start
        model = before.cpu().eval()
        steps["finetune_rejected"] = True
    return model, ft


def run(run: RunDir, parent: str, data: DataSplits, settings: Settings, *,
        progress: bool | None = None) -> list[Variant]:
    """One fused, re-quantized variant `<parent>.rc<n>` for (settings.lambda_, settings.rate):
    sparse training, pruning, [retraining], fusion and re-quantization, QAT fine-tune."""
    found, n = _existing(run, parent, settings)
    if found is not None:
        return [found]
    vid = f"{parent}.{TAG}{n}"
    vdir = run.variant_dir(vid)
    vdir.mkdir(parents=True, exist_ok=True)
    parent_rec = run.record(parent)
    timings: dict[str, float] = {}
    with Timer() as total:
        net, sparse = sparse_train(run, parent, data, settings, progress)
        timings["sparse_train_s"] = sparse["seconds"]
        by = ("ratio" if settings.prune_by == "ratio" else
              "strength" if settings.penalty == "strength" else "m")
        pruned, decision = prune(net, settings.rate, by,
                                 data.train.tensors[0][:max(settings.calibration_images, 64)])
        steps = {"parent_val": parent_rec.accuracy.val, "resconv_init_val": sparse["init_val"],
                 "sparse_val": sparse["val"], "pruned_val": evaluate(pruned, data.val)}
        retrain = _retrain(pruned, data, settings, vdir, vid, steps, timings, progress)
        model, fusion_err = _fuse_and_requantize(pruned, data, settings,
                                                 f"{parent_rec.arch.name}-resconv", steps,
                                                 timings)
        model, ft = _qat_finetune(model, data, settings, vdir, vid, steps, timings, progress)
    timings["total_s"] = total.seconds
    summary = describe(model)
    plot = plot_scales(decision, settings.lambda_, vdir / "m_distribution.png",
                       title=f"{vid}: ResConv layer scales after sparse training")
    record = Variant(
        id=vid, parent=parent, method=METHOD, settings=recorded_settings(settings),
        dataset=data.name,
        **summary,
        accuracy=Accuracy(val=max(ft.best_val_accuracy, steps["quantized_val"]),
                          test=evaluate(model, data.test),
                          test_images=len(data.test)),
        timings=timings,
        details={
            "source": "accuracies measured on CPU (PyTorch/Brevitas); val decides, test reports",
            "parent_kind": parent_rec.arch.kind,
            "threshold": decision.threshold, "rate": decision.rate,
            "resconv_layers": decision.layers,
            "pruned_layers": sum(1 for r in decision.layers if r["pruned"]),
            "conv_layers_removed": parent_rec.depth - summary["depth"],
            "fusion_max_abs_diff": fusion_err,
            "accuracy_steps": steps,
            "history": {"sparse": sparse["history"], "finetune": ft.history,
                        **({"retrain": retrain.history} if retrain else {})},
            "plots": {"m_distribution": plot.name},
        })
    run.save(model, record)
    for tmp in ("retrain-state.pt", "finetune-state.pt"):
        (vdir / tmp).unlink(missing_ok=True)
    return [record]


__all__ = ["Settings", "run", "sparse_train"]
