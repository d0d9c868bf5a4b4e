"""fpgaslim: compress quantized CNNs and see which variant fits your FPGA before Vivado.

The Python API mirrors the CLI (imports are lazy so `import fpgaslim` stays cheap):

    import fpgaslim
    rec = fpgaslim.train_job("runs/a", fpgaslim.TrainJob(model="resnet8"))
    report = fpgaslim.build_job("runs/a", rec.id, "pynq-z1")
    variants = fpgaslim.run_method("runs/a", "dynamic-prune", rec.id, settings)
    # any registered method by name, settings as overrides of a preset (a chain: per step)
    variants = fpgaslim.run_method("runs/a", "dynamic-prune+fuse", rec.id,
                                   {"layer-fusion": {"max_removals": 2}}, preset="cpu")
    result = fpgaslim.run_sweep(fpgaslim.load_sweep("sweep.yaml"))
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

# brevitas warns at import that an optional CUDA kernel package is missing; irrelevant here,
# and it would repeat in every build worker process
warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")

__version__ = "0.1.0"

_API = {
    "TrainJob": "fpgaslim.pipeline", "DataSettings": "fpgaslim.pipeline",
    "train_job": "fpgaslim.pipeline", "export_variant": "fpgaslim.pipeline",
    "run_method": "fpgaslim.pipeline", "run_chain": "fpgaslim.pipeline",
    "build_job": "fpgaslim.pipeline", "add_model": "fpgaslim.pipeline",
    "simulate": "fpgaslim.pipeline",
    "build_onnx": "fpgaslim.hw.api",
    "SweepConfig": "fpgaslim.sweep", "load_sweep": "fpgaslim.sweep", "run_sweep": "fpgaslim.sweep",
    "RunDir": "fpgaslim.compress.variants", "Variant": "fpgaslim.compress.variants",
    "load_dataset": "fpgaslim.compress.data", "create_model": "fpgaslim.compress.models",
    "BitWidths": "fpgaslim.compress.models", "TrainSettings": "fpgaslim.compress.train",
    "get_method": "fpgaslim.compress.methods", "list_methods": "fpgaslim.compress.methods",
    "get_board": "fpgaslim.hw.boards", "list_boards": "fpgaslim.hw.boards",
    "BuildSettings": "fpgaslim.hw.build", "load_report": "fpgaslim.hw.report",
    "compare_runs": "fpgaslim.compare",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'fpgaslim' has no attribute {name!r}")
