"""The one place where fpgaslim's RTL ops hook into finn-plus: registration and selection.

`install()` (idempotent; `import fpgaslim.hw.rtl` runs it) does two things:
  1. registers the classes of hw/rtl/streams.py and hw/rtl/eltwise.py in finn-plus's RTL
     custom-op dictionary (`finn.custom_op.fpgadataflow.rtl.custom_op`, which
     SpecializeLayers reads as `rtl_variants`) and in qonnx's op registry (qonnx caches a
     class per op type once looked up, so an ElementwiseAdd_rtl looked up before would
     otherwise stay finn-plus's class);
  2. wraps `finn.transformation.fpgadataflow.specialize_layers._determine_impl_style`, the
     function SpecializeLayers asks for "hls" or "rtl" per node, so that fpgaslim's ops are
     chosen only where asked for: a node of these op types with `preferred_impl_style` "rtl"
     (what the build setting prefer_rtl sets, hw/build_steps.step_fpgaslim_prefer_rtl)
     becomes RTL where the op's `rtl_not_possible` allows it; with "" or "hls" the answer is
     finn-plus's as before. (Unwrapped, registering DuplicateStreams_rtl would make finn-plus
     choose it by default: it takes RTL for every "simple" op that has a variant.) So builds
     without prefer_rtl are unchanged.

Guarded like hw/finn_compat.py's fast streamlining: the wrap is installed only if the source
of the finn-plus functions it relies on is the one it was written for (SHA-256 digests
below); otherwise `install()` registers nothing and `problems()` says what changed (the test
suite fails on it, and step_fpgaslim_prefer_rtl raises it as a clear error).
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

# finn-plus 1.6.1 internals this module relies on, by source digest (first 16 hex of SHA-256)
INTERNALS = {
    "finn.transformation.fpgadataflow.specialize_layers:_determine_impl_style":
        "b48b577356ff17ff",
    "finn.transformation.fpgadataflow.specialize_layers:SpecializeLayers.apply":
        "e6aab9074296344a",
    "finn.transformation.fpgadataflow.specialize_layers:_elementwise_rtl_possible":
        "5945d8679b150790",
}
# op type -> module:class of fpgaslim's implementation
OPS = {
    "DuplicateStreams": "streams:DuplicateStreams_rtl",
    "Pool": "streams:Pool_rtl",
    "LabelSelect": "streams:LabelSelect_rtl",
    "ElementwiseAdd": "eltwise:ElementwiseAdd_rtl",
    "ElementwiseSub": "eltwise:ElementwiseSub_rtl",
    "ElementwiseMul": "eltwise:ElementwiseMul_rtl",
}
RTL_DOMAIN = "finn.custom_op.fpgadataflow.rtl"

_STATE: dict[str, Any] = {"installed": False, "problems": None, "stock": None}


def _source(ref: str) -> str:
    import importlib

    mod, attr = ref.split(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return inspect.getsource(obj)


def digest(ref: str) -> str:
    return hashlib.sha256(_source(ref).encode()).hexdigest()[:16]


def check_internals() -> list[str]:
    """What changed in the finn-plus internals the hook relies on (empty: nothing)."""
    problems = []
    for ref, want in INTERNALS.items():
        try:
            got = digest(ref) if _STATE["stock"] is None or "_determine" not in ref \
                else hashlib.sha256(inspect.getsource(_STATE["stock"]).encode()).hexdigest()[:16]
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            problems.append(f"{ref} is gone ({type(exc).__name__}: {exc})")
            continue
        if got != want:
            problems.append(f"{ref} changed (source digest {got}, fpgaslim's RTL hook was "
                            f"written for {want}): re-read it and port hw/rtl/register.py")
    return problems


def op_classes() -> dict[str, type]:
    """op type (generic) -> fpgaslim's RTL class."""
    import importlib

    out = {}
    for op, ref in OPS.items():
        mod, cls = ref.split(":")
        out[op] = getattr(importlib.import_module(f"{__package__}.{mod}"), cls)
    return out


def rtl_not_possible(node, model) -> str | None:
    """Why fpgaslim's RTL cannot implement `node` (a generic HW node of one of OPS' types);
    None when it can."""
    from qonnx.custom_op.registry import getCustomOp

    cls = op_classes()[node.op_type]
    return cls.rtl_not_possible(getCustomOp(node), model)


def _choose(stock):
    def _determine_impl_style(node, fpgapart, model):
        """fpgaslim (hw/rtl/register.py) around finn-plus's choice: see the module docstring."""
        if node.op_type in OPS:
            from qonnx.custom_op.registry import getCustomOp

            style = getCustomOp(node).get_nodeattr("preferred_impl_style")
            if style == "rtl" and rtl_not_possible(node, model) is None:
                return "rtl"
            if node.op_type in ("DuplicateStreams", "Pool", "LabelSelect") and \
                    style in ("", "rtl"):
                return "hls"  # finn-plus's answer before these had an RTL variant
        return stock(node, fpgapart, model)
    _determine_impl_style.fpgaslim = True
    return _determine_impl_style


def install() -> list[str]:
    """Register fpgaslim's RTL ops and hook the selection (once per process). Returns the
    problems that kept it from installing (empty: installed)."""
    if _STATE["installed"]:
        return []
    import finn.transformation.fpgadataflow.specialize_layers as sl

    if getattr(sl._determine_impl_style, "fpgaslim", False):  # a reloaded copy of this module
        _STATE.update(installed=True, problems=[])
        return []
    problems = check_internals()
    _STATE["problems"] = problems
    if problems:
        return problems
    from finn.custom_op.fpgadataflow.rtl import custom_op as rtl_variants
    from qonnx.custom_op.registry import add_op_to_domain

    for op, cls in op_classes().items():
        rtl_variants[f"{op}_rtl"] = cls
        add_op_to_domain(RTL_DOMAIN, cls)
    _STATE["stock"] = sl._determine_impl_style
    sl._determine_impl_style = _choose(sl._determine_impl_style)
    _STATE["installed"] = True
    return []


def problems() -> list[str]:
    """Why install() did not install (empty when it did or was not yet called)."""
    return list(_STATE["problems"] or [])
