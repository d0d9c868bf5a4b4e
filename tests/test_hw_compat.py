"""finn_compat must fail loudly when finn-plus changes what it relies on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fpgaslim.hw import finn_compat


def test_finn_plus_version_is_the_one_we_wrote_for():
    assert finn_compat.finn_version() == finn_compat.EXPECTED_FINN_VERSION == "1.6.1"


def test_internals_we_patch_are_still_there():
    assert finn_compat.check_internals() == []


def test_generic_base_of_specialized_ops():
    hls, rtl = "finn.custom_op.fpgadataflow.hls", "finn.custom_op.fpgadataflow.rtl"
    generic = "finn.custom_op.fpgadataflow"
    assert finn_compat.generic_base("MVAU_hls", hls) == ("MVAU", generic)
    assert finn_compat.generic_base("MVAU_rtl", rtl) == ("MVAU", generic)
    assert finn_compat.generic_base("DuplicateStreams_hls", hls) == ("DuplicateStreams", generic)
    assert finn_compat.generic_base("ElementwiseAdd_hls", hls) == ("ElementwiseAdd", generic)
    assert finn_compat.generic_base("Thresholding_rtl", rtl) == ("Thresholding", generic)
    assert finn_compat.generic_base("MVAU", generic) is None
    with pytest.raises(RuntimeError, match="no .*NotAnOp_hls"):
        finn_compat.generic_base("NotAnOp_hls", hls)


def test_activate_in_a_child_imports_the_builder_without_vivado(tmp_path):
    """Without the shim, importing the builder fails on XILINX_VIVADO; with it, it works, the
    settings live under the build dir (never ~/.finn) and exit_buildflow does not raise."""
    env = finn_compat.child_environment(tmp_path)
    env.pop("XILINX_VIVADO", None)
    code = (
        "import json, finn.util.settings as s\n"
        "from fpgaslim.hw import finn_compat as fc\n"
        "fc.activate()\n"
        "fb = fc.builder()\n"
        "import finn.builder.build_dataflow as bd\n"
        "print(json.dumps({'names': [n for n in fc.BUILDER_NAMES if hasattr(fb, n)],\n"
        "  'build_dir': str(s.get_settings().finn_build_dir),\n"
        "  'vivado': bd.get_vivado_root(),\n"
        "  'steps': fb.estimate_only_steps}))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["names"] == list(finn_compat.BUILDER_NAMES)
    assert got["build_dir"].startswith(str(tmp_path))
    assert "none" in got["vivado"]
    for step in ("step_qonnx_to_finn", "step_tidy_up", "step_streamline", "step_convert_to_hw",
                 "step_create_dataflow_partition", "step_specialize_layers",
                 "step_target_fps_parallelization", "step_apply_folding_config",
                 "step_generate_estimate_reports"):
        assert step in got["steps"], f"finn-plus estimate preset lost {step}"


def test_without_the_shim_the_builder_import_fails(tmp_path):
    """Guards the reason the shim exists: if this starts passing, finn-plus fixed it."""
    env = finn_compat.child_environment(tmp_path)
    env.pop("XILINX_VIVADO", None)
    out = subprocess.run([sys.executable, "-c", "import finn.builder.build_dataflow"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "XILINX_VIVADO" in out.stderr
