"""Optimal folding (hw/folding_opt.py, hw/folding_table.py, hw/folding_run.py) on a tiny real
CNV (eighth width, digits 8x8, one epoch): FINN's own estimates, a real confirming build."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from fpgaslim.hw.boards import get_board
from fpgaslim.hw.folding_opt import RESOURCES, Budget, evaluate, solve

BOARD = "pynq-z1"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, digits):
    from fpgaslim.compress.baseline import BaselineSettings, train_baseline
    from fpgaslim.compress.train import TrainSettings
    from fpgaslim.compress.variants import RunDir
    from fpgaslim.hw.api import build_variant

    run = RunDir(tmp_path_factory.mktemp("run-foldopt"))
    train_baseline(run, digits, BaselineSettings(
        model="cnv", width=0.125, train=TrainSettings(epochs=1, lr=0.05, batch_size=32)),
        progress=False)
    default = build_variant(run, "baseline", BOARD, data=digits, verify_images=1)
    return run, default


@pytest.fixture(scope="module")
def optimized(tiny_run):
    from fpgaslim.hw.folding_run import load_optfit, optimize_variant

    run, default = tiny_run
    budget = Budget(LUT=10.0)  # tight: LUT binds well below full parallelism
    path = optimize_variant(run, "baseline", BOARD, {}, budget, keep_table=True,
                            styles="fixed")
    table = json.loads((path.parent / "table.json").read_text(encoding="utf-8"))
    return run, default, budget, path, load_optfit(path), table


def _subtable(table: dict, styles: bool = False) -> dict:
    """The same FINN cost model restricted to PE/SIMD in {1, max} (and the RTL window
    generator's parallel window), LUT multipliers and default weight memory: small enough
    (under 10^6 foldings) to enumerate every folding. `styles`: both HLS and RTL variants
    kept for MVAU and Thresholding (the other layers with both, hw/rtl's, keep HLS), so to
    stay small only MVAU and Thresholding PE in {1, max}, every other knob at its maximum."""
    units = []
    for u in table["units"]:
        keep = []
        for c in u["candidates"]:
            ok = True
            for name, attrs in c["attrs"].items():
                if attrs.get("resType", "lut") != "lut" or attrs.get("ram_style", "auto") != "auto":
                    ok = False
                for k in ("PE", "SIMD"):
                    if k in attrs:
                        vals = {a["attrs"][name][k] for a in u["candidates"] if k in a["attrs"][name]}
                        both = not styles or (k == "PE" and name.startswith(
                            ("MVAU", "Thresholding")))
                        ok &= attrs[k] in ((min(vals), max(vals)) if both else (max(vals),))
            if styles:  # beyond MVAU/Thresholding, one style (the HLS one) where there are two
                for name, impl in c.get("impl", {}).items():
                    impls = {a["impl"][name] for a in u["candidates"]
                             if name in a.get("impl", {})}
                    if not name.startswith(("MVAU", "Thresholding")) and impl != min(impls):
                        ok = False
            if ok:
                keep.append(c)
        units.append({**u, "candidates": keep})
    return {**table, "units": units}


def _exhaustive(table: dict, caps: dict) -> tuple[int, float] | None:
    """Every folding of the table (numpy broadcasting over the product of the units'
    candidates): (fewest bottleneck cycles within caps, fewest LUTs at those cycles)."""
    units = table["units"]
    n = len(units)
    shape = [len(u["candidates"]) for u in units]

    def axis(u, values):
        s = [1] * n
        s[u] = len(values)
        return np.asarray(values, dtype=float).reshape(s)

    cycles = np.zeros(shape)
    res = {k: np.zeros(shape) for k in RESOURCES}
    for u, unit in enumerate(units):
        cycles = np.maximum(cycles, axis(u, [c["cycles"] for c in unit["candidates"]]))
        for k in RESOURCES:
            res[k] = res[k] + axis(u, [c["res"][k] for c in unit["candidates"]])
    for e in table["edges"]:
        a, b = e["src"], e["dst"]
        mat = np.array([[e["dwc"].get(f"{ca['ports'][e['src_port']]},{cb['ports'][e['dst_port']]}", 0)
                         for cb in units[b]["candidates"]] for ca in units[a]["candidates"]])
        s = [1] * n
        s[a], s[b] = shape[a], shape[b]
        res["LUT"] = res["LUT"] + (mat if a < b else mat.T).reshape(s)
    ok = np.ones(shape, dtype=bool)
    for k in RESOURCES:
        ok &= res[k] <= caps[k] + 1e-9
    if not ok.any():
        return None
    best = cycles[ok].min()
    return int(best), float(res["LUT"][ok & (cycles == best)].min())


def test_optimizer_equals_exhaustive_optimum(optimized):
    table = _subtable(optimized[5])
    sizes = [len(u["candidates"]) for u in table["units"]]
    assert 1_000 < int(np.prod(sizes)) < 1_000_000, sizes
    board = get_board(BOARD)
    checked = 0
    for lut_pct, dsp_pct in itertools.product((2.0, 4.0, 8.0, 30.0), (100.0, 5.0)):
        caps = Budget(LUT=lut_pct, DSP=dsp_pct).caps(board)
        want = _exhaustive(table, caps)
        got = solve(table, caps)
        if want is None:
            assert got is None
            continue
        checked += 1
        cycles, res, _ = evaluate(table, got.choice)
        assert (got.cycles, cycles) == (want[0], want[0]), (lut_pct, dsp_pct)
        assert res["LUT"] == pytest.approx(want[1]), (lut_pct, dsp_pct)
        assert got.lut_optimal
        assert all(res[k] <= caps[k] + 1e-9 for k in RESOURCES)
    assert checked >= 4


def test_confirming_build_within_budget_and_matches_cost_model(optimized):
    run, default, budget, path, fit, table = optimized
    board = get_board(BOARD)
    assert fit.fits_budget and fit.fps is not None
    assert "FINN estimate" in fit.fps.source and "optimal folding" in fit.fps.source
    for k in RESOURCES:
        assert fit.resources[k].value <= budget.caps(board)[k] + 1e-9
    # the build's own report applied exactly the chosen folding: its totals are the
    # table's, less the DWCs the estimate build does not insert
    assert fit.resources["LUT"].value == pytest.approx(fit.predicted["LUT"] - fit.dwc_LUT.value)
    assert fit.resources["BRAM_18K"].value == pytest.approx(fit.predicted["BRAM_18K"])
    assert fit.fps.value == pytest.approx(1e8 / fit.bottleneck_cycles)
    cfg = json.loads((path.parent / fit.folding_config).read_text(encoding="utf-8"))
    assert all("PE" in v or "SIMD" in v for k, v in cfg.items() if k.startswith("MVAU"))


def test_optimizer_at_least_setfolding_and_cached(tiny_run, optimized):
    from fpgaslim.hw.folding_run import maxfit

    run, default = tiny_run
    fit = optimized[4]
    # the default build (FINN SetFolding at 10,000 fps) fits 85 % LUT: the optimum does too
    full = maxfit(run, "baseline", BOARD, "optimal", styles="fixed")
    assert default.resources["LUT"].percent <= 85.0
    assert full["fps"] >= default.throughput.fps.value
    assert full["fps"] > fit.fps.value  # a bigger budget buys frames
    for k in ("fps", "LUT", "BRAM_18K", "URAM", "DSP", "method", "source"):
        assert k in full
    again = maxfit(run, "baseline", BOARD, "optimal", styles="fixed")
    assert again["timings"] == full["timings"]  # read from disk, not recomputed


def test_table_signatures_change_nothing_and_cache_across_graphs(tiny_run, tmp_path):
    """A unit's candidates evaluated once per layer signature (and read back from the
    cache folder by a later tabulation) are exactly those of evaluating every unit. (The
    tiny CNV repeats no layer configuration, so here the cache is what is exercised; a
    ResNet's repeated blocks hit the in-graph memo, the same lookup.)"""
    from fpgaslim.hw.folding_run import _tabulate

    run, _ = tiny_run
    graph = sorted(run.variant_dir("baseline").glob(
        "builds/*/work/finn/intermediate_models/step_minimize_bit_width.onnx"))[0]
    part = get_board(BOARD).part
    plain = _tabulate(graph, part, tmp_path / "plain", 600.0, memo=False)
    first = _tabulate(graph, part, tmp_path / "first", 600.0, cache=tmp_path / "cache")
    again = _tabulate(graph, part, tmp_path / "again", 600.0, cache=tmp_path / "cache")
    n = len(plain["units"])
    assert plain.pop("signatures") == {"evaluated": n, "memo": 0, "cache": 0}
    stats = first.pop("signatures")
    assert stats["evaluated"] + stats["memo"] == n and stats["cache"] == 0
    assert again.pop("signatures") == {"evaluated": 0, "memo": stats["memo"],
                                       "cache": stats["evaluated"]}
    assert first == plain and again == plain


# ------------------------------------------------------------------ per-layer HLS/RTL (mix)
@pytest.fixture(scope="module")
def mixed(tiny_run, tmp_path_factory):
    """The prefer_rtl graph (standalone thresholds, RTL MVAUs) tabulated with both styles,
    and the optimal folding at a DSP budget where the cost model mixes HLS and RTL MVAUs
    (found on the table first, so the test does not depend on where the optimum falls)."""
    from fpgaslim.hw.api import build_dir_for, build_variant
    from fpgaslim.hw.build import BuildSettings
    from fpgaslim.hw.folding_opt import chosen_ops
    from fpgaslim.hw.folding_run import _start_graph_in, _tabulate, load_optfit, optimize_variant

    run, _ = tiny_run
    build = {"prefer_rtl": True}
    board = get_board(BOARD)
    settings = BuildSettings(board=board, **build).resolved()
    build_variant(run, "baseline", BOARD, settings=settings, verify_images=1)  # the start
    graph = _start_graph_in(build_dir_for(run, "baseline", settings) / "work")
    table = _tabulate(graph, board.part, tmp_path_factory.mktemp("mix-table"), 600.0,
                      cache=run.path / "cache" / "folding-table", mix=True)
    for lut, dsp in itertools.product((10.0, 5.0, 3.0), (4.0, 2.0, 1.0, 0.5)):
        sol = solve(table, Budget(LUT=lut, DSP=dsp).caps(board))
        ops = set(chosen_ops(table, sol.choice).values()) if sol else set()
        if {"MVAU_hls", "MVAU_rtl"} <= ops:
            budget = Budget(LUT=lut, DSP=dsp)
            break
    else:
        pytest.fail("no budget of the grid mixes HLS and RTL MVAUs on the tiny CNV")
    path = optimize_variant(run, "baseline", BOARD, build, budget, keep_table=True, styles="mix")
    return run, budget, path, load_optfit(path), table


def test_mix_table_has_both_styles_and_optimizer_equals_exhaustive(mixed):
    table = mixed[4]
    mvaus = [u for u in table["units"] if u["nodes"][0].startswith("MVAU")]
    assert mvaus and all({c["impl"][u["nodes"][0]] for c in u["candidates"]}
                         == {"MVAU_hls", "MVAU_rtl"} for u in mvaus)
    sub = _subtable(table, styles=True)
    sizes = [len(u["candidates"]) for u in sub["units"]]
    assert 1_000 < int(np.prod(sizes)) < 4_000_000, sizes
    board = get_board(BOARD)
    mixes = 0
    for lut_pct, dsp_pct in itertools.product((10.0, 30.0), (100.0, 2.0)):
        caps = Budget(LUT=lut_pct, DSP=dsp_pct).caps(board)
        want = _exhaustive(sub, caps)
        got = solve(sub, caps)
        if want is None:
            assert got is None
            continue
        cycles, res, _ = evaluate(sub, got.choice)
        assert (got.cycles, cycles) == (want[0], want[0]), (lut_pct, dsp_pct)
        assert res["LUT"] == pytest.approx(want[1]), (lut_pct, dsp_pct)
        from fpgaslim.hw.folding_opt import is_mixed

        mixes += is_mixed(sub, got.choice)
    assert mixes >= 1  # the style lever was exercised


def test_mix_confirming_build_applies_per_node_styles(mixed):
    run, budget, path, fit, _ = mixed
    board = get_board(BOARD)
    assert fit.fits_budget and fit.styles == "mix"
    assert fit.impl.get("MVAU_hls", 0) >= 1 and fit.impl.get("MVAU_rtl", 0) >= 1
    for k in RESOURCES:
        assert fit.resources[k].value <= budget.caps(board)[k] + 1e-9
    # the build's own report holds exactly the chosen styles and folding: its totals are
    # the cost model's, less the DWCs (checked node by node in folding_run._check_styles)
    assert fit.resources["LUT"].value == pytest.approx(fit.predicted["LUT"] - fit.dwc_LUT.value)
    assert fit.resources["DSP"].value == pytest.approx(fit.predicted["DSP"])
    spec = json.loads((path.parent / fit.specialize_config).read_text(encoding="utf-8"))
    styles = {v["preferred_impl_style"] for k, v in spec.items() if k.startswith("MVAU_")}
    assert styles == {"hls", "rtl"}
    assert "HLS/RTL" in fit.source


def test_compare_runs_missing_maxfits_once(tiny_run, tmp_path):
    """`compare --maxfit`: the optimal folding of a variant x board without one is run (from
    the existing build), shown by compare, and not run again."""
    import shutil

    from fpgaslim.compare import compare_runs, run_missing_maxfits

    run, default = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy, ignore=lambda d, names: [n for n in names if "-optfit-" in n])
    made = run_missing_maxfits([copy], Budget(LUT=10.0), styles="fixed")
    assert len(made) == 1 and made[0].is_file()
    assert run_missing_maxfits([copy], Budget(LUT=10.0), styles="fixed") == []
    rows = compare_runs([copy], tmp_path / "report", plots=False).rows
    row = next(r for r in rows if r.variant == "baseline" and r.board == BOARD)
    assert row.maxfit_method == "optimal" and row.maxfit_fps > 0
    assert row.maxfit_fps == pytest.approx(json.loads(made[0].read_text())["fps"]["value"])
