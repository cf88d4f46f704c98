"""Parameter-set diff on synthetic peak tables whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from em2q_msi.parameter_diff import ParameterDiffError, pair_features, parameter_set_diff

SPECTRA = 50


@pytest.fixture
def tables():
    """A: 5 features; B: 4 of them shifted by +1 ppm (one image scaled ×2, one reversed),
    one lost (A's 400.2), two gained (700.7 and 812.0); B's intensities × 1.5 overall."""
    rng = np.random.default_rng(0)
    mz_a = np.array([100.1, 250.3, 400.2, 500.5, 650.6])
    images = rng.uniform(1.0, 10.0, (5, SPECTRA))
    shared = [0, 1, 3, 4]
    mz_b = np.concatenate([mz_a[shared] * (1 + 1e-6), [700.7, 812.0]])
    b = np.vstack([images[shared] * 1.5, rng.uniform(1.0, 10.0, (2, SPECTRA))])
    b[1] = images[1, ::-1] * 1.5  # 250.3: reversed image
    order = np.argsort(-mz_b)  # B's features in another order: the pairing must not care
    return mz_a, sp.csr_matrix(images), mz_b[order], sp.csr_matrix(b[order])


def test_pairs_gained_and_lost_features_are_the_planted_ones(tables):
    diff = parameter_set_diff(*tables, tolerance_ppm=3.0)
    assert list(diff.paired_mz_a) == [100.1, 250.3, 500.5, 650.6]
    assert diff.ppm_error == pytest.approx([1.0] * 4, abs=1e-6)
    assert list(diff.lost_mz) == [400.2]
    assert sorted(diff.gained_mz) == [700.7, 812.0]


def test_overlap_is_the_jaccard_index_of_the_peak_lists(tables):
    diff = parameter_set_diff(*tables, tolerance_ppm=3.0)
    assert diff.overlap == pytest.approx(4 / (5 + 6 - 4))
    assert (diff.kept_fraction_a, diff.kept_fraction_b) == pytest.approx((4 / 5, 4 / 6))


def test_a_tolerance_below_the_shift_pairs_nothing(tables):
    diff = parameter_set_diff(*tables, tolerance_ppm=0.5)
    assert diff.paired == 0 and diff.overlap == 0.0


def test_scaled_images_correlate_fully_and_a_reversed_one_does_not(tables):
    diff = parameter_set_diff(*tables, tolerance_ppm=3.0)
    images = tables[1].toarray()
    expected_reversed = np.corrcoef(images[1], images[1, ::-1])[0, 1]
    assert diff.correlation == pytest.approx([1.0, expected_reversed, 1.0, 1.0])


def test_tic_ratio_is_the_planted_scaling_when_peaks_are_shared(tables):
    mz_a, a, mz_b, b = tables
    keep = np.isin(np.round(mz_b, 1), np.round(mz_a, 1))  # B without its gained features
    diff = parameter_set_diff(mz_a[[0, 1, 3, 4]], a[[0, 1, 3, 4]], mz_b[keep], b[keep])
    assert diff.tic_ratio == pytest.approx(1.5)


def test_each_feature_is_paired_once_with_its_closest_partner():
    ia, ib = pair_features(np.array([500.0, 500.001]), np.array([500.0008]), 5.0)
    assert (list(ia), list(ib)) == ([1], [0])


def test_tables_of_different_spectra_are_refused():
    with pytest.raises(ParameterDiffError, match="different spectra"):
        parameter_set_diff(np.array([1.0]), np.ones((1, 3)), np.array([1.0]), np.ones((1, 4)))
