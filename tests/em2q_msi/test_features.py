"""Peak binning and alignment: known peaks from synthetic data come back as features."""

from __future__ import annotations

import numpy as np
import pytest

from em2q_msi.features import FeatureError, align_peaks, bin_peaks
from em2q_msi.parameters import ProcessingParameters
from em2q_msi.peaks import PeakList, preprocess_and_pick
from em2q_msi.synthetic import synthetic_continuous

TRUE_MZ = np.array([150.0123, 305.5, 305.52, 612.3345, 899.9])  # 305.5/305.52: 65 ppm apart


def _jittered_peaks(n_spectra: int = 40, presence: float = 0.8, seed: int = 0) -> PeakList:
    """Peaks at TRUE_MZ ± 1 ppm (Gaussian), each present in a spectrum with ``presence``."""
    rng = np.random.default_rng(seed)
    mz, intensity, counts = [], [], []
    for _ in range(n_spectra):
        here = rng.random(TRUE_MZ.size) < presence
        values = TRUE_MZ[here] * (1 + 1e-6 * rng.standard_normal(here.sum()))
        mz.append(values)
        intensity.append(rng.uniform(10, 100, here.sum()).astype(np.float32))
        counts.append(here.sum())
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return PeakList(
        mz=np.concatenate(mz),
        intensity=np.concatenate(intensity),
        snr=np.ones(offsets[-1], np.float32),
        offsets=offsets,
        noise=np.ones(n_spectra),
        coordinates=np.ones((n_spectra, 3), np.int64),
    )


def test_binning_recovers_known_peaks_within_1_ppm():
    peaks = _jittered_peaks()
    table = bin_peaks(peaks, tolerance_ppm=10.0)
    assert table.n_features == TRUE_MZ.size
    assert np.all(np.abs(table.mz - TRUE_MZ) / TRUE_MZ * 1e6 < 1.0)
    assert table.intensities.shape == (TRUE_MZ.size, 40)
    np.testing.assert_allclose(table.frequency, 0.8, atol=0.15)


def test_table_holds_each_spectrums_peak_intensity():
    peaks = _jittered_peaks(n_spectra=5)
    dense = bin_peaks(peaks, tolerance_ppm=10.0).dense()
    for s in range(5):
        mz, intensity, _ = peaks.spectrum(s)
        rows = np.argmin(np.abs(TRUE_MZ[:, None] - mz[None, :]), axis=0)
        np.testing.assert_allclose(dense[rows, s], intensity, rtol=1e-6)
        assert np.count_nonzero(dense[:, s]) == mz.size


def test_min_frequency_drops_rare_features():
    peaks = _jittered_peaks()
    extra = PeakList(
        mz=np.concatenate([peaks.mz, [444.4]]),
        intensity=np.concatenate([peaks.intensity, [50.0]]).astype(np.float32),
        snr=np.ones(peaks.mz.size + 1, np.float32),
        offsets=np.concatenate([peaks.offsets[:-1], [peaks.offsets[-1] + 1]]),
        noise=peaks.noise,
        coordinates=peaks.coordinates,
    )
    assert bin_peaks(extra).n_features == TRUE_MZ.size + 1
    assert bin_peaks(extra, min_frequency=0.5).n_features == TRUE_MZ.size


def test_alignment_onto_the_binned_axis_reproduces_the_table():
    peaks = _jittered_peaks()
    table = bin_peaks(peaks, tolerance_ppm=10.0)
    aligned = align_peaks(peaks, table.mz, tolerance_ppm=10.0)
    np.testing.assert_array_equal(aligned.dense(), table.dense())
    far = align_peaks(peaks, np.array([200.0, 700.0]), tolerance_ppm=10.0)
    assert far.n_features == 2 and far.intensities.nnz == 0


def test_binning_picked_synthetic_peaks_finds_every_true_peak():
    synthetic = synthetic_continuous(
        n_spectra=8, n_bins=4_000, n_peaks=40, mz_range=(400.0, 410.0), seed=11
    )
    params = ProcessingParameters.from_dict({"normalisation": {"method": "none"}})
    _, peaks = preprocess_and_pick(synthetic.block, params)
    table = bin_peaks(peaks, tolerance_ppm=5.0, min_frequency=0.75)
    j = np.argmin(np.abs(table.mz[:, None] - synthetic.peak_mz[None, :]), axis=0)
    assert np.all(np.abs(table.mz[j] - synthetic.peak_mz) / synthetic.peak_mz * 1e6 < 2.0)


@pytest.mark.parametrize("bad", [0.0, -5.0])
def test_bad_tolerance_is_rejected(bad):
    with pytest.raises(FeatureError, match="tolerance_ppm must be > 0"):
        bin_peaks(_jittered_peaks(), tolerance_ppm=bad)


def test_binning_holds_less_than_60_bytes_per_peak_besides_the_peak_list():
    # a measurement's peak table bins every peak at once (11 million for 300x300 pixels)
    import tracemalloc

    rng = np.random.default_rng(2)
    n_spectra, per = 2_000, 150
    mz = np.sort(rng.uniform(100, 1000, (n_spectra, per)), axis=1).reshape(-1)
    peaks = PeakList(
        mz=mz,
        intensity=rng.uniform(1, 100, mz.size).astype(np.float32),
        snr=np.ones(mz.size, np.float32),
        offsets=np.arange(n_spectra + 1, dtype=np.int64) * per,
        noise=np.ones(n_spectra),
        coordinates=np.ones((n_spectra, 3), np.int64),
    )
    tracemalloc.start()
    try:
        table = bin_peaks(peaks, tolerance_ppm=10.0)
        _, most = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table.intensities.sum() == pytest.approx(float(peaks.intensity.sum(dtype=np.float64)))
    assert most / mz.size < 60
