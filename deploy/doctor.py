"""`fpgaslim doctor`: what this machine can build, and what is missing for the rest.

Returns a typed record (the CLI prints `render_doctor(report)`; scripts read the record or its
JSON). The tool detection itself lives in `fpgaslim.hw.toolchain`, so the doctor and the bitfile
build's ToolMissingError always agree word for word.
"""

from __future__ import annotations

import platform as _platform
import sys
from importlib import metadata
from typing import Mapping

from pydantic import BaseModel, ConfigDict

from fpgaslim.hw.toolchain import Flow, FlowStatus, Toolchain, find_toolchain, flow_status

# The packages the compiler side and the board side need, reported with versions.
_COMPILER_PACKAGES = ("finn-plus", "qonnx", "brevitas", "torch", "onnx", "numpy")
_BOARD_PACKAGES = ("finn-plus-driver", "pynq")


class DoctorReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    python: str
    machine: str
    packages: dict[str, str | None]  # name -> installed version, None if absent
    toolchain: Toolchain
    flows: list[FlowStatus]
    # build --synth yosys / --sim verilator: tool -> version/path, None if missing
    rtl_tools: dict[str, str | None] = {}

    def flow(self, flow: Flow | str) -> FlowStatus:
        return next(f for f in self.flows if f.flow == Flow(flow))

    @property
    def runnable(self) -> list[str]:
        return [f.flow.value for f in self.flows if f.can_run]


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def doctor(env: Mapping[str, str] | None = None, probe: bool = False,
           alveo_platform: str | None = None) -> DoctorReport:
    """Inspect tools and packages. `env` defaults to os.environ; `probe=True` runs the tools
    with -version when their install path does not tell the version (slow for Vivado)."""
    tc = find_toolchain(env, probe=probe)
    packages = {p: _version(p) for p in _COMPILER_PACKAGES + _BOARD_PACKAGES}
    flows = [flow_status(tc, Flow.ESTIMATE),
             flow_status(tc, Flow.ZYNQ_BITFILE),
             flow_status(tc, Flow.ALVEO_XCLBIN, platform=alveo_platform)]
    if packages["finn-plus"] is None:
        flows[0] = FlowStatus(flow=Flow.ESTIMATE, can_run=False, needs=["finn-plus"],
                              missing=["finn-plus is not installed (run .ci/bootstrap.sh)"])
        for f in flows[1:]:
            f.can_run = False
            f.missing.insert(0, "finn-plus is not installed")
    return DoctorReport(python=sys.version.split()[0],
                        machine=f"{_platform.system()} {_platform.machine()}",
                        packages=packages, toolchain=tc, flows=flows,
                        rtl_tools=_rtl_tools(env))


def _rtl_tools(env: Mapping[str, str] | None) -> dict[str, str | None]:
    from fpgaslim.hw.second_opinion import tool_status

    return tool_status(env)


def render_doctor(report: DoctorReport) -> str:
    """Plain text for the terminal (no colour codes, so it also reads well in CI logs)."""
    lines = [f"Python {report.python} on {report.machine}", "", "Tools:"]
    for t in report.toolchain.tools():
        if t.found:
            ver = t.version or "version unknown"
            lines.append(f"  [ok]      {t.name:<12} {ver:<16} {t.path}  (from {t.source})")
        else:
            lines.append(f"  [missing] {t.name:<12} {t.note or ''}")
    lines += ["", "Packages:"]
    for name, ver in report.packages.items():
        side = "board" if name in _BOARD_PACKAGES else "compiler"
        lines.append(f"  {name:<18} {ver or 'not installed':<14} ({side} side)")
    lines += ["", "Flows:"]
    for f in report.flows:
        mark = "yes" if f.can_run else "no "
        lines.append(f"  [{mark}] {f.flow.value:<14} needs {', '.join(f.needs)}")
        for m in f.missing:
            lines.append(f"          missing: {m}")
    lines += ["", "Second opinion on RTL layers (build --synth yosys needs yosys; --sim "
              "verilator needs verilator, perl, g++, make):"]
    for name, found in report.rtl_tools.items():
        lines.append(f"  [{'ok' if found else 'missing':<7}] {name:<10} {found or ''}")
    lines += ["", "Can run here: " + (", ".join(report.runnable) or "nothing"),
              "Board-side packages (finn-plus-driver, pynq) belong on the board, not here; "
              "`fpgaslim-board --simulate` runs a bundle on this CPU instead."]
    return "\n".join(lines)
