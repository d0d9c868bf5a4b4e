"""Build settings, build folders and report records: no FINN build needed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fpgaslim.core.errors import CheckpointError, UnknownNameError
from fpgaslim.hw.api import BuildSettings, build_dir_for, load_report
from fpgaslim.hw.boards import get_board
from fpgaslim.hw.figure import Figure
from fpgaslim.hw.offchip import stream_bytes


def test_settings_forbid_typos_and_resolve_board_defaults():
    with pytest.raises(ValidationError):
        BuildSettings(target_fsp=100)
    with pytest.raises(ValidationError):
        BuildSettings(weights="sometimes")
    assert BuildSettings(board="Pynq_Z1").resolved().target_fps == 10_000
    s = BuildSettings(board="Alveo U250").resolved()
    assert (s.board.name, s.target_fps) == ("u250", 100_000)
    assert s.model_dump()["board"] == "u250"  # saved settings hold the name
    assert BuildSettings(board="u250", target_fps=123).resolved().target_fps == 123
    with pytest.raises(UnknownNameError):  # looked up when the settings are made
        BuildSettings(board="nexys")


def test_build_dir_names_default_settings_by_board_only(tmp_path):
    from fpgaslim.compress.variants import RunDir

    run = RunDir(tmp_path)
    assert build_dir_for(run, "v", BuildSettings(board="pynq-z1")).name == "pynq-z1"
    # explicit defaults and spelling variants are the same build
    assert build_dir_for(run, "v", BuildSettings(board="PYNQ_Z1", target_fps=10_000,
                                                 timeout_s=5)).name == "pynq-z1"
    a = build_dir_for(run, "v", BuildSettings(board="pynq-z1", weights="external"))
    b = build_dir_for(run, "v", BuildSettings(board="pynq-z1", mvau_wwidth_max=1024))
    assert a.name.startswith("pynq-z1-") and b.name.startswith("pynq-z1-") and a != b


def test_figure_percent_of_capacity():
    assert Figure.of(14, "count", "x", 280).percent == pytest.approx(5.0)
    assert Figure.of(0, "count", "x", 0).percent == 0.0
    assert Figure.of(3, "count", "x", 0).percent is None  # the board has none
    assert Figure.of(3, "B", "x").percent is None
    assert "capacity: DS190" in Figure.of(1, "count", "FINN", 2, "DS190").source


def test_stream_bytes():
    assert stream_bytes([1, 8, 8, 1], 8) == 64
    assert stream_bytes([1, 10], 32) == 40
    assert stream_bytes([1, 10], 20) == 25


def test_load_report_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no hardware report"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{}", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a valid hardware report"):
        load_report(tmp_path)


def test_board_capacities_feed_percentages():
    b = get_board("kv260")
    assert b.capacity("URAM") == 64 and b.capacity("BRAM_18K") == 288


def test_output_map_recovers_scale_and_bias_and_rejects_non_affine():
    import numpy as np

    from fpgaslim.core.errors import VerificationError
    from fpgaslim.hw.verify import output_map

    rng = np.random.default_rng(0)
    ints = rng.integers(-500, 500, size=(6, 10)).astype(np.float64)
    b = rng.normal(size=10)
    scale, bias = output_map(ints, 0.0123 * ints + b, "L")
    assert scale == pytest.approx(0.0123) and np.allclose(bias, b)
    with pytest.raises(VerificationError, match="not an affine map"):
        output_map(ints, 0.0123 * ints ** 2, "L")


def _fake_probe(fits_at_or_below: int, calls: list[int]):
    """A probe on a grid where index i gives fps 1000 * 1.25^i and fits iff i <= the given
    index (a model that only fits when folded slower)."""
    from fpgaslim.hw.folding_search import Probe

    def probe(i: int) -> Probe:
        calls.append(i)
        return Probe(mvau_wwidth_max=36, grid_index=i, target_fps=1000 * 1.25 ** i,
                     fps=1000 * 1.25 ** i, fits_budget=i <= fits_at_or_below, percent={})
    return probe


@pytest.mark.parametrize("fits_at", [-2, -10, -20, -24])
def test_folding_search_goes_down_to_where_a_large_model_fits(fits_at):
    from fpgaslim.hw.folding_search import _search_knob

    calls: list[int] = []
    hit, nxt, saturated = _search_knob(_fake_probe(fits_at, calls), max_probes=16)
    assert hit.grid_index == fits_at and nxt.grid_index == fits_at + 1 and not saturated
    assert min(calls) >= -24 and len(set(calls)) <= 16


def test_folding_search_gives_up_below_the_floor():
    from fpgaslim.hw.folding_search import FLOOR_INDEX, _search_knob

    calls: list[int] = []
    assert _search_knob(_fake_probe(FLOOR_INDEX - 1, calls), max_probes=16) is None
    assert min(calls) == FLOOR_INDEX and len(calls) <= 6


def test_folding_search_walks_over_plateaus_of_discrete_folding():
    """FINN's folding is discrete: neighbouring targets can give the same fps while the
    target is still met. That is not saturation; the search must go on upwards."""
    from fpgaslim.hw.folding_search import Probe, _search_knob

    def probe(i: int) -> Probe:  # fps in steps of two grid points, fits up to index -5
        fps = 1000 * 1.25 ** (2 * ((i + 1) // 2)) * 1.01
        return Probe(mvau_wwidth_max=36, grid_index=i, target_fps=1000 * 1.25 ** i, fps=fps,
                     fits_budget=i <= -5, percent={})

    hit, nxt, saturated = _search_knob(probe, max_probes=16)
    assert (hit.grid_index, nxt.grid_index, saturated) == (-5, -4, False)


def test_folding_search_stops_when_parallelism_is_exhausted():
    from fpgaslim.hw.folding_search import Probe, _search_knob

    def probe(i: int) -> Probe:  # fits everywhere, but fps stops growing above index 2
        return Probe(mvau_wwidth_max=36, grid_index=i, target_fps=1000 * 1.25 ** i,
                     fps=1000 * 1.25 ** min(i, 2), fits_budget=True, percent={})

    hit, nxt, saturated = _search_knob(probe, max_probes=16)
    assert saturated and nxt is None and hit.grid_index >= 2
