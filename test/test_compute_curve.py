"""The loss-against-compute fit of bench/compute_curve.py, on points drawn from known curves."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import compute_curve as cc  # noqa: E402  (bench/ is not a package)

# a curve in FLOPs with the shape of this project's runs: 3.4 nats at 1e14, falling towards 1.5
L_INF, A_RAW, B = 1.5, 2.0e4, 0.3  # L(C) = L_INF + A_RAW * C ** -B
BUDGETS = np.array([2.5, 5, 10, 20, 40]) * 60 * 4.0e10 * 2  # core-seconds × FLOP/s: 1.2e13 .. 1.9e14


def truth(c):
    return L_INF + A_RAW * np.asarray(c, dtype=float) ** -B


def test_the_fit_recovers_a_known_curve_from_exact_points():
    f = cc.fit(BUDGETS, truth(BUDGETS))
    assert f.l_inf == pytest.approx(L_INF, abs=1e-4)
    assert f.b == pytest.approx(B, rel=1e-4)
    assert f.a * f.c_ref ** f.b == pytest.approx(A_RAW, rel=1e-3)  # the normalised a, back in raw units
    assert f.c_ref == pytest.approx(math.exp(np.mean(np.log(BUDGETS))))
    far = BUDGETS[-1] * 1e3
    assert f.loss(far) == pytest.approx(float(truth(far)), abs=1e-3)


def test_the_fit_recovers_it_within_noise_from_noisy_points():
    rng = np.random.default_rng(3)
    c = np.geomspace(BUDGETS[0], BUDGETS[-1], 12)
    f = cc.fit(c, truth(c) + rng.normal(0, 0.005, c.size))
    assert abs(f.l_inf - L_INF) < 0.15 and abs(f.b - B) < 0.06
    assert np.max(np.abs(f.loss(c) - truth(c))) < 0.01


def test_a_curve_in_other_units_gives_the_same_exponent_and_floor():
    core_s = BUDGETS / 8.0e10  # the same runs counted in core-seconds
    f, g = cc.fit(BUDGETS, truth(BUDGETS)), cc.fit(core_s, truth(BUDGETS))
    assert (g.l_inf, g.b) == pytest.approx((f.l_inf, f.b), rel=1e-4)
    assert g.compute_for(2.0) * 8.0e10 == pytest.approx(f.compute_for(2.0), rel=1e-3)


def test_held_out_error_is_the_fit_without_the_largest_point_at_that_point():
    y = truth(BUDGETS).copy()
    y[-1] -= 0.05  # the 40-minute run lands 0.05 nats below the curve of the others
    order = [3, 0, 4, 2, 1]  # any order: the largest compute is the one held out
    h = cc.held_out(list(BUDGETS[order]), list(y[order]))
    assert h.compute == BUDGETS[-1] and h.observed == pytest.approx(y[-1])
    expected = float(cc.fit(BUDGETS[:-1], y[:-1]).loss(BUDGETS[-1]))
    assert h.predicted == pytest.approx(expected)
    assert h.predicted == pytest.approx(float(truth(BUDGETS[-1])), abs=1e-3)  # the others lie on the curve
    assert h.error == pytest.approx(0.05, abs=1e-3)


def test_compute_for_inverts_the_curve_and_never_reaches_the_floor():
    f = cc.Fit(l_inf=1.5, a=1.0, b=0.5, c_ref=100.0, points=5)
    assert f.compute_for(2.0) == pytest.approx(400.0)  # 1.5 + (400/100) ** -0.5 = 2.0
    assert f.loss(f.compute_for(1.7)) == pytest.approx(1.7)
    assert f.compute_for(1.5) == math.inf and f.compute_for(1.2) == math.inf


def test_projection_range_moves_the_target_by_the_held_out_error():
    f = cc.Fit(l_inf=1.5, a=1.0, b=0.5, c_ref=100.0, points=5)
    p = cc.project(f, 2.0, -0.1, measured_max=50.0)  # the sign of the error does not matter
    assert p.mid == pytest.approx(400.0)
    assert p.low == pytest.approx(100.0 * (1.0 / 0.6) ** 2)  # reached at 2.1 on the fitted curve
    assert p.high == pytest.approx(100.0 * (1.0 / 0.4) ** 2)  # at 1.9
    assert p.beyond == pytest.approx(8.0)
    assert cc.project(f, 1.55, 0.1, 50.0).high == math.inf  # 1.45 is below the floor


@pytest.mark.parametrize("compute, loss, message", [
    ([1, 2], [3, 2], "at least 3 points"),
    ([1, 2, 3], [3, 2], "same length"),
    ([0, 2, 3], [3, 2, 1], "positive"),
    ([1, 2, float("nan")], [3, 2, 1], "finite"),
])
def test_bad_points_are_refused_by_name(compute, loss, message):
    with pytest.raises(ValueError, match=message):
        cc.fit(compute, loss)


def test_held_out_needs_four_points():
    with pytest.raises(ValueError, match="at least 4 points"):
        cc.held_out([1, 2, 3], [3, 2, 1])


def test_bits_per_second():
    assert cc.bits_per_second(math.log(2), 16000) == pytest.approx(16000)
    assert cc.bits_per_second(2.69, 16000) == pytest.approx(2.69 / 0.6931471805599453 * 16000)


def test_the_bench_runs_only_what_its_results_file_lacks(tmp_path):
    import bench_compute_curve as bcc

    wanted = bcc.parse_runs("small:2.5, small:5,default:5,small:2.5")
    assert wanted == [("small", 2.5), ("small", 5.0), ("default", 5.0), ("small", 2.5)]
    results = tmp_path / "curve.jsonl"
    assert bcc.read_results(results) == []
    bcc.append_result(results, {"preset": "small", "minutes": 5, "dataset_id": "A", "val_nats": 3.0})
    bcc.append_result(results, {"preset": "default", "minutes": 5.0, "dataset_id": "B", "val_nats": 3.1})
    rows = bcc.read_results(results)
    assert [r["val_nats"] for r in rows] == [3.0, 3.1]
    # small:5 is done on dataset A; default:5 only on another dataset; small:2.5 is asked twice
    assert bcc.pending(wanted, rows, "A") == [("small", 2.5), ("default", 5.0)]
    assert bcc.pending(wanted, rows, "B") == [("small", 2.5), ("small", 5.0)]


@pytest.mark.parametrize("text", ["small", "small:", "small:0", ":5", "small:five"])
def test_the_bench_refuses_a_bad_run_list(text):
    import bench_compute_curve as bcc

    with pytest.raises(SystemExit, match="PRESET:MINUTES"):
        bcc.parse_runs(text)


def test_a_damaged_results_line_is_named(tmp_path):
    import bench_compute_curve as bcc

    results = tmp_path / "curve.jsonl"
    results.write_text('{"preset": "small"}\n{"preset": "sm\n')
    with pytest.raises(SystemExit, match="curve.jsonl:2 is not a JSON line"):
        bcc.read_results(results)
