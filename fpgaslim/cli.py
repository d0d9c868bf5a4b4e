"""The `fpgaslim` command. Each command parses options, calls one library function and prints
its result; errors from the library become messages and exit codes here and only here."""

from __future__ import annotations

import sys
import types
import typing
from functools import wraps
from pathlib import Path
from typing import Any, Callable

import click
from pydantic import BaseModel

from fpgaslim.core.errors import FpgaslimError
from fpgaslim.hw.boards import DEFAULT_BOARD
from fpgaslim.hw.folding_opt import LUT_BUDGET, STEP_FACTOR


def _handle_errors(fn: Callable) -> Callable:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FpgaslimError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.secho("interrupted: finished variants and builds are kept; run the same "
                        "command again to resume", fg="yellow", err=True)
            sys.exit(130)
    return wrapper


def _image_count(ctx: Any, param: Any, value: str) -> int | str:
    """--verify-images / --images: a number of test images, or "all" (the whole test split)."""
    from fpgaslim.hw.verify import parse_image_count

    try:
        return parse_image_count(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _console():
    from rich.console import Console

    # a pipe or log file gets wide tables instead of rich's 80-column default
    return Console() if sys.stdout.isatty() else Console(width=160)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fpgaslim")
def main() -> None:
    """Compress quantized CNNs and see which variant fits your FPGA before Vivado."""
    import warnings

    # brevitas warns at import that an optional CUDA kernel package is absent; it is irrelevant
    warnings.filterwarnings("ignore", message="fast_hadamard_transform")


# --------------------------------------------------------------------------- train / export / info
@main.command()
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML/TOML file with TrainJob fields; options below override it.")
@click.option("--model", help="resnet8/14/20/32/56/110, cnv, tfc, sfc, lfc (default "
              "resnet8), or your own Brevitas model: path/to/file.py:factory or "
              "package.module:factory (keyword "
              "arguments: model_args in --config)")
@click.option("--dataset", help="digits (default), fashion-mnist, mnist, cifar10, or your own: "
              "folder:PATH (a subfolder of PNG/JPEG per class), npz:PATH (x, y), idx:PATH")
@click.option("--data-dir", help="folder with local dataset copies")
@click.option("--bits", help="weight/activation bits wNaM, N and M in 1..8: w4a4 (default), "
              "w2a2, w1a1 (bipolar: XNOR-popcount in FINN), w1a2, w8a8")
@click.option("--first-bits", type=int, help="weights of the first layer (default 8)")
@click.option("--last-bits", type=int, help="weights of the last layer (default 8)")
@click.option("--width", type=float, help="width multiplier")
@click.option("--epochs", type=int)
@click.option("--lr", type=float)
@click.option("--batch-size", type=int)
@click.option("--seed", type=int)
@click.option("--limit-train", type=int, help="use a seeded subset of the training data")
@_handle_errors
def train(run: Path, config: Path | None, **opts: Any) -> None:
    """Train a baseline QAT model into RUN (resumes if interrupted)."""
    from fpgaslim.core.config import parse_bits, read_config_file, validate
    from fpgaslim.pipeline import TrainJob, train_job

    data = read_config_file(config) if config else {}
    for key in ("model", "width"):
        if opts[key] is not None:
            data[key] = opts[key]
    for key in ("dataset", "data_dir", "limit_train"):
        if opts[key] is not None:
            data.setdefault("data", {})[key] = opts[key]
    for key in ("epochs", "lr", "batch_size", "seed"):
        if opts[key] is not None:
            data.setdefault("train", {})[key] = opts[key]
    bits = dict(data.get("bits") or {})
    if opts["bits"]:
        bits.update(parse_bits(opts["bits"]))
    if opts["first_bits"]:
        bits["first_weight"] = opts["first_bits"]
    if opts["last_bits"]:
        bits["last_weight"] = opts["last_bits"]
    if bits:
        data["bits"] = bits
    job = validate(TrainJob, data, str(config) if config else "options")
    rec = train_job(run, job)
    click.echo(f"{rec.id}: {rec.arch.name} {rec.arch.bits.tag} on {rec.dataset}: "
               f"test accuracy {rec.accuracy.test:.2f}% (measured, PyTorch), "
               f"val {rec.accuracy.val:.2f}%, {rec.params:,} params, {rec.macs:,} MACs")
    for warning in rec.details.get("warnings", []):
        click.secho(f"warning: {warning}", fg="yellow", err=True)


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--variant", "variant_id", default="baseline", show_default=True)
@click.option("--check-images", default=20, show_default=True)
@_handle_errors
def export(run: Path, variant_id: str, check_images: int) -> None:
    """Export a variant to QONNX and check it against PyTorch on real test images."""
    from fpgaslim.pipeline import export_variant

    rec = export_variant(run, variant_id, check_images=check_images)
    chk = rec.details["export_check"]
    click.echo(f"{run / 'variants' / rec.id / rec.qonnx}: max |diff| {chk['max_abs_diff']:.2e}, "
               f"argmax agreement {chk['argmax_agreement']:.0%} on {chk['images']} test images "
               "(qonnx execution vs PyTorch)")


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_handle_errors
def info(run: Path) -> None:
    """List the variants of a run."""
    from rich.table import Table

    from fpgaslim.compress.variants import RunDir

    table = Table(title=f"variants in {run}")
    table.add_column("id", no_wrap=True)  # ids are what users copy into the next command
    for col in ("parent", "method", "model", "bits", "depth", "params", "MACs",
                "val %", "test %", "qonnx"):
        table.add_column(col)
    for r in RunDir(run).records():
        table.add_row(r.id, r.parent or "-", r.method, r.arch.name, r.arch.bits.tag,
                      str(r.depth), f"{r.params:,}", f"{r.macs:,}",
                      f"{r.accuracy.val:.2f}" if r.accuracy.val is not None else "-",
                      f"{r.accuracy.test:.2f}" if r.accuracy.test is not None else "-",
                      "yes" if r.qonnx else "no")
    _console().print(table)
    click.echo("accuracies: measured in PyTorch on the validation / test split")


# --------------------------------------------------------------------------- compress
def _scalar_type(annotation: Any) -> Any | None:
    """The click type of a settings field, or None if it is not a plain scalar."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _scalar_type(args[0])
    if origin is typing.Literal:
        return click.Choice([str(a) for a in args])
    return annotation if annotation in (int, float, bool, str) else None


def _method_command(name: str) -> click.Command:
    from fpgaslim.compress.methods import get_method

    module = get_method(name)
    settings_cls: type[BaseModel] = module.Settings
    params: list[click.Parameter] = [
        click.Argument(["run"], type=click.Path(exists=True, file_okay=False, path_type=Path)),
        click.Option(["--variant", "variant_id"], default="baseline", show_default=True,
                     help="parent variant"),
        click.Option(["--preset"], default="cpu", show_default=True,
                     help="settings preset: cpu (small) or full (the paper's recipe)"),
        click.Option(["--config"], type=click.Path(dir_okay=False, path_type=Path),
                     help="YAML/TOML settings file (overrides the preset; a chain of "
                          "methods: one mapping per step, named by its method)"),
        click.Option(["--data-dir"], help="folder with local dataset copies"),
    ]
    fields: dict[str, str] = {}
    for fname, field in settings_cls.model_fields.items():
        ctype = _scalar_type(field.annotation)
        if ctype is None:
            continue
        flag = (field.alias or fname).rstrip("_").replace("_", "-")
        dest = f"opt_{fname}"
        fields[dest] = field.alias or fname
        decl = [f"--{flag}/--no-{flag}", dest] if ctype is bool else [f"--{flag}", dest]
        params.append(click.Option(decl, type=None if ctype is bool else ctype, default=None,
                                   help=field.description))

    @_handle_errors
    def callback(run: Path, variant_id: str, preset: str, config: Path | None,
                 data_dir: str | None, **opts: Any) -> None:
        from fpgaslim.compress.methods import method_settings
        from fpgaslim.core.config import read_config_file
        from fpgaslim.pipeline import run_method

        over = read_config_file(config) if config else {}
        over.update({fields[k]: v for k, v in opts.items() if v is not None})
        settings = method_settings(name, preset, over,
                                   str(config) if config else f"{name} options")
        for rec in run_method(run, name, variant_id, settings, data_dir=data_dir):
            acc = f"{rec.accuracy.test:.2f}%" if rec.accuracy.test is not None else "-"
            click.echo(f"{rec.id}: depth {rec.depth}, {rec.params:,} params, {rec.macs:,} MACs, "
                       f"test {acc} (measured, PyTorch)")

    doc = (module.__doc__ or name).strip().splitlines()[0]
    return click.Command(name, params=params, callback=callback, help=doc)


class _MethodGroup(click.Group):
    """Subcommands come from the method registry, imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from fpgaslim.compress.methods import list_methods

        return list_methods()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from fpgaslim.compress.methods import METHODS

        return _method_command(name) if name in METHODS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from fpgaslim.compress.methods import METHODS, method_help

        rows = [(m, method_help(m)) for m in METHODS]  # in the registry's order
        with formatter.section("Methods"):
            formatter.write_dl(rows)


@main.group(cls=_MethodGroup)
def compress() -> None:
    """Run a compression method on a variant of a run; each run yields new variants."""


# --------------------------------------------------------------------------- hw
@main.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--variant", "variant_id", default="baseline", show_default=True)
@click.option("--board", default=DEFAULT_BOARD, show_default=True)
@click.option("--data", "data_spec", help="MODEL.onnx only: verification data (a --dataset "
              "spec, e.g. npz:test.npz); default seeded random inputs in the input's range")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="MODEL.onnx only: the run folder of the build (default runs/<file stem>)")
@click.option("--input", "input_dtype", type=click.Choice(["uint8"]),
              help="MODEL.onnx with a float input: the accelerator reads these pixels p and "
              "the file's input is (p * SCALE - MEAN) / STD, prepended as FINN's flow does")
@click.option("--scale", help="with --input: pixel scale, e.g. 1/255 (the default)")
@click.option("--mean", help="with --input: per-channel mean, e.g. 0.485,0.456,0.406")
@click.option("--std", help="with --input: per-channel std, e.g. 0.226,0.226,0.226")
@click.option("--topk", type=click.IntRange(min=1),
              help="MODEL.onnx only: append FINN's top-k (LabelSelect): the accelerator "
              "returns the K best class indices, as finn-examples' boards do")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="MODEL.onnx only: YAML/TOML with `input:` {dtype, scale, mean, std} and "
              "`topk:` (flags override it)")
@click.option("--target-fps", type=float)
@click.option("--clock-ns", type=float)
@click.option("--weights", type=click.Choice(["auto", "onchip", "external"]))
@click.option("--timeout", "timeout_s", type=float, help="time limit of the FINN build, seconds")
@click.option("--streamline", type=click.Choice(["fast", "stock"]),
              help="fast (default): finn-plus's streamlining without its redundant clean-ups, "
              "the same graph; stock: finn-plus unchanged")
@click.option("--verify-images", default="20", show_default=True, callback=_image_count,
              help="test images to verify on, or 'all' (the whole test split)")
@click.option("--bitfile", is_flag=True, help="full Vivado flow (needs Vivado/Vitis)")
@click.option("--synth", type=click.Choice(["none", "yosys"]),
              help="second opinion: synthesize every RTL layer with Yosys synth_xilinx")
@click.option("--sim", type=click.Choice(["none", "verilator"]),
              help="second opinion: simulate every RTL layer with Verilator, bit-exact check")
@click.option("--prefer-rtl", is_flag=True, default=None,
              help="FINN's RTL variants wherever it offers them (standalone thresholds)")
@click.option("--layer-timeout", "layer_timeout_s", type=float,
              help="time limit per layer for --synth / --sim, seconds (default 120)")
@_handle_errors
def build(run: Path, variant_id: str, board: str, verify_images: int | str, bitfile: bool,
          data_spec: str | None, out_dir: Path | None, input_dtype: str | None,
          scale: str | None, mean: str | None, std: str | None, topk: int | None,
          config_file: Path | None, **opts: Any) -> None:
    """FINN build of a variant (RUN) or of a QONNX / FINN-ONNX file (MODEL.onnx) for a board:
    estimates, bit-exact verification, report."""
    from fpgaslim.pipeline import build_job

    from fpgaslim.hw.report import render

    pixel_opts = {"dtype": input_dtype, "scale": scale, "mean": mean, "std": std}
    if input_dtype is None and any(v is not None for v in pixel_opts.values()):
        raise click.UsageError("--scale/--mean/--std describe the pixels of --input: add "
                               "--input uint8")
    if run.is_file():
        from fpgaslim.core.config import read_config_file
        from fpgaslim.pipeline import build_onnx_job

        conf = read_config_file(config_file) if config_file else {}
        extra = set(conf) - {"input", "topk"}
        if extra:
            raise click.UsageError(f"{config_file}: unknown key(s) {sorted(extra)}; a build "
                                   "config holds `input:` and `topk:`")
        spec = conf.get("input")
        if input_dtype is not None:
            spec = {**(spec or {}), **{k: v for k, v in pixel_opts.items() if v is not None}}
        report = build_onnx_job(run, board, out_dir, data_spec,
                                {k: v for k, v in opts.items() if v is not None},
                                verify_images=verify_images, input=spec,
                                topk=topk if topk is not None else conf.get("topk"))
        _console().print(render(report))
        where = out_dir or Path("runs") / run.stem
        click.echo(f"build of {run} kept in run folder {where} (variant baseline): use it "
                   f"with maxfit/compare/deploy bundle {where}")
        return
    if data_spec or out_dir or input_dtype or topk or config_file:
        raise click.UsageError("--data, --out, --input, --topk and --config are for building a "
                               "MODEL.onnx file; a run's variant uses the data and model its "
                               "run recorded")
    if opts.get("synth") not in (None, "none") or opts.get("sim") not in (None, "none"):
        _log_second_opinion_progress()
    report = build_job(run, variant_id, board, {k: v for k, v in opts.items() if v is not None},
                       verify_images=verify_images, bitfile=bitfile)
    _console().print(render(report))
    if report.second_opinion is not None:
        from fpgaslim.hw.second_opinion import render_second_opinion

        _console().print(render_second_opinion(report.second_opinion))


def _log_second_opinion_progress() -> None:
    """Per-layer progress of --synth / --sim on stderr (the library logs it)."""
    import logging

    log = logging.getLogger("fpgaslim.hw.second_opinion")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("second opinion: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--variant", "variant_id", default="baseline", show_default=True)
@click.option("--board", default=DEFAULT_BOARD, show_default=True)
@click.option("--images", default="20", show_default=True, callback=_image_count,
              help="test images to verify on, or 'all' (the whole test split)")
@click.option("--json", "as_json", is_flag=True, help="print the Verification record as JSON")
@_handle_errors
def verify(run: Path, variant_id: str, board: str, images: int | str, as_json: bool) -> None:
    """Bit-exact verification of an existing build, end to end and layer by layer; exit 0
    only when no layer has an error (near-ties are counted, not errors)."""
    from fpgaslim.hw.verify_run import summary
    from fpgaslim.pipeline import verify_job

    v = verify_job(run, variant_id, board, images=images)
    click.echo(v.model_dump_json(indent=2) if as_json else summary(v))
    if not v.verified:
        from fpgaslim.core.errors import VerificationError

        sys.exit(VerificationError.exit_code)


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--variant", "variant_id", default="baseline", show_default=True)
@click.option("--board", default=DEFAULT_BOARD, show_default=True)
@click.option("--frames", default=8, show_default=True, help="test images streamed back to back")
@click.option("--timeout", "timeout_s", default=900.0, show_default=True,
              help="time limit of the whole simulation (compile included), seconds")
@click.option("--no-synth", is_flag=True, help="skip Yosys on the sized FIFOs")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@_handle_errors
def simulate(run: Path, variant_id: str, board: str, frames: int, timeout_s: float,
             no_synth: bool, as_json: bool) -> None:
    """Verilator simulation of the stitched design of an existing all-RTL build: outputs
    bit for bit against FINN's Python execution, cycles per frame, latency and fps beside
    FINN's estimates, FIFOs sized from the run; exit 0 only when the outputs are exact and
    nothing deadlocked."""
    from fpgaslim.pipeline import simulate as run_simulation

    def progress(msg: str) -> None:
        click.echo(f"simulate: {msg}", err=True)

    sim = run_simulation(run, variant_id, board, frames=frames, timeout_s=timeout_s,
                         synth=not no_synth, progress=None if as_json else progress)
    if as_json:
        click.echo(sim.model_dump_json(indent=2))
    else:
        from fpgaslim.hw.sim.records import render

        for table in render(sim):
            _console().print(table)
        if sim.note:
            click.echo(f"note: {sim.note}")
        if sim.folding_config:
            click.echo(f"sized FIFO depths: {sim.folding_config} (FINN folding config); "
                       f"bitfile configuration with FINN's FIFO sizing off: {sim.bitfile_config}")
    if not sim.outputs_exact or sim.deadlock:
        from fpgaslim.core.errors import VerificationError

        if not as_json:
            click.secho("the stitched design " + ("deadlocked" if sim.deadlock else
                        "does not compute what FINN's graph computes"), fg="red", err=True)
        sys.exit(VerificationError.exit_code)


@main.command()
@_handle_errors
def doctor() -> None:
    """Which Xilinx tools are here and which flows can run (estimate, Zynq bitfile, Alveo)."""
    from fpgaslim.deploy.doctor import doctor as run_doctor, render_doctor

    click.echo(render_doctor(run_doctor()))


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--variant", "variant_id", default="baseline", show_default=True)
@click.option("--board", default=DEFAULT_BOARD, show_default=True)
@click.option("--method", type=click.Choice(["optimal", "search"]), default="optimal",
              show_default=True, help="optimal: exact per-layer folding on FINN's estimates; "
              "search: FINN SetFolding over target_fps x mvau_wwidth_max")
@click.option("--budget-lut", default=LUT_BUDGET, show_default=True,
              help="% of the board's LUTs")
@click.option("--budget-bram", default=100.0, show_default=True, help="% of BRAM_18K")
@click.option("--budget-uram", default=100.0, show_default=True, help="% of URAM")
@click.option("--budget-dsp", default=100.0, show_default=True, help="% of DSP")
@click.option("--step-factor", default=STEP_FACTOR, show_default=True,
              help="target fps grid ratio (--method search)")
@click.option("--prefer-rtl", is_flag=True, help="FINN's RTL layers wherever it has them "
              "(RTL MVAUs: DSP-packed MACs, standalone thresholds) instead of its default")
@click.option("--styles", type=click.Choice(["mix", "fixed"]), default="mix",
              show_default=True, help="(--method optimal) mix: HLS or RTL chosen per layer "
              "(on the standalone-thresholds graph); fixed: the graph's own styles (FINN's "
              "default, or RTL wherever it can with --prefer-rtl)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@_handle_errors
def maxfit(run: Path, variant_id: str, board: str, method: str, budget_lut: float,
           budget_bram: float, budget_uram: float, budget_dsp: float, step_factor: float,
           prefer_rtl: bool, styles: str, as_json: bool) -> None:
    """Highest estimated fps whose folding fits the board's budget (cached per inputs)."""
    import json

    from fpgaslim.compress.variants import RunDir
    from fpgaslim.core.config import validate
    from fpgaslim.hw.folding_opt import Budget
    from fpgaslim.hw.folding_run import maxfit as run_maxfit

    budget = validate(Budget, {"LUT": budget_lut, "BRAM_18K": budget_bram, "URAM": budget_uram,
                               "DSP": budget_dsp}, "maxfit budget")
    m = run_maxfit(RunDir(run), variant_id, board, method,
                   {"prefer_rtl": True} if prefer_rtl else {}, budget, step_factor,
                   styles=styles)
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    if m["fps"] is None:
        click.echo(f"{variant_id} on {m['board']}: nothing fits the budget {m['budget']}")
        return
    how = (f"target {m['target_fps']:,.0f}, mvau_wwidth_max {m['mvau_wwidth_max']}"
           if method == "search" else f"bottleneck {m['bottleneck_layer']}, "
           f"default folding {m['default_fps'] or 0:,.0f} fps" + (
               "; layers " + ", ".join(f"{op} x{n}" for op, n in m["impl"].items()
                                       if op.startswith(("MVAU", "Thresholding", "VVAU")))
               if m.get("styles") == "mix" else ""))
    click.echo(f"{variant_id} on {m['board']}: max-fit {m['fps']:,.0f} fps ({method}; {how}); "
               "uses " + ", ".join(f"{k} {m[k]:,.0f} ({m['percent'].get(k, 0):.1f}%)"
                                   for k in ("LUT", "BRAM_18K", "URAM", "DSP"))
               + f" [{m['source']}]")


@main.command()
@click.argument("runs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="report folder (default: <first run>/report)")
@click.option("--detail", help="variant (or run/variant) of the per-layer plots")
@click.option("--maxfit/--no-maxfit", "run_maxfit", default=True, show_default=True,
              help=f"first run the optimal folding ({LUT_BUDGET:g} % LUT, HLS/RTL per layer) of "
              "every variant x board that has no max-fit yet (about a minute per variant; cached "
              "by its build key, so only the first compare pays); --no-maxfit: only what is saved")
@_handle_errors
def compare(runs: tuple[Path, ...], out: Path | None, detail: str | None,
            run_maxfit: bool) -> None:
    """Compare the built variants of one or more runs: table, CSV, Markdown, HTML + plots."""
    from fpgaslim.compare import compare_runs, run_missing_maxfits

    if run_maxfit:
        run_missing_maxfits(list(runs), on_error=lambda why: click.echo(
            f"max-fit not available: {why}", err=True))

    result = compare_runs(list(runs), out or runs[0] / "report", detail_variant=detail)
    _console().print(result.table())
    for name in ("csv", "markdown", "html"):
        click.echo(f"{name}: {result.files[name]}")


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workers", type=int, help="parallel builds (local process pool)")
@click.option("--dask", "dask_scheduler", help="run builds on this Dask scheduler address")
@_handle_errors
def sweep(config: Path, workers: int | None, dask_scheduler: str | None) -> None:
    """Baseline, compression methods, FINN builds per board, report: resumable."""
    from fpgaslim.sweep import load_sweep, run_sweep

    cfg = load_sweep(config)
    if workers:
        cfg.parallel.workers = workers
    if dask_scheduler:
        cfg.parallel.dask_scheduler = dask_scheduler
    result = run_sweep(cfg)
    _print_sweep(result)
    if result.failures:
        sys.exit(3)


def _print_sweep(result) -> None:
    done = ", ".join(f"{k} {v}" for k, v in result.work_done.items())
    click.echo(f"sweep finished: {len(result.variants)} variants, {len(result.builds)} builds "
               f"in {result.run_dir} (work done this time: {done})")
    for name, path in result.report.items():
        click.echo(f"  {name}: {path}")
    for key, why in result.failures.items():
        click.secho(f"  build {key} failed (not in the report; retried next run): {why}",
                    fg="red", err=True)


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/demo"), show_default=True)
@click.option("--workers", default=2, show_default=True)
@_handle_errors
def demo(out: Path, workers: int) -> None:
    """The whole pipeline on the embedded digits data (needs nothing else), ~10 min on 2 cores."""
    from fpgaslim.demo import demo_config
    from fpgaslim.sweep import run_sweep

    cfg = demo_config(out)
    cfg.parallel.workers = workers
    click.echo(f"fpgaslim demo: ResNet-14 w4a4 on digits -> dynamic pruning + layer fusion, "
               f"ResConv -> FINN estimates on {', '.join(cfg.board_names)} -> report in {out}")
    result = run_sweep(cfg)
    _print_sweep(result)
    html = result.report.get("html")
    if html:
        click.echo(f"open the report: file://{Path(html).resolve()}")


@main.group()
def deploy() -> None:
    """Deployment bundles, and running them on a board over ssh."""


@deploy.command("bundle")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--variant", "variant_id", default="baseline", show_default=True)
@click.option("--board", default=DEFAULT_BOARD, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="archive path (default: <variant>-<board>.tar.gz)")
@_handle_errors
def deploy_bundle(run: Path, variant_id: str, board: str, out: Path | None) -> None:
    """One archive with bitfile (when built), driver settings, graph, labels, manifest."""
    from fpgaslim.deploy.bundle import bundle

    path = bundle(run, variant_id, board, out or Path(f"{variant_id}-{board}.tar.gz"))
    click.echo(f"{path} ({path.stat().st_size / 1e3:,.0f} kB); run it with: fpgaslim-board "
               f"{path.name} --data DATA.npz [--simulate]")


@deploy.command("unpack")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@_handle_errors
def deploy_unpack(archive: Path, target: Path) -> None:
    """Extract safely and verify every file against the manifest."""
    from fpgaslim.deploy.manifest import unpack

    manifest = unpack(archive, target)
    click.echo(f"{target}: {len(manifest.get('files', {}))} files verified (sha256)")


@deploy.command("push")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", required=True, help="user@board")
@click.option("--remote-dir", default="fpgaslim-deploy", show_default=True)
@_handle_errors
def deploy_push(files: tuple[Path, ...], host: str, remote_dir: str) -> None:
    """Copy bundles / dataset files to the board (scp)."""
    from fpgaslim.deploy.remote import Remote

    for dest in Remote(host, remote_dir).push(*files):
        click.echo(f"copied to {host}:{dest}")


@deploy.command("run")
@click.argument("bundle_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", required=True, help="user@board")
@click.option("--out", default="board-result.json", show_default=True)
@click.option("--remote-dir", default="fpgaslim-deploy", show_default=True)
@_handle_errors
def deploy_run(bundle_path: Path, data: Path, host: str, out: str, remote_dir: str) -> None:
    """Push a bundle and data to the board, run fpgaslim-board there, fetch the result."""
    from fpgaslim.deploy.remote import Remote

    result = Remote(host, remote_dir).run(bundle_path, data, out)
    click.echo(f"{out}: {result.get('label', 'result')} accuracy {result.get('accuracy')}")


if __name__ == "__main__":  # pragma: no cover
    main()
