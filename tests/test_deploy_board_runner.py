"""The board runner, run as a board runs it: in its own small venv with numpy<2 and fpgaslim
installed without dependencies (no torch, qonnx, finn, pydantic). The simulated board must give
the QAT model's predictions on real test images, through bundle -> unpack -> dataflow graph."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BOARD_VENV = ROOT / ".venv-board"
COMPILER_SIDE = ("torch", "brevitas", "qonnx", "finn", "onnx", "onnxruntime", "pydantic",
                 "sklearn", "scipy")


@pytest.fixture(scope="session")
def board_python() -> Path:
    """A venv like a PYNQ image's Python: numpy<2 plus fpgaslim with --no-deps (so importing
    anything from the compiler side fails there). Made once; kept while pyproject is unchanged."""
    py = BOARD_VENV / "bin" / "python"
    stamp = BOARD_VENV / ".fpgaslim-board-ready"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not (py.is_file() and stamp.is_file() and stamp.read_text() == want):
        pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(BOARD_VENV)], check=True)
        subprocess.run([*pip, "numpy<2"], check=True, timeout=600)
        subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True, timeout=600)
        stamp.write_text(want)
    return py


def _board(board_python: Path, *args: str) -> subprocess.CompletedProcess:
    exe = board_python.parent / "fpgaslim-board"  # the installed entry point
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_runner_imports_no_compiler_side(board_python: Path) -> None:
    code = ("import sys, numpy, fpgaslim.deploy.board_runner, fpgaslim.deploy.manifest; "
            "print(numpy.__version__); print(sorted({m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([str(board_python), "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert int(out[0].split(".")[0]) < 2, out[0]
    loaded = set(json.loads(out[1].replace("'", '"')))
    assert not loaded & set(COMPILER_SIDE), loaded & set(COMPILER_SIDE)
    with pytest.raises(subprocess.CalledProcessError):  # and the compiler side is really absent
        subprocess.run([str(board_python), "-c", "import torch"], check=True,
                       capture_output=True)


@pytest.fixture(scope="module")
def cnv_bundle(cnv_run, digits, tmp_path_factory) -> Path:
    """The quarter-width CNV baseline built for Pynq-Z1 (FINN estimate build) and bundled."""
    from fpgaslim.deploy.bundle import bundle
    from fpgaslim.hw.api import build_variant

    # same settings as tests/test_hw_build.py, so the session builds this once (build cache)
    build_variant(cnv_run, "baseline", "pynq-z1", data=digits, verify_images=10)
    return bundle(cnv_run, "baseline", "pynq-z1", tmp_path_factory.mktemp("bundle") / "cnv.tar.gz")


@pytest.fixture(scope="module")
def test_npz(digits, tmp_path_factory) -> Path:
    x, y = digits.test.tensors
    path = tmp_path_factory.mktemp("data") / "digits-test.npz"
    np.savez(path, images=x.numpy().astype(np.uint8), labels=y.numpy())
    return path


def test_bundle_contents(cnv_bundle: Path) -> None:
    with tarfile.open(cnv_bundle) as tar:
        names = set(tar.getnames())
        info = json.load(tar.extractfile("bundle.json"))
        settings = json.load(tar.extractfile("driver/settings.json"))
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"manifest.json", "bundle.json", "variant.json", "driver/settings.json",
            "graph/dataflow.onnx"} <= names
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert info["accelerator"]["kind"] is None  # no Vivado here: simulation-only bundle
    assert info["input"]["shape"] == [1, 8, 8] and info["input"]["transpose"] == [0, 2, 3, 1]
    assert info["input"]["quantizer_scale"] == pytest.approx(1 / 255)
    assert info["classes"] == [str(i) for i in range(10)]
    assert "FINN estimate" in info["estimates"]["source"]
    io = settings["driver_information"]["io_shape_dict"]
    assert io["idt"] == ["DataType['UINT8']"] and io["ishape_normal"] == [[1, 8, 8, 1]]
    # packed = folded innermost dim packed into whole bytes (8-bit pixels: one byte each)
    assert io["ishape_packed"][0][:-1] == io["ishape_folded"][0][:-1]
    assert io["ishape_packed"][0][-1] == io["ishape_folded"][0][-1]


def test_simulated_board_equals_qat_model(cnv_bundle: Path, cnv_run, digits, test_npz: Path,
                                          board_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = _board(board_python, cnv_bundle, "--data", test_npz, "--simulate", "--sim-python",
                  sys.executable, "--out", out, "--batch-sizes", "1,4", "--iterations", "2",
                  "--workdir", tmp_path / "unpacked")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    x, y = digits.test.tensors
    with torch.no_grad():
        qat = cnv_run.load_model("baseline")(x).argmax(1).numpy()
    pred = np.array(result["accuracy"]["predictions"])
    assert len(pred) == len(y) and (pred == qat).all(), f"{(pred != qat).sum()} differ"
    assert result["accuracy"]["accuracy_percent"] == pytest.approx(
        100 * float((qat == y.numpy()).mean()))
    assert result["label"] == "simulated" and result["environment"]["numpy"].startswith("1.")
    for row in result["throughput"]:
        assert row["source"] == "simulated" and row["fps"] > 0
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
    assert [r["batch_size"] for r in result["throughput"]] == [1, 4]
    assert "simulated" in proc.stdout and "accuracy" in proc.stdout


def test_runner_refuses_tampered_bundle(cnv_bundle: Path, test_npz: Path, board_python: Path,
                                        tmp_path: Path) -> None:
    from fpgaslim.deploy.manifest import pack, safe_extract

    root = safe_extract(cnv_bundle, tmp_path / "t")
    info = json.loads((root / "bundle.json").read_text())
    info["output"]["postprocess"] = [{"op": "Mul", "value": -1.0}]  # would invert predictions
    (root / "bundle.json").write_text(json.dumps(info))
    bad = pack(root, tmp_path / "bad.tar.gz")
    proc = _board(board_python, bad, "--data", test_npz, "--simulate", "--out",
                  tmp_path / "r.json")
    assert proc.returncode == 2 and "bundle.json does not match" in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_board_mode_without_board(cnv_bundle: Path, test_npz: Path, board_python: Path,
                                  tmp_path: Path) -> None:
    """Without pynq/finn-plus-driver (or without a bitfile) the runner says so and what to do."""
    proc = _board(board_python, cnv_bundle, "--data", test_npz, "--out", tmp_path / "r.json")
    assert proc.returncode == 5, proc.stderr
    assert "--simulate" in proc.stderr


def test_deploy_over_ssh(cnv_bundle: Path, test_npz: Path, board_python: Path,
                         tmp_path: Path) -> None:
    """push/run speak OpenSSH's command-line contract (`ssh HOST CMDLINE`, `scp SRC HOST:DST`).
    There is no sshd here, so the 'board' is this machine behind two stand-ins that do what
    ssh/scp do after connecting: run the command line in a shell, copy the files."""
    from fpgaslim.deploy.remote import Remote

    ssh = tmp_path / "ssh"
    ssh.write_text(f'#!/bin/sh\nshift\nPATH="{board_python.parent}:$PATH" exec sh -c "$1"\n')
    scp = tmp_path / "scp"
    scp.write_text(f"#!{sys.executable}\nimport re, shutil, sys\n"
                   "a = [re.sub(r'^[^/:]+:', '', x) for x in sys.argv[1:]]\n"
                   "[shutil.copy(s, a[-1]) for s in a[:-1]]\n")
    ssh.chmod(0o755)
    scp.chmod(0o755)
    remote = Remote("xilinx@pynq", str(tmp_path / "on board dir"), ssh=[str(ssh)],
                    scp=[str(scp)])
    result = remote.run(cnv_bundle, test_npz, tmp_path / "fetched.json",
                        extra=["--simulate", "--sim-python", sys.executable, "--limit", "16",
                               "--batch-sizes", "2", "--iterations", "1"])
    assert result["accuracy"]["images"] == 16 and result["label"] == "simulated"
    assert json.loads((tmp_path / "fetched.json").read_text()) == result
    assert (tmp_path / "on board dir" / cnv_bundle.name).is_file()  # quoting survived spaces


def test_post_synthesis_in_hardware_report(cnv_bundle: Path, cnv_run, tmp_path: Path) -> None:
    """A --bitfile build's Vivado figures sit in the hardware report next to FINN's estimates,
    labelled; reports written before (no such field) still load."""
    from rich.console import Console

    from fpgaslim.hw.api import BuildSettings, build_dir_for, load_report
    from fpgaslim.hw.postsynth import read_post_synth
    from fpgaslim.hw.report import render

    report = load_report(build_dir_for(cnv_run, "baseline", BuildSettings().resolved()))
    assert report.post_synthesis is None
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "post_synth_resources.json").write_text(json.dumps(
        {"(top)": {"LUT": 12345, "FF": 20000, "BRAM_36K": 4, "BRAM_18K": 1, "DSP": 2}}))
    post = read_post_synth(tmp_path, 10.0)
    both = type(report).model_validate({**report.model_dump(mode="json"),
                                        "post_synthesis": post.model_dump(mode="json")})
    console = Console(record=True, width=200)
    render(both, console)
    text = console.export_text()
    assert "LUT post-synth" in text and "12,345" in text and "Vivado post-synthesis" in text
    assert "FINN estimate" in text  # the estimates are still there


def test_wrong_sim_python_explains(cnv_bundle: Path, test_npz: Path, board_python: Path,
                                   tmp_path: Path) -> None:
    """--sim-python must be the compiler environment; the board venv has no qonnx/finn."""
    proc = _board(board_python, cnv_bundle, "--data", test_npz, "--simulate", "--sim-python",
                  board_python, "--out", tmp_path / "r.json")
    assert proc.returncode == 2 and "simulator: ModuleNotFoundError" in proc.stderr, proc.stderr


def test_bundle_refuses_a_stale_build(cnv_bundle: Path, cnv_run, tmp_path: Path) -> None:
    """A build whose record names another checkpoint (the variant was retrained after it) is
    not bundled: the message says it is stale and how to rebuild, and nothing is written."""
    from fpgaslim.core.errors import ConfigError
    from fpgaslim.deploy.bundle import bundle
    from fpgaslim.hw.api import BuildSettings, build_dir_for
    from fpgaslim.hw.build_key import RECORD_FILE

    settings = BuildSettings(board="pynq-z1").resolved()
    record = build_dir_for(cnv_run, "baseline", settings) / RECORD_FILE
    kept = record.read_text(encoding="utf-8")
    rec = json.loads(kept)
    rec["inputs"]["model"] = {"checkpoint_sha256": "0" * 64}
    record.write_text(json.dumps(rec), encoding="utf-8")
    out = tmp_path / "stale.tar.gz"
    try:
        with pytest.raises(ConfigError, match="not of the variant's current model") as err:
            bundle(cnv_run, "baseline", "pynq-z1", out)
    finally:
        record.write_text(kept, encoding="utf-8")
    assert "fpgaslim build" in str(err.value) and not out.exists()
