"""The study benchmark's helpers: the first pixels fed as a study of their own, the verdicts."""

from __future__ import annotations

import numpy as np

from benchmarks.bench_study import FirstPixels, subset, target
from tests.em2q_assets.study_data import small_study


def test_first_pixels_are_the_members_first_pixels_under_names_of_their_own():
    data = small_study()
    first = FirstPixels(data, {0: subset(data.measurement(0), 5)}, 5)
    whole = data.measurement(0)
    np.testing.assert_array_equal(first.measurement(0).mz, whole.mz[: whole.offsets[5]])
    assert first.measurement(0).offsets.size == 6
    assert first.names[0] != data.names[0] and first.truth is data.truth


def test_target_says_ok_only_within_the_limit_on_its_side():
    assert target(0.15, 0.15) == "OK" and target(0.16, 0.15) == "ABOVE TARGET"
    assert target(10.0, 10.0, at_least=True) == "OK"
    assert target(9.9, 10.0, at_least=True) == "BELOW TARGET"
