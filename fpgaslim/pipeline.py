"""High-level Python API: the functions the CLI commands call, one each.

    from fpgaslim.pipeline import TrainJob, train_job, export_variant
    record = train_job("runs/demo", TrainJob(model="resnet8", dataset="digits"))
    export_variant("runs/demo", record.id)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fpgaslim.compress.baseline import BaselineSettings, train_baseline
from fpgaslim.compress.data import DataSplits, load_dataset, load_for_variant
from fpgaslim.compress.models import BitWidths
from fpgaslim.compress.train import TrainSettings, with_defaults_for
from fpgaslim.compress.variants import RunDir, Timer, Variant


class DataSettings(BaseModel):
    """Which data, where to find it, and (for quick runs) how much of it."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = True
    limit_train: int | None = Field(None, ge=10)
    limit_test: int | None = Field(None, ge=1)

    def load(self) -> DataSplits:
        data = load_dataset(self.dataset, self.data_dir, download=self.download,
                            limit_train=self.limit_train, limit_test=self.limit_test)
        # the run records the subset too, so later commands use the same splits
        data.origin.update(limit_train=self.limit_train, limit_test=self.limit_test)
        return data


class TrainJob(BaseModel):
    """`fpgaslim train` as data (also the `baseline:` section of a sweep file)."""

    model_config = ConfigDict(extra="forbid")
    data: DataSettings = DataSettings()
    model: str = "resnet8"  # a zoo name, or your own: path/to/file.py:factory, pkg.mod:factory
    model_args: dict = Field(default_factory=dict)  # keyword arguments of your factory
    width: float = Field(1.0, gt=0)
    bits: BitWidths = BitWidths()
    train: TrainSettings = TrainSettings()
    variant_id: str = "baseline"


def as_run(run: RunDir | str | Path) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(run)


def train_job(run: RunDir | str | Path, job: TrainJob, data: DataSplits | None = None,
              progress: bool | None = None) -> Variant:
    """Train the baseline of a run (resumes an interrupted training; a finished one is kept)."""
    from fpgaslim.compress.models import make_arch
    from fpgaslim.compress.models.user import is_factory_ref, resolve

    # fail fast on an unknown model name or a missing factory, before loading data
    if is_factory_ref(job.model):
        resolve(job.model)
        if job.width != 1.0 or job.bits != BitWidths():
            from fpgaslim.core.errors import ConfigError

            raise ConfigError(f"--bits/--width (bits, width) are for the zoo models; your model "
                              f"{job.model!r} sets its own: pass its arguments as model_args")
    else:
        make_arch(job.model, (1, 8, 8))
    data = data or job.data.load()
    # low bit widths get their training defaults (lr, warm-up, clipping) where not set
    train = with_defaults_for(job.train, job.bits.weight, job.bits.act)
    settings = BaselineSettings(model=job.model, model_args=job.model_args, width=job.width,
                                bits=job.bits, train=train)
    return train_baseline(as_run(run), data, settings, job.variant_id, progress=progress)


def add_model(run: RunDir | str | Path, module, data: DataSplits | DataSettings | str,
              *, train: TrainSettings | dict | None = None, variant_id: str = "baseline",
              factory=None, kwargs: dict | None = None, progress: bool | None = None) -> Variant:
    """Your own Brevitas module, already in memory (trained or not), as the baseline variant
    of `run`: trained for `train.epochs` (default 0: its weights are kept) and saved with a
    record that re-creates it (`factory`, a callable or 'file.py:name'; default the module's
    own class, called with `kwargs`). Then it exports, builds, compares and deploys like a
    zoo model."""
    from fpgaslim.compress.models.user import adopt_module

    run = as_run(run)
    if run.has(variant_id):
        return run.record(variant_id)
    if isinstance(data, str):
        data = DataSettings(dataset=data)
    if isinstance(data, DataSettings):
        data = data.load()
    settings = TrainSettings(epochs=0) if train is None else (
        train if isinstance(train, TrainSettings) else TrainSettings(**train))
    module = adopt_module(module, data.input_shape, data.num_classes, factory, kwargs)
    base = BaselineSettings(model=module.arch.factory or module.arch.name,
                            model_args=module.arch.kwargs, train=settings)
    return train_baseline(run, data, base, variant_id, progress=progress, model=module)


def export_variant(run: RunDir | str | Path, variant_id: str, data: DataSplits | None = None,
                   check_images: int = 20) -> Variant:
    """Export a variant to QONNX and check the ONNX file against PyTorch on real test images."""
    from fpgaslim.hw.qonnx_export import QONNX_FILE, check_export, export_qonnx

    run = as_run(run)
    record = run.record(variant_id)
    if record.is_imported:
        from fpgaslim.core.errors import ConfigError

        raise ConfigError(f"variant {variant_id!r} of {run.path} is an imported QONNX file "
                          f"({record.settings.get('file')}): it is QONNX already and has no "
                          "PyTorch model to export; build it with `fpgaslim build`")
    model = run.load_model(variant_id)
    path = run.variant_dir(variant_id) / QONNX_FILE
    with Timer() as t:
        export_qonnx(model, path)
    data = data or load_for_variant(run, variant_id)
    check = check_export(model, path, data.test.tensors[0][:check_images])
    details = {**record.details, "export_check": check.model_dump()}
    timings = {**record.timings, "export_s": t.seconds}
    return run.update(record.model_copy(update={"qonnx": path.name, "details": details,
                                                "timings": timings}))


def _data_for(run: RunDir, variant_id: str, data_dir: str | None) -> DataSplits:
    return load_for_variant(run, variant_id, data_dir)


def run_method(run: RunDir | str | Path, method: str, parent: str,
               settings: BaseModel | dict | None = None, data: DataSplits | None = None,
               data_dir: str | None = None, progress: bool | None = None,
               preset: str = "cpu") -> list[Variant]:
    """Run one registered compression method (a composite such as "dynamic-prune+fuse"
    too) on variant `parent`; returns the new variants. `settings`: the method's Settings, or
    a dict of overrides of `preset` (a composite: one dict per step, named by its method)."""
    from fpgaslim.compress.methods import get_method, method_settings, method_steps
    from fpgaslim.compress.models.user import require_needs

    run = as_run(run)
    module = get_method(method)
    if not isinstance(settings, BaseModel):
        settings = method_settings(method, preset, settings)
    arch = run.record(parent).arch
    for step in method_steps(method):
        require_needs(arch, step, get_method(step).NEEDS)  # your own model: what it lacks
    data = data or _data_for(run, parent, data_dir)
    return module.run(run, parent, data, settings, progress=progress)


def run_chain(run: RunDir | str | Path, parent: str, preset: str = "cpu",
              data: DataSplits | None = None, data_dir: str | None = None,
              progress: bool | None = None) -> list[Variant]:
    """Dynamic channel pruning followed by layer fusion (the paper's full method): the
    registered composite method "dynamic-prune+fuse" at `preset`."""
    return run_method(run, "dynamic-prune+fuse", parent, None, data=data, data_dir=data_dir,
                      progress=progress, preset=preset)


def build_job(run: RunDir | str | Path, variant_id: str, board: str,
              overrides: dict | None = None, verify_images: int | str = 20, bitfile: bool = False,
              data: DataSplits | None = None):
    """FINN build of one variant for one board; returns its HardwareReport."""
    from fpgaslim.core.config import validate
    from fpgaslim.hw.api import build_variant
    from fpgaslim.hw.build import BuildSettings

    run = as_run(run)
    # the one board lookup: BuildSettings holds the Board from here on
    settings = validate(BuildSettings, {"board": board, **(overrides or {})}, "build options")
    if bitfile:
        from fpgaslim.hw.bitfile import build_bitfile

        return build_bitfile(run, variant_id, settings)
    return build_variant(run, variant_id, settings.board, settings=settings, data=data,
                         verify_images=verify_images)


def verify_job(run: RunDir | str | Path, variant_id: str, board: str, images: int | str = 20,
               data: DataSplits | None = None):
    """`fpgaslim verify`: bit-exact verification of an existing build, end to end and layer
    by layer, on the first `images` test images; returns its Verification (saved in the
    build's report.json)."""
    from fpgaslim.hw.verify_run import verify_build

    run = as_run(run)
    if not run.has(variant_id):
        from fpgaslim.core.errors import ConfigError

        raise ConfigError(f"run {run.path} has no variant {variant_id!r} (see `fpgaslim info "
                          f"{run.path}`)")
    return verify_build(run, variant_id, board, images=images, data=data)


def build_onnx_job(path: str | Path, board: str, out: str | Path | None = None,
                   data: str | None = None, overrides: dict | None = None,
                   verify_images: int | str = 20, input: dict | None = None,
                   topk: int | None = None):
    """`fpgaslim build MODEL.onnx`: FINN build of a QONNX / FINN-ONNX file (hw.api.build_onnx);
    returns its HardwareReport. `input`: the pixels and pre-processing (`--input uint8 --scale
    1/255 --mean .. --std ..`, validated as hw.onnx_input.InputSpec); `topk`: class indices
    out."""
    from fpgaslim.core.config import validate
    from fpgaslim.hw.api import build_onnx
    from fpgaslim.hw.build import BuildSettings

    settings = validate(BuildSettings, {"board": board, **(overrides or {})}, "build options")
    from fpgaslim.hw.onnx_input import InputSpec

    spec = validate(InputSpec, input, "input") if input is not None else None
    return build_onnx(path, settings.board, out, data, settings=settings,
                      verify_images=verify_images, input=spec, topk=topk)


def simulate(run: RunDir | str | Path, variant_id: str, board: str, frames: int = 8,
             timeout_s: float = 900.0, synth: bool = True, progress=None):
    """`fpgaslim simulate`: the stitched all-RTL design of an existing build, run in
    Verilator on `frames` test images back to back; FIFOs sized from the run and confirmed.
    Returns the Simulation record (hw/sim/records.py), also saved in the build folder."""
    from fpgaslim.hw.sim.api import simulate_build

    run = as_run(run)
    if not run.has(variant_id):
        from fpgaslim.core.errors import ConfigError

        raise ConfigError(f"run {run.path} has no variant {variant_id!r} (see `fpgaslim info "
                          f"{run.path}`)")
    return simulate_build(run, variant_id, board, frames, timeout_s=timeout_s, synth=synth,
                          progress=progress)
