"""Sweep: finishes, does no work the second time, resumes after a kill to the same results,
runs its builds on a Dask LocalCluster with the same reports; folding search is tight."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fpgaslim.core.config import validate
from fpgaslim.core.errors import ConfigError
from fpgaslim.sweep import SweepConfig, load_sweep, run_sweep

SMALL = {
    "baseline": {"data": {"dataset": "digits"}, "model": "resnet8", "width": 0.5,
                 "train": {"epochs": 3, "lr": 0.05, "batch_size": 32}},
    "methods": [
        {"method": "resconv", "settings": {"sparse_epochs": 1, "retrain_epochs": 0,
                                           "finetune_epochs": 1, "rate": 0.4}},
        {"method": "dynamic-prune", "settings": {"iterations": 1, "epochs": 1, "patience": 1,
                                                 "tolerance": 2.0}},
    ],
    "boards": ["pynq-z1", "u250"],
    "verify_images": 3,
    "parallel": {"workers": 2},
}


def _write(tmp: Path, name: str, **over) -> Path:
    cfg = {**SMALL, "run_dir": str(tmp / name), **over}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _summary(run_dir: Path) -> dict:
    """What a sweep produced: accuracies and the reports' key figures, per unit."""
    out = {}
    for rec_path in sorted(run_dir.glob("variants/*/record.json")):
        rec = json.loads(rec_path.read_text())
        out[rec["id"]] = (rec["accuracy"]["test"], rec["macs"])
    for rep_path in sorted(run_dir.glob("variants/*/builds/*/report.json")):
        rep = json.loads(rep_path.read_text())
        key = f"{rep_path.parts[-4]}@{rep_path.parts[-2]}"
        out[key] = (rep["throughput"]["fps"]["value"], rep["resources"]["LUT"]["value"],
                    rep["resources"]["BRAM_18K"]["value"], rep["fits"],
                    rep["verification"]["integer_exact"] if rep.get("verification") else None)
    return out


def _cli_sweep(cfg: Path, **kw) -> subprocess.Popen:
    """The sweep as users run it; the reference and the killed run both train in a fresh
    process, so their floating-point results are comparable bit for bit."""
    return subprocess.Popen([str(Path(sys.executable).with_name("fpgaslim")), "sweep", str(cfg)],
                            **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    path = _write(tmp, "a")
    proc = _cli_sweep(path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out
    assert "sweep finished" in out
    cfg = load_sweep(path)
    return tmp, cfg, run_sweep(cfg, progress=False)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="boards"):
        validate(SweepConfig, {"run_dir": "x", "boards": ["pynq-z9"]})
    with pytest.raises(ConfigError, match="methods.0.method"):
        validate(SweepConfig, {"run_dir": "x", "methods": [{"method": "magic"}]})
    with pytest.raises(ConfigError, match="verify_image"):
        validate(SweepConfig, {"run_dir": "x", "verify_image": 3})
    with pytest.raises(ConfigError, match="rat"):
        validate(SweepConfig, {"run_dir": "x", "methods": [{"method": "resconv",
                                                            "settings": {"rat": 0.3}}]})


def test_sweep_finishes_and_second_run_does_no_work(finished):
    tmp, cfg, result = finished
    assert len(result.variants) >= 3  # baseline + at least one variant per method
    assert len(result.builds) == 2 * len(result.variants)
    for path in result.builds.values():
        rep = json.loads(Path(path).read_text())
        assert rep["verification"]["integer_exact"] is True
    assert all(v == 0 for v in result.work_done.values()), result.work_done  # the 2nd run


def test_killed_sweep_resumes_to_the_same_results(finished, tmp_path):
    tmp, _, _ = finished
    cfg_b = _write(tmp_path, "b")
    run_b = tmp_path / "b"
    proc = _cli_sweep(cfg_b, start_new_session=True, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    # kill once the methods ran and builds are under way, but not all of them finished
    while time.time() < deadline and proc.poll() is None:
        if list(run_b.glob("variants/*/builds/*/work")) and \
                len(list(run_b.glob("variants/*/builds/*/report.json"))) < 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    resumed = _cli_sweep(cfg_b, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = resumed.communicate(timeout=1800)
    assert resumed.returncode == 0, out
    assert "baseline 0, methods 0" in out, out  # finished training/compression not redone
    assert re.search(r"builds [1-9]", out), out  # the unfinished builds were done
    assert _summary(run_b) == _summary(tmp / "a")


def test_dask_local_cluster_gives_the_same_reports(finished, tmp_path):
    distributed = pytest.importorskip("distributed")
    tmp, _, _ = finished
    shutil.copytree(tmp / "a", tmp_path / "d", ignore=shutil.ignore_patterns("builds", "report"))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        cfg = load_sweep(_write(tmp_path, "d", parallel={"dask_scheduler":
                                                         cluster.scheduler_address}))
        result = run_sweep(cfg, progress=False)
    assert result.work_done["builds"] == len(result.builds)
    assert _summary(tmp_path / "d") == _summary(tmp / "a")


def test_maxfit_fits_and_one_step_faster_does_not(finished):
    from fpgaslim.compress.variants import RunDir
    from fpgaslim.hw.folding_search import FoldingSearch, load_maxfit, search_variant

    tmp, _, _ = finished
    search = FoldingSearch(mvau_wwidth_max=[1024], step_factor=2.0,
                           budget={"LUT": 40.0, "BRAM_18K": 100.0, "URAM": 100.0, "DSP": 100.0})
    m = load_maxfit(search_variant(RunDir(tmp / "a"), "baseline", "pynq-z1", {}, search))
    assert m.fps is not None and m.fps.value > 0
    assert all(m.percent[k] <= v for k, v in search.budget.items())
    assert "FINN estimate" in m.fps.source
    if not m.saturated:
        assert m.next_step is not None and not m.next_step.fits_budget
        assert m.next_step.target_fps == pytest.approx(m.target_fps * 2.0, rel=0.01)
