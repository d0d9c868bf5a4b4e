"""Deployment bundles: one tar.gz with everything a board (or the simulated board) needs.

Layout (all paths relative, every file listed with its sha256 in manifest.json):

    bundle.json            what the runner reads: I/O, preprocessing, host-side ops, classes
    variant.json           the variant record (architecture, accuracy, provenance)
    driver/settings.json   finn-plus-driver settings (FINN's own when a bitfile was built)
    driver/runtime_weights/...   external / runtime-writable weights, when FINN made any
    bitfile/finn-accel.bit + .hwh   (Zynq) or bitfile/finn-accel-0.xclbin (Alveo), when built
    graph/dataflow.onnx    the final folded hardware graph, for `fpgaslim-board --simulate`
    reports/*.json         FINN's estimate (and post-synthesis) reports, as written by FINN

Why a generated settings.json without a bitfile: the simulated board and any later bitfile
share one I/O contract (FINN's io_shape_dict: datatypes, normal/folded/packed shapes), derived
from the same folded graph FINN's driver generator reads.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fpgaslim.core.errors import BundleError, ConfigError

from .manifest import pack, write_manifest

# FINN's estimate reports worth shipping (they label themselves: FINN wrote them)
_REPORTS = ("estimate_network_performance.json", "estimate_layer_resources.json",
            "estimate_layer_cycles.json", "op_and_param_counts.json", "fpgaslim_layers.json",
            "post_synth_resources.json", "post_synth_resources_0.json")
_IGNORED_TAIL_OPS = {"Reshape", "Flatten", "Squeeze", "Identity"}


def _host_ops(parent: Any) -> tuple[list[int] | None, list[dict[str, Any]]]:
    """The non-hardware nodes of FINN's parent graph, as something numpy can apply: a layout
    Transpose before the accelerator, and constant Mul/Add (output scaling) after it."""
    sdp = [n for n in parent.graph.node if n.op_type == "StreamingDataflowPartition"]
    if len(sdp) != 1:
        raise BundleError(f"the build has {len(sdp)} dataflow partitions; bundles support one")
    order = list(parent.graph.node)
    idx = order.index(sdp[0])
    transpose = None
    for node in order[:idx]:
        if node.op_type in ("Reshape", "Flatten"):  # an MLP's flatten: the runner reshapes
            continue
        if node.op_type != "Transpose":
            raise BundleError(f"node {node.name} ({node.op_type}) runs on the host before the "
                              "accelerator; the board runner can only apply a layout Transpose "
                              "or a reshape")
        transpose = [int(p) for a in node.attribute if a.name == "perm" for p in a.ints]
    post: list[dict[str, Any]] = []
    for node in order[idx + 1 :]:
        if node.op_type in _IGNORED_TAIL_OPS:
            continue
        const = next((parent.get_initializer(i) for i in node.input
                      if parent.get_initializer(i) is not None), None)
        if node.op_type not in ("Mul", "Add") or const is None:
            raise BundleError(f"node {node.name} ({node.op_type}) follows the accelerator; the "
                              "board runner applies only constant Mul/Add there")
        post.append({"op": node.op_type, "value": const.reshape(-1).tolist()
                     if const.size > 1 else float(const.reshape(-1)[0])})
    return transpose, post


def driver_io(model: Any, io: dict[str, Any] | None = None) -> dict[str, Any]:
    """finn-plus-driver's io_shape_dict for a folded dataflow graph without IODMAs, computed
    as FINN's get_driver_shapes does: folded shapes of the first/last layer, packed shapes by
    packing the folded innermost dimension into whole bytes.

    The folded shapes come from the build's report/fpgaslim_layers.json ("io") when it has
    them; otherwise from the layers' own get_folded_*_shape()."""
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    idt, odt = model.get_tensor_datatype(iname), model.get_tensor_datatype(oname)
    io = io or {}
    if "input_folded_shape" in io and "output_folded_shape" in io:
        ifold, ofold = tuple(io["input_folded_shape"]), tuple(io["output_folded_shape"])
    else:
        from qonnx.custom_op.registry import getCustomOp

        ifold = tuple(getCustomOp(model.graph.node[0]).get_folded_input_shape())
        ofold = tuple(getCustomOp(model.graph.node[-1]).get_folded_output_shape())
    ifold, ofold = tuple(int(d) for d in ifold), tuple(int(d) for d in ofold)

    def packed(folded: tuple[int, ...], bits: int) -> list[int]:
        return [*folded[:-1], math.ceil(folded[-1] * bits / 8)]

    return {"idt": [f"DataType['{idt.name}']"], "odt": [f"DataType['{odt.name}']"],
            "ishape_normal": [list(model.get_tensor_shape(iname))],
            "oshape_normal": [list(model.get_tensor_shape(oname))],
            "ishape_folded": [list(ifold)], "oshape_folded": [list(ofold)],
            "ishape_packed": [packed(ifold, idt.bitwidth())],
            "oshape_packed": [packed(ofold, odt.bitwidth())],
            "idma_names": ["idma0"], "odma_names": ["odma0"], "num_inputs": 1, "num_outputs": 1,
            "number_of_external_weights": 0, "external_weights_input_shapes": {}}


def _driver_settings(finn_out: Path, graph: Any, platform: str, clock_ns: float) -> dict:
    own = finn_out / "driver" / "settings.json"
    if own.is_file():
        settings = json.loads(own.read_text(encoding="utf-8"))
        settings["fpgaslim_source"] = "finn-plus MakePYNQDriver (full flow)"
        return settings
    layers = finn_out / "report" / "fpgaslim_layers.json"
    io = json.loads(layers.read_text(encoding="utf-8")).get("io") if layers.is_file() else None
    return {"driver_information": {"driver_type": "FINNDMAOverlay", "platform": platform,
                                   "io_shape_dict": driver_io(graph, io),
                                   "external_weights": False, "runtime_weights": False,
                                   "fclk_mhz": 1000.0 / clock_ns},
            "experiment_information": {},
            "fpgaslim_source": "fpgaslim, from the folded graph (no bitfile built yet; FINN's "
                               "own settings.json replaces it when one is)"}


def _accelerator(finn_out: Path, stage: Path) -> dict[str, Any]:
    bitdir = finn_out / "bitfile"
    for kind, names in (("bitfile", ("finn-accel.bit", "finn-accel.hwh")),
                        ("xclbin", ("finn-accel-0.xclbin",))):
        if (bitdir / names[0]).is_file():
            files = []
            for n in names:
                if not (bitdir / n).is_file():
                    raise BundleError(f"{bitdir / n} is missing next to {names[0]}")
                shutil.copyfile(bitdir / n, stage / "bitfile" / n)
                files.append(f"bitfile/{n}")
            return {"kind": kind, "files": files, "source": "FINN full flow (Vivado/Vitis)"}
    return {"kind": None, "files": [],
            "source": "none: built without Vivado; the bundle runs simulated only"}


def _output_info(graph: Any, post: list[dict[str, Any]], num_classes: int) -> dict[str, Any]:
    """What the accelerator returns: logits (then the host ops, then argmax), or, when the
    graph ends in LabelSelect (`--topk K`), the K best class indices, best first."""
    tail = [n for n in graph.graph.node if n.op_type.startswith("LabelSelect")]
    if tail and graph.graph.node[-1] is tail[-1]:
        from qonnx.custom_op.registry import getCustomOp

        k = int(getCustomOp(tail[-1]).get_nodeattr("K"))
        return {"postprocess": post, "num_classes": num_classes, "topk": k,
                "note": f"accelerator output: the top-{k} class indices, best first "
                        "(FINN's LabelSelect); no argmax on the host"}
    return {"postprocess": post, "num_classes": num_classes,
            "note": "accelerator output, then these host ops, then argmax"}


def make_bundle(finn_out: str | Path, record: Any, board: str, platform: str, clock_ns: float,
                out_path: str | Path, classes: list[str], final_graph: str,
                input_scale: float | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Bundle a finished FINN build folder (`finn_out`: FINN's output_dir)."""
    from qonnx.core.modelwrapper import ModelWrapper

    finn_out = Path(finn_out)
    inter = finn_out / "intermediate_models"
    graph_path, parent_path = inter / f"{final_graph}.onnx", inter / "dataflow_parent.onnx"
    for p in (graph_path, parent_path):
        if not p.is_file():
            raise BundleError(f"{p} is missing: build the variant first (fpgaslim build)")
    graph, parent = ModelWrapper(str(graph_path)), ModelWrapper(str(parent_path))
    transpose, post = _host_ops(parent)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_path.parent))
    try:
        for sub in ("driver", "bitfile", "graph", "reports"):
            (stage / sub).mkdir()
        shutil.copyfile(graph_path, stage / "graph" / "dataflow.onnx")
        settings = _driver_settings(finn_out, graph, platform, clock_ns)
        (stage / "driver" / "settings.json").write_text(json.dumps(settings, indent=2), "utf-8")
        if (finn_out / "driver" / "runtime_weights").is_dir():
            shutil.copytree(finn_out / "driver" / "runtime_weights",
                            stage / "driver" / "runtime_weights")
        accel = _accelerator(finn_out, stage)
        for name in _REPORTS:
            if (finn_out / "report" / name).is_file():
                shutil.copyfile(finn_out / "report" / name, stage / "reports" / name)
        perf = finn_out / "report" / "estimate_network_performance.json"
        estimates = json.loads(perf.read_text(encoding="utf-8")) if perf.is_file() else {}
        in_shape = list(parent.get_tensor_shape(parent.graph.input[0].name))[1:]
        sdp_in = next(n for n in parent.graph.node if n.op_type == "StreamingDataflowPartition")
        accel_shape = list(parent.get_tensor_shape(sdp_in.input[0]))[1:]
        io = settings["driver_information"]["io_shape_dict"]
        info = {
            "format": "fpgaslim-bundle/1", "variant": record.id, "board": board,
            "finn_board": (extra or {}).get("finn_board"), "platform": platform,
            "accelerator": accel,
            "driver": {"settings": "driver/settings.json", "source": settings["fpgaslim_source"]},
            "input": {"shape": in_shape, "layout": "NCHW raw pixels", "transpose": transpose,
                      "reshape": accel_shape,
                      "dtype": io["idt"][0], "raw_range": [0, 255],
                      "model_scale": 1.0 / 255.0, "quantizer_scale": input_scale,
                      "note": "the model computes x/255 and quantizes it to UINT8 with scale "
                              "1/255, so the accelerator's input stream is the raw pixels"},
            "output": _output_info(graph, post, len(classes)),
            "classes": classes,
            "graph": {"path": "graph/dataflow.onnx", "source": f"FINN build, {final_graph}"},
            "estimates": {**estimates, "clock_ns": clock_ns,
                          "source": "FINN estimate (estimate_network_performance.json)"},
        }
        info["input"].update((extra or {}).get("input", {}))
        report_path = (extra or {}).get("hardware_report")
        if report_path and Path(report_path).is_file():
            shutil.copyfile(report_path, stage / "reports" / "hardware_report.json")
            info["hardware_report"] = "reports/hardware_report.json"
        (stage / "bundle.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        (stage / "variant.json").write_text(record.model_dump_json(indent=2), encoding="utf-8")
        write_manifest(stage, {"variant": record.id, "board": board,
                               "created": datetime.now(timezone.utc).isoformat()})
        return pack(stage, out_path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def bundle(run: Any, variant_id: str, board: str, out_path: str | Path,
           settings: Any = None) -> Path:
    """Bundle a built variant (`fpgaslim build RUN --variant ID --board BOARD` must have run
    with the same settings). A bitfile/xclbin from `--bitfile` is included when present, with
    the graph and driver settings of that same build."""
    from fpgaslim.compress.data import CLASS_NAMES
    from fpgaslim.compress.variants import RunDir

    run = run if isinstance(run, RunDir) else RunDir(run)
    record = run.record(variant_id)
    build = locate_build(run, variant_id, board, settings)
    from fpgaslim.compress.data import recorded_origin

    classes = (CLASS_NAMES.get(record.dataset) or recorded_origin(run, variant_id).get(
        "class_names") or [str(i) for i in range(record.arch.num_classes)])
    extra = {"finn_board": build.finn_board, "hardware_report": build.report_path}
    iq = record.details.get("input_quant")
    if record.is_imported and iq:  # a QONNX file: no torch model
        scale = None
        extra["input"] = {
            "layout": "NCHW, the model's input", "raw_range": [iq["low"], iq["high"]],
            "model_scale": None, "quantizer_scale": iq["step"], "input_step": iq["step"],
            "note": f"the accelerator's input stream is the integers k = clip(round(x / "
                    f"{iq['step']:g})) of the file's input quantizer ({iq['dtype']}, "
                    f"{iq['found']}); the runner computes them from the model's input x"}
    else:
        model = run.load_model(variant_id)
        scale = (float(model.input_quant.act_quant.scale()) if hasattr(model, "input_quant")
                 else None)
    return make_bundle(build.finn_out, record, build.board, build.platform, build.clock_ns,
                       out_path, classes, build.final_graph, input_scale=scale, extra=extra)


class BuildLocation:
    """Where a finished build of (variant, board, settings) is, and what it was built for."""

    def __init__(self, finn_out: Path, board: str, finn_board: str, platform: str,
                 clock_ns: float, final_graph: str, report_path: Path) -> None:
        self.finn_out, self.board, self.finn_board = finn_out, board, finn_board
        self.platform, self.clock_ns, self.final_graph = platform, clock_ns, final_graph
        self.report_path = report_path


def locate_build(run: Any, variant_id: str, board: Any, settings: Any = None) -> BuildLocation:
    """The estimate build's FINN folder, or the full-flow folder next to it when `--bitfile`
    produced one (same steps, so the same graph plus the bitfile). The build is the one
    hw/build_key.find_build means: with `settings`, the one with these settings; without,
    the default-settings build, else the newest. `board`: a Board, or a name looked up here."""
    from fpgaslim.hw.api import BuildSettings, build_dir_for, load_report
    from fpgaslim.hw.boards import as_board
    from fpgaslim.hw.build_key import find_build, is_current_record
    from fpgaslim.hw.verify import LAST_STEP

    entry = as_board(board)
    if settings is not None:
        settings = settings.for_board(entry)
    found = find_build(run, variant_id, entry, settings)
    if found is None:
        where = build_dir_for(run, variant_id, settings or BuildSettings(board=entry))
        raise ConfigError(f"variant {variant_id!r} has no finished build for {entry.name} with "
                          f"these settings ({where}); run `fpgaslim build {run.path} --variant "
                          f"{variant_id} --board {board}` first")
    bdir, rec = found
    if not is_current_record(rec, run, variant_id):
        # a report from an older checkpoint, data or toolchain (or from before build records):
        # bundling it would deploy a model that is not the variant's
        raise ConfigError(f"the build of variant {variant_id!r} for {entry.name} in {bdir} is not "
                          f"of the variant's current model, data and settings (retrained, or "
                          f"built by an older fpgaslim/finn-plus); rebuild it with `fpgaslim "
                          f"build {run.path} --variant {variant_id} --board {board}`")
    report = load_report(bdir / "report.json")
    finn_out = Path(report.build_dir) / "finn"
    full = bdir / "bitfile"
    if (full / "bitfile").is_dir() and any((full / "bitfile").iterdir()):
        finn_out = full
    return BuildLocation(finn_out, entry.name, entry.finn_board,
                         "zynq-iodma" if entry.is_zynq else "alveo",
                         float(report.settings["clock_ns"]), LAST_STEP, bdir / "report.json")
