"""Compare variants across runs and boards from saved records only (no rebuilding).

One row per (run, variant, board): the variant record (accuracy measured in PyTorch, params,
MACs, depth counted on the model) joined with the hardware report of its build for that board
(FINN estimates plus fpgaslim's off-chip and fit figures) and, when a folding search left a
`maxfit.json` (beside the report, or a max-fit build of that board), its fps. Builds are found
through their records (hw/build_key.py find_builds), not by their folder names. Every column
names where its numbers come from: the hardware columns take their source from the report's
own Figures, so the legend cannot drift from what was built.

`compare_runs` writes CSV, Markdown, JSON, PNG plots and one self-contained HTML page, and
returns a `ComparisonResult` whose `table()` is a rich Table (library code never prints).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fpgaslim.core.atomic import atomic_write, atomic_write_json, atomic_write_text
from fpgaslim.compress.variants import RunDir, Variant
from fpgaslim.core.errors import CheckpointError, ConfigError, UnknownNameError
from fpgaslim.hw.build_key import BuildRecord, choose_build, find_builds, keyed_fields
from fpgaslim.hw.figure import Figure
from fpgaslim.hw.report import HardwareReport, load_report

from .rows import (BOARD_ORDER, HW_ACCURACY_SOURCE, RECORD_SOURCES, URAM_IN_BRAM_18K,
                   ComparisonData, ComparisonRow, Skipped)

MAXFIT_FILE = "maxfit.json"
CAPACITY_SEP = "; capacity: "  # how Figure.of appends the capacity's datasheet


class ComparisonResult(ComparisonData):
    """What `compare_runs` returns: the rows, the column sources, the files it wrote, and the
    comparison as a terminal table."""

    def table(self) -> Any:
        """The comparison as a rich Table (caller prints it)."""
        from .writers import rich_table

        return rich_table(self.rows, self.legend)


# --------------------------------------------------------------------------- reading
def _run_labels(runs: Sequence[RunDir]) -> list[str]:
    """Folder names, lengthened with parent folders until they are unique."""
    parts = [r.path.resolve().parts for r in runs]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    raise ConfigError("the same run directory is given twice: "
                      + ", ".join(str(r.path) for r in runs))


def _build_folders(run: RunDir, vid: str, all_builds: bool) -> list[Path]:
    """Estimate builds with a report, from their records: one per board (the one
    hw/build_key.choose_build means: the default-settings build, else the newest), or all."""
    found = find_builds(run, vid, "estimate")
    if all_builds:
        return [folder for folder, _ in found]
    by_board: dict[str, list[tuple[Path, BuildRecord]]] = {}
    for folder, rec in found:
        by_board.setdefault(rec.board, []).append((folder, rec))
    return [choose_build(builds)[0] for builds in by_board.values()]


def find_maxfit(run: RunDir, vid: str, build: Path, board: str) -> Path | None:
    """The max-fit result for this build's board: `maxfit.json` in the build folder, else
    the newest optimal folding of the variant on that board (hw/folding_run.py), else the
    newest target x wwidth search (hw/folding_search.py), found through their records."""
    own = build / MAXFIT_FILE
    if own.is_file():
        return own
    for kind in ("maxfit-optimal", "maxfit-search"):
        found = find_builds(run, vid, kind, board=board)
        if found:
            folder, rec = found[-1]
            return folder / rec.result
    return None


def read_maxfit_resources(path: Path, board_capacity: dict[str, float]) -> dict[str, Any]:
    """Method and resources of a max-fit result: the optimal folding's confirming-build
    figures, or the search's % of the board x capacity; {} when it has neither."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    out: dict[str, Any] = {"maxfit_method": data.get("method", "search")}
    res = data.get("resources") or {}
    for k in ("LUT", "BRAM_18K", "URAM", "DSP"):
        if isinstance(res.get(k), dict):
            out[f"maxfit_{k}"] = float(res[k]["value"])
        elif data.get("fps") is not None and k in (data.get("percent") or {}):
            out[f"maxfit_{k}"] = float(data["percent"][k]) * board_capacity.get(k, 0) / 100.0
    return out


def read_maxfit(path: Path) -> Figure | None:
    """The `fps` figure of a folding-search result ({"fps": Figure | number | null}); None
    when the search found nothing that fits."""
    try:
        fps = json.loads(path.read_text(encoding="utf-8"))["fps"]
        if fps is None or isinstance(fps, dict):
            return None if fps is None else Figure.model_validate(fps)
        return Figure(value=float(fps), unit="frames/s",
                      source=f"max-fit folding search ({MAXFIT_FILE})")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} has no readable 'fps' figure: {exc}") from exc


def make_row(label: str, record: Variant, report: HardwareReport, build: Path,
             maxfit: Figure | None = None, maxfit_searched: bool = False,
             maxfit_res: dict[str, Any] | None = None) -> ComparisonRow:
    """Join a variant record and one of its hardware reports into a row."""
    res, mem, thr = report.resources, report.memory, report.throughput
    ver = report.verification
    verified = None
    if ver is not None:
        verified = ver.summary()
    return ComparisonRow(
        run=label, variant=record.id, parent=record.parent, method=record.method,
        dataset=record.dataset, bits=record.arch.bits.tag, board=report.board,
        board_display=report.board_display, build=build.name,
        accuracy=record.accuracy.test, test_images=record.accuracy.test_images,
        params=record.params, macs=record.macs, depth=record.depth,
        BRAM_18K=res["BRAM_18K"].value, URAM=res["URAM"].value, LUT=res["LUT"].value,
        DSP=res["DSP"].value,
        percent={k: f.percent for k, f in res.items() if f.percent is not None},
        onchip_bram18k_equiv=res["BRAM_18K"].value + URAM_IN_BRAM_18K * res["URAM"].value,
        weight_bits_onchip=mem.weight_bits_onchip.value,
        offchip_bytes=report.offchip.total_bytes.value,
        bandwidth_gbps=report.offchip.bandwidth_needed.value,
        bandwidth_percent=report.offchip.bandwidth_needed.percent,
        fps=thr.fps.value, latency_us=thr.latency_us.value, bottleneck=thr.bottleneck_layer,
        fits=report.fits, status=report.status, overflow=sorted(report.overflow),
        maxfit_fps=None if maxfit is None else maxfit.value,
        maxfit_none_fits=maxfit_searched and maxfit is None, verified=verified,
        hw_accuracy=ver.hw_accuracy if ver is not None else None,
        hw_accuracy_images=ver.images if ver is not None else None,
        report=str(build / "report.json"), **(maxfit_res or {}), **read_simulation(build))


def read_simulation(build: Path) -> dict[str, Any]:
    """The `fpgaslim simulate` result saved in a build folder (hw/sim): its fps when the
    stitched design's outputs were bit-exact and nothing deadlocked, else why not."""
    from fpgaslim.hw.sim.records import Simulation

    path = build / "work" / "simulate" / "simulation.json"
    if not path.is_file():
        return {}
    try:
        sim = Simulation.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return {"sim_note": f"unreadable {path.name}: {str(exc)[:80]}"}
    if sim.deadlock or not sim.outputs_exact:
        return {"sim_note": "deadlock" if sim.deadlock else "outputs differ"}
    return {"sim_fps": sim.fps}


def _legend(reports: list[HardwareReport], maxfits: list[Figure]) -> dict[str, str]:
    """Column -> source, hardware sources read from the reports' Figures (distinct ones
    joined, so mixed builds show every provenance)."""
    def distinct(sources: list[str]) -> str:
        return " | ".join(dict.fromkeys(s.split(CAPACITY_SEP)[0] for s in sources))

    legend = dict(RECORD_SOURCES)
    legend["bits"] = "variant record: weight/activation bits of the Brevitas model"
    legend["hw_accuracy"] = HW_ACCURACY_SOURCE
    if reports:
        for k in ("BRAM_18K", "URAM", "LUT", "DSP"):
            legend[k] = distinct([r.resources[k].source for r in reports])
        legend["offchip_bytes"] = distinct([r.offchip.total_bytes.source for r in reports])
        legend["bandwidth_gbps"] = distinct([r.offchip.bandwidth_needed.source for r in reports])
        legend["fps"] = distinct([r.throughput.fps.source for r in reports])
        legend["latency_us"] = distinct([r.throughput.latency_us.source for r in reports])
        legend["fits"] = ("fpgaslim: every FINN-estimated resource within the board's capacity "
                          "and off-chip bandwidth within the board's (hw/boards.toml)")
        legend["onchip"] = (f"FINN estimate: BRAM_18K + {URAM_IN_BRAM_18K} x URAM "
                            "(288 Kib / 18 Kib)")
        capacity = {f"{r.board_display}: {f.source.split(CAPACITY_SEP, 1)[1]}"
                    for r in reports for f in r.resources.values() if CAPACITY_SEP in f.source}
        legend["percent"] = ("% of board = value / board capacity; capacities from "
                             + " | ".join(sorted(capacity)))
    legend["maxfit_fps"] = (distinct([f.source for f in maxfits]) if maxfits else
                            f"folding search ({MAXFIT_FILE}); empty: no search was run")
    from fpgaslim.hw.sim.records import SOURCE as SIM_SOURCE

    legend["sim_fps"] = (f"{SIM_SOURCE} (fpgaslim simulate: sized FIFOs, the build's clock; "
                         "shown only when its outputs were bit-exact and nothing deadlocked); "
                         "empty: not simulated")
    for k in ("LUT", "BRAM_18K", "DSP"):
        legend[f"maxfit_{k}"] = ("the max-fit folding's FINN estimate (optimal folding: its "
                                 "confirming estimate build; search: % of board x capacity)")
    return legend


def _reason(exc: Exception, build: Path) -> str:
    """One line: the error without the path (shown beside it) and pydantic's input dump."""
    lines = [ln.split(" [type=")[0].strip() for ln in str(exc).splitlines()[:3]]
    return ": ".join(ln for ln in lines if ln).replace(f"{build / 'report.json'} ", "")


def collect(runs: Sequence[Path | str | RunDir], all_builds: bool = False,
            only: Sequence[Path | str] | None = None,
            ) -> tuple[list[ComparisonRow], dict[str, str], list[Skipped]]:
    """Rows of every variant with at least one build, the legend, and what was unreadable.
    `only`: just these build folders (e.g. a sweep's own builds, whatever else was built)."""
    keep = None if only is None else {Path(p).resolve() for p in only}
    rundirs = [r if isinstance(r, RunDir) else RunDir(r) for r in runs]
    if not rundirs:
        raise ConfigError("compare needs at least one run directory")
    for r in rundirs:
        if not (r.path / "variants").is_dir():
            raise ConfigError(f"{r.path} is not a run directory (no variants/ folder)")
    rows: list[ComparisonRow] = []
    skipped: list[Skipped] = []
    reports: list[HardwareReport] = []
    maxfits: list[Figure] = []
    labels = _run_labels(rundirs)
    for label, run in zip(labels, rundirs):
        for vid in run.ids():
            try:
                record = run.record(vid)
            except CheckpointError as exc:
                skipped.append(Skipped(path=str(run.variant_dir(vid)), reason=str(exc)))
                continue
            for build in _build_folders(run, vid, all_builds or keep is not None):
                if keep is not None and build.resolve() not in keep:
                    continue
                try:
                    report = load_report(build)
                    maxfit_path = find_maxfit(run, vid, build, report.board)
                    maxfit = None if maxfit_path is None else read_maxfit(maxfit_path)
                    maxfit_res = None if maxfit_path is None else read_maxfit_resources(
                        maxfit_path, {k: f.capacity or 0 for k, f in report.resources.items()})
                except CheckpointError as exc:
                    skipped.append(Skipped(path=str(build), reason=_reason(exc, build)))
                    continue
                reports.append(report)
                if maxfit is not None:
                    maxfits.append(maxfit)
                rows.append(make_row(label, record, report, build, maxfit,
                                     maxfit_path is not None, maxfit_res))
    return sorted(rows, key=_row_order(rundirs, labels)), _legend(reports, maxfits), skipped


def run_missing_maxfits(runs: Sequence[Path | str | RunDir], budget: Any = None,
                        styles: str = "mix", boards: Sequence[str] | None = None,
                        on_error: Callable[[str], None] | None = None) -> list[Path]:
    """The optimal folding (hw/folding_run.py) of every variant x board that `compare` would
    show without a max-fit: one per build folder compare picks, with that build's settings,
    cached by its build key (a second call does nothing). Returns the maxfit.json paths made.
    `on_error`: called with "run/variant@board: message" for an fpgaslim error of one variant,
    which then leaves the others (and the table) to go on, its row without a max-fit; without
    it the error is raised.
    `budget`: a folding_opt.Budget (default: LUT_BUDGET % LUT, all of the rest); `boards`:
    only these."""
    from fpgaslim.core.errors import FpgaslimError
    from fpgaslim.hw.folding_run import optimize_variant

    keyed = keyed_fields() - {"board"}
    done: list[Path] = []
    for r in runs:
        run = r if isinstance(r, RunDir) else RunDir(r)
        for vid in run.ids():
            for build in _build_folders(run, vid, False):
                try:
                    report = load_report(build)
                except CheckpointError:
                    continue  # compare lists it as unreadable
                if boards is not None and report.board not in boards:
                    continue
                if find_maxfit(run, vid, build, report.board) is not None:
                    continue
                settings = {k: v for k, v in report.settings.items() if k in keyed}
                try:
                    made = optimize_variant(run, vid, report.board, settings, budget,
                                            styles=styles)
                except FpgaslimError as e:
                    if on_error is None:
                        raise
                    on_error(f"{run.path.name}/{vid}@{report.board}: {e}")
                    continue
                done.append(made)
    return done


def _board_rank(board: str) -> tuple[int, str]:
    return (BOARD_ORDER.index(board) if board in BOARD_ORDER else len(BOARD_ORDER), board)


def _row_order(rundirs: Sequence[RunDir], labels: list[str]):
    """Rows in one order: run (as given), variant (as the run lists them), board (BOARD_ORDER),
    then build folder name."""
    ids = {lab: {v: i for i, v in enumerate(r.ids())} for lab, r in zip(labels, rundirs)}
    runs = {lab: i for i, lab in enumerate(labels)}
    return lambda r: (runs[r.run], ids[r.run].get(r.variant, 0), _board_rank(r.board), r.build)


# --------------------------------------------------------------------------- entry point
def _pick_detail(rows: list[ComparisonRow], detail: str | None) -> tuple[str, str] | None:
    """(run, variant) for the per-layer plots: `detail` as "variant" or "run/variant"; by
    default the first baseline, else the first row."""
    if not rows:
        return None
    if detail is None:
        pick = next((r for r in rows if r.method == "baseline"), rows[0])
        return pick.run, pick.variant
    for r in rows:
        if detail in (r.variant, r.key):
            return r.run, r.variant
    raise UnknownNameError("variant (with builds)", detail,
                           sorted({r.key for r in rows} | {r.variant for r in rows}))


def compare_runs(runs: Sequence[Path | str | RunDir], out_dir: Path | str,
                 detail_variant: str | None = None, all_builds: bool = False,
                 plots: bool = True, only: Sequence[Path | str] | None = None
                 ) -> ComparisonResult:
    """Compare every built variant of `runs` and write comparison.{csv,md,json,html} (and the
    plots as PNG) into `out_dir`. `detail_variant` ("variant" or "run/variant") picks the
    variant of the per-layer plots. `all_builds` keeps every build folder, not one per board;
    `only` keeps just the build folders listed."""
    rows, legend, skipped = collect(runs, all_builds, only)
    if not rows:
        hint = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
        raise ConfigError("no variant in " + ", ".join(str(getattr(r, "path", r)) for r in runs)
                          + " has a hardware report; build one first (fpgaslim build)"
                          + (f" (unreadable: {hint})" if hint else ""))
    from .writers import render_html, to_csv, to_markdown
    from .plots import comparison_figures, png_bytes

    out = Path(out_dir)
    result = ComparisonResult(rows=rows, legend=legend, skipped=skipped,
                              detail=_pick_detail(rows, detail_variant))
    result.files["csv"] = atomic_write_text(out / "comparison.csv", to_csv(rows))
    result.files["markdown"] = atomic_write_text(out / "comparison.md",
                                                 to_markdown(rows, legend))
    result.files["json"] = atomic_write_json(out / "comparison.json", {
        "rows": [r.model_dump(mode="json") for r in rows], "legend": legend,
        "skipped": [s.model_dump() for s in skipped], "detail": result.detail})
    figures = comparison_figures(result) if plots else []
    for fig in figures:
        path = out / "plots" / f"{fig.name}.png"
        atomic_write(path, lambda p, f=fig: p.write_bytes(png_bytes(f)))
        result.files[f"plot:{fig.name}"] = path
    result.files["html"] = atomic_write_text(out / "comparison.html",
                                             render_html(result, figures))
    return result
