"""`fpgaslim verify`: run the bit-exact verification again on an existing build, on N images.

The folded dataflow graph of a finished build (builds/<board>/work/finn/intermediate_models)
is executed in a child process (it imports finn-plus; `python -m fpgaslim.hw.verify_run
job.json`, time-limited like the build), batched (hw/fast_exec.py), on the first N test images
of the variant's dataset; the parent compares end to end and layer by layer (hw/verify.py,
hw/verify_layers.py) and writes the result into the build's report.json as its
`verification` record.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fpgaslim.core.errors import BuildTimeoutError, ConfigError, FpgaslimError

from .boards import Board, as_board
from .child import run_logged
from .verify import LAST_STEP, Verification, compare_outputs


def find_build(run, variant_id: str, board: Board) -> Path:
    """The build folder of `variant_id` for `board` that holds its folded graph, chosen by
    the one rule of hw/build_key.choose_build (the default-settings build, else the newest)."""
    from .build_key import choose_build, find_builds

    builds = run.variant_dir(variant_id) / "builds"
    done = [(d, rec) for d, rec in find_builds(run, variant_id, "estimate", board=board)
            if (d / "work" / "finn" / "intermediate_models" / f"{LAST_STEP}.onnx").is_file()]
    chosen = choose_build(done)
    if chosen is None:
        raise ConfigError(f"no finished build of variant {variant_id!r} for {board.name} in "
                          f"{builds}: run `fpgaslim build {run.path} --variant {variant_id} "
                          f"--board {board.name}` first")
    return chosen[0]


def verify_build(run, variant_id: str, board: str | Board, images: int | str = 20, data=None,
                 layer_images: int | None = None, timeout_s: float = 3600.0) -> Verification:
    """Verify the existing build of `variant_id` on `board` on its first `images` test images
    ("all": the whole test split); never raises for a mismatch: the record says it. Saves it
    into the build's report. `board`: a Board, or a name looked up here."""
    from fpgaslim.compress.data import load_for_variant

    from .finn_compat import child_environment
    from .report import load_report, save_report
    from .verify import ALL_IMAGES, LAYER_IMAGES, image_count

    if images != ALL_IMAGES and (not isinstance(images, int) or images < 1):
        raise ConfigError(f"--images must be at least 1 or 'all', got {images!r}")
    bdir = find_build(run, variant_id, as_board(board))
    if run.record(variant_id).is_imported:
        raise ConfigError(f"variant {variant_id!r} is an imported QONNX file: it has no PyTorch "
                          "model to verify against; rebuild it with `fpgaslim build MODEL.onnx "
                          "--board B --verify-images N` (verified against the file itself)")
    model = run.load_model(variant_id)
    if data is None:
        data = load_for_variant(run, variant_id, limit_train=1)
    n = image_count(images, len(data.test), "--images")
    x, y = data.test.tensors[0][:n], data.test.tensors[1][:n]
    out = bdir / "work" / "verify"
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "inputs.npy", x.detach().cpu().float().numpy())
    job = {"finn_out": str(bdir / "work" / "finn"), "inputs": str(out / "inputs.npy"),
           "out_npz": str(out / "hw_outputs.npz"),
           "layer_images": int(layer_images or LAYER_IMAGES)}
    (out / "job.json").write_text(json.dumps(job), encoding="utf-8")
    env = child_environment(out)
    try:
        rc = run_logged([sys.executable, "-m", "fpgaslim.hw.verify_run", str(out / "job.json")],
                        out / "child.log", timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise BuildTimeoutError(f"executing the dataflow graph on {images} images ran past "
                                f"{timeout_s:g} s; use fewer --images") from None
    if rc != 0:
        tail = (out / "child.log").read_text(encoding="utf-8", errors="replace")[-1500:]
        raise FpgaslimError(f"executing the dataflow graph failed (log {out / 'child.log'}):"
                            f"\n{tail}")
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    v = compare_outputs(out / "hw_outputs.npz", model, x, y, res["exec_s"],
                        res["last_layer"], strict=False)
    report = load_report(bdir / "report.json")
    report.verification = v
    report.settings["verify_images"] = ALL_IMAGES if images == ALL_IMAGES else len(x)
    save_report(report, bdir / "report.json")
    return v


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f} %"


def summary(v: Verification) -> str:
    """One paragraph for the terminal: verified or the first diverging layer."""
    from .verify_layers import describe_failure

    lv = v.layers
    head = (f"{v.images} images, {v.images_per_s:,.0f} images/s; end to end "
            f"{v.images - v.mismatched_images}/{v.images} identical; hardware accuracy "
            f"(simulated) {_pct(v.hw_accuracy)} vs Brevitas {_pct(v.brevitas_accuracy)}")
    if lv is None:
        return ("verified" if v.verified else "NOT verified") + ": " + head
    layers = (f"{len(lv.layers)} layers checked on {lv.images} images, {lv.errors} errors, "
              f"{lv.near_ties} near-ties")
    if v.verified:
        return f"verified: {head}; {layers}"
    why = describe_failure(lv) if not lv.verified else "an output difference no layer explains"
    return f"NOT verified: {head}; {layers}; {why}"


def _child(job_path: str) -> int:
    from . import finn_compat
    from .verify import execute_dataflow

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    finn_compat.activate()
    t0 = time.time()
    last = execute_dataflow(Path(job["finn_out"]), Path(job["inputs"]), Path(job["out_npz"]),
                            layer_images=job["layer_images"])
    result = {"last_layer": last, "exec_s": time.time() - t0}
    Path(job["out_npz"]).with_name("result.json").write_text(json.dumps(result),
                                                              encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
