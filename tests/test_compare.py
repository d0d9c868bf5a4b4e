"""Variant comparison: rows equal to the saved records and hardware reports, the Pareto front
on hand-made points, and the HTML report rendered by a real headless browser.

The builds are the ones test_hw_build makes (same runs, boards, settings and verify_images),
so in a full run they are built once and read back from disk here."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fpgaslim.compare import COLUMNS, compare_runs, pareto_front
from fpgaslim.compare.writers import cell
from fpgaslim.core.errors import ConfigError, UnknownNameError
from fpgaslim.hw.figure import Figure
from fpgaslim.hw.folding_search import MaxFit
from fpgaslim.hw.report import load_report

BOARDS = ("pynq-z1", "u250")
N_IMAGES = 10  # as in test_hw_build: the same builds are reused from disk
CHROMIUM = Path("/usr/bin/chromium")


# --------------------------------------------------------------------------- Pareto (fast)
def test_pareto_front_on_hand_made_points():
    # (accuracy: max, cost: min)
    pts = [(90, 10), (95, 20), (85, 5), (80, 15), (95, 30), (90, 10), (70, 50)]
    assert pareto_front(pts, (True, False)) == [True, True, True, False, False, True, False]
    # (accuracy: max, fps: max): the fastest and the most accurate survive
    assert pareto_front([(90, 100), (80, 1000), (85, 500), (79, 900)], (True, True)) == \
        [True, True, True, False]
    # a missing objective is never on the front and never dominates
    assert pareto_front([(None, 1), (50, 2)], (True, False)) == [False, True]
    assert pareto_front([], (True, False)) == []
    with pytest.raises(ConfigError, match="2 objectives"):
        pareto_front([(1, 2, 3)], (True, False))


# --------------------------------------------------------------------------- real builds
@pytest.fixture(scope="module")
def built(resnet8_run, cnv_run, digits):
    """Two runs (ResNet-8 and CNV, each a trained baseline) x two boards, really built."""
    from fpgaslim.hw.api import build_variant

    for run in (resnet8_run, cnv_run):
        for board in BOARDS:
            build_variant(run, "baseline", board, data=digits, verify_images=N_IMAGES)
    return resnet8_run, cnv_run


@pytest.fixture(scope="module")
def compared(built, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    return compare_runs(list(built), out), out


def _expected_reports(runs) -> dict[tuple[str, str, str], Path]:
    """(run folder, variant, board) -> report.json, straight from the disk layout."""
    found = {}
    for run in runs:
        for vid in run.ids():
            for rep in sorted((run.variant_dir(vid) / "builds").glob("*/report.json")):
                board = load_report(rep).board
                if rep.parent.name == board:  # default-settings builds only
                    found[run.path.name, vid, board] = rep
    return found


@pytest.mark.slow
def test_one_row_per_variant_and_board_with_the_reports_values(built, compared):
    result, out = compared
    expected = _expected_reports(built)
    assert len(expected) >= 4  # 2 variants x 2 boards at least
    got = {(r.run, r.variant, r.board): r for r in result.rows}
    assert set(got) == set(expected)
    assert not result.skipped

    with open(result.files["csv"], newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(expected)
    for line in csv_rows:
        key = (line["run"], line["variant"], line["board"])
        rep = load_report(expected[key])
        run = next(r for r in built if r.path.name == key[0])
        rec = run.record(key[1])
        assert float(line["accuracy"]) == rec.accuracy.test
        assert int(line["params"]) == rec.params and int(line["macs"]) == rec.macs
        assert int(line["depth"]) == rec.depth and line["bits"] == rec.arch.bits.tag
        for k in ("BRAM_18K", "URAM", "LUT", "DSP"):
            assert float(line[k]) == rep.resources[k].value
            assert float(line[f"{k}_pct"]) == rep.resources[k].percent
        assert float(line["offchip_bytes"]) == rep.offchip.total_bytes.value
        assert float(line["bandwidth_gbps"]) == rep.offchip.bandwidth_needed.value
        assert float(line["fps"]) == rep.throughput.fps.value
        assert float(line["latency_us"]) == rep.throughput.latency_us.value
        assert line["fits"] == str(rep.fits)
        assert line["maxfit_fps"] == ""  # no folding search here: the column stays empty
        assert line["verified"] == f"bit-exact {N_IMAGES}/{N_IMAGES}"

    md = result.files["markdown"].read_text(encoding="utf-8")
    table = [ln for ln in md.splitlines() if ln.startswith("| ")][1:]
    assert len(table) == len(expected)
    for row in result.rows:  # the Markdown shows the same values, formatted
        (line,) = [ln for ln in table if f"| {row.key} | {row.board} |" in ln]
        rep = load_report(expected[row.run, row.variant, row.board])
        assert f"{rep.throughput.fps.value:,.1f}" in line
        assert f"{rep.resources['LUT'].value:,.0f} ({rep.resources['LUT'].percent:.1f}%)" in line
    # every column says where its numbers come from
    assert "measured in PyTorch" in md and "FINN estimate" in md
    assert all(c.key in result.legend for c in COLUMNS if c.key not in
               ("variant", "board", "method"))
    data = json.loads(result.files["json"].read_text(encoding="utf-8"))
    assert len(data["rows"]) == len(expected)


@pytest.mark.slow
def test_rich_table_and_plots(compared):
    from rich.console import Console

    result, _ = compared
    console = Console(record=True, width=260, file=io.StringIO())
    console.print(result.table())
    text = console.export_text()
    for row in result.rows:
        assert row.variant in text and f"{row.fps:,.1f}" in text
    names = {k.removeprefix("plot:") for k in result.files if k.startswith("plot:")}
    assert names == {"accuracy_vs_onchip", "accuracy_vs_fps", "accuracy_vs_offchip",
                     "board_utilisation", "layer_resources", "layer_cycles"}
    for k in names:
        assert result.files[f"plot:{k}"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.detail == (result.rows[0].run, "baseline")


@pytest.mark.slow
def test_maxfit_column_and_unreadable_reports(built, tmp_path):
    """A copy of one run's records and reports (no model needed: nothing is rebuilt): a
    folding-search result fills its row's max-fit column only; a broken report is listed,
    not fatal."""
    src = built[0]
    dst = tmp_path / "run"
    vdir = src.variant_dir("baseline")
    (dst / "variants/baseline").mkdir(parents=True)
    shutil.copy2(vdir / "record.json", dst / "variants/baseline/record.json")
    for board in BOARDS:
        (dst / "variants/baseline/builds" / board).mkdir(parents=True)
        shutil.copy2(vdir / "builds" / board / "report.json",
                     dst / "variants/baseline/builds" / board / "report.json")
    # the folding search's own format and place (hw/folding_search.py) for U250 ...
    fig = Figure(value=12345.5, unit="frames/s", source="FINN estimate, max-fit search")
    found = MaxFit(variant="baseline", board="u250", fps=fig, target_fps=12000.0,
                   mvau_wwidth_max=36, percent={"LUT": 80.0}, next_step=None, saturated=False,
                   budget={"LUT": 85.0}, probes=[], source="test")
    search_dir = dst / "variants/baseline/builds/u250-maxfit-0123abcd"
    search_dir.mkdir()
    (search_dir / "maxfit.json").write_text(found.model_dump_json())
    # ... and a search beside the Pynq-Z1 report where nothing fitted
    (dst / "variants/baseline/builds/pynq-z1/maxfit.json").write_text('{"fps": null}')
    broken = dst / "variants/baseline/builds/kv260"
    broken.mkdir()
    (broken / "report.json").write_text('{"board": "kv260"}')

    result = compare_runs([dst], tmp_path / "out", plots=False)
    by_board = {r.board: r for r in result.rows}
    assert set(by_board) == set(BOARDS)
    assert by_board["u250"].maxfit_fps == 12345.5 and by_board["pynq-z1"].maxfit_fps is None
    col = next(c for c in COLUMNS if c.key == "maxfit_fps")
    assert cell(by_board["u250"], col) == "12,345.5"
    assert cell(by_board["pynq-z1"], col) == "none fits"
    assert "max-fit search" in result.legend["maxfit_fps"]
    assert [Path(s.path).name for s in result.skipped] == ["kv260"]
    assert "not a valid hardware report" in result.skipped[0].reason
    assert "kv260" in result.files["html"].read_text(encoding="utf-8")

    with pytest.raises(UnknownNameError, match="baseline"):
        compare_runs([dst], tmp_path / "out2", detail_variant="nope", plots=False)
    (tmp_path / "empty/variants").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no variant"):
        compare_runs([tmp_path / "empty"], tmp_path / "out3")
    with pytest.raises(ConfigError, match="not a run directory"):
        compare_runs([tmp_path / "nothing"], tmp_path / "out4")


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium is not installed at "
                    "/usr/bin/chromium (install it with .ci/bootstrap.sh --test)")
def test_html_report_renders_in_headless_chromium(compared, artifacts, tmp_path):
    result, _ = compared
    page = result.files["html"]
    text = page.read_text(encoding="utf-8")
    for bad in ("http://", "https://", "<script", "<link"):  # self-contained, works offline
        assert bad not in text
    url = page.resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "profile").stdout
    rows = dom.count('<tr class="row')
    assert rows == len(result.rows)
    for row in result.rows:
        assert f'data-variant="{row.key}" data-board="{row.board}"' in dom
    assert dom.count('<img class="plot"') == 6
    assert dom.count('src="data:image/png;base64,') == 6
    assert "Source:" in dom and "FINN estimate" in dom and "measured in PyTorch" in dom

    shot = artifacts / "compare_report.png"
    shot.unlink(missing_ok=True)
    _chromium([f"--screenshot={shot}", "--window-size=1400,2000", "--hide-scrollbars", url],
              tmp_path / "profile2")
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(head[16:20], "big") == 1400  # PNG IHDR width
