"""QC metrics, mean spectrum, lock masses and the measurement summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from em2q_msi.parameters import ProcessingParameters, QCParameters
from em2q_msi.qc import (
    METRIC_NAMES,
    MeanSpectrumAccumulator,
    QCError,
    concatenate_metrics,
    lock_mass_errors_ppm,
    mean_spectrum_peaks,
    measurement_summary,
    spectrum_metrics,
    tic_image,
)
from em2q_msi.spectra import SpectraBlock
from em2q_msi.synthetic import synthetic_continuous
from tests.em2q_msi.processing_data import CONTINUOUS, PROCESSED, example_block, read_with_pyimzml


@pytest.fixture(scope="module")
def continuous() -> SpectraBlock:
    return example_block(CONTINUOUS, continuous=True)


@pytest.fixture(scope="module")
def processed() -> SpectraBlock:
    return example_block(PROCESSED, continuous=False)


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_continuous(
        n_spectra=12, n_bins=4_000, n_peaks=40, mz_range=(400.0, 410.0), seed=7, nx=4
    )


@pytest.mark.parametrize("path", [CONTINUOUS, PROCESSED])
def test_tic_equals_the_exact_sum_of_pyimzml_intensities(path):
    _, intensities, _ = read_with_pyimzml(path)
    metrics = spectrum_metrics(example_block(path, continuous=path == CONTINUOUS))
    assert [float(t) for t in metrics["tic"]] == [math.fsum(y) for y in intensities]


def test_base_peak_and_nonzero_count_match_pyimzml(processed):
    mzs, intensities, _ = read_with_pyimzml(PROCESSED)
    metrics = spectrum_metrics(processed)
    for i, (mz, y) in enumerate(zip(mzs, intensities, strict=True)):
        assert metrics["base_peak_mz"][i] == mz[np.argmax(y)]
        assert metrics["base_peak_intensity"][i] == y.max()
        assert metrics["n_nonzero"][i] == np.count_nonzero(y)


def test_continuous_and_processed_examples_give_identical_metrics(continuous, processed):
    a, b = spectrum_metrics(continuous), spectrum_metrics(processed)
    assert set(a) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_metrics_of_chunks_concatenate_to_the_metrics_of_the_whole(synthetic):
    block = synthetic.block
    whole = spectrum_metrics(block)
    parts = [
        spectrum_metrics(SpectraBlock(block.mz, block.intensity[a:b], None, block.coordinates[a:b]))
        for a, b in ((0, 5), (5, 12))
    ]
    merged = concatenate_metrics(parts)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(merged[name], whole[name])
    assert (whole["n_peaks"] >= 40).all() and (whole["snr"] > 10).all()


def test_mean_spectrum_on_the_shared_axis_merges_chunks(synthetic):
    block = synthetic.block
    a = MeanSpectrumAccumulator().add(
        SpectraBlock(block.mz, block.intensity[:5], None, block.coordinates[:5])
    )
    b = MeanSpectrumAccumulator().add(
        SpectraBlock(block.mz, block.intensity[5:], None, block.coordinates[5:])
    )
    mz, mean = a.merge(b).result()
    np.testing.assert_array_equal(mz, block.mz)
    np.testing.assert_allclose(mean, block.intensity.astype(np.float64).mean(axis=0), rtol=1e-12)
    restored = MeanSpectrumAccumulator.from_state(a.merge(b).state())
    np.testing.assert_array_equal(restored.result()[1], mean)


def test_binned_mean_spectrum_is_the_same_for_continuous_and_processed(continuous, processed):
    a = MeanSpectrumAccumulator.binned(100.0, 800.0, bin_ppm=20.0).add(continuous)
    b = MeanSpectrumAccumulator.binned(100.0, 800.0, bin_ppm=20.0).add(processed)
    np.testing.assert_allclose(a.result()[1], b.result()[1], rtol=1e-12)
    mz, mean = b.result()
    # every intensity lands in a bin: the mean spectrum's total is the mean TIC
    np.testing.assert_allclose(mean.sum(), spectrum_metrics(processed)["tic"].mean(), rtol=1e-9)
    assert np.all(np.diff(mz) > 0)


def test_a_processed_block_needs_a_binned_accumulator(processed):
    with pytest.raises(QCError, match="binned"):
        MeanSpectrumAccumulator().add(processed)


def test_accumulators_with_different_axes_do_not_merge(continuous):
    a = MeanSpectrumAccumulator.binned(100.0, 800.0, bin_ppm=20.0).add(continuous)
    b = MeanSpectrumAccumulator.binned(100.0, 800.0, bin_ppm=10.0).add(continuous)
    with pytest.raises(QCError, match="different m/z axes"):
        a.merge(b)


def test_lock_mass_error_is_the_ppm_error_of_the_nearest_peak():
    peaks = np.array([300.0, 400.0012, 556.2771 * (1 + 3e-6), 700.0])
    errors = lock_mass_errors_ppm(peaks, [400.0, 556.2771, 650.0], search_ppm=50)
    np.testing.assert_allclose(errors[:2], [3.0, 3.0], rtol=1e-6)
    assert np.isnan(errors[2])


def test_lock_mass_found_in_the_mean_spectrum_of_synthetic_data(synthetic):
    mz, mean = MeanSpectrumAccumulator().add(synthetic.block).result()
    peak_mz, _ = mean_spectrum_peaks(mz, mean)
    lock = synthetic.peak_mz[[5, 20]]
    assert np.all(np.abs(lock_mass_errors_ppm(peak_mz, lock)) < 1.0)


def test_tic_image_places_tic_on_the_grid(synthetic):
    metrics = spectrum_metrics(synthetic.block)
    image = tic_image(synthetic.block.coordinates, metrics["tic"], (4, 4))
    assert image.shape == (4, 4)
    assert image[0, 1] == metrics["tic"][1] and image[2, 3] == metrics["tic"][11]
    assert np.isnan(image[3]).all()


def test_a_good_measurement_passes_and_serialises_to_json(synthetic):
    metrics = spectrum_metrics(synthetic.block)
    params = QCParameters(lock_masses=(float(synthetic.peak_mz[3]),), max_empty_pixel_fraction=0.3)
    mz, mean = MeanSpectrumAccumulator().add(synthetic.block).result()
    errors = lock_mass_errors_ppm(mean_spectrum_peaks(mz, mean)[0], params.lock_masses)
    summary = measurement_summary(metrics, (4, 4), errors, params)
    assert summary.ok, summary
    document = json.loads(summary.to_json())
    checks = {c["name"]: c for c in document["checks"]}
    assert set(checks) == {
        "tic_coverage",
        "median_snr",
        "empty_pixel_fraction",
        "lock_mass_error_ppm",
    }
    assert checks["empty_pixel_fraction"]["value"] == 0.0
    assert document["pixels"] == {
        "grid": 16,
        "acquired": 12,
        "not_acquired": 4,
        "acquired_without_signal": 0,
    }
    assert checks["median_snr"]["threshold"] == params.min_median_snr


def test_each_failing_check_fails_the_verdict(synthetic):
    metrics = spectrum_metrics(synthetic.block)
    lock = float(synthetic.peak_mz[3])
    emptied = dict(metrics, n_nonzero=np.where(np.arange(12) < 2, 0, metrics["n_nonzero"]))
    cases = {
        "empty_pixel_fraction": (QCParameters(), None),
        "lock_mass_error_ppm": (
            QCParameters(lock_masses=(lock,), max_empty_pixel_fraction=0.5),
            np.array([np.nan]),
        ),
        "median_snr": (QCParameters(min_median_snr=1e9, max_empty_pixel_fraction=0.5), None),
    }
    for name, (params, errors) in cases.items():
        summary = measurement_summary(emptied, (4, 4), errors, params)
        failed = [c.name for c in summary.checks if c.passed is False]
        assert not summary.ok and failed == [name], (name, summary)
    dropped = dict(metrics, tic=np.where(np.arange(12) < 3, 0.0, metrics["tic"]))
    summary = measurement_summary(dropped, (3, 4), None, QCParameters())
    assert [c.name for c in summary.checks if c.passed is False] == ["tic_coverage"]


def test_summary_without_lock_masses_marks_that_check_not_applicable(continuous):
    summary = measurement_summary(spectrum_metrics(continuous), (3, 3))
    lock = next(c for c in summary.checks if c.name == "lock_mass_error_ppm")
    assert lock.passed is None and lock.value is None


def test_metrics_follow_the_parameter_set(continuous):
    strict = ProcessingParameters.from_dict({"peak_picking": {"snr_threshold": 50}})
    assert (
        spectrum_metrics(continuous, strict)["n_peaks"].sum()
        < spectrum_metrics(continuous)["n_peaks"].sum()
    )


def _strict_json(text: str) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"non-finite token {token} in JSON")

    return json.loads(text, parse_constant=refuse)


def _counts_block(n_spectra: int = 6) -> SpectraBlock:
    """Count data whose positive values are all 1 apart from one peak: the MAD noise is 0."""
    intensity = np.zeros((n_spectra, 300), np.float32)
    intensity[:, 1::2] = 1.0
    intensity[:, 150] = 1000.0
    return SpectraBlock(
        mz=np.linspace(100.0, 1000.0, 300),
        intensity=intensity,
        offsets=None,
        coordinates=np.array([[x + 1, 1, 1] for x in range(n_spectra)]),
    )


def test_the_snr_of_a_spectrum_with_zero_noise_is_not_a_number():
    params = ProcessingParameters.from_dict({"smoothing": {"method": "none"}})
    metrics = spectrum_metrics(_counts_block(), params)
    assert (metrics["noise"] == 0).all() and (metrics["n_peaks"] > 0).all()
    assert np.isnan(metrics["snr"]).all()


def test_median_snr_without_any_finite_snr_is_na_with_the_reason():
    params = ProcessingParameters.from_dict({"smoothing": {"method": "none"}})
    metrics = spectrum_metrics(_counts_block(), params)
    summary = measurement_summary(metrics, (1, 6))
    document = _strict_json(summary.to_json())
    snr = next(c for c in document["checks"] if c["name"] == "median_snr")
    assert snr["value"] is None and snr["passed"] is None
    assert snr["detail"].startswith("n/a: the noise estimate is 0 in all 6 spectra")


def test_median_snr_leaves_out_spectra_with_zero_noise_and_says_how_many():
    metrics = {
        "tic": np.ones(4),
        "n_nonzero": np.ones(4),
        "snr": np.array([np.inf, 20.0, np.nan, 40.0]),
    }
    summary = measurement_summary(metrics, (2, 2), params=QCParameters())
    snr = next(c for c in summary.checks if c.name == "median_snr")
    assert snr.value == 30.0 and snr.passed is True
    assert "over 2 of 4 spectra (2 with zero noise" in snr.detail


def test_all_zero_spectra_give_strict_json_with_na_checks_and_reasons():
    block = SpectraBlock(
        mz=np.linspace(100.0, 1000.0, 50),
        intensity=np.zeros((4, 50), np.float32),
        offsets=None,
        coordinates=np.array([[1, 1, 1], [2, 1, 1], [1, 2, 1], [2, 2, 1]]),
    )
    summary = measurement_summary(spectrum_metrics(block), (2, 2))
    checks = {c["name"]: c for c in _strict_json(summary.to_json())["checks"]}
    assert checks["tic_coverage"]["passed"] is None
    assert checks["tic_coverage"]["detail"].startswith("n/a: the median TIC is 0")
    empty = checks["empty_pixel_fraction"]
    assert (empty["value"], empty["passed"]) == (1.0, False)
    assert not summary.ok


def test_empty_pixel_fraction_counts_acquired_pixels_only():
    from em2q_msi.geometry import PixelGrid
    from tests.fixtures.imzml_geometry import irregular_outline

    coords = np.array(irregular_outline())
    grid = PixelGrid.from_coordinates(coords)
    n = len(coords)
    metrics = {"tic": np.ones(n), "snr": np.full(n, 50.0), "n_nonzero": np.r_[0, np.ones(n - 1)]}
    summary = measurement_summary(metrics, grid)
    empty = next(c for c in summary.checks if c.name == "empty_pixel_fraction")
    assert empty.value == pytest.approx(1 / n)
    assert summary.pixels.not_acquired == grid.n_pixels - n > 0
    assert summary.pixels.acquired_without_signal == 1
    assert f"1 of {n} acquired pixels without signal" in empty.detail


def test_non_finite_numbers_are_written_as_null():
    from em2q_msi import finite_json

    text = finite_json.dumps({"a": np.float32("inf"), "b": [np.nan, 1.5], "c": np.arange(2)})
    assert _strict_json(text) == {"a": None, "b": [None, 1.5], "c": [0, 1]}


def test_a_regions_qc_numbers_summarise_its_spectra_and_leave_out_snr_that_is_not_a_number():
    from em2q_msi.qc import QCError, region_summary

    metrics = {
        "tic": np.array([1.0, 3.0, 8.0, 0.0]),
        "snr": np.array([2.0, np.nan, 6.0, 0.0]),
        "n_peaks": np.array([1, 3, 5, 0]),
        "n_nonzero": np.array([4, 4, 4, 0]),
    }
    assert region_summary(metrics) == {
        "pixels": 4, "tic_median": 2.0, "tic_mean": 3.0, "median_snr": 2.0,
        "median_peaks": 2.0, "empty_fraction": 0.25,
    }  # fmt: skip
    with pytest.raises(QCError, match="without spectra"):
        region_summary({k: v[:0] for k, v in metrics.items()})
