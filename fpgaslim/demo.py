"""The main job: a small sweep on the embedded digits data that needs nothing else.

ResNet-14 (half width, two units per stage, so layer fusion has blocks to remove) w4a4 -> dynamic channel pruning + layer fusion (the paper's chain) and
ResConv-Prune -> FINN estimate builds for a Zynq and an Alveo board, bit-exact verification,
-> comparison table and HTML report. Small epoch budgets: minutes on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

from fpgaslim.core.config import validate
from fpgaslim.sweep import SweepConfig

DEMO = {
    "baseline": {"data": {"dataset": "digits"}, "model": "resnet14", "width": 0.5,
                 "train": {"epochs": 8, "lr": 0.05, "batch_size": 32}},
    "methods": [
        {"method": "dynamic-prune+fuse", "preset": "cpu", "settings": {
            "dynamic-prune": {"iterations": 2, "epochs": 2, "patience": 2, "tolerance": 1.0,
                              "channel_multiple": 4},
            "layer-fusion": {"short_epochs": 1, "long_epochs": 2, "group_size": 2,
                             "max_removals": 2}}},
        {"method": "resconv", "preset": "cpu", "settings": {
            "sparse_epochs": 4, "retrain_epochs": 1, "finetune_epochs": 2, "rate": 0.4}},
    ],
    "boards": ["pynq-z1", "u250"],
    "verify_images": "all",  # every test image of the dataset (digits: seconds)
    # max-fit fps (optimal folding, HLS/RTL per layer, 85 % LUT) of every variant on the Zynq
    # board, where the budget binds. The U250 is left out: measured on a copy of a demo run
    # (load 8-9) it took 303 s wall / 115 CPU-s for the five variants, and every one of them
    # reached the same 980,392 fps, the graph's full parallelism, at under 1 % of its LUTs,
    # so it would show the networks' parallelism ceiling, not what compression buys
    "folding_search": {"enabled": True, "method": "optimal", "boards": ["pynq-z1"]},
}


def demo_config(out: str | Path) -> SweepConfig:
    return validate(SweepConfig, {**DEMO, "run_dir": str(out)}, "demo")
