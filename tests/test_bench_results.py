"""Committed benchmark results explain themselves: every row that has a build says how its
verification went (bit-exact, verified with near-ties, or why not), per board; the helpers
that write those cells (benchmarks/common.py, bench_compression.py, bench_lowbit.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fpgaslim.hw.verify import Verification
from fpgaslim.hw.verify_layers import LayerVerification

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

import bench_compression  # noqa: E402
import bench_lowbit  # noqa: E402
import common  # noqa: E402

READINGS = ("bit-exact ", "verified", "MISMATCH", "no build", "not verified")


def _verification(images=20, mismatched=0, errors=0, ties=0, verified=True) -> Verification:
    layers = LayerVerification(images=images, layers=[], unmapped=[], errors=errors,
                               near_ties=ties, verified=errors == 0,
                               first_error_layer="MVAU_hls_3" if errors else None)
    return Verification(images=images, integer_exact=mismatched == 0,
                        mismatched_images=mismatched, max_abs_int_diff=float(mismatched),
                        argmax_agreement=1.0, hw_accuracy=None, brevitas_accuracy=None,
                        max_abs_logit_diff=0.0, images_per_s=1.0, compared="test",
                        layers=layers, verified=verified)


def test_verification_cells_say_how_it_went():
    assert common.verification_cells(None, "x_") == {
        "x_verification": "not verified", "x_verified": None, "x_bit_exact": None}
    exact = common.verification_cells(_verification())
    assert exact["verification"] == "bit-exact 20/20" and exact["verified"] is True
    ties = common.verification_cells(_verification(mismatched=11, ties=45), "fast_")
    assert ties["fast_verification"] == "verified 9/20, 45 near-ties"
    assert ties["fast_verified"] is True and ties["fast_bit_exact"] is False
    bad = common.verification_cells(_verification(mismatched=3, errors=5, verified=False))
    assert bad["verification"].startswith("MISMATCH 17/20 (first: MVAU_hls_3)")
    assert bad["verified"] is False and bad["layer_errors"] == 5


def test_compression_rows_keep_every_board_s_verification():
    cells = bench_compression.board_verifications(
        {"pynq-z1": _verification(), "u250": _verification(mismatched=1, ties=2)})
    assert cells["verification_pynq-z1"] == "bit-exact 20/20"
    assert cells["verification_u250"] == "verified 19/20, 2 near-ties"
    assert cells["near_ties_u250"] == 2 and cells["verified_images_u250"] == 20
    none = bench_compression.board_verifications({})
    assert none["verification_u250"].startswith("no build")


def test_a_row_saved_before_the_board_columns_says_what_was_kept():
    saved = {"variant": "v", "bit_exact": True, "verified": True, "verified_images": 10000,
             "hw_accuracy": 90.0, "fps_pynq-z1": 1.0, "fps_u250": 2.0}
    row = bench_compression.recorded_verifications(saved)
    assert row["verification_pynq-z1"] == "bit-exact 10000/10000"
    assert row["verification_u250"] == bench_compression.UNKEPT
    other_seed = bench_compression.recorded_verifications({"variant": "s1"})
    assert other_seed["verification_pynq-z1"].startswith("no build")


def test_lowbit_anchor_line_gives_the_reason_for_end_to_end_differences():
    an = {"verified_images": 2, "verification": "verified 0/2, 36 near-ties",
          "layer_errors": 0, "near_ties": 36, "mismatched_images": 2,
          "tie_layers": [{"layer": "MVAU_hls_0", "reference": "features.0.act#0",
                          "near_ties": 36, "end_to_end_diffs": 34}],
          "exact_zero_ties": {"elements": 115200, "exact_zero_accumulators": 67,
                              "reference_below_0_there": 34,
                              "max_abs_reference_there": 9.7e-17}}
    line = bench_lowbit.verification_line(an)
    assert "36 in MVAU_hls_0" in line and "2 of 2 images differ end to end" in line
    assert "exactly 0 on 67 of 115,200" in line and "below 0 on 34" in line
    assert "Why" not in bench_lowbit.verification_line({**an, "mismatched_images": 0})


def test_lowbit_kept_sections_keep_their_own_date(tmp_path, monkeypatch):
    old = {"meta": {"date": "2026-12-01T20:45:02+00:00", "machine": {
        "cpu": "Intel", "load_avg_1m_at_start": 0.33}},
        "anchors": [{"tag": "w1a1"}], "training": [{"model": "m", "dataset": "d", "epochs": 1}],
        "resnet": {"gap_points": 0.5}}
    (tmp_path / "lowbit-cpu.json").write_text(json.dumps(old), encoding="utf-8")
    monkeypatch.setattr(bench_lowbit, "RESULTS", tmp_path)
    new_anchor = {"tag": "w1a1", "measured": {"date": "now", "cpu": "here",
                                             "load_avg_1m_at_start": 1.0}}
    anchors, trained, resnet = bench_lowbit._keep_earlier([new_anchor], [], None)
    assert anchors == [new_anchor]
    assert trained[0]["measured"]["date"] == resnet["measured"]["date"] == old["meta"]["date"]
    assert "2026-12-01T20:45:02+00:00 (Intel" in bench_lowbit.measured_line(trained)


def _built_rows(path: Path, has_build) -> list[dict]:
    return [r for r in json.loads(path.read_text(encoding="utf-8"))["rows"] if has_build(r)]


@pytest.mark.parametrize("name, keys, has_build", [
    ("compression-cpu.json", ("verification_pynq-z1", "verification_u250"),
     lambda r: "fps_pynq-z1" in r),
    ("streamline-cpu.json", ("stock_verification", "fast_verification"), lambda r: True),
])
def test_committed_rows_say_how_each_verification_went(name, keys, has_build):
    rows = _built_rows(RESULTS / name, has_build)
    assert rows
    for row in rows:
        for key in keys:
            assert str(row.get(key)).startswith(READINGS), (name, row.get("variant") or
                                                            row.get("model"), key, row.get(key))
            assert not str(row[key]).startswith(("MISMATCH", "not verified")), (name, row)


def test_committed_lowbit_anchors_explain_any_end_to_end_difference():
    anchors = json.loads((RESULTS / "lowbit-cpu.json").read_text(encoding="utf-8"))["anchors"]
    assert {a["tag"] for a in anchors} == {"w1a1", "w2a2"}
    for an in anchors:
        assert an["verified"] and an["verification"].startswith(("bit-exact", "verified"))
        if an["mismatched_images"]:
            z = an["exact_zero_ties"]
            assert z and z["both"] == z["reference_within_1e-9_of_0"], an["tag"]
