"""Through the Dagster assets: images on the bounding box of the acquired coordinates equal
pyimzML's, QC counts only acquired pixels, and numbers that are not finite never crash
``qc_report`` (its qc.json stays strict JSON, checks that cannot be computed say n/a and why)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from em2q_msi.parameters import ProcessingParameters
from em2q_resources.metadata import load_schema
from em2q_resources.results_layout import read_npy
from em2q_resources.storage import StorageResource
from tests.em2q_assets.conftest import register_pair
from tests.em2q_assets.test_assets import materialize_measurement
from tests.fixtures.imzml_geometry import (
    ION_MZ,
    ION_TOLERANCE_DA,
    MZ_AXIS,
    offset_irregular_file,
    profile_spectrum,
    pyimzml_ion_images,
    pyimzml_tic_images,
    stack_file,
    write_imzml,
)

S = load_schema()


def register(store, imzml: Path, measurement_id: str):
    """The UPLOADED Measurement of a generated pair, its files where an upload puts them."""
    register_pair(store, imzml, imzml.with_suffix(".ibd"), measurement_id, imzml.parent)


def save_default_parameters(store) -> None:
    """The team default, with ion images of the generated peaks in a ± Da window."""
    values = ProcessingParameters.defaults().to_dict()
    values["ion_images"] = {"mz": list(ION_MZ), "tolerance_ppm": None, "tolerance_da": ION_TOLERANCE_DA}  # fmt: skip
    store.save_parameter_set("default", values, author="test", comment="geometry tests")


def strict_json(url: str) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"non-finite token {token}")

    return json.loads(Path(url.removeprefix("file://")).read_text(), parse_constant=refuse)


def processed(platform, imzml: Path, measurement_id: str):
    defs, instance, store, _ = platform
    register(store, imzml, measurement_id)
    return materialize_measurement(defs, instance, measurement_id)


def outputs(results, asset: str) -> dict:
    return results[-1].output_for_node(asset)


@pytest.fixture
def storage(platform) -> StorageResource:
    return StorageResource(root=str(platform[3] / "storage"))


def test_offset_irregular_file_images_equal_pyimzml_on_the_bounding_box(platform, storage):
    store = platform[2]
    save_default_parameters(store)
    imzml = offset_irregular_file(platform[3] / "files")
    results = processed(platform, imzml, "offset")
    assert all(r.success for r in results)
    facts = store.get(S.Measurement, "offset").doc.facts
    assert (facts.origin_x, facts.origin_y, facts.pixels_x, facts.pixels_y) == (101, 41, 12, 9)
    assert (facts.pixel_size_x_um, facts.pixel_size_y_um) == (20.0, 40.0)  # file beats setup
    tic = read_npy(storage, outputs(results, "tic_image")["outputs"]["image"])
    expected = pyimzml_tic_images(imzml)[0]
    assert tic.shape == expected.shape == (9, 12)
    np.testing.assert_allclose(tic, expected, rtol=1e-9, equal_nan=True)
    images = read_npy(storage, outputs(results, "ion_images")["outputs"]["images"])
    acquired = ~np.isnan(expected)
    for k, mz in enumerate(ION_MZ):
        pyimzml = pyimzml_ion_images(imzml, mz, ION_TOLERANCE_DA)[0]
        assert images[k].shape == pyimzml.shape
        np.testing.assert_allclose(images[k][acquired], pyimzml[acquired], rtol=1e-9)
        assert np.isnan(images[k][~acquired]).all()


def test_qc_of_an_irregular_outline_counts_acquired_pixels_only(platform):
    save_default_parameters(platform[2])
    imzml = offset_irregular_file(platform[3] / "files")
    results = processed(platform, imzml, "outline")
    report = strict_json(outputs(results, "qc_report")["qc"])
    n = report["n_spectra"]
    assert report["pixels"] == {
        "grid": 9 * 12,
        "acquired": n,
        "not_acquired": 9 * 12 - n,
        "acquired_without_signal": 0,
    }
    empty = next(c for c in report["checks"] if c["name"] == "empty_pixel_fraction")
    assert (empty["value"], empty["passed"]) == (0.0, True)
    assert report["ok"]
    assert S.MeasurementStatus._VALUES_TO_NAMES[platform[2].get(S.Measurement, "outline").doc.status] == "READY"  # fmt: skip


def test_3d_file_gives_a_stack_per_plane_equal_to_pyimzml(platform, storage):
    save_default_parameters(platform[2])
    imzml = stack_file(platform[3] / "files")
    results = processed(platform, imzml, "stack")
    assert all(r.success for r in results)
    facts = platform[2].get(S.Measurement, "stack").doc.facts
    assert (facts.origin_z, facts.pixels_z) == (3, 3)
    tic = read_npy(storage, outputs(results, "tic_image")["outputs"]["image"])
    expected = pyimzml_tic_images(imzml)
    assert tic.shape == expected.shape == (3, 4, 5)
    np.testing.assert_allclose(tic, expected, rtol=1e-9, equal_nan=True)
    images = read_npy(storage, outputs(results, "ion_images")["outputs"]["images"])
    assert images.shape == (len(ION_MZ), 3, 4, 5)
    acquired = ~np.isnan(expected)
    for k, mz in enumerate(ION_MZ):
        pyimzml = pyimzml_ion_images(imzml, mz, ION_TOLERANCE_DA)
        np.testing.assert_allclose(images[k][acquired], pyimzml[acquired], rtol=1e-9)


def _counts(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Count data: positive values all 1 apart from one peak (MAD noise 0, SNR not a number)."""
    intensity = np.zeros(MZ_AXIS.size)
    intensity[1::2] = 1
    intensity[100 + index] = 1000
    return MZ_AXIS, intensity


def _random_centroids(index: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    mz = np.sort(rng.uniform(100.0, 1000.0, 40))
    return mz, rng.uniform(0.0, 1e4, 40)


def _all_zero(index: int) -> tuple[np.ndarray, np.ndarray]:
    return MZ_AXIS, np.zeros(MZ_AXIS.size)


GRID = [(x, y) for y in range(1, 4) for x in range(1, 4)]
NUMBER_FILES = {
    "int32-counts": dict(spectrum=_counts, intensity_dtype=np.int32),
    "int32-profile": dict(
        spectrum=lambda i: profile_spectrum(i, np.int32), intensity_dtype=np.int32
    ),  # fmt: skip
    "int64-profile": dict(
        spectrum=lambda i: profile_spectrum(i, np.int64), intensity_dtype=np.int64
    ),  # fmt: skip
    "float32-centroids": dict(spectrum=_random_centroids, mode="processed"),
    "all-zero": dict(spectrum=_all_zero),
}


#: the QC checks each number file fails under the default set, decided by how it is made:
#: all-zero spectra have no peaks (median SNR 0) and no signal in any pixel; random centroids
#: have no peak standing above their own scatter; counts have zero noise (median SNR n/a, not
#: failed); the profiles carry clear Gaussian peaks
FAILED_CHECKS = {
    "all-zero": {"median_snr", "empty_pixel_fraction"},
    "float32-centroids": {"median_snr"},
    "int32-counts": set(),
    "int32-profile": set(),
    "int64-profile": set(),
}


@pytest.mark.parametrize("variant", sorted(NUMBER_FILES))
def test_qc_report_materializes_as_strict_json_whatever_the_numbers(platform, variant):
    imzml = write_imzml(platform[3] / "files" / variant, GRID, **NUMBER_FILES[variant])
    results = processed(platform, imzml, variant)
    final = results[-1]
    assert final.asset_materializations_for_node("qc_report")  # materialized, did not crash
    crashes = [
        e.step_failure_data.error.cls_name
        for e in final.get_step_failure_events()
        if e.step_key == "qc_report"
    ]
    # a failed QC check where the file fails one, never an error
    assert set(crashes) == ({"DagsterAssetCheckFailedError"} if FAILED_CHECKS[variant] else set())
    report = strict_json(outputs(results, "qc_report")["qc"])
    for check in report["checks"]:
        if check["passed"] is None:
            assert check["value"] is None and check["detail"].startswith("n/a: ")
    assert {c["name"] for c in report["checks"] if c["passed"] is False} == FAILED_CHECKS[variant]
    assert report["ok"] is (not FAILED_CHECKS[variant])
    status = platform[2].get(S.Measurement, variant).doc
    expected = "FAILED" if FAILED_CHECKS[variant] else "READY"
    assert S.MeasurementStatus._VALUES_TO_NAMES[status.status] == expected


def test_count_data_with_zero_noise_says_why_median_snr_is_na(platform):
    imzml = write_imzml(platform[3] / "files" / "counts", GRID, **NUMBER_FILES["int32-counts"])
    results = processed(platform, imzml, "counts")
    report = strict_json(outputs(results, "qc_report")["qc"])
    snr = next(c for c in report["checks"] if c["name"] == "median_snr")
    assert snr["passed"] is None and "noise estimate is 0" in snr["detail"]
    assert report["snr"]["median"] is None and report["snr"]["not_finite"] == len(GRID)
