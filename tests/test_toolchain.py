"""Tool detection and the doctor, on install trees laid out like the vendors' (no Vivado here,
so the 'installed' tools are small scripts at the paths settings64.sh would export)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fpgaslim.deploy.doctor import doctor, render_doctor
from fpgaslim.hw.toolchain import Flow, find_tool, find_toolchain, flow_status


def _tool(root: Path, exe: str, version_line: str = "") -> Path:
    (root / "bin").mkdir(parents=True, exist_ok=True)
    script = root / "bin" / exe
    script.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    script.chmod(0o755)
    return root


@pytest.fixture()
def xilinx(tmp_path: Path) -> dict[str, str]:
    """A full 2024.2 install: Vivado, Vitis HLS, Vitis, XRT (env as settings64.sh sets it)."""
    base = tmp_path / "Xilinx"
    xrt = _tool(tmp_path / "opt" / "xilinx" / "xrt", "xbutil")
    (xrt / "version.json").write_text(json.dumps({"BUILD_VERSION": "2.17.319"}))
    return {"XILINX_VIVADO": str(_tool(base / "Vivado" / "2024.2", "vivado")),
            "XILINX_HLS": str(_tool(base / "Vitis_HLS" / "2024.2", "vitis_hls")),
            "XILINX_VITIS": str(_tool(base / "Vitis" / "2024.2", "v++")),
            "XILINX_XRT": str(xrt), "PATH": "/usr/bin:/bin"}


def test_nothing_installed_only_estimates_run() -> None:
    report = doctor(env={"PATH": "/usr/bin:/bin"})
    assert report.runnable == ["estimate"]
    zynq = report.flow(Flow.ZYNQ_BITFILE)
    assert not zynq.can_run
    assert any("Vivado not found" in m for m in zynq.missing)
    assert any("Vitis HLS not found" in m for m in zynq.missing)
    alveo = report.flow("alveo-xclbin")
    assert {"Vivado", "Vitis HLS", "Vitis (v++)", "XRT"} <= set(alveo.needs)
    assert len(alveo.missing) == 4
    text = render_doctor(report)
    assert "[missing] Vivado" in text and "XILINX_VIVADO" in text
    assert "Can run here: estimate" in text
    assert report.packages["finn-plus"] == "1.6.1"


def test_full_install_found_from_env(xilinx: dict[str, str]) -> None:
    tc = find_toolchain(xilinx)
    assert tc.vivado.found and tc.vivado.version == "2024.2"
    assert tc.vivado.source == "env XILINX_VIVADO"
    assert tc.vitis_hls.path.endswith("bin/vitis_hls")
    assert tc.xrt.version == "2.17.319"  # from XRT's version.json, not a path
    report = doctor(env=xilinx)
    assert report.runnable == ["estimate", "zynq-bitfile", "alveo-xclbin"]
    assert "2024.2" in render_doctor(report)


def test_zynq_without_alveo_and_release_mismatch(xilinx: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in xilinx.items() if k not in ("XILINX_VITIS", "XILINX_XRT")}
    assert [f.flow.value for f in doctor(env=env).flows if f.can_run] == ["estimate",
                                                                         "zynq-bitfile"]
    env["XILINX_HLS"] = str(_tool(tmp_path / "Vitis_HLS" / "2023.2", "vitis_hls"))
    status = flow_status(find_toolchain(env), Flow.ZYNQ_BITFILE)
    assert not status.can_run and "same release" in status.message


def test_path_lookup_and_version_probe(tmp_path: Path) -> None:
    root = _tool(tmp_path / "tools" / "vivado-install", "vivado", "Vivado v2023.2 (64-bit)")
    env = {"PATH": f"{root / 'bin'}:/usr/bin"}
    info = find_tool("vivado", env)
    assert info.found and info.source == "PATH" and info.version is None  # path has no year
    assert find_tool("vivado", env, probe=True).version == "2023.2"  # from `vivado -version`


def test_env_var_pointing_at_nothing_is_explained(tmp_path: Path) -> None:
    info = find_tool("vivado", {"XILINX_VIVADO": str(tmp_path / "gone"), "PATH": ""})
    assert not info.found and "has no bin/vivado" in info.note


def test_alveo_platform_is_checked(xilinx: dict[str, str], tmp_path: Path) -> None:
    plat = "xilinx_u250_gen3x16_xdma_4_1_202210_1"
    status = flow_status(find_toolchain(xilinx), Flow.ALVEO_XCLBIN, platform=plat)
    assert not status.can_run and "PLATFORM_REPO_PATHS" in status.message
    (tmp_path / "platforms" / plat).mkdir(parents=True)
    (tmp_path / "platforms" / plat / f"{plat}.xpfm").write_text("")
    env = {**xilinx, "PLATFORM_REPO_PATHS": str(tmp_path / "platforms")}
    assert flow_status(find_toolchain(env), Flow.ALVEO_XCLBIN, platform=plat).can_run


def test_default_environment_is_read(monkeypatch: pytest.MonkeyPatch, xilinx) -> None:
    monkeypatch.setenv("XILINX_VIVADO", xilinx["XILINX_VIVADO"])
    assert find_toolchain().vivado.version == "2024.2"
    monkeypatch.delenv("XILINX_VIVADO")
    monkeypatch.setenv("PATH", os.defpath)
    assert not find_toolchain().vivado.found


def test_cli_doctor(monkeypatch: pytest.MonkeyPatch, xilinx: dict[str, str]) -> None:
    from click.testing import CliRunner

    from fpgaslim.cli import main

    for k, v in xilinx.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(main, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "Can run here: estimate, zynq-bitfile, alveo-xclbin" in res.output
