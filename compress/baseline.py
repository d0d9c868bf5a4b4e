"""Train a baseline QAT model into a run directory: the root variant every method starts from."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from pydantic import BaseModel, ConfigDict, Field

from .data import DataSplits
from .models import BitWidths, create_model
from .train import TrainSettings, evaluate, train
from .models.user import create_user_model, is_factory_ref
from .variants import Accuracy, RunDir, Timer, Variant, check_id, describe


class BaselineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "resnet8"  # a zoo name, or your own: path/to/file.py:factory, pkg.mod:factory
    model_args: dict = Field(default_factory=dict)  # keyword arguments of your factory
    width: float = Field(1.0, gt=0)
    bits: BitWidths = BitWidths()
    train: TrainSettings = TrainSettings()


def finish_runtime_scales(model: nn.Module, data: DataSplits, batches: int = 4) -> int:
    """Brevitas activation scales that start from runtime statistics exist as parameters only
    once their statistics phase has ended; a model that never trained (or trained for fewer
    steps, e.g. `--epochs 0`) would save a state dict that does not load back. Such scales are
    initialised here from a few training batches with Brevitas' own calibration mode (eval
    mode: weights and BatchNorm statistics are untouched). Returns how many were pending."""
    pending = [m for m in model.modules() if hasattr(m, "init_scale")
               and getattr(m, "counter", 0) <= getattr(m, "collect_stats_steps", -1)]
    if not pending:
        return 0
    from brevitas.graph.calibrate import calibration_mode
    from torch.utils.data import DataLoader

    was = model.training
    model.eval()
    with torch.no_grad(), calibration_mode(model):
        for i, (x, _) in enumerate(DataLoader(data.train, batch_size=64, shuffle=False)):
            model(x.to(next(model.parameters()).device))
            if i + 1 >= batches:
                break
    model.train(was)
    return len(pending)


def train_baseline(run: RunDir, data: DataSplits, settings: BaselineSettings,
                   variant_id: str = "baseline", progress: bool | None = None,
                   model: nn.Module | None = None) -> Variant:
    """Train (or resume training) and save the baseline; a finished one is returned as is.

    `model`: your own module (with an `arch` record, compress/models/user.py) instead of the
    one `settings.model` names; with `train.epochs == 0` its weights are kept as they are."""
    check_id(variant_id)
    if run.has(variant_id):
        return run.record(variant_id)
    torch.manual_seed(settings.train.seed)  # the initial weights are part of the recipe
    if model is None and is_factory_ref(settings.model):
        model = create_user_model(settings.model, data.input_shape, data.num_classes,
                                  settings.model_args)
    elif model is None:
        model = create_model(settings.model, data.input_shape, data.num_classes, settings.bits,
                             settings.width)
    ckpt: Path = run.variant_dir(variant_id) / "train-state.pt"
    with Timer() as t:
        result = train(model, data.train, data.val, settings.train, checkpoint=ckpt,
                       desc=f"{variant_id}", progress=progress)
        finish_runtime_scales(model, data)
    record = Variant(
        id=variant_id, method="baseline", settings=settings.model_dump(mode="json"),
        dataset=data.name, **describe(model),
        accuracy=Accuracy(test=evaluate(model, data.test), val=result.best_val_accuracy,
                          test_images=len(data.test)),
        timings={"train_s": t.seconds},
        details={"history": result.history, "data_source": data.source,
                 "data": data.origin,
                 **({"warnings": result.warnings} if result.warnings else {})})
    run.save(model.cpu(), record)
    ckpt.unlink(missing_ok=True)
    return record
