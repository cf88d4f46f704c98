"""The optical image core: decoding an upload, registration from landmarks, the overlay."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from em2q_msi import optical

#: optical (x, y) → MSI (x, y): a scan at 1/8 the resolution, slightly rotated and shifted
KNOWN = np.array([[0.124, -0.012, 1.5], [0.015, 0.121, -0.75]])


def _png(width: int, height: int, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode).save(
        buffer, format=fmt
    )
    return buffer.getvalue()


def _landmarks(points: np.ndarray) -> list[list[float]]:
    msi = points @ KNOWN[:, :2].T + KNOWN[:, 2]
    return np.hstack([points, msi]).tolist()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_png_jpeg_and_tiff_are_decoded_with_their_size(fmt):
    picture = optical.decode(_png(40, 30, fmt=fmt))
    assert (picture.format, picture.width_px, picture.height_px) == (fmt, 40, 30)
    assert Image.open(io.BytesIO(picture.display_png)).size == (40, 30)
    assert picture.display_scale == 1.0


def test_a_large_image_is_downsampled_for_display_keeping_its_aspect():
    picture = optical.decode(_png(400, 100), max_display_px=100)
    assert Image.open(io.BytesIO(picture.display_png)).size == (100, 25)
    assert picture.display_scale == pytest.approx(0.25)
    assert (picture.width_px, picture.height_px) == (400, 100)


def test_bytes_that_are_not_an_image_are_refused_by_name():
    with pytest.raises(optical.OpticalImageError, match="not a readable PNG, JPEG or TIFF"):
        optical.decode(b"<imzML> not a picture </imzML>")


def test_a_truncated_image_is_refused_before_anything_is_made():
    data = _png(64, 64, fmt="PNG")
    with pytest.raises(optical.OpticalImageError, match="not a readable"):
        optical.decode(data[: len(data) // 2])


def test_an_image_of_another_format_is_refused_naming_it():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="BMP")
    with pytest.raises(optical.OpticalImageError, match="this one is BMP"):
        optical.decode(buffer.getvalue())


def test_a_known_affine_is_recovered_from_noisy_landmarks_within_half_a_pixel():
    rng = np.random.default_rng(3)
    points = np.array([[10, 12], [300, 20], [40, 250], [280, 260], [150, 140]], float)
    landmarks = np.array(_landmarks(points))
    landmarks[:, 2:] += rng.normal(0, 0.1, (5, 2))  # clicks are not exact
    fit = optical.register(landmarks.tolist())
    grid = np.array([[0, 0], [320, 0], [0, 280], [320, 280]], float)
    error = np.linalg.norm(fit.apply(grid) - (grid @ KNOWN[:, :2].T + KNOWN[:, 2]), axis=1)
    assert error.max() < 0.5
    assert fit.residuals_px.shape == (5,) and fit.rms_px < 0.5


@pytest.mark.parametrize(
    ("landmarks", "problem"),
    [
        ([[0, 0, 1, 1], [10, 0, 2, 1]], "at least 3 landmark pairs, got 2"),
        ([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]], "lie on one line"),
        ([[0, 0, 1, 1], [10, 0, 2, 2], [0, 10, 3, 3]], "target landmarks lie on one line"),
        ([[0, 0, 1], [1, 0, 2, 2], [0, 1, 3, 3]], "landmark 0: expected 4 numbers"),
        ([[0, 0, "a", 1], [1, 0, 2, 2], [0, 1, 3, 3]], "landmark 0: expected"),
        (5, "landmarks: expected a list"),
        ("0,0,1,1", "landmarks: expected a list"),
    ],
)
def test_bad_landmarks_are_refused_naming_the_problem(landmarks, problem):
    with pytest.raises(optical.OpticalImageError, match=problem):
        optical.register(landmarks)


def test_the_warped_layer_puts_each_optical_pixel_on_its_msi_pixel():
    layer = np.zeros((2, 3, 4), np.uint8)
    layer[..., 3] = 255
    layer[0, 2, :3] = (255, 0, 0)  # MSI pixel row 0, column 2
    to_msi = np.array([[0.1, 0, 0], [0, 0.1, 0]])  # 10 optical pixels per MSI pixel
    warped = optical.warp_to_optical(layer, to_msi, (40, 30))
    assert warped.shape == (30, 40, 4)
    red = np.all(warped[..., :3] == (255, 0, 0), axis=-1)
    assert np.array_equal(np.argwhere(red).min(axis=0), [0, 20])
    assert np.array_equal(np.argwhere(red).max(axis=0), [9, 29])
    assert np.all(warped[20:, :, 3] == 0) and np.all(warped[:, 30:, 3] == 0)  # outside: clear


def test_composite_blends_the_layer_at_the_opacity_and_refuses_others():
    base = np.full((2, 2, 3), 100, np.uint8)
    top = np.zeros((2, 2, 4), np.uint8)
    top[0, 0] = (200, 200, 200, 255)
    out = optical.composite(base, top, 0.25)
    assert out[0, 0].tolist() == [125, 125, 125] and out[1, 1].tolist() == [100, 100, 100]
    with pytest.raises(optical.OpticalImageError, match="opacity must be between 0 and 1"):
        optical.composite(base, top, 1.5)


def test_a_polygon_with_a_hole_maps_to_the_msi_pixels_of_the_direct_mapping():
    from matplotlib.path import Path as Outline

    from em2q_msi.optical import geometry_to_msi
    from em2q_msi.spatial import roi_mask

    angle = np.deg2rad(17.0)
    scale = 0.23  # MSI pixels per optical pixel, rotated, sheared a little, shifted
    matrix = np.array(
        [[scale * np.cos(angle), -scale * np.sin(angle) + 0.01, 1.3],
         [scale * np.sin(angle), scale * np.cos(angle), -0.7]]
    )  # fmt: skip
    outer = [[10.0, 8.0], [120.0, 15.0], [105.0, 90.0], [20.0, 80.0], [10.0, 8.0]]
    hole = [[50.0, 35.0], [70.0, 35.0], [70.0, 55.0], [50.0, 55.0], [50.0, 35.0]]
    mapped = geometry_to_msi({"type": "Polygon", "coordinates": [outer, hole]}, matrix)
    ny, nx = 30, 32
    rows, cols = np.mgrid[0:ny, 0:nx]
    centres = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    back = centres @ inverse[:, :2].T + inverse[:, 2]
    direct = Outline(outer).contains_points(back) & ~Outline(hole).contains_points(back)
    assert direct.sum() > 50 and (~direct).sum() > 50
    np.testing.assert_array_equal(roi_mask(mapped, (ny, nx)).ravel(), direct)
