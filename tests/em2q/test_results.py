"""Reading a measurement's results back per parameter set (em2q.results)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser, getionimage

from em2q.results import MeasurementResults, ResultNotReady
from em2q_msi.ion_images import IonImageError, ion_intensities
from em2q_resources.metadata import DocumentNotFound, load_schema
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageResource
from tests.em2q_assets.conftest import EXAMPLES, register_copy, remember_storage
from tests.fixtures.dagster import materialize_measurement

S = load_schema()


@pytest.fixture(scope="module")
def processed(elasticsearch_url, tmp_path_factory):
    """The continuous example, processed in process with the default parameter set."""
    from em2q_resources.connections import set_up_metadata_store
    from em2q_resources.metadata import MetadataStore

    root = tmp_path_factory.mktemp("results")
    store = MetadataStore.connect(elasticsearch_url, index_prefix=f"test-results-{root.name[-6:]}")
    set_up_metadata_store(store)
    settings = Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=store.prefix,
        storage=str(root / "storage"),
        cache_dir=root / "cache",
        spectra_chunks=2,
    )
    remember_storage(settings)
    register_copy(store, root / "upload", "Example_Continuous", "res-cont")
    register_copy(store, root / "upload2", "Example_Processed", "res-unprocessed")
    outcomes = materialize_measurement(settings, "res-cont")
    assert all(r.success for r in outcomes)
    storage = StorageResource.from_settings(settings)
    yield store, storage
    store.drop_all()


def results(processed, measurement_id="res-cont", parameter_set=None):
    store, storage = processed
    return MeasurementResults(measurement_id, parameter_set, store=store, storage=storage)


def test_qc_report_has_the_verdict_and_the_numbers_behind_it(processed):
    report = results(processed).qc_report()
    assert report["ok"] is True  # the example passes the default QC: every check passed
    assert all(c["passed"] is not False for c in report["checks"])
    assert report["parameter_set"] == "default@v1"
    assert {c["name"] for c in report["checks"]} >= {"tic_coverage", "median_snr"}


def test_mean_spectrum_is_the_mean_of_the_raw_spectra(processed):
    mz, intensity = results(processed).mean_spectrum()
    parser = ImzMLParser(str(EXAMPLES / "Example_Continuous.imzML"))
    spectra = [parser.getspectrum(i)[1] for i in range(len(parser.coordinates))]
    np.testing.assert_allclose(mz, parser.getspectrum(0)[0])
    np.testing.assert_allclose(intensity, np.mean(spectra, axis=0), rtol=1e-5)


def test_tic_image_is_a_grid_of_total_ion_currents(processed):
    image = results(processed).tic_image()
    parser = ImzMLParser(str(EXAMPLES / "Example_Continuous.imzML"))
    x, y, _ = parser.coordinates[0]
    assert image.ndim == 2
    assert image[y - 1, x - 1] == pytest.approx(parser.getspectrum(0)[1].sum(), rel=1e-5)


def test_ion_image_of_any_mz_is_summed_from_the_raw_spectra(processed):
    parser = ImzMLParser(str(EXAMPLES / "Example_Continuous.imzML"))
    mz = float(parser.getspectrum(0)[0][200])
    image = results(processed).ion_image(mz, ppm=50)
    expected = getionimage(parser, mz, tol=mz * 50e-6)
    finite = np.isfinite(image)
    np.testing.assert_allclose(image[finite], expected[finite], rtol=1e-5)


def test_stored_ion_image_is_read_back(processed):
    reader = results(processed)
    stored_mz, images = reader.ion_images()
    assert images.shape[0] == stored_mz.size > 0
    np.testing.assert_array_equal(reader.ion_image(float(stored_mz[0])), images[0], strict=False)


def test_runs_are_the_measurements_workflow_runs_newest_first(processed):
    runs = results(processed).runs()
    assert {r.workflow for r in runs} >= {"raw_measurement", "qc_report", "ion_images"}
    started = [r.started_at for r in runs]
    assert started == sorted(started, reverse=True)


def test_result_of_another_parameter_set_is_not_ready_and_says_what_to_run(processed):
    store, _ = processed
    store.save_parameter_set(
        "stricter", {"peak_picking": {"snr_threshold": 9.0}}, author="sam", comment="test"
    )
    with pytest.raises(ResultNotReady) as raised:
        results(processed, parameter_set="stricter").qc_report()
    message = str(raised.value)
    assert "not processed yet with parameter set stricter@v1" in message
    assert "em2q run res-cont --workflow reprocess --parameter-set stricter" in message
    # parameter-independent results are shared by every parameter set
    assert results(processed, parameter_set="stricter").mean_spectrum()[0].size


def test_unprocessed_measurement_says_it_is_not_processed_yet(processed):
    reader = results(processed, "res-unprocessed")
    with pytest.raises(ResultNotReady, match="mean_spectrum of measurement 'res-unprocessed'"):
        reader.mean_spectrum()
    assert not any(reader.available().values())
    assert reader.ion_image(500.0, ppm=20).ndim == 2  # raw data need no processing


def test_unknown_parameter_set_is_named(processed):
    with pytest.raises(DocumentNotFound, match="no-such-set"):
        results(processed, parameter_set="no-such-set").qc_report()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_ion_images_from_window_byte_ranges_equal_those_from_whole_spectra(
    where, tmp_path, request
):
    from em2q.results import _window_sums_by_ranges
    from em2q_msi.imzml import ImzML

    if where == "s3":
        import fsspec

        endpoint = request.getfixturevalue("s3_endpoint")
        root = request.getfixturevalue("s3_root")
        fs = fsspec.filesystem("s3", **endpoint.storage_options)
        for suffix in (".imzML", ".ibd"):
            fs.put(str(EXAMPLES / f"Example_Continuous{suffix}"), f"{root}/e{suffix}")
        reader = ImzML.open(f"{root}/e.imzML", endpoint.storage_options, cache_dir=str(tmp_path))
    else:
        reader = ImzML.open(str(EXAMPLES / "Example_Continuous.imzML"), cache_dir=str(tmp_path))
    axis = reader.mz_axis()
    mz_values = [float(axis[100]), float(axis[2000]), float(axis[-50]), 50.0]  # 50: no data
    by_ranges = _window_sums_by_ranges(reader, mz_values, 1000.0)
    assert by_ranges is not None  # small windows of continuous data: ranged reads
    whole = np.concatenate(
        [ion_intensities(b, mz_values, tolerance_ppm=1000.0) for b in reader.iter_blocks()], axis=1
    )
    np.testing.assert_allclose(by_ranges, whole, rtol=1e-12)
    assert (by_ranges[:3].sum(axis=1) > 0).all() and not by_ranges[3].any()
    assert _window_sums_by_ranges(reader, [float(axis[4000])], 5e5) is None  # too wide: blocks


@pytest.mark.parametrize("mz, ppm", [(math.inf, 10), (-5, 10), (math.nan, 10), (1e9, 10),
                                     (760.5, 0), (760.5, -1), (760.5, math.nan), (760.5, math.inf)])  # fmt: skip
def test_an_ion_image_of_a_non_finite_or_non_positive_window_is_refused(processed, mz, ppm):
    with pytest.raises(IonImageError, match="must be a finite number"):
        results(processed).ion_image(mz, ppm)
