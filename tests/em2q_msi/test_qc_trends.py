"""Control charts of QC numbers: known baselines, a planted outlier, the first points unjudged."""

from __future__ import annotations

import numpy as np
import pytest

from em2q_msi.qc_trends import control_chart, out_of_limits, qc_numbers


def test_limits_are_the_mean_and_3_sigma_of_the_earlier_window():
    values = [10.0, 12.0, 11.0, 13.0, 9.0, 100.0]
    chart = control_chart("snr", values, window=5, min_baseline=5)
    earlier = np.array(values[:5])
    sd = earlier.std(ddof=1)
    assert chart.centre[5] == pytest.approx(11.0)
    assert (chart.lower[5], chart.upper[5]) == pytest.approx((11.0 - 3 * sd, 11.0 + 3 * sd))
    assert np.isnan(chart.upper[:5]).all()


def test_a_planted_outlier_is_out_of_control_and_in_limit_points_are_not():
    rng = np.random.default_rng(3)
    values = rng.normal(50.0, 1.0, 30)
    values[25] = 60.0
    chart = control_chart("snr", values, window=20, min_baseline=5)
    assert list(np.flatnonzero(chart.out_of_control)) == [25]


def test_the_rolling_window_forgets_old_values():
    values = [1.0] * 5 + [100.0, 101.0, 99.0, 100.0, 100.5, 100.0]
    chart = control_chart("noise", values, window=5, min_baseline=5)
    assert chart.out_of_control[5]
    assert not chart.out_of_control[-1]  # the window holds only the new level by then


def test_out_of_limits_names_each_metric_outside_with_its_limits():
    history = [
        {"median_snr": 20.0 + d, "tic_coverage": 0.99 + d / 1000}
        for d in (-1, 0, 1, 0.5, -0.5, 0.2)
    ]
    found = out_of_limits(history, {"median_snr": 5.0, "tic_coverage": 0.99})
    assert list(found) == ["median_snr"]
    value, low, high = found["median_snr"]
    assert value == 5.0 and low < 20.0 < high


def test_too_short_a_history_judges_nothing():
    assert out_of_limits([{"median_snr": 20.0}] * 3, {"median_snr": 1e6}) == {}


def test_qc_numbers_take_finite_check_values_and_medians():
    report = {
        "checks": [
            {"name": "median_snr", "value": 12.5},
            {"name": "lock_mass_error_ppm", "value": None},
        ],
        "snr": {"median": 12.5},
        "noise": {"median": None},
    }
    assert qc_numbers(report) == {"median_snr": 12.5, "snr_median": 12.5}
