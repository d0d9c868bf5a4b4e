"""Registry of compression methods (timm style): name -> module.

Each method module defines
  * `Settings`: a pydantic model (extra="forbid") with `Settings.preset(name)` for the
    "cpu" and "full" recipes; its top-level scalar fields become CLI options
    (`retrain_epochs` -> `--retrain-epochs`; a field alias such as `lambda` is used as is);
  * `run(run: RunDir, parent: str, data: DataSplits, settings: Settings, *,
         progress: bool | None = None) -> list[Variant]`: reads variant `parent` from the run,
    writes new variants (never edits the parent) and returns them. Finished variants found in
    the run are returned without redoing them, so an interrupted method resumes.
Methods are imported lazily: the CLI should not pay for torch-pruning to print --help.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fpgaslim.core.errors import UnknownNameError

METHODS: dict[str, str] = {
    "dynamic-prune": "fpgaslim.compress.dynamic_prune",
    "layer-fusion": "fpgaslim.compress.layer_fusion",
    "resconv": "fpgaslim.compress.resconv",
    "layer-importance": "fpgaslim.compress.layer_importance",
    "magnitude-prune": "fpgaslim.compress.magnitude_prune",
}


METHOD_HELP: dict[str, str] = {
    "dynamic-prune": "channel pruning by feature-map sparsity, binary-searched threshold",
    "layer-fusion": "remove thin residual blocks with distillation and short/long fine-tuning",
    "resconv": "ResConv-Prune: fusible residual convs, L1 layer scales, fused to plain convs",
    "layer-importance": "learned residual-unit importance, recursive reduction",
    "magnitude-prune": "peer: Torch-Pruning's L1 / group-norm pruner to a MACs target",
}


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise UnknownNameError("compression method", name, list_methods())
    return importlib.import_module(METHODS[name])
