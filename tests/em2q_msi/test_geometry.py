"""The pixel grid (bounding box of the acquired coordinates) and the images built on it, checked
against pyimzML on files whose coordinates start far from (1, 1) and on a 3-D stack."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from em2q_msi.facts import grid_facts, grid_from_facts, pixel_grid
from em2q_msi.geometry import GeometryError, PixelGrid, pixel_size_um
from em2q_msi.imzml import ImzML
from em2q_msi.ion_images import ion_images, ion_intensities, png_bytes
from em2q_msi.qc import tic_image, total_ion_current
from tests.fixtures.imzml_geometry import (
    ION_MZ,
    ION_TOLERANCE_DA,
    irregular_outline,
    offset_irregular_file,
    pyimzml_ion_images,
    pyimzml_tic_images,
    stack_coordinates,
    stack_file,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("geometry")
    return {"offset": offset_irregular_file(folder), "stack": stack_file(folder)}


def _tic_and_ions(imzml: Path) -> tuple[PixelGrid, np.ndarray, np.ndarray]:
    reader = ImzML.open(str(imzml))
    grid = pixel_grid(reader)
    tic, values, coords = [], [], []
    for block in reader.iter_blocks():
        tic.append(total_ion_current(block))
        values.append(ion_intensities(block, list(ION_MZ), tolerance_da=ION_TOLERANCE_DA))
        coords.append(block.coordinates)
    coordinates = np.concatenate(coords)
    tic_img = tic_image(coordinates, np.concatenate(tic), grid)
    ions = ion_images(coordinates, np.concatenate(values, axis=1), grid)
    return grid, tic_img, ions


def test_grid_is_the_bounding_box_of_the_acquired_coordinates():
    coords = np.array(irregular_outline())
    grid = PixelGrid.from_coordinates(coords)
    assert grid.origin == (101, 41, 1)
    assert grid.shape == (1, 9, 12)
    assert grid.image_shape == (9, 12)
    assert (grid.origin[0] + grid.nx - 1, grid.origin[1] + grid.ny - 1) == tuple(coords.max(0))


def test_pixels_outside_the_outline_are_not_acquired():
    coords = np.array(irregular_outline())
    mask = PixelGrid.from_coordinates(coords).acquired_mask(coords)
    assert mask.sum() == len(coords) < mask.size
    assert not mask[0, 0] and not mask[-1, -1]
    assert mask.any(axis=0).all() and mask.any(axis=1).all()  # the box is tight


def test_coordinates_outside_the_grid_name_the_spectrum_and_the_box():
    grid = PixelGrid.from_coordinates(np.array([[101, 41], [103, 42]]))
    with pytest.raises(GeometryError, match=r"spectrum 1 at \(x=100, y=41\).*x 101\.\.103"):
        grid.indices(np.array([[101, 41], [100, 41]]))


def test_a_3d_grid_spans_the_acquired_planes_and_gives_stacks():
    coords = np.array(stack_coordinates())
    grid = PixelGrid.from_coordinates(coords)
    assert grid.origin == (7, 12, 3) and grid.shape == (3, 4, 5) and grid.is_3d
    image = grid.image(coords, np.arange(len(coords), dtype=float))
    assert image.shape == (3, 4, 5)
    assert [np.isnan(plane).sum() for _, plane in grid.planes(image)] == [1, 1, 1]
    assert np.isnan(image[1, 0, 1]) and image[0, 0, 1] == 0.0  # (8, 12, 4) missing, (8, 12, 3) not


def test_pixel_size_comes_from_the_file_else_the_setup():
    assert pixel_size_um((20.0, 40.0), (100.0, 100.0)) == (20.0, 40.0)
    assert pixel_size_um((None, None), (100.0, 50.0)) == (100.0, 50.0)
    assert pixel_size_um((25.0, None)) == (25.0, 25.0)
    assert pixel_size_um(None, None) is None


def test_the_grid_reads_the_declared_pixel_size_and_survives_the_facts(files):
    grid = pixel_grid(ImzML.open(str(files["offset"])), (100.0, 100.0))
    assert grid.pixel_size_um == (20.0, 40.0) and grid.aspect == 2.0
    assert grid_from_facts(grid_facts(grid)) == grid
    assert PixelGrid.from_dict(grid.to_dict()) == grid


def test_tic_image_equals_pyimzml_sums_cropped_to_the_bounding_box(files):
    grid, tic, _ = _tic_and_ions(files["offset"])
    expected = pyimzml_tic_images(files["offset"])[0]
    assert tic.shape == expected.shape == (9, 12)
    np.testing.assert_array_equal(np.isnan(tic), np.isnan(expected))
    np.testing.assert_allclose(tic, expected, rtol=1e-9, equal_nan=True)


def test_ion_images_equal_pyimzml_getionimage_cropped_to_the_bounding_box(files):
    grid, _, ions = _tic_and_ions(files["offset"])
    acquired = grid.acquired_mask(ImzML.open(str(files["offset"])).coordinates)
    for k, mz in enumerate(ION_MZ):
        expected = pyimzml_ion_images(files["offset"], mz, ION_TOLERANCE_DA)[0]
        assert ions[k].shape == expected.shape
        assert np.isnan(ions[k][~acquired]).all()  # not acquired: NaN, pyimzML's 0
        assert expected[acquired].min() > 0
        np.testing.assert_allclose(ions[k][acquired], expected[acquired], rtol=1e-9)


def test_3d_tic_and_ion_images_equal_pyimzml_per_plane(files):
    grid, tic, ions = _tic_and_ions(files["stack"])
    expected_tic = pyimzml_tic_images(files["stack"])
    assert tic.shape == expected_tic.shape == (3, 4, 5)
    np.testing.assert_allclose(tic, expected_tic, rtol=1e-9, equal_nan=True)
    acquired = ~np.isnan(expected_tic)
    for k, mz in enumerate(ION_MZ):
        expected = pyimzml_ion_images(files["stack"], mz, ION_TOLERANCE_DA)
        assert ions[k].shape == expected.shape
        np.testing.assert_allclose(ions[k][acquired], expected[acquired], rtol=1e-9)
        assert np.isnan(ions[k][~acquired]).all()


def test_png_keeps_the_physical_aspect_and_leaves_not_acquired_pixels_transparent(files):
    grid, tic, _ = _tic_and_ions(files["offset"])
    png = Image.open(io.BytesIO(png_bytes(tic, grid=grid)))
    assert png.size == (12, 18)  # 20 × 40 µm pixels: each drawn 1 wide, 2 high
    alpha = np.asarray(png)[:, :, 3]
    assert (alpha[::2] == 0).sum() == np.isnan(tic).sum() > 0
    assert (alpha[::2] == 0).tolist() == np.isnan(tic).tolist()


def test_a_3d_png_shows_the_planes_side_by_side(files):
    grid, tic, _ = _tic_and_ions(files["stack"])
    png = Image.open(io.BytesIO(png_bytes(tic, grid=grid)))
    assert png.size == (3 * 5 + 2, 4)  # three planes, a transparent column between them
    alpha = np.asarray(png)[:, :, 3]
    assert (alpha[:, 5] == 0).all() and (alpha[:, 11] == 0).all()


@pytest.mark.parametrize(
    ("size", "repeats"), [((20.0, 40.0), (2, 1)), ((30.0, 20.0), (2, 3)), ((10.0, 10.0), (1, 1))]
)
def test_physical_repeats_draw_each_pixel_with_its_aspect(size, repeats):
    grid = PixelGrid((1, 1, 1), (1, 2, 2), size)
    assert grid.physical_repeats() == repeats
