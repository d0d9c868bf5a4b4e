"""The one adapter between fpgaslim and finn-plus internals.

finn-plus 1.6.1 assumes a Vivado installation even for estimate-only builds (FINN_NOTES):
  * settings are read from FINN_SETTINGS / FINN_BUILD_DIR / FINN_DEPS, else it creates ~/.finn;
  * `finn.builder.build_dataflow_steps` does `from finn.xsi import SimEngine` at import time,
    which runs the xsim availability check and fails without XILINX_VIVADO;
  * `exit_buildflow()` calls `get_vivado_root()` after a successful build and raises.
Everything that knows about these internals lives here, so a finn-plus upgrade breaks in one
place, and `check_internals()` (run by the tests) says exactly what changed.

`activate(build_dir)` mutates process state (environment, two module attributes), so it is
meant for the build child process only (see hw/build.py); the parent never calls it.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any

from qonnx.transformation.base import Transformation

from fpgaslim.core.errors import ToolMissingError

EXPECTED_FINN_VERSION = "1.6.1"
FINN_DIST = "finn-plus"
_NO_VIVADO = "none (fpgaslim estimate-only build, Vivado not used)"


def finn_version() -> str:
    """The installed finn-plus version, or a ToolMissingError saying how to install it."""
    try:
        return importlib.metadata.version(FINN_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ToolMissingError(
            "finn-plus is not installed; install it with `pip install --no-deps "
            f"finn-plus=={EXPECTED_FINN_VERSION}` after its dependencies (.ci/bootstrap.sh)"
        ) from exc


def provenance(clock_ns: float) -> str:
    """The `source` text of every FINN-estimated figure."""
    return f"FINN estimate (finn-plus {finn_version()}, clock {clock_ns:g} ns)"


def child_environment(build_dir: Path) -> dict[str, str]:
    """Environment for a build child: FINN's settings, build and deps folders under `build_dir`
    (never ~/.finn), one worker (2 shared cores), and no automatic git dependency updates."""
    build_dir = Path(build_dir).resolve()
    settings = build_dir / "finn_settings.yaml"
    build_dir.mkdir(parents=True, exist_ok=True)
    settings.write_text("automatic_dependency_updates: false\n", encoding="utf-8")
    env = dict(os.environ)
    env.update({
        "FINN_SETTINGS": str(settings),
        "FINN_BUILD_DIR": str(build_dir / "finn_tmp"),
        "FINN_DEPS": str(build_dir / "finn_deps"),
        "NUM_DEFAULT_WORKERS": "1",
        "OMP_NUM_THREADS": "1",
    })
    env.pop("PYTEST_CURRENT_TEST", None)  # else build_dataflow_cfg re-raises instead of logging
    return env


class _NoSimEngine:
    """Stands in for finn_xsi's SimEngine: only rtlsim steps use it, and they need Vivado."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ToolMissingError("RTL simulation (finn_xsi / xsim) needs Vivado; this build "
                               "is estimate-only")


def _vivado_root() -> str:
    return os.environ.get("XILINX_VIVADO", _NO_VIVADO)


def activate() -> None:
    """Make finn-plus's builder importable and runnable without Vivado (child process only).

    Expects `child_environment()`'s variables. Binds `finn.xsi.SimEngine` before the builder
    imports it (so the lazy xsim check never runs) and replaces the builder's post-build
    `get_vivado_root` lookup with one that does not raise."""
    for var in ("FINN_SETTINGS", "FINN_BUILD_DIR"):
        if var not in os.environ:
            raise RuntimeError(f"finn_compat.activate() needs {var}; use child_environment()")
    Path(os.environ["FINN_BUILD_DIR"]).mkdir(parents=True, exist_ok=True)
    import finn.xsi

    if "SimEngine" not in vars(finn.xsi):
        finn.xsi.SimEngine = _NoSimEngine  # type: ignore[attr-defined]
    import finn.builder.build_dataflow as bd

    bd.get_vivado_root = _vivado_root
    install_rtl_ops()


def install_rtl_ops() -> list[str]:
    """Register fpgaslim's hand-written RTL ops with finn-plus (hw/rtl/register.py: the
    registration and its guarded hook into SpecializeLayers live there). Every process that
    specializes, loads or executes a graph with them needs it; activate() does it. Returns
    what kept it from installing (empty: installed)."""
    from .rtl import install

    return install()


# finn-plus 1.6.1's estimate-only preset, which hw/build_steps.ESTIMATE extends, and the
# hardware steps its bitfile preset adds (hw/build_steps.HARDWARE).
FINN_ESTIMATE_STEPS = ("step_qonnx_to_finn", "step_tidy_up", "step_streamline",
                       "step_convert_to_hw", "step_minimize_bit_width_initial",
                       "step_create_dataflow_partition", "step_specialize_layers",
                       "step_target_fps_parallelization", "step_apply_folding_config",
                       "step_minimize_bit_width", "step_generate_estimate_reports")
HARDWARE_STEPS = ("step_assign_ddr_weight_offsets", "step_generate_hardware",
                  "step_create_stitched_ip", "step_prepare_synthesis", "step_synthesize_bitfile",
                  "step_make_driver", "step_deployment_package")

# DataflowBuildConfig fields and private methods the build relies on.
CONFIG_FIELDS = ("output_dir", "synth_clk_period_ns", "target_fps", "mvau_wwidth_max", "board",
                 "fpga_part", "shell_flow_type", "generate_outputs", "steps", "verify_steps",
                 "verify_input_npy", "verify_expected_output_npy", "save_intermediate_models",
                 "start_step", "folding_config_file", "standalone_thresholds",
                 "auto_fifo_depths", "auto_fifo_strategy", "vitis_platform")  # last 3: bitfile
CONFIG_METHODS = ("_resolve_verification_steps", "_resolve_fpga_part",
                  "get_intermediate_models_directory", "get_report_directory",
                  "_resolve_vitis_platform", "_resolve_driver_platform")  # last two: bitfile


def check_internals() -> list[str]:
    """What finn-plus no longer provides that fpgaslim relies on (empty list: all there).

    Reads finn-plus's sources and imports only modules that are safe without the shim, so
    it can run in the caller's process (the tests run it)."""
    import dataclasses
    import importlib
    import inspect

    problems: list[str] = []
    version = finn_version()
    if version != EXPECTED_FINN_VERSION:
        problems.append(f"finn-plus {version} installed, fpgaslim is written for "
                        f"{EXPECTED_FINN_VERSION}")
    import finn.xsi

    if "SimEngine" not in getattr(finn.xsi, "_LAZY_NAMES", ()):
        problems.append("finn.xsi no longer resolves SimEngine lazily (_LAZY_NAMES)")
    import finn.util.settings as fs

    init = getattr(fs, "_initialize_from_environment", None)
    if init is None:
        problems.append("finn.util.settings._initialize_from_environment is gone")
    else:
        for var in ("FINN_SETTINGS", "FINN_BUILD_DIR"):
            if var not in inspect.getsource(init):
                problems.append(f"finn settings are no longer read from ${var}")
    builder_dir = Path(sys.modules["finn"].__file__).parent / "builder"
    steps_src = (builder_dir / "build_dataflow_steps.py").read_text(encoding="utf-8")
    if "from finn.xsi import SimEngine" not in steps_src:
        problems.append("build_dataflow_steps no longer imports SimEngine from finn.xsi "
                        "(the shim may be unnecessary or insufficient)")
    if "def verify_step(\n    model: ModelWrapper,\n    cfg: DataflowBuildConfig,\n" \
            "    step_name: str,\n    need_parent: bool," not in steps_src:
        problems.append("build_dataflow_steps.verify_step(model, cfg, step_name, need_parent) "
                        "changed its signature")
    bd_src = (builder_dir / "build_dataflow.py").read_text(encoding="utf-8")
    if "from finn.util.basic import get_vivado_root" not in bd_src or \
            '"tool_version": Path(get_vivado_root()).name' not in bd_src:
        problems.append("build_dataflow no longer calls get_vivado_root() in exit_buildflow")
    if "if cfg.start_step is None:" not in bd_src:
        problems.append("build_dataflow no longer resumes from cfg.start_step")
    bc = importlib.import_module("finn.builder.build_dataflow_config")
    fields = {f.name for f in dataclasses.fields(bc.DataflowBuildConfig)}
    problems += [f"DataflowBuildConfig.{f} is gone" for f in CONFIG_FIELDS if f not in fields]
    problems += [f"DataflowBuildConfig.{m}() is gone" for m in CONFIG_METHODS
                 if not hasattr(bc.DataflowBuildConfig, m)]
    for member in ("QONNX_TO_FINN_PYTHON", "TIDY_UP_PYTHON", "STREAMLINED_PYTHON"):
        if not hasattr(bc.VerificationStepType, member):
            problems.append(f"VerificationStepType.{member} is gone")
    if list(bc.estimate_only_dataflow_steps) != list(FINN_ESTIMATE_STEPS):
        problems.append(f"estimate_only_dataflow_steps is now {bc.estimate_only_dataflow_steps}"
                        f" (hw/build_steps.ESTIMATE was written for {FINN_ESTIMATE_STEPS})")
    problems += [f"build_dataflow_steps.{s} is no longer a registered step" for s in
                 HARDWARE_STEPS if f"@register_build_dataflow_step()\ndef {s}(" not in steps_src]
    resnet = (builder_dir / "custom_step_library" / "resnet.py").read_text(encoding="utf-8")
    if "def step_resnet_streamline(" not in resnet or "StreamlinePlus" not in resnet:
        problems.append("custom_step_library.resnet.step_resnet_streamline (StreamlinePlus) "
                        "is gone")
    return problems


def verification_enabled(cfg: Any, kind: str) -> bool:
    """Whether FINN's verification step `kind` (e.g. "STREAMLINED_PYTHON") is on in `cfg`."""
    fb = builder()
    return getattr(fb.VerificationStepType, kind) in cfg._resolve_verification_steps()


def fpga_part(cfg: Any) -> str:
    return cfg._resolve_fpga_part()


def vitis_platform(cfg: Any) -> str:
    """The Vitis platform FINN links an Alveo build against (hw/bitfile.py)."""
    return cfg._resolve_vitis_platform()


def driver_platform(cfg: Any) -> str:
    """FINN's driver platform for the shell flow: "zynq-iodma" or "alveo" (hw/bitfile.py)."""
    return cfg._resolve_driver_platform()


def builder() -> Any:
    """finn-plus's builder pieces fpgaslim uses, as one namespace (after `activate()`)."""
    from types import SimpleNamespace

    import finn.builder.build_dataflow as bd
    import finn.builder.build_dataflow_config as bc
    import finn.builder.build_dataflow_steps as bs
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.builder.custom_step_library.mobilenet import (step_mobilenet_lower_convs,
                                                            step_mobilenet_streamline)
    from finn.builder.custom_step_library.resnet import step_resnet_streamline
    from finn.transformation.streamline.absorb import AbsorbConsecutiveTransposes
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
    from finn.util.basic import getHWCustomOp

    return SimpleNamespace(
        DataflowBuildConfig=bc.DataflowBuildConfig, DataflowOutputType=bc.DataflowOutputType,
        VerificationStepType=bc.VerificationStepType, ShellFlowType=bc.ShellFlowType,
        estimate_only_steps=list(bc.estimate_only_dataflow_steps),
        step_lookup=bs.build_dataflow_step_lookup, verify_step=bs.verify_step,
        build_dataflow_cfg=bd.build_dataflow_cfg, resnet_streamline=step_resnet_streamline,
        mobilenet_streamline=step_mobilenet_streamline,
        mobilenet_lower_convs=step_mobilenet_lower_convs,
        res_estimation=res_estimation, getHWCustomOp=getHWCustomOp,
        MakeMaxPoolNHWC=MakeMaxPoolNHWC, AbsorbConsecutiveTransposes=AbsorbConsecutiveTransposes)


# The names `builder()` provides (the tests check each is there).
BUILDER_NAMES = ("DataflowBuildConfig", "DataflowOutputType", "VerificationStepType",
                 "ShellFlowType", "estimate_only_steps", "step_lookup", "verify_step",
                 "build_dataflow_cfg", "resnet_streamline", "mobilenet_streamline",
                 "mobilenet_lower_convs", "res_estimation", "getHWCustomOp",
                 "MakeMaxPoolNHWC", "AbsorbConsecutiveTransposes")


def generic_base(op_type: str, domain: str) -> tuple[str, str] | None:
    """The generic (Python-executable) FINN op of a specialized `*_hls` / `*_rtl` node:
    (op_type, domain), e.g. MVAU_hls -> ("MVAU", "finn.custom_op.fpgadataflow"); None when the
    node is not specialized. Specialized classes subclass their generic op (finn-plus 1.6.1)."""
    if not domain.startswith("finn.custom_op.fpgadataflow.") or \
            domain.rsplit(".", 1)[-1] not in ("hls", "rtl"):
        return None
    from qonnx.custom_op.registry import getCustomOp  # noqa: F401  (registry import side effect)
    import importlib

    mod = importlib.import_module(domain)
    cls = getattr(mod, "custom_op", {}).get(op_type)
    if cls is None and domain.endswith(".rtl"):  # one of fpgaslim's (hw/rtl), not yet loaded
        install_rtl_ops()
        cls = getattr(mod, "custom_op", {}).get(op_type)
    if cls is None:
        raise RuntimeError(f"finn-plus has no {domain}.{op_type}: internals changed")
    generic = importlib.import_module("finn.custom_op.fpgadataflow").custom_op
    for base in cls.__mro__[1:]:
        if generic.get(base.__name__) is base:
            return base.__name__, "finn.custom_op.fpgadataflow"
    raise RuntimeError(f"{op_type} has no generic base op in finn.custom_op.fpgadataflow")


class RenameToGenericOps(Transformation):
    """Rename every `*_hls`/`*_rtl` node to its generic base op (same attributes), so the
    graph executes in Python (`generic_base`)."""

    def apply(self, model):  # type: ignore[override]
        for node in model.graph.node:
            base = generic_base(node.op_type, node.domain)
            if base is not None:
                node.op_type, node.domain = base
        return model, False


def to_python_exec(model: Any) -> Any:
    """A copy of a specialized dataflow graph whose nodes execute as their generic base ops in
    Python (no cppsim/rtlsim, which need Vitis HLS / Vivado)."""
    return model.transform(RenameToGenericOps())


# ------------------------------------------------------------------ fast streamlining (issue 21)
# qonnx internals the fast streamlining memo (hw/fast_streamline.py) replaces or relies on: the
# SHA-256 (first 16 hex digits) of the source of each, as in qonnx 1.0.0. A new release that
# changes one of them makes check_streamline_internals() (and its test) fail loudly: re-read the
# new source, port hw/fast_streamline.py to it, then update the digest here.
STREAMLINE_INTERNALS = {
    "qonnx.transformation.composed:ComposedTransformation.apply": "fa7ea4020053096b",
    "qonnx.core.modelwrapper:ModelWrapper.cleanup": "425fdc1526ee8a72",
    "qonnx.core.modelwrapper:ModelWrapper.__init__": "ff2ec3416ee59c3e",
    "qonnx.core.modelwrapper:ModelWrapper.model": "c586397bd47e6c45",
    # replaced by exact faster copies in hw/fast_streamline.py
    "qonnx.util.basic:get_by_name": "282c772dede0ef12",
    "qonnx.core.modelwrapper:ModelWrapper.get_initializer": "acf96b1bc0e0664c",
    "qonnx.core.modelwrapper:ModelWrapper.get_tensor_shape": "f20ed84b49f97332",
    "qonnx.core.modelwrapper:ModelWrapper.find_producer": "74c71a930439d2c5",
}
_FAST_METHODS = ("get_initializer", "get_tensor_shape", "find_producer")  # replaced


def _internal_source(ref: str) -> str:
    import importlib
    import inspect

    mod, attr = ref.split(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = inspect.getattr_static(obj, part) if inspect.isclass(obj) else getattr(obj, part)
    if isinstance(obj, property):
        obj = obj.fget
    return inspect.getsource(obj)


def check_streamline_internals() -> list[str]:
    """What changed in the qonnx internals the fast streamlining depends on (empty: none)."""
    import hashlib

    problems = []
    for ref, digest in STREAMLINE_INTERNALS.items():
        try:
            got = hashlib.sha256(_internal_source(ref).encode()).hexdigest()[:16]
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            problems.append(f"{ref} is gone ({type(exc).__name__}: {exc})")
            continue
        if got != digest:
            problems.append(f"{ref} changed (source digest {got}, fast streamlining was written "
                            f"for {digest}): port hw/fast_streamline.py before using it")
    return problems


class fast_streamlining:  # noqa: N801  (used as a context manager, like contextlib's)
    """While active, qonnx's ComposedTransformation.apply (the fixpoint loop of finn-plus's
    StreamlinePlus and resnet streamlining) is hw/fast_streamline.py's memoized copy of it;
    restored on exit, also after an error. Refuses to patch internals it was not written for."""

    def __enter__(self) -> Any:
        from qonnx.transformation.composed import ComposedTransformation

        from . import fast_streamline

        self._cls, self._stock = ComposedTransformation, ComposedTransformation.apply
        if self._stock is fast_streamline.memo_composed_apply:
            self._stock = None  # nested: already installed by an enclosing one
        else:
            problems = check_streamline_internals()
            if problems:
                raise RuntimeError("fast streamlining cannot be used with the installed qonnx: "
                                   + "; ".join(problems) + " (or build with streamline: stock)")
            ComposedTransformation.apply = fast_streamline.memo_composed_apply
            self._swap_lookups(fast=True)
        self.memo = fast_streamline.push_memo()
        return self.memo

    def __exit__(self, *exc: Any) -> None:
        from . import fast_streamline

        if self._stock is not None:
            self._cls.apply = self._stock
            self._swap_lookups(fast=False)
        fast_streamline.pop_memo(self.memo)

    def _swap_lookups(self, fast: bool) -> None:
        """get_by_name in qonnx.util.basic and in every module that imported it by name
        (finn's and qonnx's), and ModelWrapper's get_initializer / get_tensor_shape."""
        import qonnx.util.basic as qub
        from qonnx.core.modelwrapper import ModelWrapper

        from . import fast_streamline

        if fast:
            self._stock_lookups = {"get_by_name": qub.get_by_name,
                                   **{m: vars(ModelWrapper)[m] for m in _FAST_METHODS}}
        old, new = fast_streamline.get_by_name, self._stock_lookups["get_by_name"]
        if fast:
            old, new = new, old
        for mod in list(sys.modules.values()):
            if getattr(mod, "get_by_name", None) is old and (
                    getattr(mod, "__name__", "").startswith(("qonnx", "finn"))):
                mod.get_by_name = new
        for m in _FAST_METHODS:
            setattr(ModelWrapper, m, getattr(fast_streamline, m) if fast
                    else self._stock_lookups[m])
