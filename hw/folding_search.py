"""Folding search: the highest frame rate whose FINN estimate still fits a resource budget.

FINN folds a network for one `target_fps`; whether that fits a board is only known after the
estimate. The achievable rate is also capped by `mvau_wwidth_max` (SIMD x weight bits per
MVAU, 36 by default), which FINN_NOTES measured as the real limit on Pynq-Z1: so the search
runs over both. For each `mvau_wwidth_max` it walks a geometric grid of targets
(t_i = t_0 * step_factor^i): doubling steps until the estimate stops fitting (or the folding
saturates: the estimated fps stops growing), then bisection on the grid, so the answer is a
grid point that fits and whose next grid point does not. Every probe is a real estimate build
(the board-independent streamlined prefix is reused, so a probe costs the folding and estimate
steps only).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fpgaslim.core.atomic import atomic_write_json
from fpgaslim.compress.data import load_for_variant
from fpgaslim.compress.variants import RunDir

from .boards import Board, as_board
from .build import BuildSettings, build_estimate
from .build_key import BuildKey, is_done, variant_key, write_record
from .figure import Figure
from .folding_opt import STEP_FACTOR, default_budget
from .qonnx_export import ensure_qonnx
from .report import HardwareReport

BUDGET_RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")


class FoldingSearch(BaseModel):
    """Search settings: resource budget in % of the board, knobs and grid."""

    model_config = ConfigDict(extra="ignore")  # the sweep passes its own fields through
    budget: dict[str, float] = Field(default_factory=default_budget)
    mvau_wwidth_max: list[int] = Field(default_factory=lambda: [36, 1024])
    step_factor: float = Field(STEP_FACTOR, gt=1.0)
    max_probes: int = Field(16, ge=2)  # per knob value


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mvau_wwidth_max: int
    grid_index: int
    target_fps: float
    fps: float
    fits_budget: bool
    percent: dict[str, float]  # resource -> % of the board


class MaxFit(BaseModel):
    """The answer, with the probes that justify it."""

    model_config = ConfigDict(extra="forbid")
    variant: str
    board: str
    fps: Figure | None  # None: nothing fits even at the lowest target
    target_fps: float | None
    mvau_wwidth_max: int | None
    percent: dict[str, float]
    next_step: Probe | None  # the same knob one grid step faster (does not fit), if probed
    saturated: bool  # the folding reached full parallelism before the budget ran out
    budget: dict[str, float]
    probes: list[Probe]
    source: str


def within_budget(report: HardwareReport, budget: dict[str, float]) -> tuple[bool, dict]:
    pct = {k: float(report.resources[k].percent or 0.0) for k in BUDGET_RESOURCES
           if k in report.resources}
    return all(pct.get(k, 0.0) <= limit for k, limit in budget.items()), pct


def maxfit_path(run: RunDir, variant_id: str, board: Board, build: dict[str, Any]) -> Path:
    """Where the search's maxfit.json goes (a name for people; done is its record's)."""
    key = hashlib.sha256(json.dumps(build, sort_keys=True).encode()).hexdigest()[:8]
    return run.variant_dir(variant_id) / "builds" / f"{board.name}-maxfit-{key}" \
        / "maxfit.json"


def search_key(run: RunDir, variant_id: str, board: Board, build: dict[str, Any],
               search: FoldingSearch) -> BuildKey:
    """The build key of a folding search: the variant, the build settings it starts from,
    the search's budget and grid (probes verify on one image, without the model)."""
    return variant_key(run, variant_id, BuildSettings(board=board, **build),
                       "maxfit-search", 1, extra=search.model_dump(mode="json"))


def search_done(run: RunDir, variant_id: str, board: Board, build: dict[str, Any],
                search: FoldingSearch) -> bool:
    return is_done(maxfit_path(run, variant_id, board, build).parent,
                   search_key(run, variant_id, board, build, search))


def search_variant(run: RunDir, variant_id: str, board: str | Board,
                   build: dict[str, Any] | None = None,
                   search: FoldingSearch | None = None) -> Path:
    """Run (or return the saved) folding search of one variant on one board (a Board, or a
    name looked up here)."""
    build = dict(build or {})
    search = search or FoldingSearch()
    b = as_board(board)
    out = maxfit_path(run, variant_id, b, build)
    key = search_key(run, variant_id, b, build, search)
    if is_done(out.parent, key):
        return out
    vdir = run.variant_dir(variant_id)
    record = ensure_qonnx(run, variant_id)
    images = load_for_variant(run, variant_id, limit_train=1).test.tensors[0][:1]
    work = out.parent / "probes"
    cache: dict[tuple[int, int], Probe] = {}
    base = BuildSettings(board=b, **build).resolved()

    def probe(wmax: int, i: int) -> Probe:
        if (wmax, i) not in cache:
            target = base.target_fps * search.step_factor ** i
            settings = base.model_copy(update={"target_fps": max(1, int(round(target))),
                                               "mvau_wwidth_max": wmax})
            pdir = work / f"w{wmax}-i{i}"
            report = build_estimate(vdir / record.qonnx, pdir, settings, images=images,
                                    variant=variant_id, prefix_cache=vdir / "builds" / ".prefix")
            shutil.rmtree(pdir, ignore_errors=True)  # keep the answer, not 100s of MB of graphs
            ok, pct = within_budget(report, search.budget)
            cache[(wmax, i)] = Probe(mvau_wwidth_max=wmax, grid_index=i,
                                     target_fps=settings.target_fps,
                                     fps=report.throughput.fps.value, fits_budget=ok, percent=pct)
        return cache[(wmax, i)]

    best: tuple[Probe, Probe | None, bool] | None = None
    for wmax in search.mvau_wwidth_max:
        found = _search_knob(lambda i: probe(wmax, i), search.max_probes)
        if found is not None and (best is None or found[0].fps > best[0].fps):
            best = found
    shutil.rmtree(work, ignore_errors=True)
    source = (f"FINN estimate (finn-plus, clock {base.clock_ns:g} ns), folding search over "
              f"target_fps x mvau_wwidth_max, budget % of {b.display}")
    if best is None:
        result = MaxFit(variant=variant_id, board=b.name, fps=None, target_fps=None,
                        mvau_wwidth_max=None, percent={}, next_step=None, saturated=False,
                        budget=search.budget, probes=list(cache.values()), source=source)
    else:
        hit, nxt, saturated = best
        result = MaxFit(variant=variant_id, board=b.name,
                        fps=Figure.of(hit.fps, "frames/s", source), target_fps=hit.target_fps,
                        mvau_wwidth_max=hit.mvau_wwidth_max, percent=hit.percent,
                        next_step=nxt, saturated=saturated, budget=search.budget,
                        probes=sorted(cache.values(), key=lambda p: (p.mvau_wwidth_max,
                                                                     p.grid_index)),
                        source=source)
    atomic_write_json(out, result.model_dump(mode="json"))
    write_record(out.parent, key)
    return out


#: the lowest grid index the downward search probes: t0 / STEP_FACTOR^24, about 0.5 % of the
#: starting target. A ResNet-20 w4a4 on a Pynq-Z1 first fits near index -10, so the earlier
#: floor of -8 called it "does not fit at any folding" when it only needed a slower one.
FLOOR_INDEX = -24


def _search_knob(probe, max_probes: int) -> tuple[Probe, Probe | None, bool] | None:
    """Highest fitting grid index: gallop (+1, +2, +4, ...) then bisect. Returns (fitting probe,
    the next grid probe, saturated) or None when nothing fits down to FLOOR_INDEX."""
    lo = 0
    p = probe(0)
    if not p.fits_budget:  # gallop downwards to a fitting point
        step = 1
        while not p.fits_budget:
            if lo == FLOOR_INDEX:
                return None
            lo, step = max(lo - step, FLOOR_INDEX), step * 2
            p = probe(lo)
    hi, step, last_fps, probes = None, 1, p.fps, 1
    while hi is None:
        cand = lo + step
        q = probe(cand)
        probes += 1
        if not q.fits_budget:
            hi = cand
        elif q.fps <= last_fps * 1.0001 and q.fps < q.target_fps:
            # more target, no more fps, and short of the target: full parallelism reached.
            # (Equal fps while the target is still met is only FINN's discrete folding
            # steps: a ResNet-20 gives 443 fps at both 352 and 440 targets.)
            return probe(lo), None, True
        else:
            lo, last_fps, step = cand, max(q.fps, last_fps), step * 2
        if probes >= max_probes:
            return probe(lo), None, False
    while hi - lo > 1 and probes < max_probes:
        mid = (lo + hi) // 2
        probes += 1
        if probe(mid).fits_budget:
            lo = mid
        else:
            hi = mid
    return probe(lo), probe(lo + 1), False


def load_maxfit(path: str | Path) -> MaxFit:
    return MaxFit.model_validate_json(Path(path).read_text(encoding="utf-8"))
