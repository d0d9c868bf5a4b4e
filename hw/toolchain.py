"""Where the Xilinx/AMD tools are, which versions, and which build flows they allow.

This is the one place (besides `hw/finn_compat.py`, which must set up finn-plus) that reads the
Xilinx environment variables. Everything else asks `find_toolchain()` / `flow_status()`, so the
doctor, the bitfile build and the CLI all say the same thing about what is missing.

Detection is cheap and side-effect free: it looks at the variables that the tools'
`settings64.sh` exports (XILINX_VIVADO, XILINX_HLS, XILINX_VITIS, XILINX_XRT) and at PATH, and
reads versions from install paths or XRT's version.json. Running a tool with `-version` (several
seconds for Vivado) happens only when the path does not tell, and only with `probe=True`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from enum import Enum
from pathlib import Path
from typing import Mapping

from pydantic import BaseModel, ConfigDict, Field

_VERSION = re.compile(r"(20\d\d\.\d(?:\.\d)?)")


class Flow(str, Enum):
    """What can be built: estimates need only Python; bitfiles need the vendor tools."""

    ESTIMATE = "estimate"
    ZYNQ_BITFILE = "zynq-bitfile"
    ALVEO_XCLBIN = "alveo-xclbin"


class ToolInfo(BaseModel):
    """One tool: found or not, where, which version, and how we found it."""

    model_config = ConfigDict(extra="forbid")
    name: str
    found: bool
    path: str | None = None  # the executable
    root: str | None = None  # the install folder (what XILINX_* points at)
    version: str | None = None
    source: str | None = None  # "env XILINX_VIVADO", "PATH", ...
    note: str | None = None  # why it was not usable, if it was pointed at but broken


class Toolchain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vivado: ToolInfo
    vitis_hls: ToolInfo
    vitis: ToolInfo
    xrt: ToolInfo
    platform_repo_paths: list[str] = Field(default_factory=list)

    def tools(self) -> list[ToolInfo]:
        return [self.vivado, self.vitis_hls, self.vitis, self.xrt]


class FlowStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flow: Flow
    can_run: bool
    needs: list[str]
    missing: list[str] = Field(default_factory=list)  # one sentence per missing piece

    @property
    def message(self) -> str:
        """The sentence the doctor prints and ToolMissingError carries."""
        if self.can_run:
            return f"{self.flow.value}: can run here"
        return (f"{self.flow.value} needs {', '.join(self.needs)}; missing: "
                + "; ".join(self.missing))


# (tool, env vars in order of preference, executables in order of preference)
_SPECS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "vivado": (("XILINX_VIVADO",), ("vivado",)),
    # 2024.2+ ships `vitis-run` for HLS and sets XILINX_HLS to the Vitis folder
    "vitis_hls": (("XILINX_HLS",), ("vitis_hls", "vitis-run")),
    "vitis": (("XILINX_VITIS",), ("v++",)),
    "xrt": (("XILINX_XRT",), ("xbutil", "xrt-smi")),
}
_LABEL = {"vivado": "Vivado", "vitis_hls": "Vitis HLS", "vitis": "Vitis (v++)", "xrt": "XRT"}


def _version_from_output(text: str) -> str | None:
    m = re.search(r"v(20\d\d\.\d(?:\.\d)?)", text) or _VERSION.search(text)
    return m.group(1) if m else None


def _xrt_version(root: Path) -> str | None:
    """XRT writes version.json (BUILD_VERSION) at its root; there is no year in its path."""
    vfile = root / "version.json"
    try:
        data = json.loads(vfile.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = data.get("BUILD_VERSION") or data.get("version")
    return str(version) if version else None


def _probe_version(exe: Path, timeout_s: float) -> str | None:
    try:
        out = subprocess.run([str(exe), "-version"], capture_output=True, text=True,
                             timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _version_from_output(out.stdout + out.stderr)


def find_tool(name: str, env: Mapping[str, str] | None = None, probe: bool = False,
              probe_timeout_s: float = 60.0) -> ToolInfo:
    """Find one tool by its environment variable first (what settings64.sh sets), then PATH."""
    env = os.environ if env is None else env
    env_vars, exes = _SPECS[name]
    label = _LABEL[name]
    notes: list[str] = []
    for var in env_vars:
        value = env.get(var)
        if not value:
            continue
        root = Path(value)
        exe = next((root / "bin" / e for e in exes if (root / "bin" / e).is_file()), None)
        if exe is None:
            notes.append(f"{var}={value} has no bin/{exes[0]}")
            continue
        return _info(name, label, exe, root, f"env {var}", probe, probe_timeout_s)
    search_path = env.get("PATH", "")
    for e in exes:
        hit = shutil.which(e, path=search_path)
        if hit:
            exe = Path(hit)
            return _info(name, label, exe, exe.resolve().parent.parent, "PATH", probe,
                         probe_timeout_s)
    hint = f"set {env_vars[0]} (source the tool's settings64.sh) or put {exes[0]} on PATH"
    return ToolInfo(name=label, found=False, note="; ".join(notes + [hint]))


def _info(name: str, label: str, exe: Path, root: Path, source: str, probe: bool,
          timeout_s: float) -> ToolInfo:
    if name == "xrt":
        version = _xrt_version(root)
    else:
        m = _VERSION.search(str(root))
        version = m.group(1) if m else None
    if version is None and probe:
        version = _probe_version(exe, timeout_s)
    return ToolInfo(name=label, found=True, path=str(exe), root=str(root), version=version,
                    source=source)


def find_toolchain(env: Mapping[str, str] | None = None, probe: bool = False) -> Toolchain:
    """All four tools. `env` defaults to os.environ (tests pass their own mapping)."""
    env = os.environ if env is None else env
    repo = [p for p in env.get("PLATFORM_REPO_PATHS", "").split(":") if p]
    tools = {name: find_tool(name, env, probe) for name in _SPECS}
    return Toolchain(**tools, platform_repo_paths=repo)


def _missing(tool: ToolInfo) -> str:
    return f"{tool.name} not found ({tool.note})" if tool.note else f"{tool.name} not found"


def flow_status(tc: Toolchain, flow: Flow | str, platform: str | None = None) -> FlowStatus:
    """Can `flow` run with this toolchain, and if not, what exactly is missing.

    Zynq bitfiles: FINN generates HLS layers with Vitis HLS and stitches, synthesises and
    implements with Vivado. Alveo: the same plus v++ linking against a Vitis platform and XRT
    (the platform's .xpfm is looked for in PLATFORM_REPO_PATHS when `platform` is given).
    """
    flow = Flow(flow)
    if flow is Flow.ESTIMATE:
        return FlowStatus(flow=flow, can_run=True, needs=["Python (finn-plus)"])
    needed = [tc.vivado, tc.vitis_hls]
    if flow is Flow.ALVEO_XCLBIN:
        needed += [tc.vitis, tc.xrt]
    missing = [_missing(t) for t in needed if not t.found]
    found_versions = {t.version for t in needed if t.found and t.version and t.name != "XRT"}
    if len(found_versions) > 1:
        missing.append("Vivado, Vitis HLS and Vitis must be the same release (found "
                       + ", ".join(sorted(found_versions)) + ")")
    needs = [t.name for t in needed]
    if flow is Flow.ALVEO_XCLBIN and platform:
        needs.append(f"Vitis platform {platform}")
        if not any((Path(p) / platform).is_dir() or any(Path(p).glob(f"{platform}*/*.xpfm"))
                   for p in tc.platform_repo_paths):
            where = ":".join(tc.platform_repo_paths) or "PLATFORM_REPO_PATHS is unset"
            missing.append(f"Vitis platform {platform} not found ({where}); install it and "
                           "add its folder to PLATFORM_REPO_PATHS")
    return FlowStatus(flow=flow, can_run=not missing, needs=needs, missing=missing)
