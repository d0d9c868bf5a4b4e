"""Variant records and run directories.

A run directory holds the variants of one run: `variants/<id>/{model.pt, record.json}` plus
exports and builds. The record is written last and atomically, so a variant whose record
exists is complete; anything else in the folder is an unfinished attempt and is redone.
Variants are immutable: a method reads a parent and writes new ids, never edits one.

Every compression method resumes by one rule, `finished`: a variant is finished when its
record exists and was made by that method with the settings asked for now (a record that
predates a settings field counts as made with its default).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from fpgaslim.core.atomic import atomic_write, atomic_write_text
from fpgaslim.core.errors import CheckpointError, ConfigError

from .models import Arch, build_model
from .stats import conv_depth, count_macs, count_params, layer_widths
from .train import load_state

CHECKPOINT_FORMAT = "fpgaslim-checkpoint/1"


class Accuracy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    test: float | None = None
    val: float | None = None
    test_images: int = 0


class Variant(BaseModel):
    """Everything the comparison needs about one model, with no need to load it."""

    model_config = ConfigDict(extra="forbid")
    id: str
    parent: str | None = None
    method: str
    settings: dict[str, Any] = Field(default_factory=dict)
    dataset: str
    arch: Arch
    depth: int
    widths: dict[str, int]
    params: int
    macs: int
    macs_by_layer: dict[str, int]
    accuracy: Accuracy
    checkpoint: str = "model.pt"
    qonnx: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def tag(self) -> str:
        return f"{self.id} ({self.method}, {self.arch.bits.tag})"

    @property
    def is_imported(self) -> bool:
        """An imported QONNX / FINN-ONNX file (hw/api.import_onnx): no PyTorch model."""
        return getattr(self.arch, "source", None) == "qonnx"


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


def check_id(vid: str) -> str:
    if not _ID.match(vid):
        raise ConfigError(f"variant id {vid!r}: use letters, digits and _.+- only")
    return vid


def recorded_settings(settings: BaseModel) -> dict[str, Any]:
    """A method's settings as its variants record them (aliases as written: `lambda`)."""
    return settings.model_dump(mode="json", by_alias=True)


def settings_differ(recorded: dict[str, Any], settings: BaseModel,
                    ignore: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
    """field -> (recorded, now) for the settings that differ between a record and `settings`,
    leaving out `ignore` and the settings' UNKEYED; a field the record predates counts as
    made with the field's default, a field the settings no longer have is not compared."""
    now = recorded_settings(settings)
    cls = type(settings)
    defaults = recorded_settings(cls.model_construct())
    skip = set(getattr(cls, "UNKEYED", ())) | set(ignore)
    out = {}
    for name, field in cls.model_fields.items():
        key = field.alias or name
        if name in skip or key in skip or key not in now:
            continue
        old = recorded.get(key, defaults.get(key))
        if old != now[key]:
            out[key] = (old, now[key])
    return out


def finished(run: "RunDir", vid: str, method: str, settings: BaseModel,
             ignore: Iterable[str] = ()) -> Variant | None:
    """The resume rule of every compression method: variant `vid`, when its record exists
    (the commit point) and it was made by `method` with these `settings` (settings_differ;
    `ignore`: fields that do not change this variant, e.g. a loop's stopping rule). None:
    not made yet (whatever its folder holds is redone). A record of `vid` made otherwise is
    an error naming what differs: the new variant would take its id."""
    if not run.has(vid):
        return None
    rec = run.record(vid)
    diff = ({"method": (rec.method, method)} if rec.method != method
            else settings_differ(rec.settings, settings, ignore))
    if diff:
        what = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in diff.items())
        raise ConfigError(f"variant {vid!r} of {run.path} was made with other settings "
                          f"({what}); resume with its settings, or use another run folder "
                          "(or delete that variant and the variants made from it)")
    return rec


def find_finished(run: "RunDir", vids: Iterable[str], method: str, settings: BaseModel
                  ) -> Variant | None:
    """The first of `vids` that is finished for these settings (`finished`'s rule), for a
    method whose variant ids do not say its settings (e.g. resconv's numbered ones)."""
    for vid in vids:
        if run.has(vid):
            rec = run.record(vid)
            if rec.method == method and not settings_differ(rec.settings, settings):
                return rec
    return None


def describe(model: nn.Module) -> dict[str, Any]:
    """The architecture summary fields of a record, measured on the model."""
    arch = model.arch
    macs = count_macs(model, arch.in_shape)
    return {"arch": arch, "depth": conv_depth(model), "widths": layer_widths(model),
            "params": count_params(model), "macs": sum(macs.values()), "macs_by_layer": macs}


class RunDir:
    """The folder of one run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def variant_dir(self, vid: str) -> Path:
        return self.path / "variants" / check_id(vid)

    def has(self, vid: str) -> bool:
        return (self.variant_dir(vid) / "record.json").is_file()

    def ids(self) -> list[str]:
        root = self.path / "variants"
        if not root.is_dir():
            return []
        found = [d for d in root.iterdir() if (d / "record.json").is_file()]
        return [d.name for d in sorted(found, key=lambda d: (d / "record.json").stat().st_mtime)]

    def record(self, vid: str) -> Variant:
        path = self.variant_dir(vid) / "record.json"
        if not path.is_file():
            known = ", ".join(self.ids()) or "none"
            raise ConfigError(f"no variant {vid!r} in run {self.path} (variants: {known})")
        try:
            return Variant.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise CheckpointError(f"{path} is not a valid variant record: {exc}") from exc

    def records(self) -> list[Variant]:
        return [self.record(v) for v in self.ids()]

    def save(self, model: nn.Module, record: Variant) -> Variant:
        """Write checkpoint, then record (the commit point)."""
        vdir = self.variant_dir(record.id)
        save_checkpoint(model, vdir / record.checkpoint)
        atomic_write_text(vdir / "record.json", record.model_dump_json(indent=2))
        return record

    def update(self, record: Variant) -> Variant:
        """Rewrite the record of an existing variant (export path, test accuracy, timings)."""
        atomic_write_text(self.variant_dir(record.id) / "record.json",
                          record.model_dump_json(indent=2))
        return record

    def load_model(self, vid: str) -> nn.Module:
        return load_checkpoint(self.variant_dir(vid) / self.record(vid).checkpoint)


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """The one writer of fpgaslim checkpoints (a variant's, a method's work snapshots):
    architecture record + CPU state dict, atomically; `load_checkpoint` reads it back."""
    payload = {"format": CHECKPOINT_FORMAT, "arch": model.arch.model_dump(mode="json"),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    atomic_write(Path(path), lambda p: torch.save(payload, p))


def load_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild a model from an fpgaslim checkpoint (weights_only loading, strict keys)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    state = load_state(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an fpgaslim checkpoint (no '{CHECKPOINT_FORMAT}' "
                              "header); was it written by another tool?")
    try:
        model = build_model(state["arch"])
        model.load_state_dict(state["state_dict"])
    except (ValidationError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: weights do not match the stored architecture: "
                              f"{str(exc).splitlines()[0]}") from exc
    return model.eval()


class Timer:
    """`with Timer() as t: ...; t.seconds` for the timings of a record."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
