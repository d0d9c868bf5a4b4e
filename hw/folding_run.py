"""`maxfit --method optimal`: tabulate, solve, and confirm with a real FINN estimate build.

1. The starting graph is the variant's existing estimate build for the board (its last saved
   intermediate model: streamlined, specialized, bit widths minimized), so nothing is
   re-streamlined; without one, an estimate build (reusing the streamlined prefix) makes it.
2. hw/folding_table.py tabulates FINN's per-layer estimates in a child process (candidate
   lists cached per layer signature in the run's cache/folding-table, shared by variants).
3. hw/folding_opt.py solves the table for the budget.
4. The choice is written as a FINN folding config and a real estimate build applies it
   (`step_apply_folding_config` reads it as `folding_config_file`); fps and resources are
   that build's FINN estimates. Should that build miss the budget (the cost model and the
   build disagree), the budget of the missed resource is tightened by the miss and it is
   solved again, at most MAX_ROUNDS times.
The result is saved under builds/<board>-optfit-<key>/maxfit.json and read back on reuse.
The table varies PE/SIMD/window, HLS MVAU resType and weight ram_style and, with
styles="mix", each layer's implementation style: the HLS variant of every layer FINN made RTL
(hw/folding_table.py), so the optimizer picks HLS or RTL per layer and the confirming build
asks FINN for that choice per node (its specialize-layers config, beside the folding config);
the build's graph is checked to hold exactly the chosen op types. The graph it starts from is
the build settings' (prefer_rtl: standalone thresholds and RTL wherever FINN can, so every
MVAU may be either; without it thresholds stay in HLS MVAUs, which have no RTL variant).
styles="fixed" keeps the starting graph's styles.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from fpgaslim.core.atomic import atomic_write_json
from fpgaslim.compress.data import load_for_variant
from fpgaslim.compress.variants import RunDir
from fpgaslim.core.errors import BuildTimeoutError, FpgaslimError

from . import finn_compat
from .boards import Board, as_board
from .build_key import (BuildKey, build_dir_for, find_build, is_current_build, is_done,
                        variant_key, write_record)
from .child import run_logged
from .build import BuildSettings, build_estimate
from .figure import Figure
from .folding_opt import (RESOURCES, STEP_FACTOR, Budget, chosen_ops, finn_names, folding_config, is_mixed,
                          solve, specialize_config)
from .qonnx_export import ensure_qonnx
from .report import HardwareReport, load_report, save_report

OPT_VERSION = "fpgaslim-optfit/3"  # bump when the cost model or the solver changes answers
MAX_ROUNDS = 3
Styles = Literal["mix", "fixed"]
#: CBC time for the fewest-LUT folding at the optimal bottleneck (the frame rate itself is
#: exact either way; past this the best folding found is kept and lut_optimal is False)
POLISH_S = 5.0  # measured: on the demo's baseline 15 s and 60 s found no fewer LUTs than 5 s
#: ... and when the fewest LUTs at a given frame rate are the question (`at_fps`): measured on
#: a ResNet-20 table, 5 s gave 40,306 LUT, 15 s 36,895
POLISH_AT_FPS_S = 30.0
#: the last saved graph of an estimate build, newest step first
GRAPH_STEPS = ("step_generate_estimate_reports", "step_transpose_decomposition",
               "step_minimize_bit_width")


class OptFit(BaseModel):
    """The optimizer's answer: the confirming build's FINN estimates, plus evidence."""

    model_config = ConfigDict(extra="forbid")
    variant: str
    board: str
    method: Literal["optimal"] = "optimal"
    fps: Figure | None  # None: no folding fits the budget
    resources: dict[str, Figure]  # LUT, BRAM_18K, URAM, DSP of the confirming build
    percent: dict[str, float]
    fits_budget: bool
    budget: dict[str, float]
    bottleneck_layer: str | None
    bottleneck_cycles: int | None
    styles: Styles = "fixed"  # per-layer HLS/RTL chosen by the optimizer, or the graph's
    impl: dict[str, int] = {}  # op type -> layers of the confirming build (e.g. MVAU_rtl: 12)
    specialize_config: str | None = None  # FINN specialize-layers config beside maxfit.json
    dwc_LUT: Figure | None  # data-width converters the folding needs (not in the build's LUT)
    default_fps: Figure | None  # the starting build's (FINN SetFolding at the target)
    predicted: dict[str, float]  # the cost model's own totals (incl. DWCs): evidence only
    lut_optimal: bool | None = None  # the LUT minimum at this frame rate was proven
    rounds: int
    folding_config: str | None  # file name beside maxfit.json
    timings: dict[str, float]
    source: str


def start_settings(build: dict[str, Any], styles: Styles) -> dict[str, Any]:
    """The build settings of the graph an optimal folding starts from: with styles "mix",
    prefer_rtl's (standalone thresholds: the graph where MVAUs have both variants)."""
    return {**build, "prefer_rtl": True} if styles == "mix" else dict(build)


def optfit_path(run: RunDir, variant_id: str, board: Board, build: dict[str, Any],
                budget: Budget, at_fps: float | None = None, styles: Styles = "mix") -> Path:
    """Where maxfit.json goes (a name for people; whether it is done is its record's)."""
    build = start_settings(build, styles)
    blob = json.dumps({"v": OPT_VERSION, "build": build, "budget": budget.model_dump(),
                       **({"at_fps": at_fps} if at_fps else {}), "styles": styles},
                      sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:8]
    return run.variant_dir(variant_id) / "builds" / f"{board.name}-optfit-{key}" \
        / "maxfit.json"


def optfit_key(run: RunDir, variant_id: str, board: Board, build: dict[str, Any],
               budget: Budget, at_fps: float | None = None,
               styles: Styles = "mix") -> BuildKey:
    """The build key of an optimal folding: the variant, its build settings, the budget, the
    frame rate asked for, whether styles are chosen per layer (that changes the graph FINN
    builds) and the optimizer's version (the confirming build: one image)."""
    build = start_settings(build, styles)
    return variant_key(run, variant_id, BuildSettings(board=board, **build),
                       "maxfit-optimal", 1, extra={"budget": budget.model_dump(mode="json"),
                                                   "at_fps": at_fps, "version": OPT_VERSION,
                                                   "styles": styles})


def optfit_done(run: RunDir, variant_id: str, board: Board, build: dict[str, Any],
                budget: Budget, at_fps: float | None = None, styles: Styles = "mix") -> bool:
    return is_done(optfit_path(run, variant_id, board, build, budget, at_fps, styles).parent,
                   optfit_key(run, variant_id, board, build, budget, at_fps, styles))


def load_optfit(path: str | Path) -> OptFit:
    return OptFit.model_validate_json(Path(path).read_text(encoding="utf-8"))


def _tabulate(graph: Path, part: str, work: Path, timeout_s: float,
              cache: Path | None = None, memo: bool = True, mix: bool = False) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    job = atomic_write_json(work / "table_job.json", {
        "model": str(graph), "part": part, "out": str(work / "table.json"),
        "cache": None if cache is None else str(cache), "memo": memo, "mix": mix})
    log = work / "table.log"
    try:
        rc = run_logged([sys.executable, "-m", "fpgaslim.hw.folding_table", str(job)], log,
                        timeout_s, env=finn_compat.child_environment(work), tie_to_parent=True)
    except subprocess.TimeoutExpired:
        raise BuildTimeoutError(f"folding table of {graph} ran past {timeout_s:g} s; "
                                f"log: {log}") from None
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
        raise FpgaslimError(f"folding table of {graph} failed (exit {rc}); log {log}:\n{tail}")
    return json.loads((work / "table.json").read_text(encoding="utf-8"))


def optimize_variant(run: RunDir, variant_id: str, board: str | Board,
                     build: dict[str, Any] | None = None, budget: Budget | None = None,
                     keep_table: bool = False, at_fps: float | None = None,
                     styles: Styles = "mix") -> Path:
    """Run (or return the saved) optimal folding of one variant on one board. `at_fps`: the
    fewest-LUT folding that still reaches that frame rate, instead of the fastest.
    `styles`: "mix" chooses HLS or RTL per layer (module docstring). `board`: a Board, or a
    name looked up here."""
    build, budget = dict(build or {}), budget or Budget()
    if styles not in ("mix", "fixed"):
        from fpgaslim.core.errors import ConfigError

        raise ConfigError(f"optimal folding styles {styles!r}: use 'mix' or 'fixed'")
    build = start_settings(build, styles)
    b = as_board(board)
    out = optfit_path(run, variant_id, b, build, budget, at_fps, styles)
    key = optfit_key(run, variant_id, b, build, budget, at_fps, styles)
    if is_done(out.parent, key):
        return out
    t0 = time.perf_counter()
    settings = BuildSettings(board=b, **build).resolved()
    vdir = run.variant_dir(variant_id)
    record = ensure_qonnx(run, variant_id)
    test = load_for_variant(run, variant_id, limit_train=1).test.tensors
    images, labels = test[0][:1], test[1][:1]
    # with the model, the verification reference (and so the streamlined-prefix key) is the
    # one the variant's builds used, and the folded graph is checked bit-exact on the image
    # (an imported QONNX variant has no PyTorch model: the QONNX graph is the reference)
    model = None if record.is_imported else run.load_model(variant_id)
    prefix = vdir / "builds" / ".prefix"
    work = out.parent / "work"
    shutil.rmtree(work, ignore_errors=True)
    timings: dict[str, float] = {}
    # only a finished build's graph of this model and settings (an interrupted or an older
    # one may have left a stale folder): its record says (hw/build_key.py)
    found = find_build(run, variant_id, b, settings)
    current = found is not None and is_current_build(found[0], run, variant_id, settings)
    graph = _start_graph_in(found[0] / "work", required=False) if current else None
    default = load_report(found[0] / "report.json") if current else None
    if graph is None:  # no earlier build to start from: make it, kept as the variant's
        # build with these settings (one verification image), so the next max-fit of
        # another budget or board starts from it
        from .api import build_variant

        default = build_variant(run, variant_id, b, settings=settings, verify_images=1)
        graph = _start_graph_in(build_dir_for(run, variant_id, settings) / "work")
        timings["start_build_s"] = round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()
    table = _tabulate(graph, b.part, work / "table", settings.timeout_s,
                      cache=run.path / "cache" / "folding-table",  # shared by the variants
                      mix=styles == "mix")
    timings["table_s"] = round(time.perf_counter() - t1, 3)
    caps = budget.caps(b)
    limit = dict(caps)
    report: HardwareReport | None = None
    sol = None
    ok, pct, rounds, solve_s, confirm_s = False, {}, 0, 0.0, 0.0
    from .folding_search import within_budget

    cfg_path = out.parent / "folding_config.json"
    spec_path = out.parent / "specialize_config.json"
    impl: dict[str, int] = {}
    while rounds < MAX_ROUNDS:
        rounds += 1
        t1 = time.perf_counter()
        sol = solve(table, limit, max_seconds=POLISH_AT_FPS_S if at_fps else POLISH_S,
                    at_cycles=None if not at_fps else
                    int(1e9 / (settings.clock_ns * at_fps) + 1e-6))
        solve_s += time.perf_counter() - t1
        if sol is None:
            break
        atomic_write_json(cfg_path, folding_config(table, sol.choice))
        spec = specialize_config(table, sol.choice)
        if spec is not None:
            atomic_write_json(spec_path, spec)
        else:
            spec_path.unlink(missing_ok=True)
        t1 = time.perf_counter()
        report = build_estimate(vdir / record.qonnx, work / "confirm", settings, model=model,
                                images=images, labels=labels, variant=variant_id,
                                prefix_cache=prefix, folding_config=cfg_path,
                                specialize_config=spec_path if spec is not None else None)
        confirm_s += time.perf_counter() - t1
        impl = _check_styles(table, sol.choice, _start_graph_in(work / "confirm", False))
        ok, pct = within_budget(report, budget.model_dump())
        if ok:
            break
        for k in RESOURCES:  # tighten what the build says is over, by the miss
            got = float(report.resources[k].value)
            if got > caps[k] + 1e-9:
                limit[k] = limit[k] * caps[k] / got - 1
    timings.update(solve_s=round(solve_s, 3), confirm_build_s=round(confirm_s, 3),
                   total_s=round(time.perf_counter() - t0, 3))
    if keep_table:
        atomic_write_json(out.parent / "table.json", table)
    result = _result(variant_id, b, budget, report if ok else None, sol if ok else None,
                     default, pct, rounds, cfg_path if ok else None, timings, settings,
                     styles)
    result.styles, result.impl = styles, impl if ok else {}
    result.specialize_config = spec_path.name if ok and spec_path.is_file() else None
    if report is not None:
        save_report(report, out.parent / "confirm_report.json")  # not a build folder
    shutil.rmtree(work, ignore_errors=True)  # keep the answer, not 100s of MB of graphs
    atomic_write_json(out, result.model_dump(mode="json"))
    write_record(out.parent, key)  # the commit point
    return out


def _check_styles(table: dict, choice: list[int], graph: Path | None) -> dict[str, int]:
    """The confirming build's HW op types, counted, after checking that FINN specialized
    every layer as the choice asked (a fallback, e.g. an RTL MVAU FINN refuses, would make
    the build's figures those of another folding)."""
    import onnx

    if graph is None:
        raise FpgaslimError("the confirming estimate build saved no folded graph")
    got = {n.name: n.op_type for n in onnx.load(str(graph), load_external_data=False).graph.node
           if n.domain.startswith("finn.custom_op.fpgadataflow")}
    ops = chosen_ops(table, choice)
    want = {finn_names(table, ops)[n]: ops[n] for n in table["order"]} \
        if is_mixed(table, choice) else ops  # the tabulated graph again: its own names
    bad = sorted(n for n, op in want.items() if got.get(n) != op)
    if bad:
        raise FpgaslimError("the confirming build did not specialize layers as chosen: "
                            + ", ".join(f"{n} is {got.get(n, 'missing')}, chosen {want[n]}"
                                        for n in bad[:5]))
    counts: dict[str, int] = {}
    for op in got.values():
        counts[op] = counts.get(op, 0) + 1
    return dict(sorted(counts.items()))


def _start_graph_in(build_out: Path, required: bool = True) -> Path | None:
    """The last folded graph an estimate build saved in `build_out` (its work folder)."""
    inter = build_out / "finn" / "intermediate_models"
    for step in GRAPH_STEPS:
        if (inter / f"{step}.onnx").is_file():
            return inter / f"{step}.onnx"
    if required:
        raise FpgaslimError(f"the estimate build in {build_out} saved no folded graph")
    return None


def _result(variant_id: str, b: Any, budget: Budget, report: HardwareReport | None, sol: Any,
            default: HardwareReport | None, pct: dict, rounds: int, cfg: Path | None,
            timings: dict, settings: BuildSettings, styles: str = "fixed") -> OptFit:
    how = ("folding and per-layer HLS/RTL configs" if styles == "mix" else "folding config")
    src = (f"{finn_compat.provenance(settings.clock_ns)}, estimate build with the {how} "
           f"of fpgaslim's optimal folding (exact on FINN's per-layer estimates), "
           f"budget % of {b.display}")
    dwc = None if sol is None else Figure.of(
        sol.dwc_LUT, "LUT", "FINN StreamingDataWidthConverter LUT estimate on the streams whose "
        "folded widths differ (InsertDWC's rule; the estimate build does not insert them)",
        b.LUT, b.source.fabric)
    return OptFit(
        variant=variant_id, board=b.name,
        fps=None if report is None else Figure.of(report.throughput.fps.value, "frames/s", src),
        resources={} if report is None else {k: report.resources[k] for k in RESOURCES},
        percent=pct, fits_budget=report is not None, budget=budget.model_dump(),
        bottleneck_layer=None if report is None else report.throughput.bottleneck_layer,
        bottleneck_cycles=None if report is None else int(
            report.throughput.bottleneck_cycles.value),
        dwc_LUT=dwc, default_fps=None if default is None else default.throughput.fps,
        predicted={} if sol is None else sol.predicted, rounds=rounds,
        lut_optimal=None if sol is None else sol.lut_optimal,
        folding_config=None if cfg is None else cfg.name, timings=timings, source=src)


def maxfit(run: RunDir, variant_id: str, board: str, method: str = "optimal",
           build: dict[str, Any] | None = None, budget: Budget | None = None,
           step_factor: float = STEP_FACTOR, styles: Styles = "mix") -> dict[str, Any]:
    """`fpgaslim maxfit` as data: one flat record (fps, LUT, BRAM_18K, URAM, DSP, percent,
    method, source, ...) of the optimal folding or of the target x mvau_wwidth_max search.
    `styles` (optimal only): "mix" chooses HLS or RTL per layer."""
    budget = budget or Budget()
    b = as_board(board)
    if method == "optimal":
        path = optimize_variant(run, variant_id, b, build, budget, styles=styles)
        r = load_optfit(path)
        return {"variant": variant_id, "board": b.name, "method": "optimal",
                "fps": None if r.fps is None else r.fps.value,
                **{k: (r.resources[k].value if k in r.resources else None) for k in RESOURCES},
                "percent": r.percent, "budget": r.budget, "fits_budget": r.fits_budget,
                "bottleneck_layer": r.bottleneck_layer,
                "dwc_LUT": None if r.dwc_LUT is None else r.dwc_LUT.value,
                "default_fps": None if r.default_fps is None else r.default_fps.value,
                "prefer_rtl": bool((build or {}).get("prefer_rtl")),
                "styles": r.styles, "impl": r.impl,
                "timings": r.timings, "source": r.source, "path": str(path)}
    if method != "search":
        from fpgaslim.core.errors import ConfigError

        raise ConfigError(f"maxfit --method {method!r}: use 'optimal' or 'search'")
    from .folding_search import FoldingSearch, load_maxfit, search_variant

    search = FoldingSearch(step_factor=step_factor, budget=budget.model_dump())
    path = search_variant(run, variant_id, b, build or {}, search)
    m = load_maxfit(path)
    return {"variant": variant_id, "board": b.name, "method": "search",
            "fps": None if m.fps is None else m.fps.value,
            **{k: (None if m.fps is None else m.percent.get(k, 0.0) * b.capacity(k) / 100.0)
               for k in RESOURCES},
            "percent": m.percent, "budget": m.budget, "fits_budget": m.fps is not None,
            "target_fps": m.target_fps, "mvau_wwidth_max": m.mvau_wwidth_max,
            "saturated": m.saturated, "source": m.source, "path": str(path)}
