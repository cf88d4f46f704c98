"""Ion images against a naive per-pixel loop and pyimzml's getionimage; PNG output."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from em2q_msi.ion_images import (
    IonImageError,
    check_window,
    ion_images,
    ion_intensities,
    mz_windows,
    png_bytes,
    to_png,
)
from em2q_msi.spectra import SpectraBlock
from em2q_msi.synthetic import synthetic_continuous, synthetic_processed
from tests.em2q_msi.processing_data import CONTINUOUS, PROCESSED, example_block

MZ_VALUES = [150.0, 255.25, 329.06, 500.0, 799.9]


def _naive(block: SpectraBlock, mz_values, half_width) -> np.ndarray:
    out = np.zeros((len(mz_values), len(block)))
    for s in range(len(block)):
        mz, intensity = block.spectrum(s)
        for k, (m, h) in enumerate(zip(mz_values, half_width, strict=True)):
            inside = (mz >= m - h) & (mz <= m + h)
            out[k, s] = np.sum(intensity[inside], dtype=np.float64)
    return out


@pytest.mark.parametrize("layout", ["continuous", "processed"])
def test_ppm_windows_equal_a_naive_loop(layout):
    if layout == "continuous":
        block = synthetic_continuous(n_spectra=12, n_bins=3_000, n_peaks=30, seed=2).block
    else:
        block = synthetic_processed(n_spectra=12, points_per_spectrum=2_000, seed=2)
    mz_values = np.linspace(120, 980, 40)
    result = ion_intensities(block, mz_values, tolerance_ppm=500.0)
    np.testing.assert_allclose(result, _naive(block, mz_values, mz_values * 500e-6), rtol=1e-12)


def test_dalton_windows_equal_pyimzml_getionimage():
    from pyimzml.ImzMLParser import ImzMLParser, getionimage

    parser = ImzMLParser(str(CONTINUOUS))
    block = example_block(CONTINUOUS, continuous=True)
    values = ion_intensities(block, MZ_VALUES, tolerance_da=0.25)
    images = ion_images(block.coordinates, values, (3, 3))
    for k, mz in enumerate(MZ_VALUES):
        reference = getionimage(parser, mz, tol=0.25)
        np.testing.assert_allclose(images[k], reference, rtol=1e-6)


def test_continuous_and_processed_examples_give_identical_images():
    a = ion_intensities(example_block(CONTINUOUS, True), MZ_VALUES, tolerance_ppm=300)
    b = ion_intensities(example_block(PROCESSED, False), MZ_VALUES, tolerance_ppm=300)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (len(MZ_VALUES), 9) and a.any()


def test_images_place_pixels_by_coordinates_and_mark_missing_ones():
    coordinates = np.array([[1, 1, 1], [3, 1, 1], [2, 2, 1]])
    values = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    images = ion_images(coordinates, values, (2, 3))
    assert images.shape == (2, 2, 3)
    assert images[0, 0, 0] == 1 and images[0, 0, 2] == 2 and images[1, 1, 1] == 6
    assert np.isnan(images[0, 0, 1]) and np.isnan(images[1, 1, 0])
    assert ion_images(coordinates, values[0], (2, 3), fill_value=0)[1, 0] == 0


def test_coordinates_outside_the_grid_are_rejected():
    with pytest.raises(IonImageError, match=r"spectrum 1 at \(x=4, y=1\) lies outside"):
        ion_images(np.array([[1, 1, 1], [4, 1, 1]]), np.ones((1, 2)), (2, 3))


def test_exactly_one_tolerance_is_required():
    block = example_block(CONTINUOUS, True)
    with pytest.raises(IonImageError, match="exactly one"):
        ion_intensities(block, [200.0], tolerance_ppm=5, tolerance_da=0.1)
    with pytest.raises(IonImageError, match="tolerance_da must be > 0"):
        ion_intensities(block, [200.0], tolerance_da=0)


def test_png_is_a_real_image_with_transparent_missing_pixels(tmp_path):
    image = np.arange(12, dtype=float).reshape(3, 4)
    image[1, 2] = np.nan
    path = tmp_path / "ion.png"
    to_png(image, path, colormap="magma")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (4, 3) and png.mode == "RGBA"
        pixels = np.asarray(png)
    assert pixels[1, 2, 3] == 0 and pixels[0, 0, 3] == 255
    assert not np.array_equal(pixels[0, 0], pixels[2, 3])
    with Image.open(io.BytesIO(png_bytes(image))) as again:
        assert again.size == (4, 3)


def test_windows_beyond_the_ends_and_empty_spectra_sum_what_they_cover():
    mz = np.array([100.0, 100.5, 101.0, 200.0, 200.0, 300.0])
    intensity = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], np.float32)
    block = SpectraBlock(mz, intensity, np.array([0, 3, 3, 6]), np.ones((3, 3), np.int64))
    values = ion_intensities(block, [50.0, 100.0, 200.0, 300.0, 900.0], tolerance_da=0.5)
    np.testing.assert_array_equal(values[:, 0], [0, 3, 0, 0, 0])
    np.testing.assert_array_equal(values[:, 1], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(values[:, 2], [0, 0, 24, 32, 0])
    np.testing.assert_array_equal(values, _naive(block, [50, 100, 200, 300, 900], [0.5] * 5))


@pytest.mark.parametrize("mz", [float("inf"), -5.0, float("nan"), 0.0])
def test_mz_windows_refuse_mz_values_that_are_not_finite_and_positive(mz):
    with pytest.raises(IonImageError, match="finite numbers > 0"):
        mz_windows([500.0, mz], tolerance_ppm=10)


@pytest.mark.parametrize("ppm", [float("inf"), float("nan"), 0.0, -3.0, 1e6])
def test_a_ppm_tolerance_that_is_not_finite_positive_and_bounded_is_refused(ppm):
    with pytest.raises(IonImageError, match="ppm must be a finite number"):
        check_window(760.5, ppm)
