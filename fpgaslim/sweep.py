"""`fpgaslim sweep sweep.yaml`: baseline -> compression methods -> FINN builds per board ->
folding search -> comparison report, resumable at every finished unit of work.

Units and their commit points (all written atomically, so a kill never leaves a half result
that is later read as valid):
  baseline            variants/baseline/record.json
  a method step       sweep/steps/<key>.json (the variant ids it produced), after the method's
                      own variants (a method interrupted half-way resumes by its own rules)
  a build             variants/<id>/builds/<folder>/report.json, then build.json (its key)
  a folding search    variants/<id>/builds/<folder>/maxfit.json, then build.json
A build or search is done when its record's key (hw/build_key.py: model content, board,
keyed build settings, verification images, versions) equals the key computed now, so a
changed setting redoes exactly the builds it changes.
Builds are independent, so they run in a local process pool, or on a Dask cluster when a
scheduler address is given (Vivado builds that take hours can then spread over machines).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fpgaslim.core.atomic import atomic_write_json
from fpgaslim.compress.variants import RunDir
from fpgaslim.core.config import validate
from fpgaslim.core.errors import ConfigError, FpgaslimError
from fpgaslim.hw.boards import DEFAULT_BOARD, BoardField, get_board
from fpgaslim.hw.folding_opt import STEP_FACTOR, default_budget
from fpgaslim.pipeline import TrainJob, as_run, train_job

if TYPE_CHECKING:
    from fpgaslim.hw.boards import Board


def _look_up_boards(names: Any) -> Any:
    """A config's board names as Boards, looked up once here (an unknown name: a ValueError,
    so the message names the field)."""
    if not isinstance(names, list):
        return names  # pydantic says what is wrong with it
    try:
        return [get_board(b) if isinstance(b, str) else b for b in names]
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class MethodStep(BaseModel):
    """One compression method run on one parent variant."""

    model_config = ConfigDict(extra="forbid")
    method: str
    parent: str = "baseline"
    preset: str = "cpu"
    # overrides of the preset; for a chain of methods (dynamic-prune+fuse) one mapping per
    # step: {"dynamic-prune": {...}, "layer-fusion": {...}}
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        from fpgaslim.compress.methods import list_methods

        if v not in list_methods():
            raise ValueError(f"unknown method {v!r}; valid: {', '.join(list_methods())}")
        return v

    def resolved_settings(self) -> BaseModel:
        """The method's Settings (validated: errors name the field)."""
        from fpgaslim.compress.methods import method_settings

        return method_settings(self.method, self.preset, self.settings,
                               f"methods[{self.method}]")

    @property
    def key(self) -> str:
        blob = json.dumps(self.model_dump(), sort_keys=True)
        return f"{self.method}-{self.parent}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


class FoldingSearchSettings(BaseModel):
    """Max-fit per variant x board: "optimal" (hw/folding_run.py, exact on FINN's per-layer
    estimates) or "search" (target_fps x mvau_wwidth_max, hw/folding_search.py)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    method: Literal["optimal", "search"] = "optimal"
    boards: list[BoardField] | None = None  # None: every board of the sweep
    budget: dict[str, float] = Field(default_factory=default_budget)
    mvau_wwidth_max: list[int] = Field(default_factory=lambda: [36, 1024])
    step_factor: float = Field(STEP_FACTOR, gt=1.0)
    # (optimal) "mix": HLS or RTL chosen per layer; "fixed": the build settings' own graph
    styles: Literal["mix", "fixed"] = "mix"

    @field_validator("boards", mode="before")
    @classmethod
    def _look_up(cls, v: Any) -> Any:
        return _look_up_boards(v)


class ParallelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workers: int = Field(2, ge=1)
    dask_scheduler: str | None = None  # e.g. tcp://10.0.0.5:8786


class SimulateSettings(BaseModel):
    """`simulate:` of a sweep: every build's stitched design run in Verilator after the
    builds (`fpgaslim simulate`, hw/sim); needs all-RTL builds (build: {prefer_rtl: true})."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    frames: int = Field(8, ge=2)
    timeout_s: float = Field(900.0, gt=0)


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_dir: str
    baseline: TrainJob = TrainJob()
    methods: list[MethodStep] = Field(default_factory=list)
    boards: list[BoardField] = Field(default_factory=lambda: [get_board(DEFAULT_BOARD)])
    build: dict[str, Any] = Field(default_factory=dict)  # BuildSettings fields except board
    # per board, BuildSettings fields over `build`, e.g. {u250: {clock_ns: 4.0}}
    build_by_board: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # test images each build is verified on; "all": the whole test split
    verify_images: Annotated[int, Field(ge=0)] | Literal["all"] = 20
    folding_search: FoldingSearchSettings = FoldingSearchSettings(enabled=False)
    simulate: SimulateSettings = SimulateSettings()
    parallel: ParallelSettings = ParallelSettings()
    report_dir: str | None = None  # default: <run_dir>/report

    @field_validator("boards", mode="before")
    @classmethod
    def _look_up(cls, v: Any) -> Any:
        return _look_up_boards(v)

    @field_validator("boards")
    @classmethod
    def _some_board(cls, v: list["Board"]) -> list["Board"]:
        if not v:
            raise ValueError("list at least one board")
        return v

    @property
    def board_names(self) -> list[str]:
        return [b.name for b in self.boards]

    @model_validator(mode="after")
    def _check_nested(self) -> "SweepConfig":
        from fpgaslim.hw.build import BuildSettings

        if "board" in self.build:
            raise ValueError("build.board: list boards under `boards:` instead")
        validate(BuildSettings, self.build, "build")
        by_board = {}
        for name, over in self.build_by_board.items():
            try:
                board = get_board(name).name
            except ConfigError as exc:
                raise ValueError(f"build_by_board.{name}: {exc}") from None
            if board not in self.board_names:
                raise ValueError(f"build_by_board.{name}: not one of the sweep's boards "
                                 f"({', '.join(self.board_names)})")
            if "board" in over:
                raise ValueError(f"build_by_board.{name}.board: the key names the board")
            validate(BuildSettings, {**self.build, **over}, f"build_by_board.{name}")
            by_board[board] = over
        self.build_by_board = by_board
        for step in self.methods:
            step.resolved_settings()
        if self.simulate.enabled and not all(self.build_for(b).get("prefer_rtl")
                                             for b in self.board_names):
            raise ValueError("simulate.enabled: the simulation needs all-RTL builds; set "
                             "build: {prefer_rtl: true}")
        return self

    def build_for(self, board: str) -> dict[str, Any]:
        """The BuildSettings fields (without the board) of the builds for `board`."""
        return {**self.build, **self.build_by_board.get(board, {})}


def load_sweep(path: str | Path) -> SweepConfig:
    from fpgaslim.core.config import read_config_file

    data = read_config_file(path)
    base = Path(path).resolve().parent
    if "run_dir" in data and not Path(str(data["run_dir"])).is_absolute():
        data["run_dir"] = str(base / str(data["run_dir"]))
    return validate(SweepConfig, data, str(path))


class SweepResult(BaseModel):
    run_dir: str
    variants: list[str]
    builds: dict[str, str]  # "<variant>@<board>" -> report.json path
    maxfit: dict[str, str] = Field(default_factory=dict)
    work_done: dict[str, int]  # units of work run in this call (0 everywhere: nothing to do)
    failures: dict[str, str] = Field(default_factory=dict)  # "<variant>@<board>" -> error
    report: dict[str, str] = Field(default_factory=dict)  # written report files


def _build_task(run_path: str, variant_id: str, board: "Board", build: dict[str, Any],
                verify_images: int | str) -> str:
    """One build, in a worker process (pool or Dask): returns the report path."""
    import fcntl

    from fpgaslim.hw.api import build_dir_for, build_variant
    from fpgaslim.hw.build import BuildSettings

    run = RunDir(run_path)
    settings = BuildSettings(board=board, **build).resolved()
    bdir = build_dir_for(run, variant_id, settings)
    bdir.mkdir(parents=True, exist_ok=True)
    # One build per folder at a time: a build left running by a killed sweep finishes (and
    # commits its report) before a resumed sweep looks at the folder again.
    with open(bdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build_variant(run, variant_id, board, settings=settings, verify_images=verify_images)
    return str(bdir / "report.json")


def _maxfit_task(run_path: str, variant_id: str, board: "Board", build: dict[str, Any],
                 search: dict[str, Any]) -> str:
    if search.get("method") == "optimal":
        from fpgaslim.hw.folding_opt import Budget
        from fpgaslim.hw.folding_run import optimize_variant

        return str(optimize_variant(RunDir(run_path), variant_id, board, build,
                                    Budget(**search["budget"]), styles=search["styles"]))
    from fpgaslim.hw.folding_search import FoldingSearch, search_variant

    return str(search_variant(RunDir(run_path), variant_id, board, build,
                              FoldingSearch(**search)))


def _maxfit_plan(run: RunDir, vid: str, board: "Board", build: dict[str, Any],
                 search: FoldingSearchSettings) -> tuple[Path, bool]:
    """Where the max-fit result of (vid, board) goes, and whether it is done (its key)."""
    if search.method == "optimal":
        from fpgaslim.hw.folding_opt import Budget
        from fpgaslim.hw.folding_run import optfit_done, optfit_path

        budget = Budget(**search.budget)
        return (optfit_path(run, vid, board, build, budget, styles=search.styles),
                optfit_done(run, vid, board, build, budget, styles=search.styles))
    from fpgaslim.hw.folding_search import FoldingSearch, maxfit_path, search_done

    return (maxfit_path(run, vid, board, build),
            search_done(run, vid, board, build, FoldingSearch(**search.model_dump())))


class _Executor:
    """A local process pool or a Dask client behind one submit/as_completed interface."""

    def __init__(self, settings: ParallelSettings) -> None:
        self._client = None
        if settings.dask_scheduler:
            try:
                from distributed import Client
            except ImportError as exc:
                raise ConfigError("parallel.dask_scheduler needs the `distributed` package: "
                                  "pip install 'fpgaslim[dask]'") from exc
            self._client = Client(settings.dask_scheduler)
            self._pool = None
        else:
            self._pool = ProcessPoolExecutor(settings.workers,
                                             mp_context=multiprocessing.get_context("spawn"))

    def submit(self, fn, *args: Any):
        if self._client is not None:
            return self._client.submit(fn, *args, pure=False)
        return self._pool.submit(fn, *args)

    def as_completed(self, futures: Iterable):
        if self._client is not None:
            from distributed import as_completed as dask_completed

            return dask_completed(list(futures))
        return as_completed(list(futures))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def run_sweep(config: SweepConfig, progress: bool | None = None) -> SweepResult:
    """Run (or resume) the whole sweep; a finished sweep run again does no work. Steps:
    baseline, methods (each step's variants recorded), _plan (which builds are not done),
    _execute (builds, then max-fits), the comparison report."""
    from fpgaslim.pipeline import run_method

    from .sweep_progress import SweepProgress

    run = as_run(config.run_dir)
    work = {"baseline": 0, "methods": 0, "builds": 0, "maxfit": 0}
    with SweepProgress(enabled=progress) as bar:
        bar.stage("baseline")
        data = config.baseline.data.load()
        if not run.has(config.baseline.variant_id):
            work["baseline"] += 1
        train_job(run, config.baseline, data=data, progress=False if progress is False else None)
        bar.advance()

        variants = [config.baseline.variant_id]
        for step in config.methods:
            bar.stage(f"{step.method} on {step.parent}")
            marker = run.path / "sweep" / "steps" / f"{step.key}.json"
            if marker.is_file():
                ids = json.loads(marker.read_text(encoding="utf-8"))["variants"]
            else:
                work["methods"] += 1
                recs = run_method(run, step.method, step.parent, step.resolved_settings(),
                                  data=data, progress=False)
                ids = [r.id for r in recs]
                atomic_write_json(marker, {"step": step.model_dump(), "variants": ids})
            variants += [v for v in ids if v not in variants]
            bar.advance()

        plan = _plan(config, run, variants)
        bar.stage(f"FINN builds ({len(plan.todo)} to do)",
                  total=len(plan.todo) + len(plan.search_todo))
        failures = _execute(config, run, plan, work, bar)
        bar.advance()
        if config.simulate.enabled:
            bar.stage("Verilator simulations of the stitched designs")
            work["simulate"] = _simulate(config, run, plan, failures)
            bar.advance()

        bar.stage("comparison report")
        from fpgaslim.compare import compare_runs

        out = Path(config.report_dir) if config.report_dir else run.path / "report"
        own = [Path(p).parent for p in plan.builds.values()]  # this sweep's builds only
        report = {k: str(v) for k, v in compare_runs([run.path], out, only=own).files.items()
                  if not k.startswith("plot:")}
        bar.advance()
    return SweepResult(run_dir=str(run.path), variants=variants, builds=plan.builds,
                       maxfit=plan.maxfit, work_done=work, report=report, failures=failures)


def _simulate(config: SweepConfig, run: RunDir, plan: "_Plan", failures: dict[str, str]
              ) -> int:
    """`fpgaslim simulate` of every build that built and has no simulation of
    `config.simulate.frames` frames newer than its report; one at a time (each compiles with
    the machine's cores). Failures go into `failures` as "<variant>@<board> simulate". Returns
    how many ran."""
    from fpgaslim.hw.sim.api import simulate_build
    from fpgaslim.hw.sim.records import Simulation

    ran = 0
    for key, report in plan.builds.items():
        if key in failures or not Path(report).is_file():
            continue
        vid, board = key.rsplit("@", 1)
        bdir = Path(report).parent
        saved = bdir / "work" / "simulate" / "simulation.json"
        if saved.is_file() and saved.stat().st_mtime >= Path(report).stat().st_mtime:
            try:
                if Simulation.model_validate_json(saved.read_text(encoding="utf-8")
                                                  ).frames == config.simulate.frames:
                    continue
            except ValueError:
                pass
        try:
            simulate_build(run, vid, board, config.simulate.frames,
                           timeout_s=config.simulate.timeout_s, build_dir=bdir)
        except FpgaslimError as exc:
            failures[f"{key} simulate"] = str(exc)
        ran += 1
    return ran


@dataclass
class _Plan:
    """What the builds step has to do: every planned build and max-fit (path), and those
    whose record does not hold the key computed now (to do)."""

    builds: dict[str, str] = field(default_factory=dict)  # "<variant>@<board>" -> report.json
    maxfit: dict[str, str] = field(default_factory=dict)
    todo: list[tuple[str, "Board"]] = field(default_factory=list)
    search_todo: list[tuple[str, "Board"]] = field(default_factory=list)


def _plan(config: SweepConfig, run: RunDir, variants: list[str]) -> _Plan:
    """Each variant x board: its build folder, and whether it is done (its build key)."""
    from fpgaslim.hw.build import BuildSettings
    from fpgaslim.hw.build_key import build_dir_for, is_done, variant_key

    plan = _Plan()
    for vid in variants:
        for board in config.boards:  # Boards: looked up once, by the config's validation
            settings = BuildSettings(board=board, **config.build_for(board.name)).resolved()
            bdir = build_dir_for(run, vid, settings)
            plan.builds[f"{vid}@{board.name}"] = str(bdir / "report.json")
            key = variant_key(run, vid, settings, "estimate", config.verify_images)
            if not is_done(bdir, key):
                plan.todo.append((vid, board))
    search = config.folding_search
    if search.enabled:
        for vid in variants:
            for board in search.boards or config.boards:
                path, done = _maxfit_plan(run, vid, board, config.build_for(board.name), search)
                plan.maxfit[f"{vid}@{board.name}"] = str(path)
                if not done:
                    plan.search_todo.append((vid, board))
    return plan


def _execute(config: SweepConfig, run: RunDir, plan: _Plan, work: dict[str, int],
             bar: Any) -> dict[str, str]:
    """The planned builds, then the max-fits of the variants that built, in the executor;
    counts them in `work`; returns the failed builds ("<variant>@<board>" -> error)."""
    failures: dict[str, str] = {}
    if not (plan.todo or plan.search_todo):
        return failures
    ex = _Executor(config.parallel)
    try:
        keys = {}
        for vid, board in plan.todo:
            fut = ex.submit(_build_task, str(run.path), vid, board,
                            config.build_for(board.name), config.verify_images)
            keys[fut] = f"{vid}@{board.name}"
        for fut in ex.as_completed(list(keys)):
            try:
                fut.result()
            except FpgaslimError as exc:  # one variant's failure must not sink the
                failures[keys[fut]] = str(exc)  # others: reported, retried next run
            work["builds"] += 1
            bar.advance_sub()
        futures = [ex.submit(_maxfit_task, str(run.path), vid, board,
                             config.build_for(board.name), config.folding_search.model_dump())
                   for vid, board in plan.search_todo
                   if f"{vid}@{board.name}" not in failures]  # no build, no max-fit
        for fut in ex.as_completed(futures):
            fut.result()
            work["maxfit"] += 1
            bar.advance_sub()
    finally:
        ex.close()
    return failures
