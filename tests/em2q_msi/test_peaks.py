"""Peak picking against known synthetic peaks and pyopenms's PeakPickerHiRes."""

from __future__ import annotations

import numpy as np
import pyopenms as oms
import pytest

from em2q_msi.parameters import PeakPickingParameters, ProcessingParameters
from em2q_msi.peaks import (
    concatenate_peaks,
    estimate_noise,
    pick_peaks,
    preprocess_and_pick,
)
from em2q_msi.preprocess import preprocess
from em2q_msi.spectra import SpectraBlock
from em2q_msi.synthetic import synthetic_continuous
from tests.em2q_msi.processing_data import CONTINUOUS, PROCESSED, example_block

NO_NORMALISATION = ProcessingParameters.from_dict({"normalisation": {"method": "none"}})


@pytest.fixture(scope="module")
def synthetic():
    # 400–410 m/z in 4,000 bins: peaks of 6 points FWHM are ~37 ppm wide, like an Orbitrap's
    return synthetic_continuous(
        n_spectra=6, n_bins=4_000, n_peaks=40, mz_range=(400.0, 410.0), seed=5
    )


def _nearest_ppm(reference: np.ndarray, found: np.ndarray) -> np.ndarray:
    """|ppm distance| from each reference m/z to the nearest found one (inf if none found)."""
    if found.size == 0:
        return np.full(reference.shape, np.inf)
    j = np.clip(np.searchsorted(found, reference), 1, max(found.size - 1, 1))
    d = np.minimum(np.abs(found[j] - reference), np.abs(found[j - 1] - reference))
    return d / reference * 1e6


def _openms_peaks(
    mz: np.ndarray, intensity: np.ndarray, snr: float
) -> tuple[np.ndarray, np.ndarray]:
    picker = oms.PeakPickerHiRes()
    p = picker.getParameters()
    p.setValue("signal_to_noise", snr)
    picker.setParameters(p)
    spectrum, picked = oms.MSSpectrum(), oms.MSSpectrum()
    spectrum.set_peaks((mz.astype(np.float64), intensity.astype(np.float64)))
    picker.pick(spectrum, picked)
    return picked.get_peaks()


def test_every_known_synthetic_peak_is_found_within_2_ppm(synthetic):
    _, peaks = preprocess_and_pick(synthetic.block, NO_NORMALISATION)
    for i in range(len(peaks)):
        assert _nearest_ppm(synthetic.peak_mz, peaks.spectrum(i)[0]).max() <= 2.0


def test_peaks_agree_with_pyopenms_peak_picker_hires_on_synthetic_spectra(synthetic):
    """>= 90 % of PeakPickerHiRes's peaks with SNR >= 3 are ours within 5 ppm."""
    pre = preprocess(synthetic.block, NO_NORMALISATION)
    peaks = pick_peaks(pre, PeakPickingParameters(snr_threshold=3.0))
    for i in range(len(pre)):
        reference = _openms_peaks(pre.mz, pre.intensity[i], snr=3.0)[0]
        assert reference.size >= 30
        assert np.mean(_nearest_ppm(reference, peaks.spectrum(i)[0]) <= 5.0) >= 0.9


def test_peaks_agree_with_pyopenms_on_the_example_spectra():
    """The example spectra are sampled every 0.083 m/z (800 ppm at m/z 100), so centroids differ
    by interpolation (PeakPickerHiRes's cubic spline, our Gaussian fit): >= 90 % of its peaks
    higher than 5 x our noise are ours within a quarter of the sampling interval."""
    block = example_block(CONTINUOUS, continuous=True)
    peaks = pick_peaks(block, PeakPickingParameters(snr_threshold=3.0))
    spacing = float(np.median(np.diff(block.mz)))
    for i in range(len(block)):
        mz, intensity = _openms_peaks(block.mz, block.intensity[i], snr=0.0)
        reference = mz[intensity >= 5 * peaks.noise[i]]
        distance_da = _nearest_ppm(reference, peaks.spectrum(i)[0]) * reference * 1e-6
        assert reference.size >= 20
        assert np.mean(distance_da <= 0.25 * spacing) >= 0.9


def test_continuous_and_processed_examples_give_identical_peaks():
    a = preprocess_and_pick(example_block(CONTINUOUS, continuous=True))[1]
    b = preprocess_and_pick(example_block(PROCESSED, continuous=False))[1]
    for name in ("mz", "intensity", "snr", "offsets", "noise"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_fused_chain_equals_preprocess_then_pick(synthetic):
    kept, fused = preprocess_and_pick(synthetic.block, keep_spectra=True)
    separate = pick_peaks(preprocess(synthetic.block), PeakPickingParameters())
    np.testing.assert_array_equal(kept.intensity, preprocess(synthetic.block).intensity)
    np.testing.assert_array_equal(fused.mz, separate.mz)
    np.testing.assert_array_equal(fused.offsets, separate.offsets)


def test_mad_noise_of_gaussian_noise_is_its_sigma():
    rng = np.random.default_rng(1)
    sigma = 2.0
    values = (50 + sigma * rng.standard_normal((4, 20_000))).astype(np.float32)
    block = SpectraBlock(np.linspace(100, 200, 20_000), values, None, np.ones((4, 3), np.int64))
    np.testing.assert_allclose(estimate_noise(block), sigma, rtol=0.06)
    np.testing.assert_allclose(estimate_noise(block, "std"), sigma, rtol=0.06)


def test_a_higher_snr_threshold_keeps_a_subset(synthetic):
    low = pick_peaks(synthetic.block, PeakPickingParameters(snr_threshold=3))
    high = pick_peaks(synthetic.block, PeakPickingParameters(snr_threshold=30))
    assert 0 < high.mz.size < low.mz.size
    assert np.isin(high.mz, low.mz).all()
    assert (high.snr >= 30).all()


def test_min_distance_keeps_only_the_higher_of_two_close_maxima():
    y = np.zeros(30, np.float32)
    y[9:12] = [5, 10, 5]
    y[12:15] = [6, 20, 6]
    block = SpectraBlock(np.arange(30.0) + 100, y[None, :], None, np.ones((1, 3), np.int64))
    assert pick_peaks(block, PeakPickingParameters(snr_threshold=0)).mz.size == 2
    close = pick_peaks(block, PeakPickingParameters(snr_threshold=0, min_distance_points=5))
    assert close.mz.size == 1 and abs(close.mz[0] - 113.0) < 0.01


def test_centroid_of_a_sampled_gaussian_is_exact():
    mz = np.linspace(500, 501, 101)
    y = (100 * np.exp(-0.5 * ((mz - 500.5037) / 0.02) ** 2)).astype(np.float32)
    block = SpectraBlock(mz, y[None, :], None, np.ones((1, 3), np.int64))
    peaks = pick_peaks(block, PeakPickingParameters(snr_threshold=0))
    assert peaks.mz.size == 1
    assert abs(peaks.mz[0] - 500.5037) / 500.5037 * 1e6 < 0.05
    assert abs(peaks.intensity[0] - 100) < 0.01


def test_peaks_of_chunks_concatenate_to_the_peaks_of_the_whole(synthetic):
    block = synthetic.block
    whole = pick_peaks(block)
    parts = [
        pick_peaks(SpectraBlock(block.mz, block.intensity[a:b], None, block.coordinates[a:b], a))
        for a, b in ((0, 2), (2, 5), (5, 6))
    ]
    joined = concatenate_peaks(parts)
    for name in ("mz", "intensity", "snr", "offsets", "noise", "coordinates"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name))


def test_empty_and_tiny_spectra_in_a_processed_block_give_no_peaks():
    mz = np.array([100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0])
    intensity = np.array([1, 5, 1, 0, 1, 9, 1], np.float32)
    block = SpectraBlock(mz, intensity, np.array([0, 0, 2, 7]), np.ones((3, 3), np.int64))
    _, peaks = preprocess_and_pick(block, keep_spectra=True)
    assert peaks.counts[0] == 0 and peaks.counts[1] == 0 and len(peaks) == 3


def test_the_in_place_median_equals_numpy_median_with_and_without_duplicates():
    from em2q_msi._kernels import _median_inplace

    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 10, 101, 2048):
        for values in (rng.exponential(size=n), rng.integers(0, 4, n), np.full(n, 7.0)):
            x = np.asarray(values, dtype=np.float32)
            assert _median_inplace(x.copy(), n) == pytest.approx(np.median(x), rel=1e-7)


def test_a_peak_with_unevenly_spaced_neighbours_keeps_a_finite_height_near_its_apex():
    # centroided data: a neighbour 0.0001 away and one 0.5 away make the log-parabola's
    # vertex six times the apex (and overflow for sharper cases); the apex is kept instead
    mz = np.array([100.0, 100.5, 100.5001, 101.5])
    intensity = np.array([1.0, 50.0, 49.9, 1.0], np.float32)
    block = SpectraBlock(mz, intensity, np.array([0, 4]), np.ones((1, 3), np.int64))
    peaks = pick_peaks(block, PeakPickingParameters(snr_threshold=0))
    assert peaks.mz.size == 1
    assert np.isfinite(peaks.intensity[0]) and peaks.intensity[0] <= 4 * 50.0
    assert peaks.mz[0] == 100.5
