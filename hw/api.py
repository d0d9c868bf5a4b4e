"""The Python API the CLI and the other developers call: build a variant of a run on a board.

`build_variant` exports the variant to QONNX if needed, runs the estimate build with real
test images of the variant's dataset, verifies it, and saves report.json under
variants/<id>/builds/<board>[-<settings hash>]/. A finished build with the same settings is
returned from disk, so a sweep over variants x boards resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from fpgaslim.compress.data import DataSplits, load_for_variant
from fpgaslim.compress.variants import RunDir

from .build import BuildSettings, build_estimate
from .qonnx_export import ensure_qonnx
from .report import HardwareReport, load_report, save_report

__all__ = ["BuildSettings", "HardwareReport", "build_dir_for", "build_variant", "load_report"]


def build_dir_for(run: RunDir, variant_id: str, settings: BuildSettings) -> Path:
    """builds/<board> for the default settings of that board, else builds/<board>-<hash>."""
    s = settings.resolved()
    default = BuildSettings(board=s.board).resolved()
    keyed = s.model_dump(mode="json", exclude={"timeout_s", "strict"})
    name = s.board
    if keyed != default.model_dump(mode="json", exclude={"timeout_s", "strict"}):
        digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{s.board}-{digest}"
    return run.variant_dir(variant_id) / "builds" / name


def build_variant(run: RunDir, variant_id: str, board: str = "pynq-z1",
                  settings: BuildSettings | None = None, data: DataSplits | None = None,
                  verify_images: int = 20) -> HardwareReport:
    """Estimate-build variant `variant_id` of `run` for `board` (settings.board is replaced by
    `board`) and verify it bit-exactly on `verify_images` real test images."""
    settings = (settings or BuildSettings()).model_copy(update={"board": board}).resolved()
    record = run.record(variant_id)
    bdir = build_dir_for(run, variant_id, settings)
    done = bdir / "report.json"
    if done.is_file():
        report = load_report(done)
        if report.settings.get("verify_images") == verify_images:
            return report
    model = run.load_model(variant_id)
    vdir = run.variant_dir(variant_id)
    record = ensure_qonnx(run, variant_id, model)
    if data is None:
        data = load_for_variant(run, variant_id, limit_train=1)
    n = max(1, verify_images)  # FINN's own verification steps need one image
    images, labels = data.test.tensors[0][:n], data.test.tensors[1][:n]
    work = bdir / "work"
    if work.exists():
        shutil.rmtree(work)  # an unfinished attempt: redo it
    report = build_estimate(vdir / record.qonnx, work, settings,
                            model=model if verify_images > 0 else None, images=images,
                            labels=labels, variant=variant_id,
                            prefix_cache=run.variant_dir(variant_id) / "builds" / ".prefix")
    report.settings["verify_images"] = verify_images
    save_report(report, done)
    return report
