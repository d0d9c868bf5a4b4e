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
    # max-fit fps (optimal folding, HLS/RTL per layer, 85 % LUT) of every variant on every
    # board: the report's throughput. On the U250 every demo variant reaches the graph's full
    # parallelism at under 1 % of its LUTs (measured: 980,392 fps each), which is what that
    # board holds: there compression buys memory, not speed
    "folding_search": {"enabled": True, "method": "optimal"},
}


def demo_config(out: str | Path) -> SweepConfig:
    return validate(SweepConfig, {**DEMO, "run_dir": str(out)}, "demo")
