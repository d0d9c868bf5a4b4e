"""Registry of compression methods (timm style): name -> module, or a composite of methods.

Each method module defines (the `Method` protocol below)
  * `Settings`: a pydantic model on `method_settings.MethodSettings` (extra="forbid"; the
    shared training fields lr, batch_size, seed, device) with a `PRESETS` dict behind
    `Settings.preset(name, **overrides)` ("cpu", "full", ...); its top-level scalar fields
    become CLI options (`retrain_epochs` -> `--retrain-epochs`; a field alias such as
    `lambda` is used as is);
  * `run(run: RunDir, parent: str, data: DataSplits, settings: Settings, *,
         progress: bool | None = None) -> list[Variant]`: reads variant `parent` from the run,
    writes new variants (never edits the parent) and returns them. Finished variants found in
    the run are returned without redoing them, so an interrupted method resumes: by the one
    rule of `variants.finished` (the record exists and was made with these settings);
  * `NEEDS`: what it needs from a model that is not a zoo model, a tuple of "channels"
    (channel groups Torch-Pruning can trace), "blocks" (the residual-block protocol of
    models/blocks.py), "units" (blocks whose class names the BatchNorm ending its branch),
    "chain" (a network that turns into one plain chain); models/user.require_needs checks
    them and says what is missing.
Adding a method is that module plus one line below. A `chain.Composite` of registered
methods (run in a row, each on the last variant of the one before) is registered the same way
and has the same two attributes. Methods are imported lazily: the CLI should not pay for
torch-pruning to print --help.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from fpgaslim.core.errors import ConfigError, UnknownNameError

from .chain import Composite

if TYPE_CHECKING:
    from .data import DataSplits
    from .variants import RunDir, Variant


@runtime_checkable
class Method(Protocol):
    """A compression method: a module (or a chain.Composite) with these three attributes."""

    Settings: type[BaseModel]
    NEEDS: tuple[str, ...]

    def run(self, run: "RunDir", parent: str, data: "DataSplits", settings: Any, *,
            progress: bool | None = None) -> "list[Variant]": ...

METHODS: dict[str, str | Composite] = {
    "dynamic-prune": "fpgaslim.compress.dynamic_prune",
    "layer-fusion": "fpgaslim.compress.layer_fusion",
    "resconv": "fpgaslim.compress.resconv",
    "layer-importance": "fpgaslim.compress.layer_importance",
    "magnitude-prune": "fpgaslim.compress.magnitude_prune",
    "dynamic-prune+fuse": Composite("dynamic-prune", "layer-fusion", help="the paper's chain: "
                                    "dynamic-prune, then layer-fusion of its last variant"),
}


#: one-line summaries for `fpgaslim compress --help` (cheap: no method import); a method
#: without one shows the first line of its module docstring
METHOD_HELP: dict[str, str] = {
    "dynamic-prune": "channel pruning by feature-map sparsity, binary-searched threshold",
    "layer-fusion": "remove thin residual blocks with distillation and short/long fine-tuning",
    "resconv": "ResConv-Prune: fusible residual convs, L1 layer scales, fused to plain convs",
    "layer-importance": "learned residual-unit importance, recursive reduction",
    "magnitude-prune": "peer: Torch-Pruning's L1 / group-norm pruner to a MACs target",
}


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> Method:
    """The method `name`: a module (or a Composite) with `Settings` and `run`."""
    if name not in METHODS:
        raise UnknownNameError("compression method", name, list_methods())
    entry = METHODS[name]
    if isinstance(entry, Composite):
        return entry.with_lookup(get_method)
    return importlib.import_module(entry)


def method_help(name: str) -> str:
    if name in METHOD_HELP:
        return METHOD_HELP[name]
    return ((get_method(name).__doc__ or name).strip().splitlines() or [name])[0]


def method_steps(name: str) -> tuple[str, ...]:
    """The registered methods that `name` runs: itself, or a composite's steps."""
    entry = METHODS.get(name)
    return entry.STEPS if isinstance(entry, Composite) else (name,)


def method_settings(name: str, preset: str = "cpu", overrides: dict[str, Any] | None = None,
                    source: str = "") -> BaseModel:
    """Validated settings of method `name`: preset `preset` with `overrides` on top (a
    composite: one dict per step, named by its method). A wrong field is a ConfigError that
    names it (in `source`, e.g. a config file), an unknown preset lists the valid ones."""
    settings_cls = get_method(name).Settings
    try:
        return settings_cls.preset(preset, **(overrides or {}))
    except ValidationError as exc:
        from fpgaslim.core.config import format_validation_error

        raise ConfigError(format_validation_error(exc, source or f"{name} settings")) from exc
