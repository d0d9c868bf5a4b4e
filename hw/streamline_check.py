"""The equality check of fast streamlining (hw/fast_streamline.py): fpgaslim's estimate steps
run in this process on a QONNX file with `fast` or `stock` streamlining, and the graphs they
leave in a canonical serialization. Used by tests/test_fast_streamline.py and
benchmarks/bench_streamline.py; kept apart from the memo itself, which the adapter
(finn_compat) installs, so that the adapter does not import the build steps."""

from __future__ import annotations

from typing import Any

from .boards import DEFAULT_BOARD, as_board


def run_estimate_steps(onnx_path: str, out_dir: str, mode: str,
                       board: Any = DEFAULT_BOARD) -> dict[str, Any]:
    """fpgaslim's estimate step list (hw/build_steps.py) on a QONNX file, in this process,
    without FINN's verification steps, with `mode` "fast" or "stock" streamlining. Returns
    the streamlined graph serialized, the final (folded, estimated) one after canonical
    tensor naming (canonical_bytes), and the seconds of each step. `board`: a Board or its
    name.

    For the equality test and the benchmark only: it needs finn_compat.activate() (a child
    process with finn_compat.child_environment()); builds go through hw/build.py."""
    import time
    from pathlib import Path

    from qonnx.core.modelwrapper import ModelWrapper

    from .build_job import BuildJob
    from .build_steps import preset
    from .finn_config import finn_config

    b = as_board(board)
    out = Path(out_dir)
    (out / "report").mkdir(parents=True, exist_ok=True)
    cfg = finn_config(BuildJob(
        preset="estimate", steps=preset("estimate"), onnx=str(onnx_path), out_dir=str(out),
        finn_dir=str(out), board=b, fpga_part=b.part, target_fps=b.default_target_fps,
        weights="onchip", streamline=mode))
    model = ModelWrapper(str(onnx_path))
    result: dict[str, Any] = {"seconds": {}}
    for step in cfg.steps:
        t0 = time.perf_counter()
        model = step(model, cfg)
        result["seconds"][step.__name__] = round(time.perf_counter() - t0, 3)
        if step.__name__ == "step_fpgaslim_streamline":
            result["streamlined"] = model.model.SerializeToString()
    result["folded"] = canonical_bytes(model)
    return result


def canonical_bytes(model: Any) -> bytes:
    """The serialized graph after qonnx's GiveReadableTensorNames (on a copy): FINN's HW
    conversion names some tensors with random strings, so two builds of one graph differ in
    those names only; tensor names from the graph's structure make them comparable."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveReadableTensorNames

    if not isinstance(model, ModelWrapper):
        model = ModelWrapper(str(model))
    return model.transform(GiveReadableTensorNames()).model.SerializeToString()
