"""The Python API the CLI and the other developers call: build a variant of a run on a board.

`build_variant` exports the variant to QONNX if needed, runs the estimate build with real
test images of the variant's dataset, verifies it, and saves report.json and its build record
(build.json, hw/build_key.py) under variants/<id>/builds/<board>[-<settings hash>]/. A build
whose record holds the key computed now is returned from disk, so a sweep over variants x
boards resumes where it stopped, and a changed model, setting or FINN version builds again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fpgaslim.compress.data import DataSplits, load_for_variant
from fpgaslim.compress.variants import RunDir

from .boards import DEFAULT_BOARD, Board, as_board
from .build import BuildSettings, attach_second_opinion, build_estimate
from .build_key import build_dir_for, is_done, variant_key, write_record
from .second_opinion import needs_second_opinion
from .qonnx_export import ensure_qonnx
from .report import HardwareReport, load_report, save_report

if TYPE_CHECKING:
    from .onnx_input import InputSpec

__all__ = ["BuildSettings", "HardwareReport", "build_dir_for", "build_onnx", "build_variant",
           "import_onnx", "load_report"]


def _check_export(run: RunDir, variant_id: str, path: Path) -> None:
    """A damaged export of a variant: say so, and how to write it again."""
    from fpgaslim.core.errors import CheckpointError

    from .onnx_input import open_onnx

    try:
        open_onnx(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}. For this variant: `fpgaslim export {run.path} --variant "
                              f"{variant_id}` writes it again") from exc


def build_variant(run: RunDir, variant_id: str, board: str | Board = DEFAULT_BOARD,
                  settings: BuildSettings | None = None, data: DataSplits | None = None,
                  verify_images: int | str = 20) -> HardwareReport:
    """Estimate-build variant `variant_id` of `run` for `board` (a Board, or a name looked up
    here; settings.board is replaced by it) and verify it bit-exactly on `verify_images` real
    test images ("all": every one)."""
    from .verify import ALL_IMAGES, is_all

    verify_images = ALL_IMAGES if is_all(verify_images) else verify_images  # one key for "All"
    settings = (settings or BuildSettings()).for_board(as_board(board)).resolved()
    record = run.record(variant_id)
    if record.is_imported:  # an imported file: no PyTorch model
        return _build_imported(run, record, settings, verify_images)
    bdir = build_dir_for(run, variant_id, settings)
    done = bdir / "report.json"
    key = variant_key(run, variant_id, settings, "estimate", verify_images)
    if is_done(bdir, key):
        report = load_report(done)
        if needs_second_opinion(report, settings) and (bdir / "work").is_dir():
            attach_second_opinion(report, bdir / "work", settings)
            report.settings.update(synth=settings.synth, sim=settings.sim)
            save_report(report, done)
        return report
    model = run.load_model(variant_id)
    vdir = run.variant_dir(variant_id)
    record = ensure_qonnx(run, variant_id, model)
    _check_export(run, variant_id, vdir / record.qonnx)
    if data is None:
        data = load_for_variant(run, variant_id, limit_train=1)
    from .verify import image_count

    n = max(1, image_count(verify_images, len(data.test)))  # FINN's own steps need one image
    images, labels = data.test.tensors[0][:n], data.test.tensors[1][:n]
    work = bdir / "work"
    if work.exists():
        shutil.rmtree(work)  # an unfinished attempt: redo it
    report = build_estimate(vdir / record.qonnx, work, settings,
                            model=model if verify_images != 0 else None, images=images,
                            labels=labels, variant=variant_id,
                            prefix_cache=run.variant_dir(variant_id) / "builds" / ".prefix")
    report.settings["verify_images"] = verify_images
    save_report(report, done)
    write_record(bdir, key)  # the commit point: done from here on
    return report


# --------------------------------------------------------------------------- a QONNX file in
ONNX_VARIANT = "baseline"  # the file is its run's baseline, so --variant can be left out
SOURCE_FILE, INPUTS_FILE = "source.onnx", "verify_inputs.npz"
HW_QONNX_FILE = "model.hw.qonnx.onnx"  # the hardware form, where it differs (hw/onnx_input.py)


def _graph_summary(model) -> dict:
    """depth / widths / params / MACs of a QONNX graph, counted on its weight layers
    (Conv, MatMul, Gemm) from qonnx's inferred shapes."""
    depth, widths, macs, params = 0, {}, {}, 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        w = model.get_initializer(node.input[1])
        producer = model.find_producer(node.input[1])
        if w is None and producer is not None:
            w = model.get_initializer(producer.input[0])
        wshape = model.get_tensor_shape(node.input[1]) if w is None else list(w.shape)
        out = model.get_tensor_shape(node.output[0]) or []
        depth += 1
        n_w = int(np.prod(wshape)) if wshape else 0
        params += n_w
        if node.op_type == "Conv":
            widths[node.name] = int(wshape[0])
            macs[node.name] = int(np.prod(out[2:]) * n_w) if len(out) > 2 else n_w
        else:
            widths[node.name] = int(wshape[-1]) if node.op_type == "MatMul" else int(wshape[0])
            macs[node.name] = n_w
    return {"depth": depth, "widths": widths, "params": params, "macs": sum(macs.values()),
            "macs_by_layer": macs}


def _bits_label(model) -> str:
    from collections import Counter

    bits = Counter()
    for node in model.graph.node:
        if node.op_type == "Quant":
            b = model.get_initializer(node.input[3])
            if b is not None:
                bits[int(np.asarray(b).reshape(-1)[0])] += 1
    return "qonnx " + "/".join(str(b) for b in sorted(bits)) + "-bit" if bits else "qonnx"


def import_onnx(path: str | Path, out: str | Path, data: str | None = None,
                verify_images: int | str = 20, seed: int = 0, data_dir: str | None = None,
                input: "InputSpec | dict | None" = None, topk: int | None = None):
    """The run folder `out` for QONNX file `path`: its record (variant 'baseline', the file's
    sha256, the input quantizer), the prepared graph and the verification inputs. A folder
    that already holds this file is reused; one that holds another file (or this path with
    other contents) is an error. `input`: the pixels the accelerator reads and the file's
    pre-processing (onnx_input.InputSpec), prepended to the graph; `topk`: FINN's top-k
    appended (the accelerator returns class indices)."""
    from fpgaslim.core.atomic import atomic_write_text
    from fpgaslim.core.config import validate
    from fpgaslim.compress.data import load_dataset
    from fpgaslim.compress.models.arch import UserArch, UserBits
    from fpgaslim.compress.variants import Accuracy, Variant
    from fpgaslim.core.errors import ConfigError

    from .onnx_input import (InputSpec, insert_topk, open_onnx, prepare_onnx, random_integers,
                             sha256_file, to_integers)
    from .qonnx_export import QONNX_FILE, execute_qonnx, load_onnx

    spec = (input if isinstance(input, InputSpec) or input is None
            else validate(InputSpec, input, "input"))
    spec_json = spec.model_dump(mode="json") if spec is not None else None
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
        raise ConfigError(f"topk must be a number of classes >= 1, got {topk!r}")
    path = Path(path).resolve()
    run = RunDir(out)
    graph = open_onnx(path)
    digest = sha256_file(path)
    vid = ONNX_VARIANT
    vdir = run.variant_dir(vid)
    if run.has(vid):
        rec = run.record(vid)
        had = getattr(rec.arch, "file_sha256", None)
        if had != digest:
            raise ConfigError(
                f"{run.path} already holds a build of {rec.settings.get('file', 'another model')}"
                f" (sha256 {str(had)[:12]}...), not of {path} (sha256 {digest[:12]}...); give "
                "another --out, or delete that folder to rebuild")
        if (rec.settings.get("data") == data
                and rec.settings.get("verify_images") == verify_images
                and rec.settings.get("input") == spec_json and rec.settings.get("topk") == topk):
            return run, rec
        (vdir / "record.json").unlink()  # other verification data: a new record, same file
    vdir.mkdir(parents=True, exist_ok=True)
    graph.save(str(vdir / SOURCE_FILE))  # one file: external data (FILE.onnx.data) inline
    iq = prepare_onnx(vdir / SOURCE_FILE, vdir / QONNX_FILE, where=str(path), input_spec=spec)
    build_file = QONNX_FILE
    if spec is not None and spec.mean is not None:
        # a mean offset before a zero-padded conv: the hardware graph takes the exact integer
        # form; the reference (QONNX_FILE) stays the file plus its pre-processing as given
        hw_iq = prepare_onnx(vdir / SOURCE_FILE, vdir / HW_QONNX_FILE, where=str(path),
                             input_spec=spec, exact_offset=True)
        if hw_iq.hardware_form:
            build_file, iq = HW_QONNX_FILE, hw_iq
        else:
            (vdir / HW_QONNX_FILE).unlink()
    if topk is not None:  # the build's graph ends in top-k; the reference keeps the logits
        topk_file = f"model_top{topk}.onnx"
        insert_topk(vdir / build_file, vdir / topk_file, topk, str(path))
        build_file = topk_file
    from .verify import ALL_IMAGES, image_count, is_all

    verify_images = ALL_IMAGES if is_all(verify_images) else verify_images
    if verify_images == ALL_IMAGES and not data:
        raise ConfigError("--verify-images all needs --data (a test split); random inputs "
                          "need a number of images")
    n = None if verify_images == ALL_IMAGES else max(1, image_count(verify_images, 1 << 30))
    labels, classes, origin_label = None, None, None
    if data:
        splits = load_dataset(data, data_dir, limit_test=n)
        x = to_integers(iq, splits.test.tensors[0].numpy())
        labels = splits.test.tensors[1].numpy()
        classes = splits.class_names
        origin_label = (f"{len(x)} test images of {splits.name} " + (
            "(as UINT8 pixels, through the prepended pre-processing)" if spec is not None
            else f"(through the input quantizer, step {iq.step:g})"))
        dataset = splits.name
    else:
        x = random_integers(iq, n, seed)
        origin_label = (f"{n} seeded random inputs (seed {seed}) on the input quantizer's "
                        f"integer grid {iq.low}..{iq.high} ({iq.dtype}); no data given")
        dataset = f"random {iq.dtype}"
    prepared = load_onnx(vdir / QONNX_FILE)
    logits = execute_qonnx(prepared, x)
    # the file's own logits travel with its inputs: the build's reference is this execution,
    # not a second one of the same graph on the same inputs (qonnx runs node by node: slow)
    np.savez(vdir / INPUTS_FILE, x=x, y=labels if labels is not None else np.zeros(len(x), int),
             logits=logits)
    num_classes = int(np.prod(logits.shape[1:]))
    # the accuracy column of a comparison is PyTorch's; a file has none, so its qonnx-measured
    # accuracy on the verification images is kept in the details, with its source
    acc = Accuracy()
    qonnx_acc = (float((logits.argmax(1) == labels).mean() * 100) if labels is not None
                 else None)
    arch = UserArch(name=path.stem, in_shape=tuple(iq.shape), num_classes=num_classes,
                    bits=UserBits(label=_bits_label(graph)), source="qonnx",
                    file_sha256=digest)
    rec = Variant(
        id=vid, method="qonnx-file", dataset=dataset, arch=arch, qonnx=build_file,
        settings={"file": str(path), "data": data, "verify_images": verify_images,
                  "seed": seed, **({"input": spec_json} if spec is not None else {}),
                  **({"topk": topk} if topk is not None else {})},
        accuracy=acc, **_graph_summary(prepared),
        details={"input_quant": iq.model_dump(), "verify_data": origin_label,
                 **({"preprocessing": spec.formula()} if spec is not None else {}),
                 **({"topk": topk} if topk is not None else {}),
                 **({"reference_qonnx": QONNX_FILE} if build_file != QONNX_FILE else {}),
                 "qonnx_accuracy": qonnx_acc, "qonnx_accuracy_source":
                 f"measured: qonnx execution of the QONNX file on {origin_label}"
                 if qonnx_acc is not None else None,
                 "data": {"spec": "inputs", "path": str(vdir / INPUTS_FILE),
                          "sha256": sha256_file(vdir / INPUTS_FILE),
                          "class_names": classes or [str(i) for i in range(num_classes)],
                          "label": origin_label}})
    atomic_write_text(vdir / "record.json", rec.model_dump_json(indent=2))
    return run, rec


def build_onnx(path: str | Path, board: str | Board = DEFAULT_BOARD,
               out: str | Path | None = None,
               data: str | None = None, settings: BuildSettings | None = None,
               verify_images: int | str = 20, data_dir: str | None = None,
               input: "InputSpec | dict | None" = None, topk: int | None = None,
               folding_config: str | Path | None = None) -> HardwareReport:
    """`fpgaslim build MODEL.onnx`: estimate-build any QONNX / FINN-ONNX file for `board` and
    verify the hardware graph integer-exactly against the file itself executed by qonnx, on
    `data` (a dataset spec) or on seeded random inputs inside its input quantizer's range.
    The build lives in run folder `out` (default runs/<file stem>) as variant 'baseline', so
    maxfit, compare, deploy bundle and the simulated board find it like any variant's.
    `input` / `topk`: pixels in and class indices out (import_onnx). `folding_config`: a
    FINN folding-config JSON (e.g. finn-examples' published ones) applied after FINN's own
    folding; the build then lives in builds/<board>-fold<hash>."""
    out = Path(out) if out is not None else Path("runs") / Path(path).stem
    run, rec = import_onnx(path, out, data, verify_images, data_dir=data_dir, input=input,
                           topk=topk)
    settings = (settings or BuildSettings()).for_board(as_board(board)).resolved()
    return _build_imported(run, rec, settings, verify_images, folding_config)


def _build_imported(run: RunDir, rec, settings: BuildSettings, verify_images: int | str,
                    folding_config: str | Path | None = None) -> HardwareReport:
    import torch

    from .qonnx_export import execute_qonnx, load_onnx

    verify_images = rec.settings.get("verify_images", verify_images)
    bdir = build_dir_for(run, rec.id, settings)
    extra = None
    if folding_config is not None:
        from fpgaslim.core.errors import ConfigError

        from .onnx_input import sha256_file

        folding_config = Path(folding_config).resolve()
        if not folding_config.is_file():
            raise ConfigError(f"folding config {folding_config} does not exist")
        digest = sha256_file(folding_config)
        extra = {"folding_config_sha256": digest}
        bdir = bdir.with_name(f"{bdir.name}-fold{digest[:8]}")
    done = bdir / "report.json"
    label = rec.details["verify_data"]
    key = variant_key(run, rec.id, settings, "estimate", verify_images, extra)
    if is_done(bdir, key):
        return load_report(done)
    vdir = run.variant_dir(rec.id)
    with np.load(vdir / INPUTS_FILE) as f:
        x, y = f["x"], f["y"]
        saved = f["logits"] if "logits" in f.files else None  # runs imported before it was kept
    prepared = load_onnx(vdir / rec.details.get("reference_qonnx", rec.qonnx))

    def reference(imgs: np.ndarray) -> np.ndarray:
        if saved is not None and np.array_equal(imgs, x):
            return saved
        return execute_qonnx(prepared, imgs)

    work = bdir / "work"
    if work.exists():
        shutil.rmtree(work)
    report = build_estimate(
        vdir / rec.qonnx, work, settings, images=torch.from_numpy(x),
        labels=torch.from_numpy(y) if rec.settings.get("data") else None, variant=rec.id,
        prefix_cache=vdir / "builds" / ".prefix",
        reference=reference, topk=rec.details.get("topk"), folding_config=folding_config,
        reference_source=("simulated: Python execution of the folded FINN dataflow graph "
                          "(generic base ops) vs the QONNX file executed by qonnx "
                          f"(qonnx.core.onnx_exec), CPU, on {label}"))
    report.settings["verify_images"] = verify_images
    report.settings["verify_data"] = label
    save_report(report, done)
    write_record(bdir, key)
    return report
