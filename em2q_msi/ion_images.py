"""Ion images: the summed intensity of m/z windows for all pixels at once, as arrays and PNGs.

A window is ``[mz - tol, mz + tol]`` with both ends included (as pyimzml's ``getionimage``), where
``tol`` is ``tolerance_da`` or ``mz * tolerance_ppm * 1e-6``. Continuous blocks find the window
bounds once on the shared axis; processed blocks binary-search each spectrum; both sum in float64
on all cores.
"""

from __future__ import annotations

import io
import math
import os
from typing import BinaryIO

import numpy as np

from em2q_msi.geometry import GeometryError, PixelGrid
from em2q_msi.spectra import SpectraBlock


class IonImageError(ValueError):
    """Ion-image inputs that cannot be used: bad window, coordinates outside the grid."""


#: sane bounds of an ion-image window: MSI m/z axes end far below 100,000; a window wider than
#: 1 % of its m/z is not an ion image any more
MAX_MZ = 100_000.0
MAX_TOLERANCE_PPM = 10_000.0


def check_window(mz: float, tolerance_ppm: float) -> None:
    """Refuse an m/z or ppm that is not a finite positive number within the bounds above
    (``inf`` would return an image of everything, ``-5`` or ``nan`` an empty one)."""
    for name, value, upper in (("m/z", mz, MAX_MZ), ("ppm", tolerance_ppm, MAX_TOLERANCE_PPM)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise IonImageError(f"{name} must be a number, got {value!r}") from None
        if not (math.isfinite(number) and 0 < number <= upper):
            raise IonImageError(f"{name} must be a finite number in (0, {upper:g}], got {value!r}")


def mz_windows(
    mz_values: np.ndarray | list[float],
    tolerance_ppm: float | None = None,
    tolerance_da: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` m/z bounds of each window; give exactly one tolerance."""
    mz = np.atleast_1d(np.asarray(mz_values, dtype=np.float64))
    if not np.all(np.isfinite(mz) & (mz > 0)):
        raise IonImageError("m/z values must be finite numbers > 0")
    for name, value in (("tolerance_ppm", tolerance_ppm), ("tolerance_da", tolerance_da)):
        if value is not None and not math.isfinite(value):
            raise IonImageError(f"{name} must be a finite number, got {value!r}")
    if (tolerance_ppm is None) == (tolerance_da is None):
        raise IonImageError("give exactly one of tolerance_ppm and tolerance_da")
    if tolerance_ppm is not None:
        if not tolerance_ppm > 0:
            raise IonImageError(f"tolerance_ppm must be > 0, got {tolerance_ppm!r}")
        half = mz * (tolerance_ppm * 1e-6)
    else:
        if not tolerance_da > 0:  # type: ignore[operator]
            raise IonImageError(f"tolerance_da must be > 0, got {tolerance_da!r}")
        half = np.full_like(mz, tolerance_da)
    return mz - half, mz + half


def ion_intensities(
    block: SpectraBlock,
    mz_values: np.ndarray | list[float],
    tolerance_ppm: float | None = None,
    tolerance_da: float | None = None,
) -> np.ndarray:
    """Summed intensity per window and spectrum, shape ``(n_mz, n_spectra)``, float64.

    Without a tolerance, 10 ppm is used.
    """
    from em2q_msi import _kernels as K  # numba: loaded when a kernel first runs

    if tolerance_ppm is None and tolerance_da is None:
        tolerance_ppm = 10.0
    lower, upper = mz_windows(mz_values, tolerance_ppm, tolerance_da)
    n = len(block)
    out = np.zeros((n, lower.size), np.float64)
    if block.offsets is None:
        intensity = block.rows()
        lo = np.searchsorted(block.mz, lower, side="left").astype(np.int64)
        hi = np.searchsorted(block.mz, upper, side="right").astype(np.int64)

        def work(a: int, b: int) -> None:
            K.window_sums_dense(intensity[a:b], lo, hi, out[a:b])

    else:
        mz, intensity = np.asarray(block.mz), np.asarray(block.intensity)
        offsets = np.asarray(block.offsets, dtype=np.int64)

        def work(a: int, b: int) -> None:
            K.window_sums_ragged(mz, intensity, offsets[a : b + 1], lower, upper, out[a:b])

    K.over_spectra(n, work)
    return np.ascontiguousarray(out.T)


def pixel_indices(
    coordinates: np.ndarray, grid: PixelGrid | tuple[int, ...]
) -> tuple[np.ndarray, ...]:
    """0-based image indices of 1-based imzML ``(x, y, ...)`` coordinates on ``grid``
    (``PixelGrid.indices``; a bare shape is a grid whose origin is (1, 1))."""
    try:
        return PixelGrid.coerce(grid).indices(coordinates)
    except GeometryError as exc:
        raise IonImageError(str(exc)) from None


def ion_images(
    coordinates: np.ndarray,
    intensities: np.ndarray,
    grid: PixelGrid | tuple[int, ...],
    fill_value: float = np.nan,
) -> np.ndarray:
    """Images ``(n_mz, *grid.image_shape)`` from ``ion_intensities`` output and the spectra's
    coordinates: ``(n_mz, ny, nx)`` for a 2-D grid (rows are y), ``(n_mz, nz, ny, nx)`` for a
    3-D one. Pixels of the grid without a spectrum (not acquired) hold ``fill_value``. A 1-D
    ``intensities`` (one value per spectrum) gives a single image.
    """
    try:
        return PixelGrid.coerce(grid).image(coordinates, intensities, fill_value)
    except GeometryError as exc:
        raise IonImageError(str(exc)) from None


def to_png(
    image: np.ndarray,
    path_or_file: str | os.PathLike[str] | BinaryIO,
    colormap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    grid: PixelGrid | None = None,
) -> None:
    """Write an image as an RGBA PNG through a matplotlib colormap; NaN pixels (not acquired)
    are transparent.

    The colour scale runs from ``vmin`` to ``vmax`` (default: the finite minimum and maximum).
    With the image's ``grid``, a 3-D stack is drawn as its planes side by side and each pixel
    is repeated so the PNG keeps the physical aspect ratio of non-square pixels.
    """
    from matplotlib import colormaps
    from PIL import Image

    data = np.asarray(image, dtype=np.float64)
    if grid is not None:
        try:
            data = grid.mosaic(data)
        except GeometryError as exc:
            raise IonImageError(str(exc)) from None
        rows, cols = grid.physical_repeats()
        data = np.repeat(np.repeat(data, rows, axis=0), cols, axis=1)
    if data.ndim != 2:
        raise IonImageError(f"to_png needs a 2-D image, got shape {data.shape}")
    finite = np.isfinite(data)
    lo = vmin if vmin is not None else (float(data[finite].min()) if finite.any() else 0.0)
    hi = vmax if vmax is not None else (float(data[finite].max()) if finite.any() else 1.0)
    scaled = np.clip((data - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(data)
    rgba = colormaps[colormap](np.where(finite, scaled, 0.0), bytes=True)
    rgba[~finite, 3] = 0
    Image.fromarray(np.ascontiguousarray(rgba)).save(path_or_file, format="PNG")


def png_bytes(image: np.ndarray, colormap: str = "viridis", grid: PixelGrid | None = None) -> bytes:
    """The PNG of ``to_png`` as bytes (for writing to fsspec storage)."""
    buffer = io.BytesIO()
    to_png(image, buffer, colormap=colormap, grid=grid)
    return buffer.getvalue()
