"""hw/fast_exec.py's threshold count and im2col against qonnx's own functions, on inputs
chosen to sit on thresholds (exactly, and one integer either side), with float32, float64,
integer, half-integer and unreachable (-1e30) thresholds. Seconds, no build."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaslim.hw import fast_exec

pytest.importorskip("qonnx")


def _thresholds(rng, channels: int, count: int, kind: int) -> np.ndarray:
    th = rng.normal(0, 200, (channels, count))
    if kind == 0:
        th = np.round(th)  # FINN's rounded integer thresholds
    elif kind == 1:
        th = th.astype(np.float32)
    elif kind == 2:
        th = np.round(th) + 0.5  # float64 thresholds half-way (AbsorbBatchNormExactly)
    if kind == 3:
        th[:, 0] = -1e30  # a level every input reaches
    return np.sort(th, axis=1)


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_threshold_count_equals_qonnx_multithreshold(kind):
    from qonnx.custom_op.general.multithreshold import multithreshold

    rng = np.random.default_rng(kind)
    for trial in range(60):
        c, t = int(rng.integers(1, 20)), int(rng.integers(1, 16))
        th = _thresholds(rng, c if trial % 2 else 1, t, kind)
        lo = int(rng.integers(-400, 100))
        v = rng.integers(lo, lo + int(rng.integers(1, 600)), (3, 5, c)).astype(np.float32)
        on = np.ceil(th.reshape(-1)[rng.integers(0, th.size, 6)])  # on and around thresholds
        k = min(18, v.size)
        v.reshape(-1)[:k] = np.concatenate([on - 1, on, on + 1])[:k]
        got = fast_exec.threshold_count(v, th)
        assert np.array_equal(got, multithreshold(v, th, channels_last=True)), trial
        if trial % 3 == 0:  # non-integer inputs: the binary-search path
            w = v + np.float32(0.25)
            assert fast_exec._count_table(w, np.broadcast_to(th, (c, t))) is None
            assert np.array_equal(fast_exec.threshold_count(w, th),
                                  multithreshold(w, th, channels_last=True)), trial


def test_count_table_refuses_what_it_cannot_count():
    th = np.array([[0.0, 1.0]])
    assert fast_exec._count_table(np.array([[np.nan]], np.float32), th) is None
    assert fast_exec._count_table(np.array([[np.inf]], np.float32), th) is None
    wide = np.array([[0.0], [float(fast_exec.TABLE_MAX)]], np.float32)
    assert fast_exec._count_table(wide, th) is None  # table too large: searched instead
    assert np.array_equal(fast_exec.threshold_count(wide, th), [[1.0], [2.0]])
