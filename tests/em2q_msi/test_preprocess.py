"""Preprocessing against independent references: scipy.signal, scipy.ndimage and pyopenms."""

from __future__ import annotations

import numpy as np
import pyopenms as oms
import pytest
import scipy.ndimage as ndi
import scipy.signal as sig

from em2q_msi.parameters import (
    BaselineParameters,
    NormalisationParameters,
    ProcessingParameters,
    SmoothingParameters,
)
from em2q_msi.preprocess import normalise, preprocess, remove_baseline, smooth
from em2q_msi.spectra import SpectraBlock
from em2q_msi.synthetic import synthetic_continuous
from tests.em2q_msi.processing_data import CONTINUOUS, PROCESSED, example_block

# float32 intensities summed over a window: relative to the spectrum's largest value
SMOOTHING_RTOL = 1e-5


@pytest.fixture(scope="module")
def synthetic() -> SpectraBlock:
    return synthetic_continuous(n_spectra=6, n_bins=4_000, n_peaks=40, seed=3).block


@pytest.fixture(scope="module")
def continuous() -> SpectraBlock:
    return example_block(CONTINUOUS, continuous=True)


@pytest.fixture(scope="module")
def processed() -> SpectraBlock:
    return example_block(PROCESSED, continuous=False)


def _close(ours: np.ndarray, reference: np.ndarray, rtol: float = SMOOTHING_RTOL) -> None:
    scale = np.abs(reference).max(axis=-1, keepdims=True)
    assert np.all(np.abs(ours - reference) <= rtol * scale)


@pytest.mark.parametrize("window, order", [(5, 2), (11, 3), (21, 4)])
def test_savgol_matches_scipy_interp_mode_clipped_at_zero(synthetic, window, order):
    out = smooth(synthetic, SmoothingParameters(window_points=window, polyorder=order))
    x = synthetic.intensity.astype(np.float64)
    reference = np.maximum(sig.savgol_filter(x, window, order, axis=1, mode="interp"), 0)
    _close(out.intensity, reference)


def test_savgol_matches_pyopenms_savitzky_golay_filter(continuous):
    out = smooth(continuous, SmoothingParameters(window_points=11, polyorder=4))
    filt = oms.SavitzkyGolayFilter()
    p = filt.getParameters()
    p.setValue("frame_length", 11)
    p.setValue("polynomial_order", 4)
    filt.setParameters(p)
    for i in range(len(continuous)):
        spectrum = oms.MSSpectrum()
        spectrum.set_peaks((continuous.mz.astype(np.float64), continuous.intensity[i]))
        filt.filter(spectrum)
        _close(out.intensity[i], spectrum.get_peaks()[1])


@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_gaussian_matches_scipy_gaussian_filter1d(synthetic, sigma):
    out = smooth(synthetic, SmoothingParameters(method="gaussian", sigma_points=sigma))
    reference = ndi.gaussian_filter1d(synthetic.intensity.astype(np.float64), sigma, axis=1)
    _close(out.intensity, reference)


def test_spectrum_shorter_than_the_savgol_window_is_left_unchanged():
    block = SpectraBlock(
        np.arange(4.0) + 100,
        np.array([1, 2, 3, 4, 5, 1], np.float32),
        np.array([0, 4, 6]),
        np.ones((2, 3), np.int64),
    )
    out = smooth(block, SmoothingParameters(window_points=5, polyorder=2))
    np.testing.assert_array_equal(out.intensity, block.intensity)


@pytest.mark.parametrize("window", [3, 5, 27, 31, 81, 101, 243])
def test_tophat_equals_scipy_white_tophat_exactly(synthetic, window):
    out = remove_baseline(synthetic, BaselineParameters(method="tophat", window_points=window))
    reference = ndi.white_tophat(synthetic.intensity, size=(1, window), mode="nearest")
    np.testing.assert_array_equal(out.intensity, reference)


@pytest.mark.parametrize("n_points", [1, 2, 7, 60])
def test_tophat_of_spectra_shorter_than_the_window_equals_scipy(n_points):
    values = np.random.default_rng(n_points).exponential(size=(3, n_points)).astype(np.float32)
    block = SpectraBlock(np.arange(n_points) + 100.0, values, None, np.ones((3, 3), np.int64))
    out = remove_baseline(block, BaselineParameters(window_points=101))
    np.testing.assert_array_equal(
        out.intensity, ndi.white_tophat(values, size=(1, 101), mode="nearest")
    )


def _snip_reference(y: np.ndarray, iterations: int) -> np.ndarray:
    v = y.astype(np.float32).copy()
    for k in range(1, iterations + 1):
        mean = np.float32(0.5) * (v[: -2 * k] + v[2 * k :])
        v[k:-k] = np.minimum(v[k:-k], mean)
    return np.maximum(y - v, 0)


def test_snip_equals_a_plain_numpy_snip(synthetic):
    out = remove_baseline(synthetic, BaselineParameters(method="snip", iterations=15))
    for i in range(len(synthetic)):
        np.testing.assert_array_equal(out.intensity[i], _snip_reference(synthetic.intensity[i], 15))


def test_baseline_removal_flattens_the_synthetic_baseline(synthetic):
    out = remove_baseline(synthetic, BaselineParameters(window_points=101))
    # the synthetic baseline starts at 23 sigma; what is left is noise-level (median of a few sigma)
    assert np.median(out.intensity) < 4.0 < np.median(synthetic.intensity)


@pytest.mark.parametrize(
    ("method", "reference"),
    [
        ("tic", lambda y: y.sum()),
        ("rms", lambda y: np.sqrt(np.mean(y.astype(np.float64) ** 2))),
        ("median", lambda y: np.median(y[y > 0])),
    ],
)
def test_normalisation_divides_each_spectrum_by_its_own_factor(synthetic, method, reference):
    out = normalise(synthetic, NormalisationParameters(method=method))
    for i in range(len(synthetic)):
        y = synthetic.intensity[i]
        np.testing.assert_allclose(out.intensity[i], y / reference(y), rtol=2e-6)


def test_all_zero_spectrum_is_left_unchanged_by_normalisation():
    block = SpectraBlock(np.arange(5.0), np.zeros((1, 5), np.float32), None, np.ones((1, 3)))
    assert not normalise(block).intensity.any()


def test_continuous_and_processed_examples_give_identical_preprocessing(continuous, processed):
    params = ProcessingParameters.from_dict({"baseline": {"window_points": 51}})
    a = preprocess(continuous, params)
    b = preprocess(processed, params)
    assert b.offsets is not None and a.offsets is None
    np.testing.assert_array_equal(a.intensity.reshape(-1), b.intensity)


def test_preprocess_keeps_the_layout_and_shares_mz(processed):
    out = preprocess(processed)
    assert out.mz is processed.mz and out.offsets is processed.offsets
    assert out.intensity.dtype == np.float32 and out.intensity.shape == processed.intensity.shape
